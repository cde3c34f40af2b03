"""The prepack scheduler against vLLM's real Scheduler and KV cache manager (no model), and its
waiting queue (PlanQueue) on real vLLM requests. In a real engine:
tests/e2e/test_scheduler_engine.py."""

from __future__ import annotations

import time

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from tests.harness.sched import bimodal_prompts, drain, make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import (
    PlanQueue,
    PrepackAsyncScheduler,
    PrepackScheduler,
    PrepackSyncScheduler,
    attach_observer,
)

SEEDS = (0, 1, 2)


def _run(cls, model, prompts, *, options=None, **kw):
    scheduler = make_scheduler(cls, model, additional_config={"prepack": options or {}}, **kw)
    now = time.time()
    requests = [make_request(p, arrival=now + i * 1e-6, req_id=f"q{i}")
                for i, p in enumerate(prompts)]
    return scheduler, drain(scheduler, requests)


def _step(scheduler):
    """One schedule() + update_from_output(); the ids admitted from the waiting queue."""
    out = scheduler.schedule()
    scheduler.update_from_output(out, runner_output(scheduler, out))
    return out, [r.req_id for r in out.scheduled_new_reqs]


def _candidate(request):
    return request._prepack_candidate  # the request as the planner saw it when it queued


def test_factory_picks_the_subclass_for_async_scheduling(tiny_model):
    sync = make_scheduler(PrepackScheduler, tiny_model, async_scheduling=False)
    asy = make_scheduler(PrepackScheduler, tiny_model, async_scheduling=True)
    assert type(sync) is PrepackSyncScheduler and isinstance(sync, Scheduler)
    assert type(asy) is PrepackAsyncScheduler and isinstance(asy, AsyncScheduler)
    assert isinstance(sync.waiting, PlanQueue) and isinstance(asy.waiting, PlanQueue)


# -- against stock vLLM ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", ["stretch", "fcfs"])
def test_chunking_off_sooner_first_tokens(tiny_model, seed, policy):
    """Without chunked prefill vLLM stops at the first prompt that does not fit; the plan
    packs the prompts that fit whole ahead of it. fcfs (arrival order, passing over) takes
    fewer steps; stretch serves short prompts first (the long ones' decode tail can cost a
    step)."""
    prompts = bimodal_prompts(seed)
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=False)
    scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=False,
                           options={"policy": policy})
    assert ours.finished == stock.finished
    assert len(ours.finished) == len(prompts)
    assert not ours.split_prompts and not stock.split_prompts
    if policy == "fcfs":
        assert ours.steps < stock.steps, (ours.steps, stock.steps)
    else:
        assert ours.steps <= stock.steps + 1, (ours.steps, stock.steps)
    ratio = ours.mean_first_token_step / stock.mean_first_token_step
    assert ratio <= 0.8, ratio
    observer = scheduler.prepack_observer
    assert observer.planned_steps > 0 and observer.overtakes > 0
    assert observer.summary()["plan_adherence"] == 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", ["stretch", "fcfs", "sjf", "hrrn"])
def test_chunking_on_no_more_splits_and_steps(tiny_model, seed, policy):
    """Every step is filled as vLLM fills it (whole prompts, then one chunk): no more steps
    than stock, sooner first tokens; fcfs passes over a prompt that does not fit whole
    instead of splitting it (fewer split prompts), the others split at most one more."""
    prompts = bimodal_prompts(seed)
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=True, budget=512,
                    max_model_len=1024)
    scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=True,
                           budget=512, max_model_len=1024, options={"policy": policy})
    assert len(ours.finished) == len(stock.finished) == len(prompts)
    assert scheduler.prepack_observer.summary()["plan_adherence"] == 1.0
    if policy == "fcfs":
        assert len(ours.split_prompts) < len(stock.split_prompts)
    else:
        assert len(ours.split_prompts) <= len(stock.split_prompts) + 1
    assert ours.steps <= stock.steps * 1.02, (ours.steps, stock.steps)
    assert ours.mean_first_token_step < stock.mean_first_token_step


