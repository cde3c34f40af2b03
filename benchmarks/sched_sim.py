"""Scheduler simulation: vLLM's real scheduler and KV cache manager, no model.

``schedule()`` -> a synthetic ``ModelRunnerOutput`` (one sampled token per request whose
prompt is complete) -> ``update_from_output()``; counts come from ``SchedulerOutput``. The
tests drive it; as a command it compares stock with the prepack policies and split modes on
the workload mixes, in engine steps (not seconds: the numbers are the same on any machine):

    python -m benchmarks.sched_sim --out benchmarks/results/sched_sim.json
"""

from __future__ import annotations

import itertools
import random
import time
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
                   prefill_schedule_interval: int = 1) -> Scheduler:
    model_config = ModelConfig(model=model, dtype="float32", max_model_len=max_model_len,
                               seed=0, skip_tokenizer_init=True)
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_model_len,
        enable_chunked_prefill=chunked, is_encoder_decoder=False,
        async_scheduling=async_scheduling, policy=policy,
        prefill_schedule_interval=prefill_schedule_interval,
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
                 req_id: str | None = None) -> Request:
    init_none_hash(sha256)
    return Request(
        request_id=req_id or f"r{next(_ids)}", prompt_token_ids=list(prompt),
        sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        pooling_params=None, arrival_time=arrival,
        block_hasher=get_request_block_hasher(BLOCK_SIZE, sha256),
    )


def runner_output(scheduler: Scheduler, out) -> ModelRunnerOutput:
    req_ids = list(out.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        r = scheduler.requests[req_id]
        # One token when the prompt is complete after this step, none for a partial chunk.
        done = r.num_computed_tokens >= r.num_tokens
        sampled.append([7] if done else [])
    return ModelRunnerOutput(req_ids=req_ids,
                             req_id_to_index={r: i for i, r in enumerate(req_ids)},
                             sampled_token_ids=sampled)


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


def compare(model: str, mixes: list[str], n: int, seeds: list[int], budget: int,
            max_len: int) -> dict:
    """Stock vs every prepack policy/split, chunked prefill on and off, per mix and seed."""
    from benchmarks import workloads
    from vllm_prepack.adapters.scheduler import PrepackSyncScheduler

    arms = {"stock": (Scheduler, {})}
    for policy in ("ttft", "fcfs"):
        for split in ("whole", "fill"):
            arms[f"prepack-{policy}-{split}"] = (PrepackSyncScheduler,
                                                 {"policy": policy, "split": split})
    rows = []
    for chunked in (True, False):
        for mix in mixes:
            for seed in seeds:
                w = workloads.make(mix, n, seed, max_len=max_len - 16)
                prompts = w.prompts(500)
                for arm, (cls, options) in arms.items():
                    scheduler = make_scheduler(
                        cls, model, budget=budget, max_num_seqs=256, num_blocks=1 << 15,
                        chunked=chunked, max_model_len=max_len,
                        additional_config={"prepack": options})
                    now = time.time()
                    d = drain(scheduler, [make_request(p, arrival=now + i * 1e-6,
                                                       req_id=f"q{i}")
                                          for i, p in enumerate(prompts)])
                    rows.append({"chunked_prefill": chunked, "mix": mix, "seed": seed,
                                 "arm": arm, "steps": d.steps,
                                 "mean_first_token_step": d.mean_first_token_step,
                                 "split_prompts": len(d.split_prompts),
                                 "finished": len(d.finished)})
    return {"rows": rows, "arms": list(arms)}


def summarize(rows: list[dict], arms: list[str]) -> dict:
    out: dict = {}
    for chunked in (True, False):
        for arm in arms[1:]:
            key = f"{arm}, chunked {'on' if chunked else 'off'}"
            pairs = []
            for r in rows:
                if r["arm"] == arm and r["chunked_prefill"] == chunked:
                    base = next(b for b in rows if b["arm"] == "stock"
                                and b["chunked_prefill"] == chunked and b["mix"] == r["mix"]
                                and b["seed"] == r["seed"])
                    pairs.append((r, base))
            out[key] = {
                "steps_ratio": sum(r["steps"] / b["steps"] for r, b in pairs) / len(pairs),
                "first_token_step_ratio": sum(r["mean_first_token_step"]
                                              / b["mean_first_token_step"]
                                              for r, b in pairs) / len(pairs),
                "split_prompts": sum(r["split_prompts"] for r, _ in pairs),
                "stock_split_prompts": sum(b["split_prompts"] for _, b in pairs),
                "runs": len(pairs),
            }
    return out


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".models/tiny-llama",
                        help="any local config: only its shape is read")
    parser.add_argument("--mixes", default="lognormal,mmlu,wikitext512,alpaca,hh_rlhf")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = compare(args.model, args.mixes.split(","), args.n,
                     [int(s) for s in args.seeds.split(",")], args.budget, args.max_len)
    summary = summarize(result["rows"], result["arms"])
    for key, v in summary.items():
        print(f"{key:>36}: steps x{v['steps_ratio']:.3f}  first-token step "
              f"x{v['first_token_step_ratio']:.3f}  split prompts {v['split_prompts']} "
              f"(stock {v['stock_split_prompts']})")
    if args.out:
        common.write_json(args.out, {
            "benchmark": "scheduler simulation (steps, no model)", **common.environment(),
            "device": "CPU (scheduler only; counts, not seconds)",
            "budget": args.budget, "max_model_len": args.max_len, "n": args.n,
            "mixes": args.mixes.split(","), "seeds": args.seeds, "summary": summary,
            **result})
        print("wrote", args.out)
