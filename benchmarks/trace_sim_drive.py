"""The trace simulator's drive: vLLM's real scheduler classes (stock and ours) on a virtual
clock, one arm over one window of requests, and the metrics of a run."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from benchmarks.serve_lengths import class_means
from benchmarks.trace_sim_delays import Events
from benchmarks.trace_sim_model import HOST_MODEL, HostModel, StepModel, step_features
from benchmarks.trace_sim_options import arm_options
from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler


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
    tpot: dict[str, float] = dataclasses.field(default_factory=dict)
    """Per request with two or more output tokens: seconds per output token after the first."""
    preemptions: int = 0  # requests vLLM preempted (KV blocks ran out), summed over steps
    prompt_lens: dict[str, int] = dataclasses.field(default_factory=dict)  # per request
    events: Events = dataclasses.field(default_factory=Events)
    """Per-request events (:mod:`benchmarks.trace_sim_delays`)."""

    @property
    def held(self) -> dict[str, float]:
        """Per request: seconds from the first ``schedule()`` after it was added to the one
        that scheduled it: what an admission order shortens (TTFT adds async scheduling's lag
        before that step, and the prefill's own steps)."""
        return self.events.held()


def simulate(arm: str, requests: Sequence[Request], *, model: str, budget: int,
             max_num_seqs: int, num_blocks: int, max_model_len: int, step_model: StepModel,
             cpu_scale: float, seed: int, async_scheduling: bool = True,
             prefix_caching: bool = True, options: dict | None = None, host: str = "model",
             samples: list | None = None, step_noise: float = 0.0, noise_seed: int = 0) -> Run:
    """One arm over ``requests`` (sorted by arrival); fresh random prompts per ``seed``. Step
    CPU time: the fitted :data:`HOST_MODEL` (``host="model"``) or the measured time
    (``"measured"``; appended to ``samples`` as ``(scheduled, new, seconds)``), times
    ``cpu_scale``. ``step_noise``: :func:`_gpu_seconds`, drawn from ``noise_seed``. Async
    scheduling (vLLM's default): vLLM's async scheduler classes, run as its engine core runs
    them (step k + 1 is scheduled before step k's output is applied), GPU and CPU time
    overlapping; arrivals: :func:`_arrive_async`."""
    opts = arm_options(arm) if options is None else options
    if host not in ("model", "measured"):
        raise ValueError(f"invalid host {host!r}; accepted: model, measured")
    classes = (AsyncScheduler, PrepackAsyncScheduler) if async_scheduling else (
        Scheduler, PrepackSyncScheduler)
    clock = SimpleNamespace(now=0.0)  # the virtual clock, vLLM's time.time()
    gc.collect()
    gc.disable()  # a collector pause would be charged to one step as scheduler time
    with mock.patch("time.time", lambda: clock.now), contextlib.ExitStack() as stack:
        stack.callback(gc.enable)
        scheduler = make_scheduler(
            classes[opts is not None], model, budget=budget, max_num_seqs=max_num_seqs,
            num_blocks=num_blocks, prefix_caching=prefix_caching, max_model_len=max_model_len,
            async_scheduling=async_scheduling, additional_config={"prepack": opts or {}})
        run = _drive(scheduler, requests, clock, random.Random(seed), Timing(
            step_model, HOST_MODEL if host == "model" else None, samples, cpu_scale,
            random.Random(noise_seed), step_noise, async_scheduling))
    run.counters = _counters(scheduler)
    return run


@dataclass(frozen=True)
class Timing:
    """How :func:`_drive` times a step (:func:`simulate`'s arguments of the same meaning)."""

    gpu: StepModel
    host: HostModel | None  # None: the measured scheduler time
    samples: list | None
    cpu_scale: float
    noise: random.Random
    sigma: float
    pipelined: bool  # async scheduling


def _drive(scheduler, requests: Sequence[Request], clock, rng: random.Random, m: Timing) -> Run:
    """Step ``scheduler`` until every request finishes, each step timed by ``m``."""
    pending, arrival = list(requests), {}
    ttft, events = {}, Events()  # ttft: request -> seconds
    i = steps = out_tokens = cpu = preemptions = 0
    last: dict[str, tuple[float, int]] = {}  # request -> (time of its latest token, tokens)
    seen = 0.0  # async: the previous step's start, when the engine scheduled this one
    flight = None  # async: the step in flight (output, runner output), not yet applied
    while i < len(pending) or scheduler.has_unfinished_requests() or flight:
        i = _arrive_async(scheduler, pending, i, seen if m.pipelined else clock.now,
                          clock.now, rng, arrival, events.visible)
        if not scheduler.has_unfinished_requests() and not flight:
            clock.now = seen = pending[i].arrival
            continue
        seen = clock.now
        c0 = time.thread_time()
        out = scheduler.schedule()
        c1 = time.thread_time()
        events.step(scheduler, out, clock.now, ttft)
        features = step_features(scheduler, out)
        runner = runner_output(scheduler, out)
        ended, flight = flight, (out, runner)
        c2 = time.thread_time()
        if ended:  # async: the step before this one ends now
            scheduler.update_from_output(*ended)
        if not (m.pipelined and out.total_num_scheduled_tokens):
            scheduler.update_from_output(out, runner)  # sync, or an empty step: nothing runs
            flight = None
        c3 = time.thread_time()
        if ended:
            out_tokens += _tokens(ended[1], clock.now, arrival, ttft, last)
        host = _host_seconds(m.host, m.samples, c1 - c0 + c3 - c2, (
            len(out.num_scheduled_tokens), len(out.scheduled_new_reqs))) * m.cpu_scale
        gpu = _gpu_seconds(m.gpu, features, out, m.noise, m.sigma)
        clock.now += max(gpu, host) if m.pipelined else gpu + host
        cpu += c1 - c0
        steps += 1
        preemptions += len(out.preempted_req_ids or ())
        if not m.pipelined:
            out_tokens += _tokens(runner, clock.now, arrival, ttft, last)
    first = requests[0].arrival if requests else 0.0
    tpot = {r: (t - arrival[r] - ttft[r]) / (n - 1) for r, (t, n) in last.items() if n > 1}
    return Run(ttft=ttft, makespan=clock.now - first, output_tokens=out_tokens, steps=steps,
               sched_cpu_s=cpu, counters={}, tpot=tpot, preemptions=preemptions, events=events,
               prompt_lens={f"r{j}": r.prompt_len for j, r in enumerate(pending)})


def _counters(scheduler) -> dict:
    """Our scheduler's packing statistics (numbers only); none for stock's."""
    observer = getattr(scheduler, "prepack_observer", None)
    return {} if observer is None else {
        k: v for k, v in observer.summary().items() if isinstance(v, (int, float))}


def _arrive(scheduler, pending: Sequence[Request], i: int, now: float, rng: random.Random,
            arrival: dict[str, float]) -> int:
    """Add the requests from ``pending[i]`` on that have arrived by ``now``; the next index."""
    while i < len(pending) and pending[i].arrival <= now:
        r = pending[i]
        req_id = f"r{i}"
        prompt = [rng.randrange(10, 30000) for _ in range(r.prompt_len)]
        scheduler.add_request(make_request(prompt, max_tokens=r.output_len, arrival=r.arrival,
                                           req_id=req_id))
        arrival[req_id] = r.arrival
        i += 1
    return i


def _arrive_async(scheduler, pending: Sequence[Request], i: int, seen: float, now: float,
                  rng: random.Random, arrival: dict[str, float], visible: dict) -> int:
    """The engine schedules step k + 1 as step k starts (``seen``), so a request that arrives
    while step k runs is first scheduled in step k + 2; all that arrived by ``now`` where the
    engine would otherwise be idle (it then schedules on arrival). ``visible``: each added
    request's first ``schedule()``, at ``now``."""
    first = i
    i = _arrive(scheduler, pending, i, seen, rng, arrival)
    if not scheduler.has_unfinished_requests():
        i = _arrive(scheduler, pending, i, now, rng, arrival)
    visible.update((f"r{j}", now) for j in range(first, i))
    return i


def _tokens(runner, now: float, arrival: dict, ttft: dict, last: dict) -> int:
    """Record the step's sampled tokens (first token: TTFT; latest: time and count)."""
    n = 0
    for req_id, sampled in zip(runner.req_ids, runner.sampled_token_ids):
        if sampled:
            n += 1
            ttft.setdefault(req_id, now - arrival[req_id])
            last[req_id] = (now, last.get(req_id, (0.0, 0))[1] + 1)
    return n


def _gpu_seconds(model: StepModel, features: dict, out, noise: random.Random,
                 sigma: float) -> float:
    """The step model's time, times a mean-1 lognormal factor of log-sigma ``sigma``."""
    if not out.total_num_scheduled_tokens:
        return 0.0
    factor = math.exp(noise.gauss(-sigma**2 / 2, sigma)) if sigma else 1.0
    return model.seconds(features) * factor


def _host_seconds(model, samples: list | None, measured: float, counts: tuple) -> float:
    if samples is not None:
        samples.append((*counts, measured))
    return measured if model is None else model.seconds(*counts)


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def metrics(run: Run) -> dict:
    t, held = list(run.ttft.values()), run.held
    return {"ttft_mean_s": sum(t) / len(t), "ttft_p50_s": percentile(t, 50),
            "ttft_p99_s": percentile(t, 99), "ttft_mean_s_by_length": class_means(
                t, [run.prompt_lens[r] for r in run.ttft]) if run.prompt_lens else {},
            "held_mean_s": sum(held[r] for r in run.ttft) / len(t),
            "tpot_mean_s": sum(run.tpot.values()) / len(run.tpot) if run.tpot else 0.0,
            "throughput_tok_s": run.output_tokens / run.makespan,
            "makespan_s": run.makespan, "steps": run.steps, "completed": len(t),
            "preemptions": run.preemptions,
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


def window_requests(w) -> list[Request]:
    """A :class:`benchmarks.trace.TraceWorkload` as simulator requests."""
    return [Request(a, p, o) for a, p, o in zip(w.arrivals, w.lengths, w.output_lens)]


def saturation(requests: Sequence[Request], **kw) -> float:
    """Stock's completed requests per second with the whole window sent at once."""
    run = simulate("stock", [dataclasses.replace(r, arrival=0.0) for r in requests], **kw)
    return len(run.ttft) / run.makespan