@pytest.mark.parametrize("adaptive", [False, True])
def test_chunk_cap_is_charged_as_vllm_applies_it(tiny_model, adaptive):
    """With long_prefill_token_threshold vLLM schedules at most the cap of a prompt per step:
    the plan charges that, so long prompts are admitted for their capped share next to the
    short ones and vLLM takes exactly what was planned."""
    prompts = bimodal_prompts(6, n=40)
    cap = max(128, 512 // 40) if adaptive else 128

    def capped(cls):
        scheduler = make_scheduler(cls, tiny_model, chunked=True, budget=512)
        scheduler.scheduler_config.long_prefill_token_threshold = 128
        scheduler.scheduler_config.long_prefill_token_threshold_adaptive = adaptive
        scheduler.adaptive_long_prefill_threshold = adaptive
        now = time.time()
        return scheduler, [make_request(p, arrival=now + i * 1e-6, req_id=f"q{i}")
                           for i, p in enumerate(prompts)]

    scheduler, requests = capped(PrepackSyncScheduler)
    for r in requests:
        scheduler.add_request(r)
    out, admitted = _step(scheduler)
    assert max(out.num_scheduled_tokens.values()) <= cap
    assert out.total_num_scheduled_tokens == 512  # filled, the long prompts at their cap
    assert len(admitted) > 512 // cap
    stock = drain(*capped(Scheduler))
    scheduler, requests = capped(PrepackSyncScheduler)
    ours = drain(scheduler, requests)
    assert ours.finished == stock.finished and len(ours.finished) == len(prompts)
    summary = scheduler.prepack_observer.summary()
    assert summary["admitted"] == len(prompts) and summary["plan_adherence"] == 1.0


def test_shared_prefix_under_kv_pressure_completes_like_stock(tiny_model):
    import random

    rng = random.Random(7)
    prefixes = [[rng.randrange(3, 500) for _ in range(256)] for _ in range(4)]
    prompts = []
    for i in range(48):  # interleaved: A B C D A B C D ...
        prompts.append(prefixes[i % 4] + [rng.randrange(3, 500) for _ in range(rng.randint(8, 40))])
    kw = dict(chunked=True, budget=1024, prefix_caching=True, num_blocks=96, max_num_seqs=16)
    _, stock = _run(Scheduler, tiny_model, prompts, **kw)
    scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, **kw)
    assert len(ours.finished) == len(stock.finished) == len(prompts)
    assert ours.computed_prompt_tokens < sum(map(len, prompts))  # prefix-cache hits
    pool = scheduler.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == 96 - 1  # every block back (one null block)


