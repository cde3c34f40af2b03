"""Prepack under vLLM's parallelism, at the scheduler (no engine): DP prefill throttling and
per-rank statistics. Tensor and data parallel engines on CPU: tests/e2e/test_multigpu_engine.py."""

from __future__ import annotations

import json
import time

from vllm.v1.core.sched.scheduler import Scheduler

from tests.harness.sched import make_request, make_scheduler, runner_output
from vllm_prepack.adapters.scheduler import PrepackSyncScheduler, data_parallel_rank, make_observer
from vllm_prepack.config import PrepackConfig

# -- data-parallel prefill throttling (vLLM's prefill_schedule_interval) --------------------


def _step(scheduler, throttle: bool = False):
    out = scheduler.schedule(throttle)
    scheduler.update_from_output(out, runner_output(scheduler, out))
    return out


def _throttle_trace(cls, model: str) -> tuple[list[tuple[int, bool]], object]:
    """(requests admitted, prefill_capacity_bound) after each step of a fixed scenario, and
    the scheduler."""
    scheduler = make_scheduler(cls, model, budget=256, chunked=True)
    now = time.time()
    scheduler.add_request(make_request([5] * 8, max_tokens=50, arrival=now, req_id="decode"))
    _step(scheduler)
    trace = []
    # Saturated: more waiting than one step holds -> capacity-bound, throttling lifted.
    for i in range(10):
        scheduler.add_request(make_request([6] * 100, max_tokens=50, arrival=now + 1 + i,
                                           req_id=f"long{i}"))
    for throttle in (False, True, True):
        out = _step(scheduler, throttle)
        trace.append((len(out.scheduled_new_reqs), scheduler.prefill_capacity_bound))
    # Drain the queue, then a new arrival on throttled steps must wait for a cadence step.
    while scheduler.get_request_counts()[1]:
        _step(scheduler)
    out = _step(scheduler)
    scheduler.add_request(make_request([7] * 20, max_tokens=4, arrival=now + 20, req_id="late"))
    for throttle in (True, True, False):
        out = _step(scheduler, throttle)
        trace.append((len(out.scheduled_new_reqs), scheduler.prefill_capacity_bound))
    return trace, scheduler


def test_dp_prefill_throttling_matches_stock(tiny_model):
    """The plan hides requests from vLLM during schedule(); vLLM must still see them as
    waiting when it decides whether prefills are capacity-bound."""
    stock, _ = _throttle_trace(Scheduler, tiny_model)
    ours, scheduler = _throttle_trace(PrepackSyncScheduler, tiny_model)
    assert [bound for _, bound in ours] == [bound for _, bound in stock]
    assert [bool(n) for n, _ in ours] == [bool(n) for n, _ in stock]
    # The scenario exercises both sides: bound steps admit, unbound throttled steps defer.
    assert stock[0][1] is True and stock[1][0] > 0
    assert stock[3] == (0, False) and stock[4][0] == 0 and stock[5][0] == 1
    # The statistics see vLLM's throttle flag: 4 throttled steps, admissions on them only
    # while capacity-bound, and deferred steps do not count as plans overridden.
    summary = scheduler.prepack_observer.summary()
    assert summary["throttled_steps"] == 4
    assert summary["throttled_admitted"] == ours[1][0] + ours[2][0] > 0
    assert summary["plan_adherence"] == 1.0


def test_request_counts_include_every_waiting_request(tiny_model):
    """The queue presents the plan first but hides no request: whenever vLLM (or the plan)
    reads the request counts during schedule(), every waiting request is counted."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, budget=256, chunked=True)
    seen = []
    counts = scheduler.get_request_counts

    def spy():
        seen.append((len(scheduler.waiting), counts()))
        return seen[-1][1]

    scheduler.get_request_counts = spy
    for i in range(10):
        scheduler.add_request(make_request([6] * 100, arrival=time.time() + i))
    scheduler.schedule()
    assert seen
    for queued, (running, waiting) in seen:
        assert queued == waiting and running + waiting == 10, seen
    assert seen[0] == (10, (0, 10))
    assert scheduler.get_request_counts() == (len(scheduler.running), len(scheduler.waiting))


# -- per-rank statistics ----------------------------------------------------------------------


def test_stats_path_per_data_parallel_rank(tiny_model, tmp_path):
    config = PrepackConfig(stats_path=str(tmp_path / "stats.jsonl"))
    assert config.resolved_stats_path() == str(tmp_path / "stats.jsonl")
    assert config.resolved_stats_path(1) == str(tmp_path / "stats.dp1.jsonl")
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model)
    assert data_parallel_rank(scheduler) is None
    # A dense model's DP rank: vLLM resets data_parallel_size to 1, keeps the index.
    scheduler.vllm_config.parallel_config.data_parallel_index = 1
    assert data_parallel_rank(scheduler) == 1
    observer = make_observer(scheduler, config)
    scheduler.prepack_observer = observer
    scheduler.add_request(make_request([5] * 30))
    _step(scheduler)
    observer.jsonl.flush()  # written off the step, by the file's own thread
    line = json.loads((tmp_path / "stats.dp1.jsonl").read_text().splitlines()[0])
    assert line["dp_rank"] == 1 and line["admitted"] == 1
    assert observer.summary()["dp_rank"] == 1 and "dp_rank=1" in observer.summary_line()
