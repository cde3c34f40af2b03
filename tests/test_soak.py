"""Randomized soak of the prepack schedulers against vLLM's real scheduler and KV cache
manager (no model): arrivals, finishes, aborts, preemptions from a tiny KV cache, prompts of
length 1 and max_model_len - 1, shared prefixes, structured-output requests whose grammar
compiles some steps after arrival, two priority classes (under ``--scheduling-policy
priority``; ignored under fcfs), two schedules in flight as vLLM's batch queue does.
``PREPACK_SOAK_STEPS`` sets the length (make test: 2,000 per scheduler and policy;
``make soak``: 10,000)."""

from __future__ import annotations

import os
import random
import time
from collections import deque
from unittest.mock import Mock

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import RequestStatus

from benchmarks.sched_sim import make_request, make_scheduler
from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler

STEPS = int(os.environ.get("PREPACK_SOAK_STEPS", "2000"))
MAX_MODEL_LEN = 512
MAX_WAIT_S = 30.0


def make_trace(seed: int, steps: int) -> list[list[tuple]]:
    """Per step, the events before it: ('add', id, prompt, max_tokens, age_s, priority,
    grammar_steps), ('abort', id). ``grammar_steps``: None for a plain request, else the steps
    its grammar takes to compile."""
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
                age = 100.0 if rng.random() < 0.05 else 0.0  # some arrive already aged
                priority = rng.choice([0, 1, 1])
                grammar = rng.choice([0, 1, 5, 40]) if rng.random() < 0.1 else None
                events.append(("add", f"s{n}", prompt, max_tokens, age, priority, grammar))
                n += 1
        if n and rng.random() < 0.05:
            events.append(("abort", f"s{rng.randrange(n)}"))
        trace.append(events)
    return trace


def soak(cls, trace, *, async_scheduling: bool, policy: str = "fcfs"):
    scheduler = make_scheduler(
        cls, os.environ["PREPACK_TEST_MODEL_PATH"], budget=256, max_num_seqs=16,
        num_blocks=48, chunked=True, prefix_caching=True, max_model_len=MAX_MODEL_LEN,
        async_scheduling=async_scheduling, policy=policy,
        additional_config={"prepack": {"max_wait_s": MAX_WAIT_S}},
    )
    priorities: dict[str, int] = {}
    compiling: dict[str, tuple[int, object]] = {}  # id -> (step its grammar is ready, req)
    free_at_start = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    arrivals, max_tokens, aborted = {}, {}, set()
    outputs: dict[str, int] = {}
    finished: dict[str, str] = {}
    stats = {"steps": 0, "preemptions": 0, "aborts": 0, "admissions": 0, "overtaken": 0,
             "grammar": 0}
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
                _, rid, prompt, mt, age, priority, grammar = event
                arrivals[rid] = now0 - age
                max_tokens[rid] = mt
                request = make_request(prompt, max_tokens=mt, arrival=now0 - age, req_id=rid)
                request.priority = priorities[rid] = priority if policy == "priority" else 0
                if grammar is not None:  # compiled `grammar` steps from now
                    request.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
                    request.structured_output_request = Mock(grammar=None)
                    compiling[rid] = (step + grammar, request)
                    stats["grammar"] += 1
                scheduler.add_request(request)
            elif event[1] in scheduler.requests:
                scheduler.finish_requests(event[1], RequestStatus.FINISHED_ABORTED)
                aborted.add(event[1])
                stats["aborts"] += 1
        for rid, (ready_at, request) in list(compiling.items()):
            if step >= ready_at:
                request.structured_output_request = Mock(grammar=object())
                del compiling[rid]
        step += 1
        if scheduler.has_unfinished_requests() and len(in_flight) < 2:
            # Taken before schedule(): whatever is aged now, the planner saw aged too (a
            # clock read after it could count a request that aged during the step).
            now = time.time()
            out = scheduler.schedule()
            for r in out.scheduled_new_reqs:  # admitted: its grammar's decoding is not
                scheduler.requests[r.req_id].structured_output_request = None  # soaked here
            stats["steps"] += 1
            stats["preemptions"] += len(out.preempted_req_ids)
            new = [r.req_id for r in out.scheduled_new_reqs]
            stats["admissions"] += len(new)
            # Aging rule: nothing admitted this step arrived after an aged request left
            # waiting in a plannable state (a grammar-ready one included) and was of its
            # priority class or a lower one (vLLM admits nothing in a step that preempted).
            waiting_aged = [r.request_id for r in scheduler.waiting
                            if (r.status == RequestStatus.WAITING or (
                                r.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
                                and r.structured_output_request.grammar is not None))
                            and now - arrivals[r.request_id] >= MAX_WAIT_S]
            for w in waiting_aged:
                stats["overtaken"] += sum(arrivals[r] > arrivals[w]
                                          and priorities[r] >= priorities[w] for r in new)
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


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("ours, stock, async_scheduling", [
    (PrepackSyncScheduler, Scheduler, False),
    (PrepackAsyncScheduler, AsyncScheduler, True),
], ids=["sync", "async"])
def test_soak_nothing_lost_and_same_as_stock(ours, stock, async_scheduling, policy):
    trace = make_trace(seed=42, steps=STEPS)
    a = soak(ours, trace, async_scheduling=async_scheduling, policy=policy)
    b = soak(stock, trace, async_scheduling=async_scheduling, policy=policy)
    sa = a["stats"]
    print(f"\n{ours.__name__} ({policy}): {len(a['max_tokens'])} requests, {sa}")
    assert sa["preemptions"] > 0 and sa["aborts"] > 0 and sa["grammar"] > 0
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
