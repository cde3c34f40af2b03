"""Trace simulator: vLLM's real scheduler classes (stock and ours) on a virtual clock.

Requests arrive at their trace times (compressed to a load); each step runs vLLM's real
``schedule()`` and ``update_from_output()`` with a synthetic model output (one sampled token
per request whose prompt is complete; ``ignore_eos`` with the trace's output length). The
clock advances by a step-time model fitted to GPU step timings (prefill tokens, decode
requests, attention context; :class:`StepModel`; ``--step-noise``: times a random factor)
plus the scheduler's CPU time scaled to the GPU host (``cpu_scale``): a :class:`HostModel`
fitted to this machine (``--fit-host``), or ``--host measured``. TTFT: from arrival to the end
of the step that completes the prompt. Loads: multiples of stock's saturation on the window.
This module: the load grid, its ratios and the CLI (drive: :mod:`benchmarks.trace_sim_drive`).

    python -m benchmarks.trace_sim --shape llama-3.1-8b --budgets 2048,8192 \\
        --loads 0.5,0.8,1.0,1.2,1.5 --arms stock,stretch,sjf,hrrn --seeds 0,1,2 \\
        --out benchmarks/results/trace_sim_8b.json
    python -m benchmarks.trace_sim --fit-host --shape llama-3.2-1b --budgets 2048,8192 \\
        --loads 0.5,1.0,1.5 --arms stock,stretch,hrrn --seeds 0 --n 800 \\
        --out benchmarks/results/trace_sim_host_fit_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Sequence

from benchmarks import analysis, harness, report
from benchmarks.trace_sim_delays import breakdown
from benchmarks.trace_sim_drive import (
    compressed,
    metrics,
    saturation,
    simulate,
    window_requests,
)
from benchmarks.trace_sim_host import run_host_fit
from benchmarks.trace_sim_model import HOST_MODEL, STEP_MODELS
from benchmarks.trace_sim_options import (
    SimOptions,
    arm_options,
    engine_settings,
    policy_of,
    step_model,
)
from tests.harness.env import assume_triton_on_vllms_cpu_platform

BENCHMARK = "trace simulation: vLLM's schedulers on a virtual clock (CPU)"
METRICS = {"ttft_mean_s": False, "ttft_p50_s": False, "ttft_p99_s": False,
           "throughput_tok_s": True}
"""Metric -> higher is better."""


def ratios(per_arm: dict[str, list[dict]], baseline: str = "stock") -> dict:
    """Per arm and metric: the spread of the per-seed ratios over the baseline's."""
    return analysis.compare(per_arm, baseline, METRICS)


def grid(opts: SimOptions, bar) -> list[dict]:
    """Every (budget, load) point: arms side by side on the same seeds."""
    from benchmarks import trace
    windows = {seed: window_requests(trace.load(
        opts.trace, start=opts.start + seed * opts.n, n=opts.n,
        max_model_len=opts.max_model_len)) for seed in opts.seeds}
    requests = windows[opts.seeds[0]]
    points = []
    for budget in opts.budgets:
        kw = engine_settings(opts, budget, host=opts.host)
        sat = saturation(requests, seed=0, **kw)
        native = (len(requests) - 1) / (requests[-1].arrival - requests[0].arrival)
        loads = [native * opts.compression / sat] if opts.compression else opts.loads
        for load in loads:
            per_arm: dict[str, list[dict]] = {arm: [] for arm in opts.arms}
            delays: dict[str, list[dict]] = {arm: [] for arm in opts.arms if arm != "stock"}
            for seed, replica in itertools.product(opts.seeds, range(opts.replicas)):
                window = compressed(windows[seed], load * sat)
                runs = {}
                for arm in opts.arms:  # every arm on the same window and noise draws
                    bar.set_postfix(budget=budget, load=load, seed=seed, arm=arm)
                    runs[arm] = simulate(arm, window, seed=seed, step_noise=opts.step_noise,
                                         noise_seed=1000 * seed + replica, **kw)
                    per_arm[arm].append(metrics(runs[arm]))
                    bar.update()
                arrivals = {f"r{j}": r.arrival for j, r in enumerate(window)}
                for arm in delays if opts.delays else ():
                    delays[arm].append({"seed": seed, "replica": replica, **breakdown(
                        runs["stock"], runs[arm], arrivals)})
            points.append({"budget": budget, "load": load, "compression": opts.compression,
                           "saturation_req_s": sat, "rate_req_s": load * sat,
                           "per_arm": per_arm, "ratios": ratios(per_arm),
                           **({"delays": delays} if opts.delays else {})})
    return points