def test_cost_is_net_of_the_prefix_cache_hit(tiny_model):
    """A request whose prefix is cached when it queues costs its uncached tokens: it gets an
    earlier deadline than a cold prompt of the same length that queued before it."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, prefix_caching=True)
    prefix = list(range(3, 3 + 320))
    now = time.time()
    drain(scheduler, [make_request(prefix + [400, 401], arrival=now, req_id="first")])
    cold = make_request(list(range(500, 500 + 330)), arrival=now + 1, req_id="cold")
    warm = make_request(prefix + [402] * 10, arrival=now + 2, req_id="warm")
    scheduler.add_request(cold)
    scheduler.add_request(warm)
    c, w = _candidate(cold), _candidate(warm)
    assert (c.cached, c.tokens) == (0, 330)
    assert w.cached == 320 and w.tokens == 10
    assert w.clock == c.clock == scheduler.prepack_clock > 0
    assert [r.request_id for r in scheduler.waiting.ordered()] == ["warm", "cold"]


def test_stock_observer_reports_alike(tiny_model):
    prompts = bimodal_prompts(0, n=24)
    scheduler = make_scheduler(Scheduler, tiny_model, chunked=True, budget=512)
    observer = attach_observer(scheduler)
    now = time.time()
    drain(scheduler, [make_request(p, arrival=now + i * 1e-6) for i, p in enumerate(prompts)])
    assert type(scheduler) is Scheduler
    s = observer.summary()
    assert s["admitted"] == 24 and s["prefill_tokens"] == sum(map(len, prompts))
    assert s["planned_steps"] == 0 and s["plan_adherence"] is None
    assert s["overtakes"] == 0  # stock admits in arrival order


# -- the order: stretch deadlines, arrival order, priority classes -----------------------------


def test_stretch_deadline_is_respected_under_sustained_arrivals(tiny_model):
    """A long prompt is overtaken by short ones while the prefill clock is before its
    deadline (clock at arrival + stretch x its tokens); once the clock passes it, nothing that
    queued later is admitted before it, and it is admitted although short prompts keep
    arriving faster than the engine computes them."""
    stretch = 2.0
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=256,
                               max_num_seqs=256, num_blocks=1 << 14,
                               additional_config={"prepack": {"stretch": stretch}})
    now = time.time()
    long = make_request([5] * 600, arrival=now, req_id="long")
    scheduler.add_request(long)
    deadline = _candidate(long).clock + stretch * _candidate(long).tokens
    queued_at: dict[str, int] = {}  # request -> prefill clock when it queued
    admitted_at = None  # prefill clock before the step that admitted the long prompt
    overtook = []
    for step in range(60):
        for i in range(3):  # 300 prompt tokens arrive per 256-token step
            r = make_request([7 + step % 50] * 100, arrival=now + 1 + step + i / 10,
                             req_id=f"s{step}.{i}")
            scheduler.add_request(r)
            queued_at[r.request_id] = scheduler.prepack_clock
        clock = scheduler.prepack_clock
        _, new = _step(scheduler)
        before = new[: new.index("long")] if "long" in new else new
        if clock < deadline:
            overtook += before
        else:  # the long prompt is due: only requests that queued before then go first
            assert all(queued_at[r] < deadline for r in before), (step, before)
        if "long" in new:
            admitted_at = clock
            break
    assert overtook, "short prompts never overtook"
    assert admitted_at is not None, "the long prompt was never admitted"
    assert admitted_at >= deadline - 256  # overtaken until about its deadline
    # Bounded: at most a step past the deadline, a chunk left over, and what queued ahead.
    ahead = 100 * sum(q < deadline for q in queued_at.values())
    assert admitted_at <= deadline + 256 + 100 + ahead, (admitted_at, deadline, ahead)


def test_stretch_zero_admits_in_arrival_order(tiny_model):
    prompts = bimodal_prompts(3, n=40)
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=512,
                               additional_config={"prepack": {"stretch": 0}})
    now = time.time()
    requests = [make_request(p, arrival=now + i * 1e-6, req_id=f"q{i}")
                for i, p in enumerate(prompts)]
    for r in requests:
        scheduler.add_request(r)
    order = []
    while scheduler.has_unfinished_requests():
        order.extend(_step(scheduler)[1])
    assert order == [r.request_id for r in requests]
    assert scheduler.prepack_observer.overtakes == 0


def test_priority_classes_first_then_the_planner_order(tiny_model):
    """Under --scheduling-policy priority the queue keeps vLLM's classes: a higher-priority
    request (lower value) goes before every lower-priority one, whatever it costs; within a
    class the planner's order applies (stretch: the short prompt before the long one)."""
    now = time.time()

    def requests():
        spec = [("lo-long", 400, 1), ("lo-short", 50, 1), ("hi", 300, 0)]
        out = []
        for i, (rid, n, priority) in enumerate(spec):
            r = make_request([9 + i] * n, arrival=now + i, req_id=rid)
            r.priority = priority
            out.append(r)
        return out

    first = {}
    for cls in (Scheduler, PrepackSyncScheduler):
        scheduler = make_scheduler(cls, tiny_model, chunked=True, budget=512,
                                   policy="priority")
        for r in requests():
            scheduler.add_request(r)
        out, first[cls] = _step(scheduler)
        if cls is PrepackSyncScheduler:
            assert out.num_scheduled_tokens == {"hi": 300, "lo-short": 50, "lo-long": 162}
    assert first[Scheduler] == ["hi", "lo-long"]  # vLLM: arrival order within a class
    assert first[PrepackSyncScheduler] == ["hi", "lo-short", "lo-long"]
    # Draining a larger mix under priority finishes everything, as stock does.
    prompts = bimodal_prompts(4, n=30)
    results = {}
    for cls in (Scheduler, PrepackSyncScheduler):
        scheduler = make_scheduler(cls, tiny_model, chunked=True, budget=512,
                                   policy="priority")
        reqs = []
        for i, p in enumerate(prompts):
            r = make_request(p, arrival=now + i * 1e-6, req_id=f"p{i}")
            r.priority = i % 3
            reqs.append(r)
        results[cls] = drain(scheduler, reqs)
    assert results[PrepackSyncScheduler].finished == results[Scheduler].finished
    assert len(results[Scheduler].finished) == len(prompts)


