"""One arm of a greedy-equivalence run in its own process (``python -m
tests.harness.equivalence``): builds ``LLM`` with the given engine arguments (stock, or the
prepack scheduler with the given options), generates greedily for seeded random prompts, and
writes JSON: the scheduler class, the engine's tensor-parallel size, the tokens, and per
worker its pid, tensor-parallel rank, whether the plugin registered there, its attention impl
classes and its packed-path counters."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def impl_classes(worker) -> list[str]:
    """The attention impl classes of one worker's model (``llm.collective_rpc``)."""
    return sorted({f"{type(m.impl).__module__}.{type(m.impl).__qualname__}"
                   for m in worker.model_runner.model.modules() if hasattr(m, "impl")})


def rank_info(worker) -> dict:
    from vllm.distributed import parallel_state as ps

    import vllm_prepack
    from vllm_prepack.adapters import attention

    return {"pid": os.getpid(), "tp_rank": ps.get_tensor_model_parallel_rank(),
            "plugin_registered": vllm_prepack._registered,
            "attention_impls": impl_classes(worker),
            "packed_counters": attention.read_counters()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--engine-args", required=True, help="JSON")
    parser.add_argument("--prepack-options", help="JSON; absent: stock vLLM")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--max-len", type=int, required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    import vllm_prepack
    from tests.harness.env import random_prompts
    from vllm_prepack.adapters import attention

    kwargs = dict(json.loads(args.engine_args))
    if args.prepack_options is not None:
        kwargs.update(vllm_prepack.engine_kwargs(**json.loads(args.prepack_options)))
    llm = LLM(args.model, **kwargs)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    prompts = random_prompts(args.n, args.seed, max_len=args.max_len)
    llm.collective_rpc(attention.reset_counters)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(temperature=0, max_tokens=args.max_tokens, logprobs=1,
                                       ignore_eos=True), use_tqdm=False)
    cfg = llm.llm_engine.vllm_config
    Path(args.out).write_text(json.dumps({
        "engine_kwargs": kwargs,
        "tensor_parallel_size": cfg.parallel_config.tensor_parallel_size,
        "scheduler_class": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
        "ranks": llm.collective_rpc(rank_info),
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
    }))


if __name__ == "__main__":
    main()
