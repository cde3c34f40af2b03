"""The calibration's inputs from a ``vllm serve`` trace replay (``benchmarks.serve_ab
--workload trace``): its points' ratios (recomputed with the current rules), the prepack
server's decisions, and the simulator on the same window, budget, model length and loads, with
the KV cache the servers logged, the scheduling the prepack server ran, and a step model fitted
to the result's own steps where its prepack runs recorded them (``step_series``), else to
``--step-timings``, else the shape's (eager steps: a compiled server's replay without steps is
skipped)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import serve_lengths, serve_parts, serve_report
from benchmarks.trace_sim_options import SimOptions, arm_name
from tests.harness.sched import BLOCK_SIZE

METRICS = {"mean_ttft_ms": "ttft_mean_s", "p99_ttft_ms": "ttft_p99_s",
           "request_goodput": "throughput_tok_s"}
"""GPU metric -> the simulator's (goodput: every request within the SLO at these points, so
the simulator's throughput ratio stands for it)."""
SKIP_GRAPHS = ("servers ran with torch.compile and CUDA graphs and recorded no step series; the "
               "shape's step model is fitted to eager steps")
ARM = "stretch8q0.9-kv-off"
"""The simulator arm of a GPU replay that does not record its prepack options: stretch 8, tail
quantile 0.9, no KV reserve, the defaults of the commits of those replays."""


def per_load(result: dict) -> dict[str, dict]:
    """The GPU result's ratios per load, with the current rules (as docs/results.md)."""
    return serve_report.aggregate(result["runs"], result["load_factors"],
                                  result["repetitions"])


def gpu_point(result: dict, agg: dict, load: str, lens: list[int] | None = None) -> dict:
    """The GPU's ratios (spreads, ``agg``: its :func:`per_load` entry), the prepack arm's
    decisions at one load and, given the window's prompt lengths ``lens`` and runs with
    per-request TTFTs, the ratio of each prompt-length class's mean TTFT
    (:func:`benchmarks.serve_lengths.class_rows`); each arm's preemptions per run where the
    runs scraped vLLM's counter."""
    decided = serve_report.decisions(result, load) or {
        "overtakes_per_run": None, "split_per_run": None, "max_oldest_wait_s": None}
    both = serve_report.pairs(result, load)
    by_length = {r["class"]: r["ratio"] for r in serve_lengths.class_rows(both, lens)} if (
        lens and all(run["bench"].get("ttfts_s") for pair in both for run in pair)) else {}
    counts = serve_parts.preempted(both)
    preempted = {arm: n / len(both) for arm, n in counts.items()} if counts else None
    return {"ratios": {m: agg["ratios_prepack_vs_stock"].get(m) for m in METRICS},
            "paired_reps": agg.get("paired_reps"), "ttft_by_length": by_length,
            "preemptions_per_run": preempted, **decided}


def budget_of(result: dict) -> int:
    args = result["arms"]["stock"]["serve_args"]
    return int(args[args.index("--max-num-batched-tokens") + 1])


def eager(result: dict) -> bool:
    """Whether the GPU servers ran eager, as the simulator's step model was measured."""
    return "--enforce-eager" in result["arms"]["stock"]["serve_args"]


def sim_arm(result: dict) -> str:
    """The simulator arm of the options the GPU's prepack server ran (its log), else :data:`ARM`."""
    ran = result["arms"].get("prepack", {}).get("prepack_options")
    return arm_name(ran) if isinstance(ran, dict) else ARM


def has_steps(result: dict) -> bool:
    """Whether the result's prepack runs recorded the server's steps (``step_series``)."""
    return any(r.get("step_series") for r in result.get("runs", []) if r.get("arm") == "prepack")


def sim_options(path: Path, result: dict, loads: list[str], opts) -> SimOptions:
    """The simulator on the GPU result's window, budget, model length and loads, with the KV
    cache its servers logged (else ``opts.num_blocks``), the scheduling its prepack server ran
    (synchronous or async), and a step model fitted to the result's own steps where it has
    them, else to ``opts.step_timings`` where given, else the shape's. Steps of a synchronous
    server hold its scheduler's time: with them no scheduler time is added (``cpu_scale`` 0).
    A result without a shape is simulated on its model directory."""
    from benchmarks.step_source import fitted, scheduled_async

    w, kv_tokens = result["workload"], result["arms"]["stock"].get("kv_cache_tokens")
    steps = (str(path),) if has_steps(result) else opts.step_timings
    sync = not scheduled_async(result)
    args = result["arms"]["stock"]["serve_args"]
    return SimOptions(shape=result.get("model_shape") or SimOptions.shape,
                      model=None if result.get("model_shape") else result.get("model"),
                      trace=opts.trace, start=w["start"], n=w["n"],
                      budgets=(budget_of(result),), max_num_seqs=opts.max_num_seqs,
                      max_model_len=int(args[args.index("--max-model-len") + 1])
                      if "--max-model-len" in args else SimOptions.max_model_len,
                      loads=tuple(float(lf) for lf in loads),
                      arms=("stock", sim_arm(result)), seeds=(0,),
                      num_blocks=kv_tokens // BLOCK_SIZE if kv_tokens else opts.num_blocks,
                      step_timings=steps, sync_scheduling=sync,
                      cpu_scale=0.0 if steps and fitted(steps)[1]["lag"] == 0
                      else SimOptions.cpu_scale)


def source(path: Path, d: dict, opts) -> dict | None:
    """The result's calibration inputs (:func:`benchmarks.trace_calib.source`); None for a
    compiled server's replay without steps (:data:`SKIP_GRAPHS`)."""
    if not eager(d) and not has_steps(d) and not opts.step_timings:
        return None
    agg = per_load(d)
    loads = [k for k, v in agg.items() if v["paired_reps"]]
    lens = serve_lengths.prompt_lens(d, opts.trace) if any(
        (r.get("bench") or {}).get("ttfts_s") for r in d["runs"]) else None
    return {"gpu": {load: gpu_point(d, agg[load], load, lens) for load in loads},
            "metrics": METRICS,
            "sim": sim_options(path, d, loads, opts), "budget": budget_of(d),
            "window": d["workload"]["description"],
            "gpu_saturation_req_s": d["saturation"]["request_throughput"]}
