"""Randomized soak of the prepack schedulers against vLLM's real scheduler and KV cache
manager (no model): arrivals, finishes, aborts, preemptions from a tiny KV cache, prompts of
length 1 and max_model_len - 1, shared prefixes, structured-output requests whose grammar
compiles some steps after arrival, two priority classes (under ``--scheduling-policy
priority``; class 0 for every request under fcfs), two schedules in flight as vLLM's batch
queue does. ``PREPACK_SOAK_STEPS`` sets the length (make test: 2,000 per scheduler under fcfs,
1,000 under priority; ``make soak``: 10,000).

Checked on every run: every request finishes (with all its tokens) or is aborted, never both,
never twice, and is admitted as new at most once; no KV block leaks; outputs equal stock's.
On the prepack schedulers also:

- the stretch deadline rule (fcfs scheduling policy): nothing admitted in a step queued once
  the prefill clock had passed the deadline of a request left waiting;
- grammar-ready requests are never starved: each is admitted, and within ``GRAMMAR_SLACK``
  schedule() calls of the longest wait of a plain request (arrival to admission) in the run,
  counted from its grammar's compile; under fcfs the deadline rule counts them too;
- priority classes (priority scheduling policy): in a step that preempted nothing, no request
  of a lower class is admitted while a plannable request of a higher class is left waiting
  (WAITING or PREEMPTED, or its grammar compiled), unless vLLM itself passes that request over
  (a preempted request whose in-flight output has not drained, vLLM's ``stale output`` skip).
  Stock vLLM keeps this rule too, and the soak checks it there as well. Some requests arrive
  long before (under priority only), so the tail bound takes them first within their class."""

from __future__ import annotations

import math
import os
import random
import time
from collections import deque
from unittest.mock import Mock

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from tests.harness.sched import make_request, make_scheduler, model_output
from vllm_prepack import compat
from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler
from vllm_prepack.config import PrepackConfig

PREPACK = (PrepackSyncScheduler, PrepackAsyncScheduler)

STEPS = int(os.environ.get("PREPACK_SOAK_STEPS", "2000"))
MAX_MODEL_LEN = 512
STRETCH = 2.0
GRAMMAR_SLACK = 16
"""A grammar-ready request waits (schedule() calls from its compile to its admission) at most
this many calls longer than the longest wait of a plain request from its arrival, in the
same run: never starved, whatever the backlog."""
AGE_S = 1e6
"""How long ago an aged request arrived (seconds): past any tail bound."""


def make_trace(seed: int, steps: int) -> list[list[tuple]]:
    """Per step, the events before it: ('add', id, prompt, max_tokens, priority, grammar,
    aged), ('abort', id). ``priority``: 0 or 1 (used under the priority policy); ``grammar``:
    None for a plain request, else the steps its grammar takes to compile; ``aged``: arrives
    already past the tail bound (under the priority policy). These come from a second
    generator, so the arrivals, prompts and aborts are those of ``seed`` alone."""
    rng = random.Random(seed)
    extra = random.Random(seed + 1_000_003)
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
                priority = extra.choice([0, 1, 1])
                grammar = extra.choice([0, 1, 5, 40]) if extra.random() < 0.1 else None
                aged = extra.random() < 0.05
                events.append(("add", f"s{n}", prompt, max_tokens, priority, grammar, aged))
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


