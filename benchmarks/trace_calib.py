"""Calibration of the trace simulator against GPU trace replays: for each point of each GPU
``vllm serve`` result (same trace window, budget, sequences and load as a multiple of each
one's own stock saturation), the simulator's prepack/stock ratios beside the GPU's, and the
scheduler's decisions on both (overtakes and split prompts per run, the longest wait left in
the queue after a step).

Where the GPU's prepack arm left no request waiting after any step and overtook nothing, its
admissions were stock's: that point's GPU ratios measure the setup's run-to-run noise, not the
policy, and the row says so.

The simulator's step model: fitted to the result's own steps where its prepack runs recorded
them (``step_series``, :mod:`benchmarks.step_source`), eager or CUDA graphs alike; else to the
steps of ``--step-timings`` (another run of the same server); else the shape's model, fitted to
eager steps, so that a result with none of these whose servers ran with torch.compile and CUDA
graphs is skipped (listed under ``skipped``). ``--steps``: the step model beside measured GPU
steps (``benchmarks.ab`` ``*_steps.json``), its time over theirs in total and by decode batch.

    python -m benchmarks.trace_calib \\
        --gpu benchmarks/results/trace_serve_8b_b2048_1.0_1.5_h200.json \\
        --steps benchmarks/results/trace_llm_8b_b2048_4x_h200_steps.json \\
        --out benchmarks/results/trace_calib_serve_8b_h200.json      # CPU, about 1 min a file
    python -m benchmarks.trace_calib --gpu benchmarks/results/trace_serve_tiny_*_cpu.json \\
        --step-timings benchmarks/results/trace_serve_tiny_replay_1.0_steps_cpu.json \\
        --trace .data/azure_conv_2023.csv --max-num-seqs 128 --num-blocks 32768 \\
        --out benchmarks/results/trace_calib_serve_tiny_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks import harness, serve_report
from benchmarks.trace_sim_model import STEP_MODELS, step_model_check
from benchmarks.trace_sim_options import SimOptions, step_model
from tests.harness.sched import BLOCK_SIZE

BENCHMARK = "trace simulator calibration against GPU trace replays"
METRICS = {"mean_ttft_ms": "ttft_mean_s", "p99_ttft_ms": "ttft_p99_s",
           "request_goodput": "throughput_tok_s"}
"""GPU metric -> the simulator's (goodput: every request within the SLO at these points, so
the simulator's throughput ratio stands for it)."""
TOLERANCE = 0.15
SKIP_GRAPHS = ("servers ran with torch.compile and CUDA graphs and recorded no step series; the "
               "shape's step model is fitted to eager steps")
ARM = "stretch8q0.9-kv-off"
"""The simulator arm of a GPU replay that does not record its prepack options: stretch 8, tail
quantile 0.9, no KV reserve, the defaults of the commits of those replays."""


@dataclasses.dataclass(frozen=True)
class CalibOptions:
    gpu: tuple[str, ...]
    trace: str | None = None
    max_num_seqs: int = 1024
    num_blocks: int = 20_666
    steps: tuple[str, ...] = ()
    step_timings: tuple[str, ...] = ()
    out: str | None = None


def per_load(result: dict) -> dict[str, dict]:
    """The GPU result's ratios per load, with the current rules (as docs/results.md)."""
    return serve_report.aggregate(result["runs"], result["load_factors"],
                                  result["repetitions"])


def gpu_point(result: dict, agg: dict, load: str) -> dict:
    """The GPU's ratios (spreads, ``agg``: its :func:`per_load` entry) and the prepack arm's
    decisions at one load."""
    decided = serve_report.decisions(result, load) or {
        "overtakes_per_run": None, "split_per_run": None, "max_oldest_wait_s": None}
    return {"ratios": {m: agg["ratios_prepack_vs_stock"].get(m) for m in METRICS},
            "paired_reps": agg.get("paired_reps"), **decided}


def budget_of(result: dict) -> int:
    args = result["arms"]["stock"]["serve_args"]
    return int(args[args.index("--max-num-batched-tokens") + 1])


def eager(result: dict) -> bool:
    """Whether the GPU servers ran eager, as the simulator's step model was measured."""
    return "--enforce-eager" in result["arms"]["stock"]["serve_args"]


def sim_arm(result: dict) -> str:
    """The simulator arm of the options the GPU's prepack server ran (its log), else :data:`ARM`."""
    ran = result["arms"].get("prepack", {}).get("prepack_options")
    if not isinstance(ran, dict):
        return ARM
    if ran.get("policy", "stretch") != "stretch" or ran.get("lookahead", 128) != 128:
        raise ValueError(f"prepack options {ran} have no simulator arm; accepted: policy "
                         "stretch with lookahead 128")
    kv = "" if ran.get("kv_reserve", "off") == "oldest" else "-kv-off"  # absent: none then
    return f"stretch{ran['stretch']:g}q{ran['tail_quantile']:g}{kv}"


def has_steps(result: dict) -> bool:
    """Whether the result's prepack runs recorded the server's steps (``step_series``)."""
    return any(r.get("step_series") for r in result.get("runs", []) if r.get("arm") == "prepack")


def sim_options(path: Path, result: dict, loads: list[str], opts: CalibOptions) -> SimOptions:
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


