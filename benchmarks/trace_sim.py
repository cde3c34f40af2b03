"""Trace simulator: vLLM's real scheduler classes (stock and ours) on a virtual clock.

Requests arrive at their trace times (compressed to a load); each step runs vLLM's real
``schedule()`` and ``update_from_output()`` with a synthetic model output (one sampled token
per request whose prompt is complete; ``ignore_eos`` with the trace's output length). The
clock advances by a step-time model fitted to GPU step timings (prefill tokens, decode
requests, attention context; :class:`StepModel`) plus the scheduler's own CPU time, measured
here and scaled to the GPU host (``cpu_scale``). TTFT is counted from arrival to the end of
the step that completes the prompt. Loads are multiples of stock's saturation rate on the
same trace window.

    python -m benchmarks.trace_sim --shape llama-3.1-8b --budgets 2048,8192 \\
        --loads 0.5,0.8,1.0,1.2,1.5 --arms stock,stretch,sjf,hrrn --seeds 0,1,2 \\
        --out benchmarks/results/trace_sim_8b.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from unittest import mock

from vllm.v1.core.sched.scheduler import Scheduler

from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

ARMS: dict[str, dict | None] = {
    # name: prepack options (None: stock vLLM)
    "stock": None,
    "stretch": {},
    "fcfs": {"policy": "fcfs", "tail_quantile": 0},
    "sjf": {"policy": "sjf", "tail_quantile": 0},
    "hrrn": {"policy": "hrrn"},
}


def arm_options(arm: str) -> dict | None:
    """An arm's prepack options: a name of :data:`ARMS`, or ``stretch<X>`` (stretch = X)."""
    if arm in ARMS:
        return ARMS[arm]
    if arm.startswith("stretch"):  # stretch<X>[q<Q>]: stretch X, tail quantile Q
        x, _, q = arm[len("stretch"):].partition("q")
        try:
            return {"stretch": float(x), **({"tail_quantile": float(q)} if q else {})}
        except ValueError:
            pass
    raise ValueError(f"unknown arm {arm!r}; accepted: {', '.join(ARMS)}, stretch<X>[q<Q>]")


@dataclass(frozen=True)
class StepModel:
    """Seconds of one engine step on the GPU: ``base + per_token * prefill tokens +
    per_decode * decode requests + per_attn * sum(chunk * (context + chunk / 2)) / 1e6 +
    per_ctx * decode context tokens / 1e6``."""

    base: float
    per_token: float
    per_decode: float
    per_attn: float = 0.0
    per_ctx: float = 0.0

    def seconds(self, f: dict) -> float:
        return (self.base + self.per_token * f["prefill_tokens"]
                + self.per_decode * f["decodes"] + self.per_attn * f["attn"] / 1e6
                + self.per_ctx * f["decode_ctx"] / 1e6)


STEP_MODELS = {
    # Fitted by fit_step_model() to benchmarks/results/trace_llm_8b_b2048_4x_h200_steps.json
    # (H200, eager, bf16, vLLM 0.32.0, async scheduling): step period against its features.
    "llama-3.1-8b": StepModel(base=0.0167, per_token=4.95e-6, per_decode=5.96e-5),
    # Llama-3.2-1B: the 8B fit scaled by the ratio of their weights (1.24B / 8.03B) above the
    # eager launch floor; not fitted to a GPU run.
    "llama-3.2-1b": StepModel(base=0.0090, per_token=0.77e-6, per_decode=0.92e-5),
}
CPU_SCALE = 1.6
"""Scheduler CPU time on the H200 host over this machine's, for the same steps (the steps
file's ``sched_cpu_s`` + ``update_s`` against :func:`simulate`'s measurement)."""