def plannable(request) -> bool:
    """Waiting and schedulable now as vLLM sees it: WAITING or PREEMPTED, or its grammar
    compiled (vLLM promotes it when its admission loop reaches it), and not held back by
    vLLM's own skip of a request whose in-flight output has not drained."""
    if request.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR:
        ready = request.structured_output_request.grammar is not None
    else:
        ready = request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
    return ready and not (request.num_stale_output_tokens and not request.drop_stale_output)


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
                       and options.get("stretch", PrepackConfig.stretch) == STRETCH
                       and scheduling_policy == "fcfs")
    free_at_start = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    arrivals, max_tokens, aborted = {}, {}, set()
    priorities: dict[str, int] = {}
    compiling: dict[str, tuple[int, object]] = {}  # id -> (step its grammar is ready, request)
    ready_since: dict[str, int] = {}  # grammar compiled, not admitted: id -> schedule() calls
    admitted: set[str] = set()
    preempted: set[str] = set()  # preempted, not yet resumed
    queued_at: dict[str, int] = {}  # plain requests: id -> schedule() calls before arrival
    outputs: dict[str, int] = {}
    finished: dict[str, str] = {}
    stats = {"steps": 0, "preemptions": 0, "aborts": 0, "admissions": 0, "overtaken": 0,
             "due_waiting": 0, "grammar": 0, "grammar_admitted": 0, "grammar_wait_max": 0,
             "plain_wait_max": 0, "class_steps": 0, "class_inversions": 0, "tail_overdue": 0}
    in_flight: deque = deque()
    now0 = time.time()

    def deliver():
        out, emit = in_flight.popleft()
        ids = list(out.num_scheduled_tokens)
        sampled = [[7] if emit[r] else [] for r in ids]
        result = scheduler.update_from_output(out, model_output(ids, sampled))
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
                _, rid, prompt, mt, priority, grammar, aged = event
                # Under priority some arrive long ago: the tail bound takes them first, within
                # their class (the deadline rule checked under fcfs leaves the bound out).
                age = AGE_S if aged and scheduling_policy == "priority" else 0.0
                arrivals[rid] = now0 + step - age
                max_tokens[rid] = mt
                request = make_request(prompt, max_tokens=mt, arrival=now0 + step - age,
                                       req_id=rid)
                request.priority = priorities[rid] = (
                    priority if scheduling_policy == "priority" else 0)
                if grammar is not None:  # its grammar compiles `grammar` steps from now
                    request.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
                    request.structured_output_request = Mock(grammar=None)
                    compiling[rid] = (step + grammar, request)
                    stats["grammar"] += 1
                else:
                    queued_at[rid] = stats["steps"]
                scheduler.add_request(request)
            elif event[1] in scheduler.requests:
                scheduler.finish_requests(event[1], RequestStatus.FINISHED_ABORTED)
                aborted.add(event[1])
                ready_since.pop(event[1], None)
                compiling.pop(event[1], None)
                stats["aborts"] += 1
        for rid, (ready_at, request) in list(compiling.items()):
            if step >= ready_at:
                request.structured_output_request = Mock(grammar=object())
                ready_since[rid] = stats["steps"]
                del compiling[rid]
        step += 1
        if scheduler.has_unfinished_requests() and len(in_flight) < 2:
            # The prefill clock the planner measures deadlines on, before this step.
            clock = scheduler.prepack_clock if check_deadlines else None
            tail = getattr(scheduler, "_tail_wait", math.inf)
            if scheduling_policy == "priority" and tail < math.inf:
                cutoff = time.time() - tail
                stats["tail_overdue"] += sum(arrivals[r.request_id] <= cutoff
                                             for r in scheduler.waiting if plannable(r))
            out = scheduler.schedule()
            stats["steps"] += 1
            stats["preemptions"] += len(out.preempted_req_ids)
            # Resumed after preemption: apart from the new ones (0.32, 0.33), or among them
            # (0.34 sends a resumed request in full, as a new one).
            scheduled = [r.req_id for r in out.scheduled_new_reqs]
            resumed = [r for r in scheduled if r in preempted] + list(compat.resumed_req_ids(out))
            new = [r for r in scheduled if r not in preempted]
            preempted.difference_update(resumed)
            preempted.update(out.preempted_req_ids)
            stats["admissions"] += len(new)
            for rid in new:
                assert rid not in admitted, f"{rid} admitted twice"
                admitted.add(rid)
                request = scheduler.requests[rid]
                if request.structured_output_request is not None:
                    # Admitted: the grammar's decoding is not soaked here.
                    request.structured_output_request = None
                    stats["grammar_admitted"] += 1
                    wait = stats["steps"] - ready_since.pop(rid)
                    stats["grammar_wait_max"] = max(stats["grammar_wait_max"], wait)
                else:
                    wait = stats["steps"] - queued_at.pop(rid)
                    stats["plain_wait_max"] = max(stats["plain_wait_max"], wait)
            # Deadline rule: nothing admitted this step queued once the prefill clock had
            # passed the deadline of a request left waiting in a plannable state, a
            # grammar-ready one included (vLLM admits nothing in a step that preempted).
            if clock is not None:
                due_left = [deadline(r) for r in scheduler.waiting
                            if plannable(r) and deadline(r) <= clock]
                if due_left:
                    stats["due_waiting"] += 1
                    earliest = min(due_left)
                    stats["overtaken"] += sum(
                        queued_clock(scheduler.requests[r]) >= earliest for r in new)
            # Priority classes: nothing of a lower class admitted (new or resumed) while a
            # plannable request of a higher class is left waiting.
            taken = new + resumed
            if scheduling_policy == "priority" and taken and not out.preempted_req_ids:
                stats["class_steps"] += 1
                top_left = min((r.priority for r in scheduler.waiting if plannable(r)),
                               default=None)
                if top_left is not None:
                    stats["class_inversions"] += sum(priorities[r] > top_left for r in taken)
            emit = {r: not scheduler.requests[r].is_prefill_chunk
                    for r in out.num_scheduled_tokens}
            in_flight.append((out, emit))
            if len(in_flight) == 2 or not scheduler.has_unfinished_requests():
                deliver()
        elif in_flight:
            deliver()
    assert not scheduler.requests, "requests left in the scheduler"
    if cls in PREPACK:  # the statistics count vLLM's preemptions step by step
        assert scheduler.prepack_observer.preemptions == stats["preemptions"]
    assert not ready_since and not compiling, "grammar requests never admitted"
    free_at_end = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    return dict(stats=stats, outputs=outputs, finished=finished, aborted=aborted,
                max_tokens=max_tokens, free=(free_at_start, free_at_end))


