"""The packing statistics on the API server's /metrics: the transport through vLLM's
SchedulerStats, the stat-logger plugin, and a served engine scraped end to end."""

from __future__ import annotations

import importlib.metadata as md
import time
from types import SimpleNamespace

import pytest
from conftest import MAX_MODEL_LEN, random_prompts, serve

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


# -- served end to end -------------------------------------------------------------------------


def _scrape(server) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.harness.server import http_get

    samples = {}
    for family in text_string_to_metric_families(http_get(server.url + "/metrics")):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _ours(samples):
    return {k: v for k, v in samples.items() if k[0].startswith(metrics.METRIC_PREFIX)}


SERVE_ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
              "--kv-cache-memory-bytes", str(64 << 20), "--seed", "0"]


@pytest.mark.cli
def test_served_metrics_carry_the_packing_series(tiny_model, tmp_path, engine_lock):
    eps = {ep.name: ep.value for ep in md.entry_points(group="vllm.stat_logger_plugins")}
    assert eps.get("prepack") == "vllm_prepack.adapters.metrics:PrepackStatLogger", (
        "the installed metadata lacks the stat-logger entry point: pip install -e . again")
    prompts = random_prompts(6, seed=11, min_len=8, max_len=200)
    with serve([tiny_model, *SERVE_ARGS, "--scheduler", "prepack"],
               tmp_path / "prepack.log") as s:
        prompt_tokens = 0
        for p in prompts:
            r = s.post("/v1/completions", {"model": tiny_model, "prompt": p, "max_tokens": 4,
                                           "temperature": 0})
            prompt_tokens += r["usage"]["prompt_tokens"]
        deadline = time.monotonic() + 20
        while True:
            samples = _scrape(s)
            labels = (("engine", "0"), ("model_name", tiny_model))
            admitted = samples.get(("vllm_prepack_admitted_prompts_total", labels))
            if admitted == len(prompts) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        log = s.log()
    ours = _ours(samples)
    names = {name for name, _ in ours}
    # CPU: the model runs in a worker process (vLLM's CPU platform turns the one-process
    # executor into mp), so the engine core cannot count packed-attention steps.
    expected = {s.name + ("_total" if s.kind == "counter" else "") for s in metrics.SERIES
                if s.key not in metrics.PACKED_KEYS}
    assert expected <= names, sorted(expected - names)
    assert {lab for _, lab in ours} == {labels}, ours  # vLLM's labels, one engine
    get = lambda name: samples[(name, labels)]  # noqa: E731
    assert get("vllm_prepack_admitted_prompts_total") == len(prompts)
    assert get("vllm_prepack_packed_tokens_total") == prompt_tokens
    assert samples[("vllm:prompt_tokens_total", labels)] == prompt_tokens
    assert get("vllm_prepack_planner_faults_total") == 0
    assert get("vllm_prepack_split_prompts_total") == 0
    assert get("vllm_prepack_overtakes_total") == 0  # one request at a time
    assert get("vllm_prepack_prefill_steps_total") == len(prompts)
    assert 0 < get("vllm_prepack_budget_fill") <= 1
    assert get("vllm_prepack_budget_used_tokens_total") == prompt_tokens
    assert get("vllm_prepack_oldest_wait_seconds") == 0  # nothing waits at the end
    assert get("vllm_prepack_steps_total") >= len(prompts) * 4
    assert get("vllm_prepack_planned_steps_total") == len(prompts)
    assert get("vllm_prepack_plan_adhered_steps_total") == len(prompts)
    assert not names & {"vllm_prepack_packed_attention_steps_total",
                        "vllm_prepack_packed_attention_tokens_total"}
    assert "KV fetch" not in log  # the carried keys never reach vLLM's own loggers

    with serve([tiny_model, *SERVE_ARGS, "--scheduler", "default"],
               tmp_path / "default.log") as s:
        s.post("/v1/completions", {"model": tiny_model, "prompt": prompts[0], "max_tokens": 4,
                                   "temperature": 0})
        time.sleep(1)
        samples = _scrape(s)
    assert ("vllm:prompt_tokens_total", labels) in samples
    assert _ours(samples) == {}