def test_due_request_behind_the_lookahead_window_in_queue_order_is_planned(tiny_model):
    """The planner looks at the head of the queue's order, not at the order requests were
    queued in: the oldest request (fcfs), queued last behind more requests than the lookahead
    window, is admitted first."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=512,
                               additional_config={"prepack": {"lookahead": 4,
                                                              "policy": "fcfs"}})
    now = time.time()
    young = [make_request([7] * 100, arrival=now + i, req_id=f"y{i}") for i in range(8)]
    old = make_request([7] * 400, arrival=now - 60, req_id="old")  # queued last
    for r in [*young, old]:
        scheduler.add_request(r)
    out, admitted = _step(scheduler)
    assert admitted == ["old", "y0", "y1"], admitted
    # 400 + 100 whole, then the rest of the step to the next one as a chunk.
    assert out.num_scheduled_tokens == {"old": 400, "y0": 100, "y1": 12}


def test_planner_fault_falls_back_to_the_queue_order_for_the_step(tiny_model, monkeypatch):
    from vllm_prepack.adapters import scheduler as adapter

    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("injected planner fault")

    prompts = bimodal_prompts(5, n=30)
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=True, budget=512)
    for policy in ("fcfs", "stretch"):
        calls["n"] = 0
        monkeypatch.setattr(adapter.planner, "plan", broken)
        scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=True,
                               budget=512, options={"policy": policy})
        monkeypatch.undo()
        assert calls["n"] > 0
        assert scheduler.prepack_observer.planner_faults == calls["n"]
        assert scheduler.prepack_observer.planned_steps == 0
        assert ours.finished == stock.finished and len(ours.finished) == len(prompts)
        if policy == "fcfs":  # the queue in arrival order: vLLM's own admission
            assert ours.first_token_step == stock.first_token_step


# -- PlanQueue on real vLLM requests -----------------------------------------------------------


def _sjf_place(request):
    """A place as the adapter computes one: preempted first, then fewest tokens, arrival."""
    return (request.status != RequestStatus.PREEMPTED, request.num_prompt_tokens,
            request.arrival_time)


def _queue(*spec):
    """A PlanQueue and requests (id, prompt tokens, arrival), added in the given order."""
    q = PlanQueue(_sjf_place)
    rs = {rid: make_request([5] * n, arrival=a, req_id=rid) for rid, n, a in spec}
    for r in rs.values():
        q.add_request(r)
    return q, rs


def _ids(requests):
    return [r.request_id for r in requests]


def test_plan_queue_keeps_its_order_whatever_the_insertion_order():
    q, rs = _queue(("c", 30, 3.0), ("a", 10, 1.0), ("b", 20, 2.0), ("a2", 10, 0.5))
    assert len(q) == 4 and bool(q)
    assert _ids(q) == _ids(q.ordered()) == ["a2", "a", "b", "c"]
    assert q.peek_request() is rs["a2"]
    assert q.pop_request() is rs["a2"] and len(q) == 3
    assert _ids(q) == ["a", "b", "c"]
    q.remove_request(rs["b"])
    assert _ids(q) == ["a", "c"] and len(q) == 2
    q.remove_requests([rs["a"], rs["c"]])
    assert not q and len(q) == 0 and list(q) == []
    with pytest.raises(IndexError):
        q.peek_request()
    with pytest.raises(IndexError):
        q.pop_request()
    with pytest.raises(ValueError, match="request c is not in the waiting queue"):
        q.remove_request(rs["c"])
    # As vLLM's own queues: removing several passes over those not in the queue (vLLM removes
    # finished requests from each of its waiting queues in turn).
    q.add_request(rs["b"])
    q.remove_requests([rs["a"], rs["b"], rs["c"]])
    assert not q and len(q) == 0


@pytest.mark.parametrize("cls", [PrepackSyncScheduler, PrepackAsyncScheduler])
def test_aborting_a_request_waiting_in_vllms_other_queue_finishes_it(tiny_model, cls):
    """vLLM's ``finish_requests`` removes aborted waiting requests from each of its waiting
    queues in turn: one that waits in ``kv_holding_waiting`` (holding KV blocks, e.g. for a
    connector's load) is not in the PlanQueue, and the abort must still go through."""
    scheduler = make_scheduler(cls, tiny_model)
    queued, holding = make_request([5] * 40, req_id="queued"), make_request([6] * 40, req_id="held")
    scheduler.add_request(queued)
    scheduler.requests[holding.request_id] = holding
    scheduler.kv_holding_waiting.add_request(holding)
    scheduler.finish_requests(["held", "queued"], RequestStatus.FINISHED_ABORTED)
    assert not scheduler.waiting and not scheduler.kv_holding_waiting
    assert holding.status == queued.status == RequestStatus.FINISHED_ABORTED
    assert not scheduler.has_unfinished_requests()


def test_plan_queue_equal_places_keep_insertion_order():
    q, _ = _queue(*[(f"r{i}", 10, 1.0) for i in range(6)])
    assert _ids(q) == [f"r{i}" for i in range(6)]


def test_plan_queue_skipped_requests_keep_their_place_preempted_take_a_new_one():
    q, rs = _queue(("a", 10, 1.0), ("b", 20, 2.0), ("c", 30, 3.0))
    # vLLM pops a request it cannot schedule yet and prepends it after the step: it goes
    # back to its own place (not the head), ties included.
    b = rs["b"]
    q.remove_request(b)
    q.prepend_request(b)
    assert _ids(q) == ["a", "b", "c"]
    head = q.pop_request()
    q.prepend_requests([head])
    assert _ids(q) == ["a", "b", "c"]
    # A preempted request takes a new place: its place is computed again (here: the head).
    c = rs["c"]
    q.remove_request(c)
    c.status = RequestStatus.PREEMPTED
    q.prepend_request(c)
    assert _ids(q) == ["c", "a", "b"]
    c.status = RequestStatus.WAITING
    q.remove_request(c)
    q.add_request(c)  # re-queued while its entry is kept: the preempted place stays
    assert _ids(q) == ["c", "a", "b"]


def test_plan_queue_presents_the_plan_first_then_the_order():
    q, rs = _queue(("a", 10, 1.0), ("b", 20, 2.0), ("c", 30, 3.0), ("d", 40, 4.0))
    q.present([rs["d"], rs["b"]])
    assert _ids(q) == ["d", "b", "a", "c"]  # nothing twice
    assert _ids(q.ordered()) == ["a", "b", "c", "d"]
    assert len(q) == 4 and q.peek_request() is rs["d"]
    assert q.pop_request() is rs["d"]
    # A presented request removed meanwhile (aborted) is passed over, lazily.
    q.remove_request(rs["b"])
    assert q.peek_request() is rs["a"] and _ids(q) == ["a", "c"]
    q.present([rs["c"]])
    assert q.pop_request() is rs["c"] and q.pop_request() is rs["a"]
    assert not q
    q.add_request(rs["a"])
    q.present([])
    assert _ids(q) == ["a"]


def test_plan_queue_oldest_arrival_with_lazy_deletion():
    q, rs = _queue(("short", 10, 5.0), ("old", 50, 1.0), ("mid", 20, 3.0))
    assert q.oldest_arrival() == 1.0
    q.remove_request(rs["old"])
    assert q.oldest_arrival() == 3.0
    q.prepend_request(rs["old"])  # back, same place
    assert q.oldest_arrival() == 1.0
    q.remove_request(rs["old"])
    rs["old"].status = RequestStatus.PREEMPTED
    q.prepend_request(rs["old"])  # a new entry: the stale one must not count twice
    q.remove_request(rs["old"])
    assert q.oldest_arrival() == 3.0
    q.remove_requests([rs["mid"], rs["short"]])
    assert q.oldest_arrival() is None
    # The heap of arrivals does not keep what it no longer needs once read.
    assert q._arrivals == []


def test_plan_queue_is_indexed_like_vllms_fcfs_queue():
    """vLLM's FCFS waiting queue is a deque: ``scheduler.waiting[i]`` (vLLM's own
    ``test_scheduler_reset_prefix_cache`` reads it so). The index follows iteration order."""
    q, rs = _queue(("c", 30, 3.0), ("a", 10, 1.0), ("b", 20, 2.0))
    assert [q[i] for i in range(len(q))] == list(q) == [rs["a"], rs["b"], rs["c"]]
    assert q[-1] is rs["c"] and q[1:] == [rs["b"], rs["c"]]
    with pytest.raises(IndexError):
        q[3]
    q.present([rs["c"]])
    assert q[0] is rs["c"] and q[1] is rs["a"] and q[-1] is rs["b"]
    q.present([])
    assert q[0] is rs["a"]


@pytest.mark.parametrize("cls", [Scheduler, PrepackSyncScheduler])
def test_reset_prefix_cache_requeues_the_running_requests_in_order(tiny_model, cls):
    """reset_prefix_cache(reset_running_requests=True) preempts every running request back
    into the waiting queue: they wait in their running order, as in stock vLLM."""
    scheduler = make_scheduler(cls, tiny_model, prefix_caching=True)
    now = time.time()
    requests = [make_request([7 + i] * 16, arrival=now + i * 1e-6, req_id=f"r{i}")
                for i in range(10)]
    for r in requests:
        scheduler.add_request(r)
    scheduler.schedule()
    assert list(scheduler.running) == requests and not scheduler.waiting
    assert scheduler.reset_prefix_cache(reset_running_requests=True)
    assert not scheduler.running and len(scheduler.waiting) == len(requests)
    assert [scheduler.waiting[i] for i in range(len(requests))] == requests
    assert list(scheduler.waiting) == requests


def test_bad_options_fail_before_vllm_builds_the_scheduler(tiny_model, monkeypatch):
    from vllm_prepack.config import PrepackConfigError

    built = []
    monkeypatch.setattr(Scheduler, "__init__", lambda self, *a, **k: built.append(self))
    with pytest.raises(PrepackConfigError,
                       match="invalid prepack policy 'lifo'; accepted: stretch, fcfs, sjf, hrrn"):
        make_scheduler(PrepackSyncScheduler, tiny_model,
                       additional_config={"prepack": {"policy": "lifo"}})
    with pytest.raises(PrepackConfigError, match=r"unknown prepack option\(s\) \['bogus'\]"):
        make_scheduler(PrepackSyncScheduler, tiny_model,
                       additional_config={"prepack": {"bogus": 1}})
    assert not built


@pytest.mark.parametrize("cls", [Scheduler, PrepackSyncScheduler, PrepackAsyncScheduler])
def test_grammar_ready_request_is_not_starved(tiny_model, cls):
    """A structured-output request whose grammar is ready is admitted as vLLM would admit
    it, and the aging bound applies to it: max_num_seqs=4, a 64-token budget, the request
    waited 60 s, four new 8-token requests arrive every step. Stock admits it at step 0."""
    from unittest.mock import Mock

    from vllm.v1.request import RequestStatus

    from tests.harness.sched import runner_output

    scheduler = make_scheduler(cls, tiny_model, budget=64, max_num_seqs=4,
                               async_scheduling=cls is PrepackAsyncScheduler)
    old = make_request([7] * 8, arrival=time.time() - 60, req_id="grammar", max_tokens=1)
    old.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    old.structured_output_request = Mock(grammar=None)  # still compiling
    scheduler.add_request(old)
    admitted_at = None
    for step in range(40):
        if step == 1:
            old.structured_output_request = Mock(grammar=object())  # compiled
        for i in range(4):
            scheduler.add_request(make_request([7] * 8, arrival=time.time(),
                                               req_id=f"s{step}.{i}", max_tokens=1))
        out = scheduler.schedule()
        if "grammar" in {r.req_id for r in out.scheduled_new_reqs}:
            admitted_at = step
            break
        scheduler.update_from_output(out, runner_output(scheduler, out))
    assert admitted_at == 1, (admitted_at, old.status)


def test_lower_class_waits_while_a_higher_one_is_left_waiting(tiny_model):
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, policy="priority",
                               budget=256)
    now = time.time()
    for i, (rid, priority, n) in enumerate([("hi_a", 0, 200), ("hi_b", 0, 100),
                                            ("lo", 1, 10)]):
        r = make_request([7] * n, arrival=now + i * 1e-3, req_id=rid)
        r.priority = priority
        scheduler.add_request(r)
    out = scheduler.schedule()
    # Class 0 first: "hi_b" whole (the earlier deadline), then "hi_a" chunked with the 156
    # tokens left; "lo" would fit in front of that chunk but is of a lower class: it waits.
    assert [r.req_id for r in out.scheduled_new_reqs] == ["hi_b", "hi_a"]
    assert out.num_scheduled_tokens["hi_a"] == 156


