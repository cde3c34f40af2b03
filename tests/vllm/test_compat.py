"""The compat module: the version gate names every supported vLLM release series; each read
of vLLM internals is pinned against the installed vLLM; adapters make none of their own."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from vllm_prepack import compat


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu", "0.32.1", "0.33.0", "0.33.0+cu130",
                                     "0.33.2", "0.34.0", "0.34.1+cu130"])
def test_supported_versions_pass_the_gate(version):
    assert compat.is_tested_version(version)


@pytest.mark.parametrize("version", ["0.31.1", "0.35.0", "0.3", "0.330.0", "1.0.0", "unknown"])
def test_other_versions_are_refused_naming_each_supported_one(version):
    assert not compat.is_tested_version(version)
    message = compat.untested_message(version)
    assert version in message and all(f"{s}.x" in message for s in compat.TESTED_VLLM)


def test_installed_vllm_is_supported():
    assert compat.is_tested_version(compat.installed_vllm_version())


# -- every read of vLLM internals, pinned against the installed vLLM -----------------------------

ADAPTERS = Path(__file__).resolve().parents[2] / "vllm_prepack" / "adapters"


def test_adapters_read_no_vllm_internal_except_through_compat():
    """An adapter that names one of compat.INTERNALS (as an attribute, or a getattr string)
    reaches into vLLM itself; it must call the compat function instead."""
    offenders = []
    for path in sorted(ADAPTERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Name) and node.value.id == "compat":
                    continue
                name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            else:
                continue
            if name in compat.INTERNALS:
                offenders.append(f"{path.name}:{node.lineno} {name}")
    assert not offenders, offenders


def _scheduler(model, **kw):
    from tests.harness.sched import make_scheduler
    from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

    return make_scheduler(PrepackSyncScheduler, model, chunked=True, budget=1024, **kw)


def _step(scheduler):
    from tests.harness.sched import runner_output

    out = scheduler.schedule()
    scheduler.update_from_output(out, runner_output(scheduler, out))
    return out


def test_scheduler_reads_pinned(tiny_model):
    from tests.harness.sched import BLOCK_SIZE, make_request

    scheduler = _scheduler(tiny_model, num_blocks=64)
    kv = scheduler.kv_cache_manager
    free = compat.free_kv_blocks(kv)
    assert free == kv.block_pool.get_num_free_blocks() <= 64
    assert compat.streaming_input_waits(scheduler) == 0
    assert compat.cadence_holds_prefill(scheduler) is False
    requests = [make_request(list(range(3, 3 + n)), max_tokens=4, req_id=f"p{n}")
                for n in (40, 70)]
    for r in requests:
        scheduler.add_request(r)
    waiting, holding, *async_kv = compat.waiting_queues(scheduler)
    assert waiting is scheduler.waiting and sorted(waiting, key=id) == sorted(requests, key=id)
    assert len(holding) == 0
    # vLLM 0.34's queue of asynchronous KV loads, counted with the others where it exists.
    assert async_kv == ([scheduler.async_kv_waiting] if hasattr(scheduler, "async_kv_waiting")
                        else [])
    assert sum(map(len, compat.waiting_queues(scheduler))) == scheduler.get_request_counts()[1]
    out = _step(scheduler)  # both prompts computed, one token sampled each
    assert all(len(q) == 0 for q in compat.waiting_queues(scheduler))
    assert compat.resumed_req_ids(out) == set()
    assert compat.free_kv_blocks(kv) == free - sum(-(-(n + 1) // BLOCK_SIZE) for n in (40, 70))


def test_prefix_cache_hit_is_vllms_lookup_without_its_statistics(tiny_model):
    from tests.harness.sched import BLOCK_SIZE, make_request

    scheduler = _scheduler(tiny_model, prefix_caching=True)
    shared = list(range(3, 3 + 4 * BLOCK_SIZE))
    first = make_request(shared + [1], req_id="first")
    assert compat.prefix_cache_hit(scheduler, first) == 0
    scheduler.add_request(first)
    while scheduler.has_unfinished_requests():
        _step(scheduler)
    second = make_request(shared + [2, 3], req_id="second")
    queries = scheduler.kv_cache_manager.prefix_cache_stats.queries
    hit = compat.prefix_cache_hit(scheduler, second)
    assert scheduler.kv_cache_manager.prefix_cache_stats.queries == queries
    assert hit == scheduler.kv_cache_manager.get_computed_blocks(second)[1] == 4 * BLOCK_SIZE
    assert compat.cache_hit_bound(second) == second.num_tokens - 1


def test_a_request_that_skips_the_cache_gets_no_hit(tiny_model):
    from tests.harness.sched import BLOCK_SIZE, make_request

    scheduler = _scheduler(tiny_model, prefix_caching=True)
    shared = list(range(3, 3 + 4 * BLOCK_SIZE))
    scheduler.add_request(make_request(shared + [1], req_id="first"))
    while scheduler.has_unfinished_requests():
        _step(scheduler)
    second = make_request(shared + [2, 3], req_id="second", skip_reading_prefix_cache=True)
    assert compat.cache_hit_bound(second) == 0
    assert compat.prefix_cache_hit(scheduler, second) == 0
    assert scheduler.kv_cache_manager.get_computed_blocks(second)[1] == 0
    assert compat.prefix_cache_hit(scheduler, make_request(shared + [2, 3])) == 4 * BLOCK_SIZE


def test_config_parser_metadata_and_stats_reads_pinned():
    import dataclasses
    import typing

    from vllm.config import ParallelConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.attention.backend import CommonAttentionMetadata
    from vllm.v1.metrics.stats import SchedulerStats

    options = compat.parser_option_strings(EngineArgs.add_cli_args(FlexibleArgumentParser()))
    assert {"--model", "--max-num-batched-tokens", "--prefill-schedule-interval"} <= options
    fields = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
    assert "seq_lens_cpu_upper_bound" in fields and "seq_lens" in fields
    assert compat.seq_lens_upper_bound(SimpleNamespace()) is None
    hints = typing.get_type_hints(SchedulerStats)
    assert hints["num_kv_fetch_reqs_by_stage"] == dict[str, int]
    stats = SchedulerStats()
    compat.set_stats_carrier(stats, {"x": 1})
    assert compat.stats_carrier(stats) == {"x": 1}
    parallel = ParallelConfig()
    assert compat.data_parallel_index(parallel) == 0
    assert compat.executor_backend(SimpleNamespace(parallel_config=parallel)) == "uni"