def check_complete(run) -> None:
    """Every request finished with all its tokens or was aborted: none lost, none twice."""
    ids = set(run["max_tokens"])
    assert not set(run["finished"]) & run["aborted"], "finished and aborted"
    assert set(run["finished"]) | run["aborted"] == ids, sorted(
        ids - set(run["finished"]) - run["aborted"])[:10]
    for rid, mt in run["max_tokens"].items():
        if rid in run["aborted"]:
            continue
        assert run["finished"][rid] == "length", (rid, run["finished"][rid])
        assert run["outputs"][rid] == mt, (rid, run["outputs"][rid], mt)
    assert run["free"][0] == run["free"][1], "KV blocks leaked"


@pytest.fixture(autouse=True)
def _model_path(tiny_model, monkeypatch):
    monkeypatch.setenv("PREPACK_TEST_MODEL_PATH", tiny_model)


@pytest.mark.parametrize("scheduling_policy", ["fcfs", "priority"])
@pytest.mark.parametrize("ours, stock, async_scheduling", [
    (PrepackSyncScheduler, Scheduler, False),
    (PrepackAsyncScheduler, AsyncScheduler, True),
], ids=["sync", "async"])
def test_soak_nothing_lost_and_same_as_stock(ours, stock, async_scheduling, scheduling_policy):
    steps = STEPS if scheduling_policy == "fcfs" else max(200, STEPS // 2)
    trace = make_trace(seed=42, steps=steps)
    a = soak(ours, trace, async_scheduling=async_scheduling,
             scheduling_policy=scheduling_policy)
    b = soak(stock, trace, async_scheduling=async_scheduling,
             scheduling_policy=scheduling_policy)
    sa, sb = a["stats"], b["stats"]
    print(f"\n{ours.__name__} ({scheduling_policy}): {len(a['max_tokens'])} requests, {sa}"
          f"\n{stock.__name__} ({scheduling_policy}): {sb}")
    assert sa["preemptions"] > 0 and sa["aborts"] > 0
    assert sa["grammar_admitted"] > 0  # grammar-ready requests were put to the test
    assert sa["grammar_wait_max"] <= sa["plain_wait_max"] + GRAMMAR_SLACK, sa
    if scheduling_policy == "fcfs":
        assert sa["due_waiting"] > 0  # the deadline rule was put to the test
        assert sa["overtaken"] == 0
    else:
        assert sa["class_steps"] > 0 and sa["tail_overdue"] > 0  # classes and tail bound tested
        assert sa["class_inversions"] == 0 and sb["class_inversions"] == 0
    for run in (a, b):
        check_complete(run)
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
    KV block leaked, every output as long as stock's, grammar-ready requests admitted, and
    under priority no lower class admitted past a plannable higher one."""
    trace = make_trace(seed=7, steps=max(200, STEPS // 5))
    a = soak(PrepackSyncScheduler, trace, async_scheduling=False, options=options,
             scheduling_policy=scheduling_policy)
    b = soak(Scheduler, trace, async_scheduling=False, scheduling_policy=scheduling_policy)
    sa = a["stats"]
    assert sa["preemptions"] > 0 and sa["aborts"] > 0
    assert sa["grammar_wait_max"] <= sa["plain_wait_max"] + GRAMMAR_SLACK, sa
    assert sa["class_inversions"] == 0
    check_complete(a)
    both = set(a["max_tokens"]) - a["aborted"] - b["aborted"]
    assert {r: a["outputs"][r] for r in both} == {r: b["outputs"][r] for r in both}
