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

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from unittest import mock

from vllm.v1.core.sched.scheduler import Scheduler

from benchmarks.sched_sim import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

ARMS: dict[str, dict | None] = {
    # name: prepack options (None: stock vLLM)
    "stock": None,
    "stretch": {},
    "fcfs": {"policy": "fcfs"},
    "sjf": {"policy": "sjf"},
    "hrrn": {"policy": "hrrn"},
}


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
    # Priors until fitted to GPU step timings (benchmarks.trace_replay): eager, one GPU.
    "llama-3.1-8b": StepModel(base=0.020, per_token=5.0e-5, per_decode=5.0e-5),
    "llama-3.2-1b": StepModel(base=0.008, per_token=8.0e-6, per_decode=1.5e-5),
}


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
    opts = ARMS[arm] if options is None else options
    cls = Scheduler if opts is None else PrepackSyncScheduler
    clock = _Clock()
    rng = random.Random(seed)
    with mock.patch("time.time", clock):
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
