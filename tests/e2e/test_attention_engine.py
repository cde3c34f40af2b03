"""The packed-prefill attention path in a real engine: token-identical to vLLM's own."""

from __future__ import annotations

import gc

import pytest

import vllm_prepack
from tests.harness.env import ENGINE_ARGS, MAX_MODEL_LEN, random_prompts
from vllm_prepack.adapters import attention

vllm_prepack.register()


def _impl_classes(worker):
    model = worker.model_runner.model
    return sorted({f"{type(m.impl).__module__}.{type(m.impl).__qualname__}"
                   for m in model.modules() if hasattr(m, "impl")})


def _engine_run(model, prompts, max_tokens, **kwargs):
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model, **ENGINE_ARGS, **kwargs)
    llm.collective_rpc(attention.reset_counters)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(temperature=0, max_tokens=max_tokens), use_tqdm=False)
    counters = llm.collective_rpc(attention.read_counters)[0]
    impls = llm.collective_rpc(_impl_classes)[0]
    observer = getattr(llm.llm_engine.engine_core.engine_core.scheduler, "prepack_observer", None)
    packed = observer.summary()["packed_attention"] if observer else None
    del llm, observer
    gc.collect()
    return [list(o.outputs[0].token_ids) for o in outs], counters, impls, packed


@pytest.mark.engine
def test_engine_token_identical_with_packed_path(tiny_model, engine_lock):
    prompts = random_prompts(64, seed=11, max_len=MAX_MODEL_LEN - 8)
    stock, counters, impls, _ = _engine_run(tiny_model, prompts, 8,
                                            max_num_batched_tokens=4096)
    assert impls == ["vllm.v1.attention.backends.cpu_attn.CPUAttentionBackendImpl"]
    assert counters["steps"] == counters["layer_calls"] == counters["tokens"] == 0
    ours, counters, impls, observer_packed = _engine_run(
        tiny_model, prompts, 8, max_num_batched_tokens=4096,
        **vllm_prepack.engine_kwargs(packed_attention="on"))
    assert impls == ["vllm_prepack.adapters.attention.cpu_backend.<locals>.PackedCPUAttentionImpl"]
    assert counters["steps"] > 0 and counters["tokens"] > 0
    assert counters["layer_calls"] == 2 * counters["steps"]  # two attention layers
    assert ours == stock
    assert observer_packed["tokens"] == counters["tokens"] > 0  # in the packing statistics
