"""Randomized soak of the prepack schedulers against vLLM's real scheduler and KV cache
manager (no model): arrivals, finishes, aborts, preemptions from a tiny KV cache, prompts of
length 1 and max_model_len - 1, shared prefixes, two schedules in flight as vLLM's batch
queue does. ``PREPACK_SOAK_STEPS`` sets the length (make test: 2,000 per scheduler;
``make soak``: 10,000)."""

from __future__ import annotations

import os
import random
import time
from collections import deque

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import RequestStatus

from benchmarks.sched_sim import make_request, make_scheduler
from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler

PREPACK = (PrepackSyncScheduler, PrepackAsyncScheduler)

STEPS = int(os.environ.get("PREPACK_SOAK_STEPS", "2000"))
MAX_MODEL_LEN = 512
STRETCH = 2.0


def make_trace(seed: int, steps: int) -> list[list[tuple]]:
    """Per step, the events before it: ('add', id, prompt, max_tokens), ('abort', id)."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(3, 500) for _ in range(64)] for _ in range(3)]
    trace, n = [], 0
    for step in range(steps):
        events = []
        if step < steps * 0.8:
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                kind = rng.random()
                if kind < 0.05:
                    prompt = [rng.randrange(3, 500)]
                elif kind < 0.1:
                    prompt = [rng.randrange(3, 500) for _ in range(MAX_MODEL_LEN - 1)]
                elif kind < 0.35:
                    prompt = rng.choice(prefixes) + [rng.randrange(3, 500)
                                                     for _ in range(rng.randint(1, 80))]
                else:
                    prompt = [rng.randrange(3, 500) for _ in range(rng.randint(2, 300))]
                max_tokens = 1 if len(prompt) == MAX_MODEL_LEN - 1 else rng.randint(1, 8)
                events.append(("add", f"s{n}", prompt, max_tokens))
                n += 1
        if n and rng.random() < 0.05:
            events.append(("abort", f"s{rng.randrange(n)}"))
        trace.append(events)
    return trace


def queued_clock(request) -> int:
    """The prefill clock when the request entered the prepack queue."""
    return request._prepack_candidate.clock


def deadline(request) -> float:
    c = request._prepack_candidate
    return c.clock + STRETCH * c.tokens


def soak(cls, trace, *, async_scheduling: bool, options: dict | None = None,
         scheduling_policy: str = "fcfs"):
    options = {"stretch": STRETCH} if options is None else options
    scheduler = make_scheduler(
        cls, os.environ["PREPACK_TEST_MODEL_PATH"], budget=256, max_num_seqs=16,
        num_blocks=48, chunked=True, prefix_caching=True, max_model_len=MAX_MODEL_LEN,
        async_scheduling=async_scheduling, policy=scheduling_policy,
        additional_config={"prepack": options} if cls in PREPACK else None,
    )
    # The deadline rule holds within a priority class, for the stretch policy.
    check_deadlines = (cls in PREPACK and options.get("policy", "stretch") == "stretch"
                       and options.get("stretch", 8.0) == STRETCH
                       and scheduling_policy == "fcfs")
    free_at_start = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    arrivals, max_tokens, aborted = {}, {}, set()
    outputs: dict[str, int] = {}
    finished: dict[str, str] = {}
    stats = {"steps": 0, "preemptions": 0, "aborts": 0, "admissions": 0, "overtaken": 0,
             "due_waiting": 0}
    in_flight: deque = deque()
    now0 = time.time()

    def deliver():
        out, emit = in_flight.popleft()
        ids = list(out.num_scheduled_tokens)
        sampled = [[7] if emit[r] else [] for r in ids]
        result = scheduler.update_from_output(
            out, ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                   sampled_token_ids=sampled))
        for eo in result.values():
            for o in eo.outputs:
                outputs[o.request_id] = outputs.get(o.request_id, 0) + len(o.new_token_ids)
                if o.finish_reason is not None:
                    assert o.request_id not in finished, f"{o.request_id} finished twice"
                    finished[o.request_id] = str(o.finish_reason)

    step = 0
    while step < len(trace) or scheduler.has_unfinished_requests() or in_flight:
        assert step < len(trace) + 20_000, "did not drain"
        for event in trace[step] if step < len(trace) else ():
            if event[0] == "add":
                _, rid, prompt, mt = event
                arrivals[rid] = now0 + step
                max_tokens[rid] = mt
                request = make_request(prompt, max_tokens=mt, arrival=now0 + step,
                                       req_id=rid)
                request.priority = int(rid[1:]) % 3  # used under the priority policy only
                scheduler.add_request(request)
            elif event[1] in scheduler.requests:
                scheduler.finish_requests(event[1], RequestStatus.FINISHED_ABORTED)
                aborted.add(event[1])
                stats["aborts"] += 1
        step += 1
        if scheduler.has_unfinished_requests() and len(in_flight) < 2:
            # The prefill clock the planner measures deadlines on, before this step.
            clock = scheduler.prepack_clock if check_deadlines else None
            out = scheduler.schedule()
            stats["steps"] += 1
            stats["preemptions"] += len(out.preempted_req_ids)
            new = [r.req_id for r in out.scheduled_new_reqs]
            stats["admissions"] += len(new)
            # Deadline rule: nothing admitted this step queued once the prefill clock had
            # passed the deadline of a request left waiting in a plannable state (vLLM
            # admits nothing in a step that preempted).
            if clock is not None:
                due_left = [deadline(r) for r in scheduler.waiting
                            if r.status == RequestStatus.WAITING and deadline(r) <= clock]
                if due_left:
                    stats["due_waiting"] += 1
                    earliest = min(due_left)
                    stats["overtaken"] += sum(
                        queued_clock(scheduler.requests[r]) >= earliest for r in new)
            emit = {r: not scheduler.requests[r].is_prefill_chunk
                    for r in out.num_scheduled_tokens}
            in_flight.append((out, emit))
            if len(in_flight) == 2 or not scheduler.has_unfinished_requests():
                deliver()
        elif in_flight:
            deliver()
    assert not scheduler.requests, "requests left in the scheduler"
    free_at_end = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    return dict(stats=stats, outputs=outputs, finished=finished, aborted=aborted,
                max_tokens=max_tokens, free=(free_at_start, free_at_end))


@pytest.fixture(autouse=True)
def _model_path(tiny_model, monkeypatch):
    monkeypatch.setenv("PREPACK_TEST_MODEL_PATH", tiny_model)


@pytest.mark.parametrize("ours, stock, async_scheduling", [
    (PrepackSyncScheduler, Scheduler, False),
    (PrepackAsyncScheduler, AsyncScheduler, True),
], ids=["sync", "async"])
def test_soak_nothing_lost_and_same_as_stock(ours, stock, async_scheduling):
    trace = make_trace(seed=42, steps=STEPS)
    a = soak(ours, trace, async_scheduling=async_scheduling)
    b = soak(stock, trace, async_scheduling=async_scheduling)
    sa = a["stats"]
    print(f"\n{ours.__name__}: {len(a['max_tokens'])} requests, {sa}")
    assert sa["preemptions"] > 0 and sa["aborts"] > 0
    assert sa["due_waiting"] > 0  # the deadline rule was put to the test
    assert sa["overtaken"] == 0
    assert a["free"][0] == a["free"][1], "KV blocks leaked"
    assert b["free"][0] == b["free"][1]
    for run in (a, b):
        for rid, mt in run["max_tokens"].items():
            if rid in run["aborted"]:
                continue
            assert run["finished"].get(rid) == "length", (rid, run["finished"].get(rid))
            assert run["outputs"][rid] == mt, (rid, run["outputs"][rid], mt)
    both = set(a["max_tokens"]) - a["aborted"] - b["aborted"]
    assert {r: a["outputs"][r] for r in both} == {r: b["outputs"][r] for r in both}


@pytest.mark.parametrize("options, scheduling_policy", [
    ({"policy": "fcfs"}, "fcfs"),
    ({"policy": "sjf"}, "fcfs"),
    ({"policy": "hrrn"}, "fcfs"),
    ({"policy": "stretch", "stretch": 0}, "fcfs"),
    ({"policy": "stretch", "lookahead": 2}, "fcfs"),
    ({}, "priority"),
    ({"policy": "hrrn"}, "priority"),
], ids=["fcfs", "sjf", "hrrn", "stretch0", "lookahead2", "priority", "priority-hrrn"])
def test_short_soak_every_policy(options, scheduling_policy):
    """Every policy (and vLLM's priority classes) through a shorter soak: nothing lost, no
    KV block leaked, every output as long as stock's."""
    trace = make_trace(seed=7, steps=max(200, STEPS // 5))
    a = soak(PrepackSyncScheduler, trace, async_scheduling=False, options=options,
             scheduling_policy=scheduling_policy)
    b = soak(Scheduler, trace, async_scheduling=False, scheduling_policy=scheduling_policy)
    assert a["stats"]["preemptions"] > 0 and a["stats"]["aborts"] > 0
    assert a["free"][0] == a["free"][1], "KV blocks leaked"
    for rid, mt in a["max_tokens"].items():
        if rid not in a["aborted"]:
            assert a["finished"].get(rid) == "length", (rid, a["finished"].get(rid))
            assert a["outputs"][rid] == mt
    both = set(a["max_tokens"]) - a["aborted"] - b["aborted"]
    assert {r: a["outputs"][r] for r in both} == {r: b["outputs"][r] for r in both}