@pytest.mark.parametrize("cls", [Scheduler, PrepackSyncScheduler])
def test_tail_bound_keeps_priority_classes(tiny_model, cls):
    """Under --scheduling-policy priority, a request overdue by the tail bound goes to the
    head of its own class, never ahead of a waiting request of a higher class: with a
    200-token budget, the class-0 request is admitted whole, as stock does, and the overdue
    class-1 request waits."""
    scheduler = make_scheduler(cls, tiny_model, policy="priority", budget=200)
    now = time.time()
    for rid, priority, arrival in [("lo_old", 1, now - 60), ("hi", 0, now), ("lo", 1, now)]:
        r = make_request([7] * 200, arrival=arrival, req_id=rid)
        r.priority = priority
        scheduler.add_request(r)
    if cls is PrepackSyncScheduler:
        scheduler._tail_wait = 10.0  # "lo_old" waited past the tail bound
    out = scheduler.schedule()
    assert [r.req_id for r in out.scheduled_new_reqs] == ["hi"]
    assert out.num_scheduled_tokens == {"hi": 200}
    if cls is PrepackSyncScheduler:
        assert [r.request_id for r in scheduler.waiting] == ["lo_old", "lo"]


def test_shutdown_leaves_every_step_in_the_statistics_file(tiny_model, tmp_path):
    """The file's thread writes every 0.5 s; vLLM's engine core calls ``shutdown()`` on its way
    out (a process it runs in exits without ``atexit``), and by then every step is in the file."""
    path = tmp_path / "stats.jsonl"
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model,
                               additional_config={"prepack": {"stats_path": str(path)}})
    scheduler.add_request(make_request([5] * 40, max_tokens=3))
    steps = 0
    while scheduler.has_requests():
        _step(scheduler)
        steps += 1
    scheduler.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == steps == scheduler.prepack_observer.steps
    assert not scheduler.prepack_observer.jsonl._thread.is_alive()


