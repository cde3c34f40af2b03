"""The packing statistics on the API server's /metrics, a served engine scraped end to end."""

from __future__ import annotations

import importlib.metadata as md
import time

import pytest

from tests.harness.env import MAX_MODEL_LEN, random_prompts
from tests.harness.server import serve
from vllm_prepack import metrics

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
