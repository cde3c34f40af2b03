"""Metrics surface: the packing statistics on the API server's ``/metrics``.

Engine core: :func:`attach` adds the scheduler's running totals to the ``SchedulerStats``
that ``make_stats()`` returns (the prepack scheduler calls it). API server:
:class:`PrepackStatLogger`, loaded by vLLM from the entry-point group
``vllm.stat_logger_plugins``, takes them out and publishes the ``vllm_prepack_*`` series
with vLLM's labels (``model_name``, ``engine``). Why the totals ride in
``SchedulerStats.num_kv_fetch_reqs_by_stage``: :mod:`vllm_prepack.metrics`.

vLLM 0.32 sources relied on: ``vllm/v1/metrics/loggers.py`` (``AggregateStatLoggerBase``;
``StatLoggerManager`` calls plugin loggers before its logging and Prometheus loggers;
``PrometheusStatLogger`` labels), ``vllm/v1/engine/async_llm.py``
(``load_stat_logger_plugin_factories()`` in ``AsyncLLM.__init__``),
``vllm/v1/metrics/stats.py`` (``SchedulerStats.num_kv_fetch_reqs_by_stage: dict[str, int]``),
``vllm/v1/core/sched/scheduler.py`` (``make_stats()``, ``update_from_output``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

from vllm_prepack import compat, metrics
from vllm_prepack.log import get_logger

logger = get_logger(__name__)


def packed_counters_visible(vllm_config: Any) -> bool:
    """Whether the attention counters of this process are the model's: the one-process
    executor (``uni``, vLLM's choice for one device) runs the worker in the engine core."""
    return compat.executor_backend(vllm_config) in ("uni", "external_launcher")


def attach(stats: Any, sender: metrics.Sender, observer: Any, packed_visible: bool) -> Any:
    """Add what ``sender`` carries for ``observer`` to a ``SchedulerStats`` (None: stats are
    off)."""
    if stats is None or observer is None:
        return stats
    carrier = dict(compat.stats_carrier(stats) or {})
    carrier.update(sender.carried(observer, packed_visible))
    compat.set_stats_carrier(stats, carrier)
    return stats


def _unregister_ours() -> None:
    """Drop series of an earlier logger in this process (vLLM does the same for its own)."""
    for collector in list(REGISTRY._collector_to_names):
        if getattr(collector, "_name", "").startswith(metrics.METRIC_PREFIX):
            REGISTRY.unregister(collector)


class PrepackStatLogger(AggregateStatLoggerBase):
    """Publishes the ``vllm_prepack_*`` series once an engine sends them (only the prepack
    scheduler does: a stock server shows none). Decided by the messages, not by this process's
    config: each API-server process vLLM spawns (``api_server_count`` > 1) parses the command line
    before vLLM loads plugins, so its config names vLLM's scheduler."""

    def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None):
        self.engine_indexes = list(engine_indexes or [0])
        self.enabled = compat.is_tested_version(compat.installed_vllm_version())
        self.model_name = vllm_config.model_config.served_model_name
        self._counters: dict[str, dict[int, Any]] | None = None  # built by the first message
        self._gauges: dict[str, dict[int, Any]] = {}
        self._families: dict[str, Counter] = {}

    def _build(self) -> dict[str, dict[int, Any]]:
        _unregister_ours()
        labelvalues = {i: [self.model_name, str(i)] for i in self.engine_indexes}
        counters: dict[str, dict[int, Any]] = {}
        for s in metrics.COUNTERS:
            metric = self._families[s.name] = Counter(s.name, s.doc, labelnames=metrics.LABELS)
            # Packed-attention series appear once an engine reports them (not at all where
            # the model runs outside the engine-core process), instead of reading 0.
            counters[s.name] = {} if s.key in metrics.PACKED_KEYS else {
                i: metric.labels(*v) for i, v in labelvalues.items()
            }
        for s in metrics.GAUGES:
            metric = Gauge(s.name, s.doc, labelnames=metrics.LABELS,
                           multiprocess_mode="mostrecent")
            self._gauges[s.name] = {i: metric.labels(*v) for i, v in labelvalues.items()}
        logger.info("vllm-prepack: packing statistics on /metrics as %s* (engines %s)",
                    metrics.METRIC_PREFIX, self.engine_indexes)
        return counters

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        if scheduler_stats is None:
            return
        # Always taken out, so that vLLM's own loggers never see the keys.
        carried = metrics.take(compat.stats_carrier(scheduler_stats))
        if carried is None or not self.enabled or engine_idx not in self.engine_indexes:
            return
        if self._counters is None:
            self._counters = self._build()
        published = metrics.values(carried)
        for s in metrics.COUNTERS:
            increment = published.get(s.name)
            if increment is None:  # a series this engine does not report
                continue
            children = self._counters[s.name]
            if engine_idx not in children:
                children[engine_idx] = self._families[s.name].labels(self.model_name,
                                                                     str(engine_idx))
            if increment > 0:
                children[engine_idx].inc(increment)
        for s in metrics.GAUGES:
            self._gauges[s.name][engine_idx].set(published[s.name])

    def log_engine_initialized(self) -> None:
        return None
