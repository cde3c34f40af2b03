"""The packing statistics on the API server's /metrics: the transport through vLLM's
SchedulerStats and the stat-logger plugin. Served end to end: tests/e2e/test_metrics_served.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vllm_prepack import metrics
from vllm_prepack.stats import PackingObserver, ScheduledPrefill


def _observer() -> PackingObserver:
    o = PackingObserver(budget=100)
    # "a" and "b" arrived (2.0) after "c" (1.0), which is left waiting: two overtakes.
    o.record(prefills=[ScheduledPrefill("a", 30, 0, 30, True, arrival=2.0),
                       ScheduledPrefill("b", 50, 0, 90, True, arrival=2.0)],
             scheduled_tokens=80, oldest_waiting_arrival=1.0, num_waiting=1, num_running=2,
             now=3.5)
    o.record(prefills=[ScheduledPrefill("b", 40, 50, 90, False, arrival=2.0)],
             scheduled_tokens=42, oldest_waiting_arrival=None, num_waiting=0, num_running=2,
             now=4.0)
    o.packed = {"steps": 1, "tokens": 80}
    return o


def test_what_the_engine_sends_survives_vllms_message_and_adds_up():
    """What the engine core attaches comes out of vLLM's own msgpack round trip intact, and
    vLLM's own entries of the field are left as they were. Counters travel as increments
    since the previous message (they add up to the total whichever front end gets each),
    gauges as values."""
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from vllm_prepack.adapters.metrics import attach

    stock = {"waiting_to_start": 1, "in_progress": 0, "completed_waiting": 2}
    sender, observer = metrics.Sender(), _observer()
    stats = attach(SchedulerStats(num_kv_fetch_reqs_by_stage=dict(stock)), sender, observer,
                   True)
    wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=stats))
    received = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
    carried = metrics.take(received.num_kv_fetch_reqs_by_stage)
    assert received.num_kv_fetch_reqs_by_stage == stock
    assert carried == {**metrics.counter_totals(observer, True), **metrics.gauge_values(observer)}
    v = metrics.values(carried)
    assert v["vllm_prepack_admitted_prompts"] == 2 and v["vllm_prepack_split_prompts"] == 1
    assert v["vllm_prepack_packed_tokens"] == 120 and v["vllm_prepack_overtakes"] == 2
    assert v["vllm_prepack_budget_fill"] == pytest.approx((80 + 42) / 200)
    assert v["vllm_prepack_max_oldest_wait_seconds"] == pytest.approx(2.5)
    assert v["vllm_prepack_oldest_wait_seconds"] == 0.0
    assert v["vllm_prepack_packed_attention_steps"] == 1
    # The next message: increments only (one step, one admission), the gauges as they stand.
    observer.record(prefills=[ScheduledPrefill("c", 10, 0, 10, True)], scheduled_tokens=10,
                    oldest_waiting_arrival=None, num_waiting=0, num_running=1, now=5.0)
    nxt = metrics.take(attach(SchedulerStats(), sender, observer, True)
                       .num_kv_fetch_reqs_by_stage)
    assert (nxt["steps"], nxt["admitted"], nxt["overtakes"]) == (1, 1, 0)
    assert sum(c["admitted"] for c in (carried, nxt)) == observer.admitted == 3
    assert nxt["max_oldest_wait_us"] == 2_500_000
    assert "packed_steps" not in metrics.take(dict(metrics.Sender().carried(_observer(), False)))
    assert attach(None, sender, _observer(), True) is None  # stats off (log_stats=False)


def _value(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_stat_logger_publishes_per_engine_once_an_engine_sends_and_strips_the_keys():
    """The logger publishes once an engine sends the keys, whatever its own process's config
    names (each API-server process vLLM spawns parses the command line before plugins load);
    a stock engine sends none, and nothing appears."""
    from vllm.v1.metrics.stats import SchedulerStats

    from vllm_prepack.adapters.metrics import PrepackStatLogger, attach

    config = SimpleNamespace(scheduler_config=SimpleNamespace(scheduler_cls=None),
                             model_config=SimpleNamespace(served_model_name="m"))
    logger = PrepackStatLogger(config, [0, 1])
    logger.record(SchedulerStats(), None, engine_idx=1)  # a stock engine's message
    assert _value("vllm_prepack_steps_total", model_name="m", engine="1") is None
    sender, observer = metrics.Sender(), _observer()
    stats = attach(SchedulerStats(), sender, observer, True)
    logger.record(stats, None, engine_idx=1)
    assert stats.num_kv_fetch_reqs_by_stage == {}
    logger.record(attach(SchedulerStats(), sender, observer, True), None, engine_idx=1)
    labels = dict(model_name="m", engine="1")
    assert _value("vllm_prepack_admitted_prompts_total", **labels) == 2  # nothing new: +0
    assert _value("vllm_prepack_packed_tokens_total", **labels) == 120
    assert _value("vllm_prepack_admitted_prompts_total", model_name="m", engine="0") == 0
    assert _value("vllm_prepack_budget_fill", **labels) == pytest.approx(0.61)
    assert _value("vllm_prepack_packed_attention_tokens_total", **labels) == 80
    assert _value("vllm_prepack_packed_attention_tokens_total", model_name="m",
                  engine="0") is None  # never reported by engine 0: absent, not 0
    observer.record(prefills=[ScheduledPrefill("c", 10, 0, 10, True)], scheduled_tokens=10,
                    oldest_waiting_arrival=None, num_waiting=0, num_running=1, now=5.0)
    logger.record(attach(SchedulerStats(), sender, observer, True), None, engine_idx=1)
    assert _value("vllm_prepack_admitted_prompts_total", **labels) == 3
    assert _value("vllm_prepack_steps_total", **labels) == 3