def run(opts: SimOptions) -> dict:
    """The grid, its ratios printed; the result JSON (written to ``opts.out``)."""
    from tqdm import tqdm

    from benchmarks import trace
    from benchmarks.step_source import fitted

    loads = (1 if opts.compression else len(opts.loads)) * opts.replicas
    with tqdm(total=len(opts.budgets) * loads * len(opts.seeds) * len(opts.arms),
              desc="trace sim", unit="run") as bar:
        points = grid(opts, bar)
    for pt in points:
        for arm, r in pt["ratios"].items():
            print(f"budget {pt['budget']:5d} load {pt['load']:.1f} {arm:>8}: " + "  ".join(
                f"{m} {report.fmt_ratio(v)}" for m, v in r.items()))
    result = {"benchmark": BENCHMARK, **harness.environment(), "shape": opts.shape,
              "model": opts.model, "async_scheduling": not opts.sync_scheduling,
              "step_model": dataclasses.asdict(step_model(opts)),
              "step_model_fit": fitted(tuple(opts.step_timings))[1] if opts.step_timings else None,
              "cpu_scale": opts.cpu_scale, "host": opts.host,
              "host_model": dataclasses.asdict(HOST_MODEL) if opts.host == "model" else None,
              "max_num_seqs": opts.max_num_seqs,
              "num_blocks": opts.num_blocks, "max_model_len": opts.max_model_len,
              "workload": {"trace": trace.ATTRIBUTION, "start": opts.start, "n": opts.n},
              "arms": {a: arm_options(a) for a in opts.arms},
              "policies": {a: policy_of(a) for a in opts.arms}, "seeds": list(opts.seeds),
              "step_noise": opts.step_noise, "replicas": opts.replicas, "points": points}
    if opts.out:
        harness.write_json(opts.out, result)
        print("wrote", opts.out)
    return result


def _csv(kind):
    return lambda s: tuple(kind(x) for x in s.split(","))


def parse(argv: Sequence[str] | None = None) -> SimOptions:
    """The CLI (flags unchanged) into :class:`SimOptions`."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SimOptions()
    p.add_argument("--shape", default=d.shape, choices=sorted(STEP_MODELS))
    p.add_argument("--trace", default=None, help="Azure-format CSV (default: the shared one)")
    p.add_argument("--start", type=int, default=d.start)
    p.add_argument("--n", type=int, default=d.n)
    p.add_argument("--budgets", type=_csv(int), default=d.budgets)
    p.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs,
                   help="1024: vllm serve / LLM on an H200; 128: LLMEngine's SchedulerConfig")
    p.add_argument("--loads", type=_csv(float), default=d.loads,
                   help="multiples of stock's saturation rate on the window")
    p.add_argument("--compression", type=float, default=None,
                   help="one load: the trace's time axis divided by this (instead of --loads)")
    p.add_argument("--arms", type=_csv(str), default=d.arms)
    p.add_argument("--seeds", type=_csv(int), default=d.seeds,
                   help="seed k replays the window of --n requests from row start + k * n, "
                   "at the load measured on the first seed's window")
    p.add_argument("--num-blocks", type=int, default=d.num_blocks)
    p.add_argument("--max-model-len", type=int, default=d.max_model_len)
    p.add_argument("--cpu-scale", type=float, default=d.cpu_scale)
    p.add_argument("--host", choices=("model", "measured"), default=d.host,
                   help="scheduler CPU time per step: the fitted model, or timed")
    p.add_argument("--fit-host", action="store_true",
                   help="fit the host model to the arms' measured steps over the grid (first "
                   "seed) and write it")
    p.add_argument("--step-noise", type=float, default=d.step_noise, help="log-sigma of a "
                   "mean-1 lognormal factor on each step's GPU time (0: the model's time)")
    p.add_argument("--replicas", type=int, default=d.replicas,
                   help="runs per window and arm, each with its own noise draws")
    p.add_argument("--step-timings", nargs="+", default=(), metavar="FILE",
                   help="fit the step model to these GPU steps (benchmarks.ab steps files or "
                   "serve_ab results with step series) instead of the shape's fitted model")
    p.add_argument("--model", default=None, metavar="DIR", help="a model directory (its "
                   "config.json) instead of --shape; needs --step-timings")
    p.add_argument("--sync-scheduling", action="store_true", help="synchronous scheduling "
                   "(each step's scheduler time added to its GPU time) instead of vLLM's async")
    p.add_argument("--delays", action="store_true", help="per point and arm, where its TTFT "
                   "differences from stock come from (benchmarks.trace_sim_delays)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.model and not args.step_timings:
        p.error(f"--model {args.model}: give its steps with --step-timings (no fitted model)")
    if args.step_noise < 0 or args.replicas < 1:
        p.error(f"--step-noise {args.step_noise}, --replicas {args.replicas}: accepted "
                "--step-noise >= 0 and --replicas >= 1")
    try:
        [arm_options(a) for a in args.arms]
    except ValueError as e:
        p.error(str(e))
    if "stock" not in args.arms:
        p.error(f"--arms {list(args.arms)}: stock (the baseline) must be one of them")
    return SimOptions(**{**vars(args), "step_timings": tuple(args.step_timings)})


def main(argv: Sequence[str] | None = None) -> dict:
    opts = parse(argv)
    assume_triton_on_vllms_cpu_platform()  # a GPU wheel's scheduler, VLLM_TARGET_DEVICE=cpu
    return run_host_fit(opts) if opts.fit_host else run(opts)


if __name__ == "__main__":
    main()
