"""The packing statistics on the API server's /metrics: the transport through vLLM's
SchedulerStats and the stat-logger plugin. Served end to end: tests/e2e/test_metrics_served.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vllm_prepack import metrics
from vllm_prepack.config import SCHEDULER_QUALNAME
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


def test_totals_survive_vllms_engine_core_message():
    """What the engine core attaches comes out of vLLM's own msgpack round trip intact, and
    vLLM's own entries of the field are left as they were."""
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from vllm_prepack.adapters.metrics import attach

    stock = {"waiting_to_start": 1, "in_progress": 0, "completed_waiting": 2}
    stats = attach(SchedulerStats(num_kv_fetch_reqs_by_stage=dict(stock)), _observer(), True)
    wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=stats))
    received = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
    totals = metrics.take(received.num_kv_fetch_reqs_by_stage)
    assert received.num_kv_fetch_reqs_by_stage == stock
    assert totals == {k.removeprefix(metrics.KEY_PREFIX): v
                      for k, v in metrics.carried(_observer(), True).items()}
    v = metrics.values(totals)
    assert v["vllm_prepack_admitted_prompts"] == 2 and v["vllm_prepack_split_prompts"] == 1
    assert v["vllm_prepack_packed_tokens"] == 120 and v["vllm_prepack_overtakes"] == 2
    assert v["vllm_prepack_budget_fill"] == pytest.approx((80 + 42) / 200)
    assert v["vllm_prepack_max_oldest_wait_seconds"] == pytest.approx(2.5)
    assert v["vllm_prepack_oldest_wait_seconds"] == 0.0
    assert v["vllm_prepack_packed_attention_steps"] == 1
    assert "packed_steps" not in metrics.take(dict(metrics.carried(_observer(), False)))
    assert attach(None, _observer(), True) is None  # stats off (log_stats=False)


def _value(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_stat_logger_publishes_per_engine_and_strips_the_keys():
    from vllm.v1.metrics.stats import SchedulerStats

    from vllm_prepack.adapters.metrics import PrepackStatLogger, attach

    def config(scheduler_cls):
        return SimpleNamespace(scheduler_config=SimpleNamespace(scheduler_cls=scheduler_cls),
                               model_config=SimpleNamespace(served_model_name="m"))

    stock = PrepackStatLogger(config(None), [0, 1])
    assert not stock.enabled and _value("vllm_prepack_steps_total", model_name="m",
                                        engine="0") is None
    ours = PrepackStatLogger(config(SCHEDULER_QUALNAME), [0, 1])
    observer = _observer()
    for logger in (stock, ours):  # the keys go whichever logger sees them first
        stats = attach(SchedulerStats(), observer, True)
        logger.record(stats, None, engine_idx=1)
        assert stats.num_kv_fetch_reqs_by_stage == {}
    ours.record(attach(SchedulerStats(), observer, True), None, engine_idx=1)  # no double count
    labels = dict(model_name="m", engine="1")
    assert _value("vllm_prepack_admitted_prompts_total", **labels) == 2
    assert _value("vllm_prepack_packed_tokens_total", **labels) == 120
    assert _value("vllm_prepack_admitted_prompts_total", model_name="m", engine="0") == 0
    assert _value("vllm_prepack_budget_fill", **labels) == pytest.approx(0.61)
    assert _value("vllm_prepack_packed_attention_tokens_total", **labels) == 80
    assert _value("vllm_prepack_packed_attention_tokens_total", model_name="m",
                  engine="0") is None  # never reported by engine 0: absent, not 0
    observer.record(prefills=[ScheduledPrefill("c", 10, 0, 10, True)], scheduled_tokens=10,
                    oldest_waiting_arrival=None, num_waiting=0, num_running=1, now=5.0)
    ours.record(attach(SchedulerStats(), observer, True), None, engine_idx=1)
    assert _value("vllm_prepack_admitted_prompts_total", **labels) == 3
    assert _value("vllm_prepack_steps_total", **labels) == 3
