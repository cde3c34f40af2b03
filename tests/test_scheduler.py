"""The prepack scheduler against vLLM's real Scheduler and KV cache manager (no model), and
in a real engine."""

from __future__ import annotations

import time

import pytest
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from benchmarks.sched_sim import bimodal_prompts, drain, make_request, make_scheduler
from vllm_prepack.adapters.scheduler import (
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


def test_factory_picks_the_subclass_for_async_scheduling(tiny_model):
    sync = make_scheduler(PrepackScheduler, tiny_model, async_scheduling=False)
    asy = make_scheduler(PrepackScheduler, tiny_model, async_scheduling=True)
    assert type(sync) is PrepackSyncScheduler and isinstance(sync, Scheduler)
    assert type(asy) is PrepackAsyncScheduler and isinstance(asy, AsyncScheduler)


@pytest.mark.parametrize("cls", [PrepackSyncScheduler, PrepackAsyncScheduler])
def test_priority_classes_first_prepack_order_within_a_class(tiny_model, cls):
    """--scheduling-policy priority: a class is admitted only after every request of the
    classes before it (vLLM's semantics); shortest first within a class (ours)."""
    scheduler = make_scheduler(cls, tiny_model, policy="priority", budget=512,
                               async_scheduling=cls is PrepackAsyncScheduler)
    assert type(scheduler) is cls
    now = time.time()
    spec = [("lo_long", 1, 300), ("hi_long", 0, 200), ("lo_short", 1, 20),
            ("hi_short", 0, 50), ("hi_mid", 0, 100)]
    for i, (rid, priority, n) in enumerate(spec):
        r = make_request([7] * n, arrival=now + i * 1e-3, req_id=rid)
        r.priority = priority
        scheduler.add_request(r)
    out = scheduler.schedule()
    # 50 + 100 + 200 = 350 of 512: class 0 whole, then class 1 shortest first (20 fits,
    # 300 does not).
    assert [r.req_id for r in out.scheduled_new_reqs] == [
        "hi_short", "hi_mid", "hi_long", "lo_short"]


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
    # One of class 0 runs (the pack that fills more: 200), the other is left waiting, so
    # "lo" waits too although it would fit.
    assert [r.req_id for r in out.scheduled_new_reqs] == ["hi_a"]


def test_bad_options_fail_before_vllm_builds_the_scheduler(tiny_model, monkeypatch):
    from vllm_prepack.config import PrepackConfigError

    built = []
    monkeypatch.setattr(Scheduler, "__init__", lambda self, *a, **k: built.append(self))
    with pytest.raises(PrepackConfigError,
                       match="invalid prepack policy 'lifo'; accepted: ttft, fcfs"):
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

    from benchmarks.sched_sim import runner_output

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


@pytest.mark.parametrize("seed", SEEDS)
def test_chunking_off_fewer_steps_and_sooner_first_tokens(tiny_model, seed):
    prompts = bimodal_prompts(seed)
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=False)
    scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=False)
    assert ours.finished == stock.finished
    assert len(ours.finished) == len(prompts)
    assert ours.steps < stock.steps, (ours.steps, stock.steps)
    ratio = ours.mean_first_token_step / stock.mean_first_token_step
    assert ratio <= 0.8, ratio
    assert scheduler.prepack_observer.planned_steps > 0
    assert scheduler.prepack_observer.overtakes > 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("split", ["whole", "fill"])
def test_chunking_on_no_more_splits_and_steps(tiny_model, seed, split):
    prompts = bimodal_prompts(seed)
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=True, budget=512,
                    max_model_len=1024)
    _, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=True, budget=512,
                   max_model_len=1024, options={"split": split})
    assert len(ours.finished) == len(stock.finished) == len(prompts)
    if split == "whole":  # the default: fewer split prompts
        assert len(ours.split_prompts) < len(stock.split_prompts)
    else:  # vLLM's own fill-by-splitting, in another order: within one prompt of stock
        assert len(ours.split_prompts) <= len(stock.split_prompts) + 1
    assert ours.steps <= stock.steps * 1.02, (ours.steps, stock.steps)
    assert ours.mean_first_token_step < stock.mean_first_token_step


def test_shared_prefix_under_kv_pressure_computes_fewer_tokens(tiny_model):
    import random

    rng = random.Random(7)
    prefixes = [[rng.randrange(3, 500) for _ in range(256)] for _ in range(4)]
    prompts = []
    for i in range(48):  # interleaved: A B C D A B C D ...
        prompts.append(prefixes[i % 4] + [rng.randrange(3, 500) for _ in range(rng.randint(8, 40))])
    kw = dict(chunked=True, budget=1024, prefix_caching=True, num_blocks=96, max_num_seqs=16)
    _, stock = _run(Scheduler, tiny_model, prompts, **kw)
    _, ours = _run(PrepackSyncScheduler, tiny_model, prompts, **kw)
    assert len(ours.finished) == len(stock.finished) == len(prompts)
    assert ours.computed_prompt_tokens < stock.computed_prompt_tokens, (
        ours.computed_prompt_tokens, stock.computed_prompt_tokens)


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


def test_aging_bound_is_respected(tiny_model):
    """Old requests (past max_wait_s) are admitted in arrival order before any younger one."""
    prompts = bimodal_prompts(3, n=40)
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=512,
                               additional_config={"prepack": {"max_wait_s": 5.0}})
    now = time.time()
    old = [make_request(p, arrival=now - 60 + i) for i, p in enumerate(prompts[:10])]
    young = [make_request(p, arrival=now + i * 1e-6) for i, p in enumerate(prompts[10:])]
    order = []
    for r in old + young:
        scheduler.add_request(r)
    from benchmarks.sched_sim import runner_output

    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        order.extend(r.req_id for r in out.scheduled_new_reqs)
        scheduler.update_from_output(out, runner_output(scheduler, out))
    old_ids = [r.request_id for r in old]
    assert order[: len(old_ids)] == old_ids
    assert len(order) == len(prompts) and len(set(order)) == len(order)


