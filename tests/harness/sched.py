"""Scheduler simulation: vLLM's real scheduler and KV cache manager, no model.

``schedule()`` -> a synthetic ``ModelRunnerOutput`` (one sampled token per request whose
prompt is complete) -> ``update_from_output()``; counts come from ``SchedulerOutput``, in
engine steps. The tests drive it; :mod:`benchmarks.trace_sim` puts it on a virtual clock.
"""

from __future__ import annotations

import inspect
import itertools
import random
from dataclasses import dataclass, field

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

BLOCK_SIZE = 16
_ids = itertools.count()


def make_scheduler(cls, model: str, *, budget: int = 1024, max_num_seqs: int = 64,
                   num_blocks: int = 2048, chunked: bool = True, prefix_caching: bool = False,
                   max_model_len: int = 1024, async_scheduling: bool = False,
                   additional_config: dict | None = None, policy: str = "fcfs",
                   prefill_schedule_interval: int = 1, **scheduler_fields) -> Scheduler:
    """``cls`` on a tiny model's config; ``scheduler_fields``: more ``SchedulerConfig`` fields."""
    model_config = ModelConfig(model=model, dtype="float32", max_model_len=max_model_len,
                               seed=0, skip_tokenizer_init=True)
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_model_len,
        enable_chunked_prefill=chunked, is_encoder_decoder=False,
        async_scheduling=async_scheduling, policy=policy,
        prefill_schedule_interval=prefill_schedule_interval, **scheduler_fields,
    )
    cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=prefix_caching)
    cache_config.num_gpu_blocks = num_blocks
    vllm_config = VllmConfig(model_config=model_config, scheduler_config=scheduler_config,
                             cache_config=cache_config,
                             additional_config=additional_config or {})
    # vLLM's CPU platform turns async scheduling off; the AsyncScheduler itself runs on CPU.
    vllm_config.scheduler_config.async_scheduling = async_scheduling
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(
            ["layer.0"], FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=1,
                                           head_size=32, dtype=torch.float32))],
    )
    return cls(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
               structured_output_manager=StructuredOutputManager(vllm_config),
               log_stats=True, block_size=BLOCK_SIZE, hash_block_size=BLOCK_SIZE)


def make_request(prompt: list[int], *, max_tokens: int = 4, arrival: float = 0.0,
                 req_id: str | None = None, skip_reading_prefix_cache: bool | None = None,
                 ) -> Request:
    init_none_hash(sha256)
    return Request(
        request_id=req_id or f"r{next(_ids)}", prompt_token_ids=list(prompt),
        sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True,
                                       skip_reading_prefix_cache=skip_reading_prefix_cache),
        pooling_params=None, arrival_time=arrival,
        block_hasher=get_request_block_hasher(BLOCK_SIZE, sha256),
    )


def model_output(req_ids: list[str], sampled: list[list[int]]) -> ModelRunnerOutput:
    """A ``ModelRunnerOutput`` of ``sampled`` tokens per request (vLLM 0.32 and 0.33 also
    take the index of each request, which 0.34 derives from ``req_ids``)."""
    if "req_id_to_index" not in inspect.signature(ModelRunnerOutput).parameters:
        return ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=sampled)
    return ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=sampled,
                             req_id_to_index={r: i for i, r in enumerate(req_ids)})


def runner_output(scheduler: Scheduler, out) -> ModelRunnerOutput:
    req_ids = list(out.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        r = scheduler.requests[req_id]
        # One token when the prompt is complete after this step, none for a partial chunk.
        done = r.num_computed_tokens >= r.num_tokens
        sampled.append([7] if done else [])
    return model_output(req_ids, sampled)


@dataclass
class Drain:
    steps: int = 0
    first_token_step: dict[str, int] = field(default_factory=dict)
    split_prompts: set[str] = field(default_factory=set)
    computed_prompt_tokens: int = 0
    scheduled_tokens: int = 0
    finished: set[str] = field(default_factory=set)

    @property
    def mean_first_token_step(self) -> float:
        return sum(self.first_token_step.values()) / len(self.first_token_step)


def drain(scheduler: Scheduler, requests: list[Request], max_steps: int = 10_000) -> Drain:
    """Add every request, then step until all finish; count from SchedulerOutput."""
    result = Drain()
    for r in requests:
        scheduler.add_request(r)
    prompt_len = {r.request_id: r.num_prompt_tokens for r in requests}
    while scheduler.has_unfinished_requests():
        result.steps += 1
        assert result.steps <= max_steps, "did not drain"
        out = scheduler.schedule()
        result.scheduled_tokens += out.total_num_scheduled_tokens
        before = {}
        for new in out.scheduled_new_reqs:
            before[new.req_id] = new.num_computed_tokens
        cached = out.scheduled_cached_reqs
        for req_id, n in zip(cached.req_ids, cached.num_computed_tokens):
            before[req_id] = n
        for req_id, n in out.num_scheduled_tokens.items():
            start = before[req_id]
            if start < prompt_len[req_id]:
                prompt_tokens = min(n, prompt_len[req_id] - start)
                result.computed_prompt_tokens += prompt_tokens
                if start + n < prompt_len[req_id]:
                    result.split_prompts.add(req_id)
                else:
                    result.first_token_step.setdefault(req_id, result.steps)
        engine_outputs = scheduler.update_from_output(out, runner_output(scheduler, out))
        for eo in engine_outputs.values():
            for o in eo.outputs:
                if o.finish_reason is not None:
                    result.finished.add(o.request_id)
    return result


def bimodal_prompts(seed: int, n: int = 96, *, short=(8, 96), long=(300, 1000),
                    long_share: float = 0.3) -> list[list[int]]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        lo, hi = long if rng.random() < long_share else short
        prompts.append([rng.randrange(3, 500) for _ in range(rng.randint(lo, hi))])
    return prompts
