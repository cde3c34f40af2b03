"""What vLLM 0.33's scheduler adds, against the plan: the local prefill cadence
(``--prefill-schedule-interval`` without data parallelism), its capacity-bound escape,
lookahead block hashes, and the prefix-cache lookup the plan estimates. Runs on every
supported vLLM; the 0.33-only parts skip by feature where the installed scheduler lacks it
(``make test-vllm033`` runs them on 0.33.0)."""

from __future__ import annotations

import random
import time

import pytest
from vllm.v1.core.sched.scheduler import Scheduler

from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler


def _needs_local_cadence(scheduler) -> None:
    if not hasattr(scheduler, "local_prefill_interval"):
        pytest.skip("this vLLM has no local prefill cadence (vLLM 0.33+)")


def _script(cls, model, arrivals: dict[int, list[list[int]]], *, interval: int, budget: int,
            max_tokens: int = 12):
    """Step a scheduler; ``arrivals[step]`` are added before that step. Returns the
    scheduler and, per step, the ids admitted (new) and whether the cadence held it."""
    scheduler = make_scheduler(cls, model, chunked=True, budget=budget,
                               prefill_schedule_interval=interval)
    _needs_local_cadence(scheduler)
    now, n, step, log = time.time(), 0, 0, []
    while step <= max(arrivals) or scheduler.has_unfinished_requests():
        for p in arrivals.get(step, []):
            scheduler.add_request(make_request(p, max_tokens=max_tokens,
                                               arrival=now + n * 1e-6, req_id=f"q{n}"))
            n += 1
        out = scheduler.schedule()
        log.append(sorted(r.req_id for r in out.scheduled_new_reqs))
        scheduler.update_from_output(out, runner_output(scheduler, out))
        step += 1
        assert step < 2000
    return scheduler, log


def _prompts(n, lo, hi, seed):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def test_local_cadence_holds_alike_and_held_steps_do_not_count_against_the_plan(tiny_model):
    prompts = _prompts(5, 16, 64, seed=1)
    arrivals = {0: prompts[:1], 1: prompts[1:3], 4: prompts[3:]}
    _, stock = _script(Scheduler, tiny_model, arrivals, interval=3, budget=512)
    ours_sched, ours = _script(PrepackSyncScheduler, tiny_model, arrivals, interval=3,
                               budget=512)
    assert [bool(a) for a in ours] == [bool(a) for a in stock]  # held on the same steps
    assert sorted(sum(ours, [])) == sorted(sum(stock, [])) == [f"q{i}" for i in range(5)]
    assert ours[1] == [] and ours[2] == []  # arrived during the hold: waits for the release
    o = ours_sched.prepack_observer
    assert o.throttled_steps >= 2
    assert o.planned_steps > 0 and o.adhered_steps == o.planned_steps, o.summary()


def test_capacity_bound_escape_counts_the_requests_the_plan_hides(tiny_model):
    """vLLM stops holding prefill once a release step leaves requests waiting; during the
    step it sees only the planned ones, so the hidden ones must still count as waiting."""
    prompts = _prompts(24, 150, 250, seed=2)
    arrivals = {0: prompts[:1], 2: prompts[1:]}
    stock_sched, stock = _script(Scheduler, tiny_model, arrivals, interval=4, budget=256)
    ours_sched, ours = _script(PrepackSyncScheduler, tiny_model, arrivals, interval=4,
                               budget=256)
    assert sorted(sum(ours, [])) == sorted(sum(stock, []))
    assert len(ours) <= len(stock) + 2, (len(ours), len(stock))
    held_after_backlog = [i for i, a in enumerate(ours[3:], 3) if not a and i < 3 + 20]
    assert len(held_after_backlog) < 5, held_after_backlog


def test_cache_hit_estimate_matches_vllms_lookup(tiny_model):
    """The plan's prefix-cache estimate is vLLM's own lookup (without its hit statistics),
    on 0.32's and 0.33's KV cache manager alike."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=1024,
                               prefix_caching=True)
    shared = _prompts(1, 200, 200, seed=3)[0]
    first = make_request(shared + [7, 8, 9], req_id="first")
    scheduler.add_request(first)
    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))
    second = make_request(shared + [10, 11], req_id="second")
    queries_before = scheduler.kv_cache_manager.prefix_cache_stats.queries
    estimate = scheduler._cached_tokens(second)
    assert scheduler.kv_cache_manager.prefix_cache_stats.queries == queries_before
    _, hit, *_ = scheduler.kv_cache_manager.get_computed_blocks(second)
    assert estimate == hit > 0


def test_resumable_request_with_lookahead_hashes_gets_no_estimate(tiny_model):
    """vLLM 0.33 rehashes a resumable request at admission when block hashes cover
    lookahead tokens; until then its hashes may be stale, so the plan assumes no hit."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=True, budget=1024,
                               prefix_caching=True)
    shared = _prompts(1, 200, 200, seed=4)[0]
    scheduler.add_request(make_request(shared + [7], req_id="first"))
    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        scheduler.update_from_output(out, runner_output(scheduler, out))
    second = make_request(shared + [10], req_id="second")
    second.resumable = True
    assert scheduler._cached_tokens(second) > 0  # no lookahead hashes: the hit stands
    scheduler.num_hash_lookahead_tokens = 1
    assert scheduler._cached_tokens(second) == 0
