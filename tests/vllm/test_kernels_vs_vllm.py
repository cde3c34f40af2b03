"""The CPU packed-attention kernel against vLLM's own CPU attention backend (``CPU_ATTN``): a
real ``Attention`` layer, its real metadata builder and the stock forward over a paged KV cache,
for a batch of fresh prefills; our kernel must match its output, and one scatter with vLLM's
cache-write op must leave the KV cache bitwise equal to the stock forward's.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from tests.harness.kernels import BLOCK_SIZE, packs
from tests.harness.kernels import TINY_LLAMA_CONFIG as _TINY_LLAMA
from tests.harness.kernels import assert_close as _assert_close
from tests.harness.kernels import hypothesis_settings as _settings
from tests.harness.kernels import paged_batch as _paged_batch
from vllm_prepack.kernels import packed_attention_cpu
from vllm_prepack.layout import PackLayout

VLLM_LAYERS = {
    # name: (num_heads, num_kv_heads, head_size)
    "gqa": ("model.layers.0.self_attn.attn", 8, 2, 64),
    "mha": ("model.layers.1.self_attn.attn", 4, 4, 32),
}


class _VllmCPU:
    """The fixture's value; opaque so that hypothesis does not pretty-print vLLM's configs."""

    def __init__(self, config, layers):
        self.config, self.layers = config, layers

    def __repr__(self) -> str:
        return f"<vLLM CPU layers {sorted(self.layers)}>"


@pytest.fixture(scope="module")
def vllm_cpu(tmp_path_factory):
    """A VllmConfig for a local config-only tiny model, real ``Attention`` layers on it
    (backend chosen by vLLM's own selector: must be CPU_ATTN) and their metadata builders."""
    pytest.importorskip("vllm")
    from vllm.config import CacheConfig, ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.attention import Attention
    from vllm.v1.attention.backends.cpu_attn import (
        CPUAttentionBackend,
        CPUAttentionBackendImpl,
        CPUAttentionMetadataBuilder,
    )

    model_dir = tmp_path_factory.mktemp("tiny_llama")
    (model_dir / "config.json").write_text(_TINY_LLAMA)
    model_config = ModelConfig(
        model=str(model_dir), dtype="float32", skip_tokenizer_init=True, max_model_len=8192
    )
    config = VllmConfig(model_config=model_config, cache_config=CacheConfig(block_size=BLOCK_SIZE))
    layers = {}
    with set_current_vllm_config(config):
        for key, (name, num_heads, num_kv_heads, head_size) in VLLM_LAYERS.items():
            layer = Attention(
                num_heads=num_heads,
                head_size=head_size,
                scale=head_size**-0.5,
                num_kv_heads=num_kv_heads,
                prefix=name,
            )
            assert layer.attn_backend is CPUAttentionBackend, layer.attn_backend
            assert type(layer.impl) is CPUAttentionBackendImpl
            spec = layer.get_kv_cache_spec(config)
            builder_cls = layer.attn_backend.get_builder_cls()
            assert builder_cls is CPUAttentionMetadataBuilder
            builder = builder_cls(spec, [name], config, torch.device("cpu"))
            layers[key] = (layer, builder, spec)
    return _VllmCPU(config, layers)


def _check_against_vllm(vllm_cpu, key: str, seqlens: list[int], seed: int) -> None:
    import vllm._custom_ops as ops
    from vllm.forward_context import set_forward_context
    from vllm.v1.attention.backend import CommonAttentionMetadata

    config = vllm_cpu.config
    layer, builder, _spec = vllm_cpu.layers[key]
    name, num_heads, num_kv_heads, head_size = VLLM_LAYERS[key]
    block_table, slots, num_blocks = _paged_batch(seqlens, seed)
    lay = PackLayout.from_seqlens(seqlens, slots)
    total = lay.total_tokens

    # Per-step metadata exactly as the V1 runner hands it to the builder for fresh prefills:
    # query_start_loc = cu_seqlens, seq_lens = query lens (nothing computed before).
    common = CommonAttentionMetadata(
        query_start_loc=lay.cu_seqlens_tensor(),
        query_start_loc_cpu=lay.cu_seqlens_tensor(),
        seq_lens=lay.seqlens_tensor(),
        num_reqs=lay.num_seqs,
        num_actual_tokens=total,
        max_query_len=lay.max_seqlen,
        max_seq_len=lay.max_seqlen,
        block_table_tensor=block_table,
        slot_mapping=lay.slot_mapping,
        causal=True,
        positions=lay.positions(),
        is_prefilling=torch.ones(lay.num_seqs, dtype=torch.bool),
    )
    metadata = builder.build(common_prefix_len=0, common_attn_metadata=common)
    assert metadata.causal is True and metadata.num_actual_tokens == total
    # The fresh-prefill rule, read off the backend's own metadata: query_len == seq_len.
    qsl = metadata.query_start_loc
    assert torch.equal(qsl[1:] - qsl[:-1], metadata.seq_lens.to(qsl.dtype))

    g = torch.Generator().manual_seed(seed + 1)
    q = torch.randn(total, num_heads * head_size, generator=g)
    k = torch.randn(total, num_kv_heads * head_size, generator=g)
    v = torch.randn(total, num_kv_heads * head_size, generator=g)
    # [num_blocks, num_kv_heads, block_size, 2 * head_size], as CPUAttentionBackendImpl.forward
    # documents; random initial content so that a stray write would show.
    cache_init = torch.randn(num_blocks, num_kv_heads, BLOCK_SIZE, 2 * head_size, generator=g)

    # Stock: Attention.forward -> unified_kv_cache_update (impl.do_kv_cache_update) ->
    # unified_attention_with_output (impl.forward), under a real forward context.
    stock_cache = cache_init.clone()
    layer.bind_kv_cache(stock_cache)
    with set_forward_context(
        {name: metadata}, config, num_tokens=total, slot_mapping={name: lay.slot_mapping}
    ):
        stock_out = layer(q, k, v)
    assert stock_out.shape == (total, num_heads * head_size)

    # Ours: the packed kernel on the contiguous pack ...
    ours = packed_attention_cpu(
        q.view(total, num_heads, head_size),
        k.view(total, num_kv_heads, head_size),
        v.view(total, num_kv_heads, head_size),
        lay,
        layer.impl.scale,
    )
    _assert_close(
        ours.view(total, -1), stock_out, f"{key} vs CPU_ATTN, n={len(seqlens)} total={total}"
    )
    # ... and one slot-mapping scatter with the backend's own cache-write op.
    our_cache = cache_init.clone()
    key_cache, value_cache = our_cache.view(
        num_blocks, num_kv_heads, 2 * BLOCK_SIZE, head_size
    ).chunk(2, dim=2)
    ops.cpu_attn_reshape_and_cache(
        k.view(total, num_kv_heads, head_size),
        v.view(total, num_kv_heads, head_size),
        key_cache,
        value_cache,
        lay.slot_mapping,
        layer.isa,
        k_scale=layer._k_scale_float,
        v_scale=layer._v_scale_float,
        kv_cache_dtype="auto",
    )
    assert not torch.equal(stock_cache, cache_init), "stock forward wrote no KV"
    assert torch.equal(our_cache, stock_cache), "KV cache differs from the stock backend's"


@pytest.mark.parametrize("key", sorted(VLLM_LAYERS))
@pytest.mark.parametrize(
    "seqlens",
    [[1], [5, 40, 1, 77, 33], [32, 64, 31, 33], [1] * 64, [1000, 3, 500, 17]],
    ids=["one-token", "mixed", "block-edges", "64x1", "long"],
)
def test_matches_vllm_cpu_attn(vllm_cpu, key, seqlens):
    _check_against_vllm(vllm_cpu, key, seqlens, seed=len(seqlens))


@_settings(max_examples=6)
@given(seqlens=packs(max_total=4096), seed=st.integers(0, 2**16))
@example(seqlens=[4096 - 63] + [1] * 63, seed=0)
def test_matches_vllm_cpu_attn_random(vllm_cpu, seqlens, seed):
    _check_against_vllm(vllm_cpu, random.Random(seed).choice(sorted(VLLM_LAYERS)), seqlens, seed)
