"""What vLLM 0.34's scheduler adds, against the plan: cache-aware admission (refused with
``--scheduler prepack``, whose order already ranks requests by uncached tokens), resumed requests
sent as new ones, and the chunk cap off without chunked prefill. Runs on every supported vLLM;
the 0.34-only parts skip by feature where the installed scheduler lacks it (``make
test-vllm034`` runs them on 0.34.0)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from vllm.config import SchedulerConfig
from vllm.v1.core.sched.scheduler import Scheduler

from tests.harness.sched import BLOCK_SIZE, drain, make_request, make_scheduler, runner_output
from vllm_prepack import compat
from vllm_prepack.adapters.cli import apply_scheduler_choice
from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler
from vllm_prepack.config import PrepackConfigError

HAS_CACHE_AWARE = "cache_aware_admission_window" in SchedulerConfig.__dataclass_fields__


def test_cache_aware_window_is_refused_on_the_command_line_naming_the_value():
    args = SimpleNamespace(scheduler_cls=None, additional_config=None,
                           cache_aware_admission_window=16)
    with pytest.raises(PrepackConfigError) as err:
        apply_scheduler_choice(args, "prepack", {})
    assert "--cache-aware-admission-window 16" in str(err.value) and ": 0" in str(err.value)
    assert args.scheduler_cls is None  # nothing applied
    args.cache_aware_admission_window = 0
    assert apply_scheduler_choice(args, "prepack", {}).scheduler_cls.endswith("PrepackScheduler")
    # The stock scheduler keeps vLLM's option.
    args = SimpleNamespace(scheduler_cls=None, cache_aware_admission_window=16)
    assert apply_scheduler_choice(args, "default", {}) is args


@pytest.mark.skipif(not HAS_CACHE_AWARE, reason="this vLLM has no cache-aware admission (0.34+)")
@pytest.mark.parametrize("cls", [PrepackSyncScheduler, PrepackAsyncScheduler])
def test_a_scheduler_built_with_a_cache_aware_window_is_refused(tiny_model, cls):
    with pytest.raises(PrepackConfigError, match="--cache-aware-admission-window 8"):
        make_scheduler(cls, tiny_model, prefix_caching=True, cache_aware_admission_window=8)
    stock = make_scheduler(Scheduler, tiny_model, prefix_caching=True,
                           cache_aware_admission_window=8)
    assert stock.cache_aware_window == 8


def test_the_prepack_order_admits_a_cached_prefix_first(tiny_model):
    """What vLLM 0.34's cache-aware admission is for, without it: of two prompts of one length,
    the one whose prefix is cached has fewer uncached tokens and is admitted first, ahead of
    the one that arrived before it (stock: arrival order)."""
    prefix = list(range(3, 3 + 3 * BLOCK_SIZE))
    firsts = {}
    for cls in (Scheduler, PrepackSyncScheduler):
        scheduler = make_scheduler(cls, tiny_model, prefix_caching=True, budget=64)
        drain(scheduler, [make_request(prefix + [1], req_id="primer")])
        now = time.time()
        cold = make_request(list(range(300, 300 + 3 * BLOCK_SIZE)) + [2], arrival=now,
                            req_id="cold")
        warm = make_request(prefix + [2], arrival=now + 1e-3, req_id="warm")
        for r in (cold, warm):
            scheduler.add_request(r)
        firsts[cls] = [r.req_id for r in scheduler.schedule().scheduled_new_reqs][0]
    assert firsts == {Scheduler: "cold", PrepackSyncScheduler: "warm"}


def test_each_resumption_counts_as_an_admission(tiny_model):
    """vLLM 0.32 and 0.33 list a request resumed after preemption apart from the new ones,
    0.34 sends it as a new one: either way the packing statistics count each admission."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, num_blocks=24, budget=256,
                               max_num_seqs=8)
    for i in range(6):
        scheduler.add_request(make_request(list(range(3, 103)), max_tokens=60, req_id=f"p{i}"))
    admissions = preemptions = 0
    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        admissions += len(out.scheduled_new_reqs) + len(compat.resumed_req_ids(out))
        preemptions += len(out.preempted_req_ids)
        scheduler.update_from_output(out, runner_output(scheduler, out))
    assert preemptions > 0
    assert scheduler.prepack_observer.summary()["admitted"] == admissions == 6 + preemptions


def test_no_chunk_cap_without_chunked_prefill(tiny_model):
    """vLLM 0.34 ignores ``long_prefill_token_threshold`` without chunked prefill (0.32 and
    0.33 cap a prompt they then cannot schedule): the plan charges whole prompts."""
    scheduler = make_scheduler(PrepackSyncScheduler, tiny_model, chunked=False, budget=1024)
    scheduler.scheduler_config.long_prefill_token_threshold = 64
    for i in range(2):
        scheduler.add_request(make_request(list(range(3, 203)), req_id=f"p{i}"))
    assert scheduler._chunk_cap() == 0
    scheduler.scheduler_config.enable_chunked_prefill = True
    assert scheduler._chunk_cap() == 64
