"""Calibration of the trace simulator against GPU trace replays: for each point of each GPU
result, ``vllm serve`` (:mod:`benchmarks.trace_calib_serve`) or ``LLM``/``LLMEngine``
(:mod:`benchmarks.trace_calib_offline`), at the same trace window, budget, sequences and load
as a multiple of each one's own stock saturation, the simulator's prepack/stock ratios beside
the GPU's, and the scheduler's decisions on both (overtakes and split prompts per run, the
longest wait left in the queue after a step, where recorded), each arm's preemptions per run
(where counted); where the GPU runs kept each
request's TTFT, each prompt-length class's mean TTFT ratio beside the simulator's (reported, not
one of the calibrated measures).

Where the GPU's prepack arm left no request waiting after any step and overtook nothing, its
admissions were stock's: that point's GPU ratios measure the setup's run-to-run noise, not the
policy, and the row says so.

The simulator's step model: fitted to the result's own steps (a server's ``step_series``, an
offline replay's steps file; :mod:`benchmarks.step_source`), eager or CUDA graphs alike; for a
server without them, to the steps of ``--step-timings`` (another run of the same server), else
the shape's model, fitted to eager steps, so that a compiled server's replay with none of these
is skipped (listed under ``skipped``). ``--steps``: the step model beside measured GPU steps
(``benchmarks.ab`` ``*_steps.json``), its time over theirs in total and by decode batch.

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
from benchmarks import trace_calib_offline as offline
from benchmarks import trace_calib_serve as serve
from benchmarks.trace_calib_serve import SKIP_GRAPHS
from benchmarks.trace_sim_model import STEP_MODELS, step_model_check
from benchmarks.trace_sim_options import SimOptions, step_model

BENCHMARK = "trace simulator calibration against GPU trace replays"
TOLERANCE = 0.15


@dataclasses.dataclass(frozen=True)
class CalibOptions:
    gpu: tuple[str, ...]
    trace: str | None = None
    max_num_seqs: int = 1024
    num_blocks: int = 20_666
    steps: tuple[str, ...] = ()
    step_timings: tuple[str, ...] = ()
    out: str | None = None


def sim_points(sim: SimOptions, metrics: dict[str, str], bar) -> dict[str, dict]:
    """The simulator at ``sim``'s loads: load -> its ratios (keyed by the GPU's metric names,
    ``metrics``: GPU metric -> the simulator's) and the prepack arm's decisions."""
    from benchmarks import trace_sim

    arm = sim.arms[1]
    out = {}
    for pt in trace_sim.grid(sim, bar):
        run = pt["per_arm"][arm][0]
        stock = pt["per_arm"]["stock"][0].get("ttft_mean_s_by_length") or {}
        out[f"{pt['load']:g}"] = {
            "simulator_arm": arm,
            "ratios": {m: pt["ratios"][arm][s]["median"] for m, s in metrics.items()},
            "ttft_by_length": {c: v / stock[c] for c, v in
                               (run.get("ttft_mean_s_by_length") or {}).items() if stock.get(c)},
            "saturation_req_s": pt["saturation_req_s"],
            "stock_ttft_mean_s": pt["per_arm"]["stock"][0]["ttft_mean_s"],
            "overtakes_per_run": run.get("prepack_overtakes"),
            "split_per_run": run.get("prepack_split_prompts"),
            "max_oldest_wait_s": run.get("prepack_max_oldest_wait_s"),
            "preemptions_per_run": {"stock": pt["per_arm"]["stock"][0]["preemptions"],
                                    "prepack": run["preemptions"]}}
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


def compare_lengths(gpu: dict, sim: dict) -> dict:
    """Per prompt-length class that both have: the GPU's ratio of the class's mean TTFT (its
    spread), the simulator's, and whether it is within 15% of the GPU's median (reported beside
    the calibrated measures, not one of them)."""
    g, s = gpu.get("ttft_by_length") or {}, sim.get("ttft_by_length") or {}
    return {c: {"gpu": g[c], "sim": s[c], "within_15pct": abs(s[c] / g[c]["median"] - 1)
                <= TOLERANCE} for c in g if c in s}


def source(path: Path, d: dict, opts: CalibOptions) -> dict | None:
    """A GPU result's calibration inputs, from :mod:`benchmarks.trace_calib_serve` or
    :mod:`benchmarks.trace_calib_offline`: its points (load -> the GPU's ratios and
    decisions), the metrics (GPU -> simulator), the simulator's options and what every point
    records. None: not calibrated (:data:`SKIP_GRAPHS`). Any other file is an error naming it."""
    if offline.is_offline(d):
        gpu = offline.gpu_points(d)
        return {"gpu": gpu, "metrics": offline.METRICS, **offline.record(d),
                "sim": offline.sim_options(path, d, list(gpu), opts.trace)}
    if not isinstance(d.get("runs"), list):
        raise ValueError(f"{path}: not a trace replay result; accepted: the JSON of "
                         "benchmarks.serve_ab or benchmarks.ab with --workload trace")
    return serve.source(path, d, opts)


def run(opts: CalibOptions) -> dict:
    from tqdm import tqdm

    sources, skipped = [], []
    for p in opts.gpu:
        d = json.loads(Path(p).read_text())
        if (s := source(Path(p), d, opts)) is None:
            skipped.append({"gpu_file": Path(p).name, "reason": SKIP_GRAPHS})
            print(f"{Path(p).name}: skipped ({SKIP_GRAPHS})")
        else:
            sources.append((Path(p), d, s))
    points, models = [], {}
    with tqdm(total=sum(2 * len(s["gpu"]) for *_, s in sources), desc="trace calib",
              unit="run") as bar:
        for path, d, s in sources:
            options = s["sim"]
            sim = sim_points(options, s["metrics"], bar)
            models[path.name] = {"num_blocks": options.num_blocks,
                                 "max_model_len": options.max_model_len,
                                 "async_scheduling": not options.sync_scheduling,
                                 "cpu_scale": options.cpu_scale,
                                 "step_model": dataclasses.asdict(step_model(options)),
                                 "fitted_to": list(options.step_timings) or d["model_shape"]}
            for load, g in s["gpu"].items():
                points.append({"gpu_file": path.name, "vllm": d["vllm"], "device": d["device"],
                               "git_commit": d["git_commit"], "budget": s["budget"],
                               "load": float(load), "window": s["window"],
                               "gpu_saturation_req_s": s["gpu_saturation_req_s"],
                               "gpu": g, "sim": sim[load], "agreement": compare(g, sim[load]),
                               "by_length": compare_lengths(g, sim[load]),
                               "same_admissions_on_gpu": serve_report.same_admissions(g)})
    result = {"benchmark": BENCHMARK, **harness.environment(), "tolerance": TOLERANCE,
              "max_num_seqs": opts.max_num_seqs, "num_blocks": opts.num_blocks,
              "step_models": models,
              "points": points, "skipped": skipped, "step_model_checks": step_checks(opts)}
    for p in points:
        print(f"{p['gpu_file']} load {p['load']:g}: " + "  ".join(
            f"{m} gpu {p['gpu']['ratios'][m]['median']:.2f} sim {p['sim']['ratios'][m]:.2f}"
            for m in p["agreement"]) + "".join(
            f"  {c}: gpu {b['gpu']['median']:.2f} sim {b['sim']:.2f}"
            for c, b in p["by_length"].items()))
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
                   help="GPU trace replay results (benchmarks.serve_ab or benchmarks.ab "
                   "--workload trace JSON)")
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