def test_planner_fault_falls_back_to_vllm_for_the_step(tiny_model, monkeypatch):
    from vllm_prepack.adapters import scheduler as adapter

    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("injected planner fault")

    monkeypatch.setattr(adapter.planner, "plan", broken)
    prompts = bimodal_prompts(5, n=30)
    scheduler, ours = _run(PrepackSyncScheduler, tiny_model, prompts, chunked=True, budget=512)
    monkeypatch.undo()
    _, stock = _run(Scheduler, tiny_model, prompts, chunked=True, budget=512)
    assert calls["n"] > 0
    assert scheduler.prepack_observer.planner_faults == calls["n"]
    assert ours.finished == stock.finished and len(ours.finished) == len(prompts)
    assert ours.first_token_step == stock.first_token_step  # vLLM's own admission ran


@pytest.mark.engine
def test_every_policy_token_identical_in_a_real_engine(tiny_model, engine_lock):
    """Each policy and split mode, in a real CPU engine (fp32, eager): greedy output equals
    stock vLLM's, and the engine core ran our class with its counters moving."""
    import gc

    from conftest import ENGINE_ARGS, MAX_MODEL_LEN, random_prompts
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack

    prompts = [TokensPrompt(prompt_token_ids=p)
               for p in random_prompts(40, seed=9, max_len=MAX_MODEL_LEN - 8)]
    params = SamplingParams(temperature=0, max_tokens=6)

    def run(**kwargs):
        llm = LLM(tiny_model, **ENGINE_ARGS, max_num_batched_tokens=1024, **kwargs)
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        outs = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params,
                                                                   use_tqdm=False)]
        summary = getattr(scheduler, "prepack_observer", None)
        result = outs, type(scheduler), summary and summary.summary()
        del llm, scheduler
        gc.collect()
        return result

    stock, stock_cls, _ = run()
    assert stock_cls is Scheduler
    for policy in ("ttft", "fcfs"):
        for split in ("whole", "fill"):
            ours, cls, summary = run(**vllm_prepack.engine_kwargs(policy=policy, split=split))
            assert cls is PrepackSyncScheduler
            assert summary["planned_steps"] > 0 and summary["admitted"] == len(prompts)
            assert summary["plan_adherence"] > 0.5
            if policy == "ttft":
                assert summary["overtakes"] > 0  # the order really changed
            assert ours == stock, (policy, split)


def test_aged_request_behind_the_lookahead_window_is_not_overtaken(tiny_model):
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=512,
                               additional_config={"prepack": {"lookahead": 4,
                                                              "max_wait_s": 5.0}})
    now = time.time()
    young = [make_request([7] * 100, arrival=now, req_id=f"y{i}") for i in range(8)]
    old = make_request([7] * 400, arrival=now - 60, req_id="old")  # queued last, aged
    for r in [*young, old]:
        scheduler.add_request(r)
    out = scheduler.schedule()
    admitted = [r.req_id for r in out.scheduled_new_reqs]
    assert admitted[0] == "old", admitted
    assert len(admitted) == 2  # 400 + 100 fill the 512-token step; no younger one jumps it


def test_restore_puts_back_only_what_vllm_left_waiting():
    """A blocked request that vLLM admitted during the step must not come back; unplanned
    requests keep their order; requests preempted during the step go first."""
    from collections import deque

    from vllm_prepack.adapters.scheduler import _restore

    taken, blocked_taken, left, hidden, preempted = "taken", "blocked", "left", "hidden", "pre"
    original = deque([taken, blocked_taken, left, hidden])
    shown = {taken, blocked_taken, left}
    after_step = deque([preempted, left])  # vLLM took `taken` and `blocked`, prepended `pre`
    _restore(original, after_step, shown)
    assert list(original) == [preempted, left, hidden]


@pytest.mark.engine
def test_priority_policy_token_identical_in_a_real_engine(tiny_model, engine_lock):
    """--scheduling-policy priority, requests of two priorities, in a real CPU engine (fp32,
    eager): greedy output equals stock vLLM's with the same policy, and the engine core ran
    our class with plans."""
    import gc

    from conftest import ENGINE_ARGS, MAX_MODEL_LEN, random_prompts
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack

    prompts = [TokensPrompt(prompt_token_ids=p)
               for p in random_prompts(32, seed=11, max_len=MAX_MODEL_LEN // 2)]
    priority = [i % 2 for i in range(len(prompts))]
    params = SamplingParams(temperature=0, max_tokens=6)

    def run(**kwargs):
        llm = LLM(tiny_model, **ENGINE_ARGS, max_num_batched_tokens=1024,
                  scheduling_policy="priority", **kwargs)
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        outs = [list(o.outputs[0].token_ids)
                for o in llm.generate(prompts, params, priority=priority, use_tqdm=False)]
        observer = getattr(scheduler, "prepack_observer", None)
        result = outs, type(scheduler), observer and observer.summary()
        del llm, scheduler
        gc.collect()
        return result

    stock, stock_cls, _ = run()
    assert stock_cls is Scheduler
    ours, cls, summary = run(**vllm_prepack.engine_kwargs())
    assert cls is PrepackSyncScheduler
    assert summary["planned_steps"] > 0 and summary["admitted"] == len(prompts)
    assert ours == stock
