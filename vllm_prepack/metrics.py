"""The packing statistics as Prometheus series: what the engine core sends, what the API
server publishes. Pure (no vLLM); the glue is ``adapters/metrics.py``.

How the numbers travel. vLLM loads stat-logger plugins (entry-point group
``vllm.stat_logger_plugins``) in the API-server process only, while the packing statistics
are made in the engine core. The engine core already sends the front end a
``SchedulerStats`` with every step's outputs (``Scheduler.update_from_output`` ->
``make_stats()``), msgpack-encoded against the declared field types. The prepack scheduler
overrides ``make_stats()`` and adds its running totals to one of that message's fields,
``num_kv_fetch_reqs_by_stage`` (``dict[str, int]``), under keys starting with
:data:`KEY_PREFIX`; the stat-logger plugin, which vLLM calls before its own loggers, takes
the keys out again and publishes them as ``vllm_prepack_*`` series in the API server's
default Prometheus registry, i.e. on the server's own ``/metrics``.

Why that field: a ``SchedulerStats`` subclass or an added attribute does not survive
decoding (msgspec decodes into the declared class and drops unknown fields); the free-form
``kv_connector_stats``/``ec_connector_stats`` dicts are handed to the KV/EC connector loggers,
which assert that a connector is configured; ``waiting_lora_adapters`` becomes LoRA label
values. vLLM's Prometheus logger reads ``num_kv_fetch_reqs_by_stage`` only by its known stage
names, and its log line only when a value is non-zero, so keys left in it (no plugin in the
front end) cost at most a "KV fetch: 0 ..." fragment in the log line, never a crash or a wrong
vLLM series. Other routes were weighed: a second HTTP endpoint in the engine core is not the
server's ``/metrics``; Prometheus multiprocess files change how vLLM's own series are
collected; an RPC from the front end has no hook in the stat-logger interface.

Counters travel as increments since the engine core's previous message, gauges as current
values, all integers (the field is ``dict[str, int]``: seconds travel as microseconds, the
fill as parts per million). vLLM sends each step's ``SchedulerStats`` to exactly one front
end; with several API-server processes (``api_server_count`` > 1, vLLM's default under data
parallelism) each publishes the increments it received, and Prometheus' multiprocess
collection sums them into the engine's total. Cumulative totals would not add up there.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass

KEY_PREFIX = "vllm_prepack:"
"""Prefix of the keys the engine core adds to ``SchedulerStats.num_kv_fetch_reqs_by_stage``."""

METRIC_PREFIX = "vllm_prepack_"
LABELS = ("model_name", "engine")
"""The label names of vLLM's own series (``PrometheusStatLogger``): the served model name
and the engine index, which is the data-parallel rank."""


@dataclass(frozen=True)
class Series:
    name: str
    """Metric name as registered (``prometheus_client`` adds ``_total`` to counters)."""
    kind: str
    """``counter`` or ``gauge``."""
    key: str
    """Key of the total carried from the engine core (gauges: derived, see :func:`values`)."""
    doc: str


_US = 1_000_000

COUNTERS: tuple[Series, ...] = (
    Series("vllm_prepack_steps", "counter", "steps",
           "Scheduler steps of the prepack scheduler."),
    Series("vllm_prepack_admitted_prompts", "counter", "admitted",
           "Prompts admitted from the waiting queue (new or resumed after preemption)."),
    Series("vllm_prepack_packed_tokens", "counter", "prefill_tokens",
           "Prompt tokens packed into steps (prefill tokens scheduled)."),
    Series("vllm_prepack_prefill_steps", "counter", "prefill_steps",
           "Steps that scheduled prompt tokens."),
    Series("vllm_prepack_budget_tokens", "counter", "budget_tokens",
           "Token budget of the steps that scheduled prompt tokens (budget x prefill steps)."),
    Series("vllm_prepack_budget_used_tokens", "counter", "budget_used_tokens",
           "Tokens scheduled in the steps that scheduled prompt tokens; budget fill over a "
           "window = increase(budget_used_tokens) / increase(budget_tokens)."),
    Series("vllm_prepack_split_prompts", "counter", "split_prompts",
           "Prompts whose prefill was split over more than one step."),
    Series("vllm_prepack_overtakes", "counter", "overtakes",
           "Admissions of a request queued behind one left waiting in the same step."),
    Series("vllm_prepack_planned_steps", "counter", "planned_steps",
           "Steps judged for plan adherence (a plan was made and something planned or "
           "admitted)."),
    Series("vllm_prepack_plan_adhered_steps", "counter", "adhered_steps",
           "Judged steps where vLLM admitted exactly the planned requests."),
    Series("vllm_prepack_planner_faults", "counter", "planner_faults",
           "Steps where the planner raised and vLLM's own admission ran instead."),
    Series("vllm_prepack_packed_attention_steps", "counter", "packed_steps",
           "Steps whose attention took the packed-prefill path (counted where the model "
           "runs in the engine-core process: one-process executor)."),
    Series("vllm_prepack_packed_attention_tokens", "counter", "packed_tokens",
           "Tokens of the steps that took the packed-prefill path."),
)

GAUGES: tuple[Series, ...] = (
    Series("vllm_prepack_oldest_wait_seconds", "gauge", "oldest_wait_us",
           "Age of the oldest request still waiting after the latest step."),
    Series("vllm_prepack_max_oldest_wait_seconds", "gauge", "max_oldest_wait_us",
           "Largest oldest-waiting age seen after any step since the engine started."),
    Series("vllm_prepack_budget_fill", "gauge", "budget_fill",
           "Mean budget fill (scheduled tokens / token budget) of the steps that scheduled "
           "prompt tokens, since the engine started."),
)

SERIES = COUNTERS + GAUGES
PACKED_KEYS = frozenset({"packed_steps", "packed_tokens"})
_PPM = 1_000_000


def counter_totals(observer, packed_visible: bool) -> dict[str, int]:
    """The counters' totals of a :class:`~vllm_prepack.stats.PackingObserver`.
    Packed-attention totals only where the attention counters are this process's
    (``packed_visible``); elsewhere they would read 0."""
    o = observer
    totals = {
        "steps": o.steps,
        "admitted": o.admitted,
        "prefill_tokens": o.prefill_tokens,
        "prefill_steps": o.prefill_steps,
        "budget_tokens": o.budget * o.prefill_steps,
        "budget_used_tokens": o.prefill_step_tokens,
        "split_prompts": o.split_prompts,
        "overtakes": o.overtakes,
        "planned_steps": o.planned_steps,
        "adhered_steps": o.adhered_steps,
        "planner_faults": o.planner_faults,
    }
    if packed_visible:
        totals["packed_steps"] = int(o.packed.get("steps", 0))
        totals["packed_tokens"] = int(o.packed.get("tokens", 0))
    return totals


def gauge_values(observer) -> dict[str, int]:
    o = observer
    budget = o.budget * o.prefill_steps
    return {
        "oldest_wait_us": round(o.oldest_wait_s * _US),
        "max_oldest_wait_us": round(o.max_oldest_wait_s * _US),
        "budget_fill": round(_PPM * o.prefill_step_tokens / budget) if budget else 0,
    }


class Sender:
    """The engine core's side: what it has sent, so that each message carries the counters'
    increments since the previous one (keys with :data:`KEY_PREFIX`) and the gauges' values."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}

    def carried(self, observer, packed_visible: bool) -> dict[str, int]:
        out = {}
        for key, total in counter_totals(observer, packed_visible).items():
            before = self.sent.get(key, 0)
            out[KEY_PREFIX + key] = total - before if total >= before else total  # restarted
            self.sent[key] = total
        out.update({KEY_PREFIX + k: v for k, v in gauge_values(observer).items()})
        return out


def take(carrier: MutableMapping[str, int] | None) -> dict[str, int] | None:
    """Remove the carried values from ``carrier`` and return them (prefix stripped), or None
    when it holds none (a stock scheduler's message)."""
    if not carrier:
        return None
    keys = [k for k in carrier if k.startswith(KEY_PREFIX)]
    if not keys:
        return None
    return {k[len(KEY_PREFIX):]: int(carrier.pop(k)) for k in keys}


def values(carried: dict[str, int]) -> dict[str, float]:
    """Series name -> value (counters: the increment), for the series ``carried`` covers."""
    out: dict[str, float] = {s.name: float(carried[s.key]) for s in COUNTERS
                             if s.key in carried}
    out["vllm_prepack_oldest_wait_seconds"] = carried.get("oldest_wait_us", 0) / _US
    out["vllm_prepack_max_oldest_wait_seconds"] = carried.get("max_oldest_wait_us", 0) / _US
    out["vllm_prepack_budget_fill"] = carried.get("budget_fill", 0) / _PPM
    return out