def sim_points(sim: SimOptions, bar) -> dict[str, dict]:
    """The simulator at ``sim``'s loads: load -> its ratios and the prepack arm's decisions."""
    from benchmarks import trace_sim

    arm = sim.arms[1]
    out = {}
    for pt in trace_sim.grid(sim, bar):
        run = pt["per_arm"][arm][0]
        out[f"{pt['load']:g}"] = {
            "simulator_arm": arm,
            "ratios": {m: pt["ratios"][arm][s]["median"] for m, s in METRICS.items()},
            "saturation_req_s": pt["saturation_req_s"],
            "stock_ttft_mean_s": pt["per_arm"]["stock"][0]["ttft_mean_s"],
            "overtakes_per_run": run.get("prepack_overtakes"),
            "split_per_run": run.get("prepack_split_prompts"),
            "max_oldest_wait_s": run.get("prepack_max_oldest_wait_s")}
    return out


def compare(gpu: dict, sim: dict) -> dict:
    """Per metric: within 15% of the GPU's median ratio, and inside the GPU's min-max."""
    out = {}
    for m, g in gpu["ratios"].items():
        if not g:
            continue
        s = sim["ratios"][m]
        out[m] = {"within_15pct": abs(s / g["median"] - 1) <= TOLERANCE,
                  "within_gpu_spread": g["min"] <= s <= g["max"]}
    return out


def run(opts: CalibOptions) -> dict:
    from tqdm import tqdm

    results, skipped = [], []
    for p in opts.gpu:
        d = json.loads(Path(p).read_text())
        if not eager(d) and not has_steps(d) and not opts.step_timings:
            skipped.append({"gpu_file": Path(p).name, "reason": SKIP_GRAPHS})
            print(f"{Path(p).name}: skipped ({SKIP_GRAPHS})")
            continue
        agg = per_load(d)
        results.append((Path(p), d, agg, [k for k, v in agg.items() if v["paired_reps"]]))
    points, models = [], {}
    with tqdm(total=sum(2 * len(loads) for *_, loads in results), desc="trace calib",
              unit="run") as bar:
        for path, d, agg, loads in results:
            options = sim_options(path, d, loads, opts)
            sim = sim_points(options, bar)
            models[path.name] = {"num_blocks": options.num_blocks,
                                 "max_model_len": options.max_model_len,
                                 "async_scheduling": not options.sync_scheduling,
                                 "cpu_scale": options.cpu_scale,
                                 "step_model": dataclasses.asdict(step_model(options)),
                                 "fitted_to": list(options.step_timings) or d["model_shape"]}
            for load in loads:
                g, s = gpu_point(d, agg[load], load), sim[load]
                points.append({"gpu_file": path.name, "vllm": d["vllm"], "device": d["device"],
                               "git_commit": d["git_commit"], "budget": budget_of(d),
                               "load": float(load), "window": d["workload"]["description"],
                               "gpu_saturation_req_s": d["saturation"]["request_throughput"],
                               "gpu": g, "sim": s, "agreement": compare(g, s),
                               "same_admissions_on_gpu": serve_report.same_admissions(g)})
    result = {"benchmark": BENCHMARK, **harness.environment(), "tolerance": TOLERANCE,
              "max_num_seqs": opts.max_num_seqs, "num_blocks": opts.num_blocks,
              "step_models": models,
              "points": points, "skipped": skipped, "step_model_checks": step_checks(opts)}
    for p in points:
        print(f"{p['gpu_file']} load {p['load']:g}: " + "  ".join(
            f"{m} gpu {p['gpu']['ratios'][m]['median']:.2f} sim {p['sim']['ratios'][m]:.2f}"
            for m in p["agreement"]))
    if opts.out:
        harness.write_json(opts.out, result)
        print("wrote", opts.out)
    return result


def step_checks(opts: CalibOptions) -> dict[str, dict]:
    """The 8B step model against each ``--steps`` file (every step, warm-up included)."""
    checks = {}
    for p in opts.steps:
        c = step_model_check(json.loads(Path(p).read_text()), STEP_MODELS["llama-3.1-8b"])
        checks[Path(p).name] = c
        print(f"{Path(p).name}: step model / measured {c['model_over_measured']:.3f} over "
              f"{c['steps']} steps")
    return checks


def parse(argv: Sequence[str] | None = None) -> CalibOptions:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", nargs="+", required=True,
                   help="GPU trace replay results (benchmarks.serve_ab --workload trace JSON)")
    p.add_argument("--trace", help="the trace file of the GPU runs (default: the Azure "
                   "conversation trace, as benchmarks.trace finds it)")
    p.add_argument("--max-num-seqs", type=int, default=CalibOptions.max_num_seqs,
                   help="the GPU servers' max_num_seqs (vllm serve's default on an H200)")
    p.add_argument("--num-blocks", type=int, default=CalibOptions.num_blocks,
                   help="KV-cache blocks of a result without kv_cache_tokens (the 8B at 0.4 H200)")
    p.add_argument("--steps", nargs="*", default=(),
                   help="GPU steps files (benchmarks.ab *_steps.json) to put the step model beside")
    p.add_argument("--step-timings", nargs="+", default=(), metavar="FILE",
                   help="steps (steps files or serve_ab results) to fit the step model of a "
                   "result that has none of its own (a server of the same model and settings)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    return CalibOptions(gpu=tuple(a.gpu), trace=a.trace, max_num_seqs=a.max_num_seqs,
                        num_blocks=a.num_blocks, steps=tuple(a.steps),
                        step_timings=tuple(a.step_timings), out=a.out)


def main(argv: Sequence[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main()