def fit_step_model(steps: dict, skip_reps: tuple[int, ...] = (0,)) -> tuple[StepModel, dict]:
    """Least-squares fit of the step period (gap between consecutive ``schedule()`` calls)
    to prefill tokens, decode requests and context, over every arm and repetition of a
    ``benchmarks.ab`` steps file (``*_steps.json``), warm-up repetitions left out."""
    import numpy as np

    xs, ys = [], []
    for arms in steps["steps"].values():
        for runs in arms.values():
            for run in runs:
                if run["rep"] in skip_reps:
                    continue
                t = np.asarray(run["t"])
                period = np.diff(t)
                keep = period < 1.0  # idle gaps between arrivals are not steps
                f = [np.asarray(run[c][:-1], dtype=float) for c in ("prefill", "decode_reqs")]
                x = np.stack([np.ones_like(period), f[0], f[1]], 1)[keep]
                xs.append(x)
                ys.append(period[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    model = StepModel(base=float(coef[0]), per_token=float(coef[1]),
                      per_decode=float(coef[2]))
    fit = {"steps": int(len(y)), "mean_period_s": float(y.mean()),
           "mean_abs_error_s": float(np.abs(pred - y).mean()),
           "total_time_error": float(pred.sum() / y.sum() - 1)}
    return model, fit


def step_features(scheduler: Scheduler, out) -> dict:
    """What the step model reads from one ``SchedulerOutput`` (after vLLM's bookkeeping)."""
    prefill = decodes = 0
    attn = ctx = 0.0
    requests = scheduler.requests
    for req_id, n in out.num_scheduled_tokens.items():
        r = requests[req_id]
        before = r.num_computed_tokens - n
        if before < r.num_prompt_tokens:
            chunk = min(n, r.num_prompt_tokens - before)
            prefill += chunk
            attn += chunk * (before + chunk / 2)
        else:
            decodes += 1
            ctx += before
    return {"prefill_tokens": prefill, "decodes": decodes, "attn": attn, "decode_ctx": ctx}


@dataclass(frozen=True)
class Request:
    arrival: float
    prompt_len: int
    output_len: int


@dataclass
class Run:
    ttft: dict[str, float]
    makespan: float
    output_tokens: int
    steps: int
    sched_cpu_s: float
    counters: dict


@contextlib.contextmanager
def _finally(fn):
    try:
        yield
    finally:
        fn()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(arm: str, requests: Sequence[Request], *, model: str, budget: int,
             max_num_seqs: int, num_blocks: int, max_model_len: int, step_model: StepModel,
             cpu_scale: float, seed: int, async_scheduling: bool = True,
             prefix_caching: bool = True, options: dict | None = None) -> Run:
    """One arm over ``requests`` (sorted by arrival); fresh random prompts per ``seed``."""
    opts = arm_options(arm) if options is None else options
    cls = Scheduler if opts is None else PrepackSyncScheduler
    clock = _Clock()
    rng = random.Random(seed)
    gc.collect()
    gc.disable()  # a collector pause would be charged to one step as scheduler time
    with mock.patch("time.time", clock), _finally(gc.enable):
        scheduler = make_scheduler(
            cls, model, budget=budget, max_num_seqs=max_num_seqs, num_blocks=num_blocks,
            prefix_caching=prefix_caching, max_model_len=max_model_len,
            additional_config={"prepack": opts or {}})
        pending = list(requests)
        arrival = {}
        ttft: dict[str, float] = {}
        i = steps = out_tokens = 0
        cpu = 0.0
        while i < len(pending) or scheduler.has_unfinished_requests():
            while i < len(pending) and pending[i].arrival <= clock.now:
                r = pending[i]
                req_id = f"r{i}"
                prompt = [rng.randrange(10, 30000) for _ in range(r.prompt_len)]
                scheduler.add_request(make_request(prompt, max_tokens=r.output_len,
                                                   arrival=r.arrival, req_id=req_id))
                arrival[req_id] = r.arrival
                i += 1
            if not scheduler.has_unfinished_requests():
                clock.now = pending[i].arrival
                continue
            c0 = time.thread_time()
            out = scheduler.schedule()
            c1 = time.thread_time()
            features = step_features(scheduler, out)
            runner = runner_output(scheduler, out)
            c2 = time.thread_time()
            scheduler.update_from_output(out, runner)
            c3 = time.thread_time()
            host = (c1 - c0 + c3 - c2) * cpu_scale
            gpu = step_model.seconds(features) if out.total_num_scheduled_tokens else 0.0
            clock.now += max(gpu, host) if async_scheduling else gpu + host
            cpu += c1 - c0
            steps += 1
            for req_id, sampled in zip(runner.req_ids, runner.sampled_token_ids):
                if sampled:
                    out_tokens += 1
                    ttft.setdefault(req_id, clock.now - arrival[req_id])
    observer = getattr(scheduler, "prepack_observer", None)
    counters = {} if observer is None else {
        k: v for k, v in observer.summary().items() if isinstance(v, (int, float))}
    first = requests[0].arrival if requests else 0.0
    return Run(ttft=ttft, makespan=clock.now - first, output_tokens=out_tokens, steps=steps,
               sched_cpu_s=cpu, counters=counters)


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def metrics(run: Run) -> dict:
    t = list(run.ttft.values())
    return {"ttft_mean_s": sum(t) / len(t), "ttft_p50_s": percentile(t, 50),
            "ttft_p99_s": percentile(t, 99), "throughput_tok_s": run.output_tokens / run.makespan,
            "makespan_s": run.makespan, "steps": run.steps, "completed": len(t),
            "sched_cpu_us_per_step": 1e6 * run.sched_cpu_s / max(1, run.steps),
            **{f"prepack_{k}": v for k, v in run.counters.items()
               if k in ("split_prompts", "overtakes", "planner_faults", "max_oldest_wait_s")}}


def compressed(window: Sequence[Request], rate: float) -> list[Request]:
    """``window`` with its time axis scaled so that requests arrive at ``rate`` per second."""
    span = window[-1].arrival - window[0].arrival
    native = (len(window) - 1) / span if span > 0 else float("inf")
    factor = native / rate
    t0 = window[0].arrival
    return [dataclasses.replace(r, arrival=(r.arrival - t0) * factor) for r in window]


METRICS = {"ttft_mean_s": False, "ttft_p50_s": False, "ttft_p99_s": False,
           "throughput_tok_s": True}
"""Metric -> higher is better."""


def window_requests(w) -> list[Request]:
    """A :class:`benchmarks.trace.TraceWorkload` as simulator requests."""
    return [Request(a, p, o) for a, p, o in zip(w.arrivals, w.lengths, w.output_lens)]


def saturation(requests: Sequence[Request], **kw) -> float:
    """Stock's completed requests per second with the whole window sent at once."""
    run = simulate("stock", [dataclasses.replace(r, arrival=0.0) for r in requests], **kw)
    return len(run.ttft) / run.makespan


def ratios(per_arm: dict[str, list[dict]], baseline: str = "stock") -> dict:
    """Per arm and metric: the spread of the per-seed ratios over the baseline's."""
    from benchmarks import analysis

    out = {}
    for arm, rows in per_arm.items():
        if arm == baseline:
            continue
        out[arm] = {}
        for metric, higher in METRICS.items():
            r = analysis.spread([a[metric] / b[metric] for a, b in zip(rows, per_arm[baseline])])
            r["verdict"] = analysis.verdict(r, higher)
            out[arm][metric] = r
    return out


def grid(args, bar) -> list[dict]:
    """Every (budget, load) point: arms side by side on the same seeds."""
    from benchmarks import trace
    from benchmarks.models import config_dir

    model = str(config_dir(args.shape))
    step_model = STEP_MODELS[args.shape]
    windows = {seed: window_requests(trace.load(
        args.trace, start=args.start + seed * args.n, n=args.n,
        max_model_len=args.max_model_len)) for seed in args.seeds}
    requests = windows[args.seeds[0]]
    points = []
    for budget in args.budgets:
        kw = dict(model=model, budget=budget, max_num_seqs=args.max_num_seqs,
                  num_blocks=args.num_blocks, max_model_len=args.max_model_len,
                  step_model=step_model, cpu_scale=args.cpu_scale)
        sat = saturation(requests, seed=0, **kw)
        native = (len(requests) - 1) / (requests[-1].arrival - requests[0].arrival)
        loads = [native * args.compression / sat] if args.compression else args.loads
        for load in loads:
            per_arm: dict[str, list[dict]] = {arm: [] for arm in args.arms}
            for seed in args.seeds:
                window = compressed(windows[seed], load * sat)
                for arm in args.arms:
                    bar.set_postfix(budget=budget, load=load, seed=seed, arm=arm)
                    per_arm[arm].append(metrics(simulate(arm, window, seed=seed, **kw)))
                    bar.update()
            points.append({"budget": budget, "load": load, "compression": args.compression,
                           "saturation_req_s": sat,
                           "rate_req_s": load * sat, "per_arm": per_arm,
                           "ratios": ratios(per_arm)})
    return points


def main(argv: list[str] | None = None) -> dict:
    import argparse

    from tqdm import tqdm

    from benchmarks import harness, report, trace

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda f: lambda s: [f(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--shape", default="llama-3.1-8b", choices=sorted(STEP_MODELS))
    p.add_argument("--trace", default=None, help="Azure-format CSV (default: the shared one)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--budgets", type=csv(int), default=[2048, 8192])
    p.add_argument("--max-num-seqs", type=int, default=1024,
                   help="1024: vllm serve / LLM on an H200; 128: LLMEngine's SchedulerConfig")
    p.add_argument("--loads", type=csv(float), default=[0.5, 0.8, 1.0, 1.2, 1.5],
                   help="multiples of stock's saturation rate on the window")
    p.add_argument("--compression", type=float, default=None,
                   help="one load: the trace's time axis divided by this (instead of --loads)")
    p.add_argument("--arms", type=csv(str), default=list(ARMS))
    p.add_argument("--seeds", type=csv(int), default=[0, 1, 2],
                   help="seed k replays the window of --n requests from row start + k * n, "
                   "at the load measured on the first seed's window")
    p.add_argument("--num-blocks", type=int, default=40_000)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--cpu-scale", type=float, default=CPU_SCALE)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        [arm_options(a) for a in args.arms]
    except ValueError as e:
        p.error(str(e))
    if "stock" not in args.arms:
        p.error(f"--arms {args.arms}: stock (the baseline) must be one of them")
    loads = 1 if args.compression else len(args.loads)
    with tqdm(total=len(args.budgets) * loads * len(args.seeds) * len(args.arms),
              desc="trace sim", unit="run") as bar:
        points = grid(args, bar)
    for pt in points:
        for arm, r in pt["ratios"].items():
            print(f"budget {pt['budget']:5d} load {pt['load']:.1f} {arm:>8}: " + "  ".join(
                f"{m} {report.fmt_ratio(v)}" for m, v in r.items()))
    result = {"benchmark": "trace simulation: vLLM's schedulers on a virtual clock (CPU)",
              **harness.environment(), "shape": args.shape,
              "step_model": dataclasses.asdict(STEP_MODELS[args.shape]),
              "cpu_scale": args.cpu_scale, "max_num_seqs": args.max_num_seqs,
              "num_blocks": args.num_blocks, "max_model_len": args.max_model_len,
              "workload": {"trace": trace.ATTRIBUTION, "start": args.start, "n": args.n},
              "arms": {a: arm_options(a) for a in args.arms}, "seeds": args.seeds, "points": points}
    if args.out:
        harness.write_json(args.out, result)
        print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