# -- KV pressure: the oldest request's blocks ---------------------------------------------------


def _first_step_of(cls, tiny_model, options=None) -> tuple[int, list[str]]:
    """KV-bound: four running prompts hold most of the cache and finish one after another; a
    long prompt queues, then a short one every step. Returns the step that first schedules the
    long prompt and the requests admitted before it."""
    scheduler = make_scheduler(cls, tiny_model, chunked=True, budget=256, num_blocks=49,
                               additional_config={"prepack": options or {}})
    now = time.time()
    for i in range(4):  # 10 blocks each, finishing after 12, 24, 36, 48 decode steps
        scheduler.add_request(make_request([3 + i] * 160, max_tokens=12 * (i + 1),
                                           arrival=now + i, req_id=f"hog{i}"))
    while scheduler.waiting:
        _step(scheduler)
    scheduler.add_request(make_request([9] * 320, max_tokens=4, arrival=now + 10, req_id="long"))
    before: list[str] = []
    for step in range(1, 200):
        scheduler.add_request(make_request([11 + step] * 16, max_tokens=40,
                                           arrival=now + 10 + step, req_id=f"short{step}"))
        _, new = _step(scheduler)
        if "long" in new:
            return step, before + new[: new.index("long")]
        before += new
    raise AssertionError("the long prompt was never scheduled")


def test_under_kv_pressure_the_oldest_is_scheduled_when_stock_schedules_it(tiny_model):
    """The free blocks gather for the oldest waiting request (``kv_reserve=oldest``, the
    default): it is scheduled at the step stock vLLM schedules it, short prompts that queued
    after it taking only blocks it cannot use. With ``kv_reserve=off`` they take every block
    that frees and the long prompt waits for its deadline."""
    stock_step, stock_before = _first_step_of(Scheduler, tiny_model)
    step, _ = _first_step_of(PrepackSyncScheduler, tiny_model)
    off_step, off_before = _first_step_of(PrepackSyncScheduler, tiny_model, {"kv_reserve": "off"})
    assert stock_before == []  # FCFS: nothing that queued after it goes first
    assert step <= stock_step
    assert off_step > stock_step and off_before  # the starvation the reserve prevents
