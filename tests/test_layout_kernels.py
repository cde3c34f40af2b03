"""PackLayout, the CPU packed-attention kernel, and both against their references.

(a) PackLayout: examples, its mask against xformers' ``BlockDiagonalCausalMask``, bad input.
(b) ``packed_attention_cpu`` against the dense ``reference_attention`` (MHA and GQA).
(c) Against vLLM's own CPU attention backend (``CPU_ATTN``): a real ``Attention`` layer, its
    real metadata builder and the stock forward over a paged KV cache, for a batch of fresh
    prefills; our kernel must match its output, and one scatter with vLLM's cache-write op must
    leave the KV cache bitwise equal to the stock forward's.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vllm_prepack.kernels import packed_attention_cpu, reference_attention
from vllm_prepack.layout import PackLayout

ATOL, RTOL = 1e-5, 1e-4


def _settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def packs(draw, max_total: int, max_prompts: int = 64) -> list[int]:
    """Prompt lengths: 1..max_prompts prompts, each >= 1, summing to at most max_total."""
    n = draw(st.integers(1, min(max_prompts, max_total)))
    total = draw(st.integers(n, max_total))
    rng = draw(st.randoms(use_true_random=False))
    cuts = sorted(rng.sample(range(1, total), n - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    err = (actual.double() - expected.double()).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), (
        f"{what}: max abs error {err:.3e} (atol {ATOL}, rtol {RTOL})"
    )


# ---------------------------------------------------------------------------------------------
# (a) PackLayout
# ---------------------------------------------------------------------------------------------


def test_layout_example():
    lay = PackLayout.from_seqlens([3, 1, 2])
    assert lay.seqlens == (3, 1, 2)
    assert lay.cu_seqlens == (0, 3, 4, 6)
    assert lay.total_tokens == 6 and lay.max_seqlen == 3 and lay.num_seqs == 3
    assert list(lay.segments()) == [(0, 3), (3, 4), (4, 6)]
    cu = lay.cu_seqlens_tensor()
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 4, 6]
    assert lay.seqlens_tensor().dtype == torch.int32
    pos = lay.positions()
    assert pos.dtype == torch.int64 and pos.tolist() == [0, 1, 2, 0, 0, 1]
    seg = lay.segment_ids()
    assert seg.dtype == torch.int64 and seg.tolist() == [0, 0, 0, 1, 2, 2]
    assert lay.slot_mapping is None
    inf = float("-inf")
    assert lay.materialize().tolist() == [
        [0, inf, inf, inf, inf, inf],
        [0, 0, inf, inf, inf, inf],
        [0, 0, 0, inf, inf, inf],
        [inf, inf, inf, 0, inf, inf],
        [inf, inf, inf, inf, 0, inf],
        [inf, inf, inf, inf, 0, 0],
    ]


def test_layout_single_prompt_and_slots():
    lay = PackLayout.from_seqlens((5,), slot_mapping=[10, 11, 12, 40, 41])
    assert lay.cu_seqlens == (0, 5) and lay.positions().tolist() == list(range(5))
    assert lay.slot_mapping.dtype == torch.int64
    assert lay.slot_mapping.tolist() == [10, 11, 12, 40, 41]
    slots = torch.arange(7, dtype=torch.int64)
    lay2 = PackLayout.from_seqlens([4, 3], slots)
    assert lay2.slot_mapping is slots
    # Equality and hashing follow the seqlens only.
    assert PackLayout.from_seqlens([4, 3]) == lay2
    assert hash(PackLayout.from_seqlens([4, 3])) == hash(lay2)
    # Frozen.
    with pytest.raises(AttributeError):
        lay.seqlens = (1,)  # type: ignore[misc]
    # Accepts ints of other kinds (numpy-like / tensor scalars) and generators.
    assert PackLayout.from_seqlens(torch.tensor([2, 2])).seqlens == (2, 2)
    assert PackLayout.from_seqlens(n for n in (1, 2)).seqlens == (1, 2)


@pytest.mark.parametrize(
    "seqlens, match",
    [
        ([], r"seqlens = \[\] is empty"),
        ([3, 0, 2], r"seqlens\[1\] = 0 is not a positive length"),
        ([-4], r"seqlens\[0\] = -4 is not a positive length"),
        ([2, 1.5], r"seqlens\[1\] = 1.5 is not an integer length"),
        ([True], r"seqlens\[0\] = True is not an integer length"),
        (["3"], r"seqlens\[0\] = '3' is not an integer length"),
        (3, r"seqlens = 3 is not a sequence"),
    ],
)
def test_layout_bad_seqlens(seqlens, match):
    with pytest.raises(ValueError, match=match):
        PackLayout.from_seqlens(seqlens)


@pytest.mark.parametrize(
    "slot_mapping, match",
    [
        ([0, 1, 2], r"slot_mapping has 3 entries, expected total_tokens = 4"),
        (torch.arange(5), r"slot_mapping has 5 entries, expected total_tokens = 4"),
        (torch.zeros(2, 2, dtype=torch.int64), r"slot_mapping has shape \(2, 2\)"),
        (torch.zeros(4), r"slot_mapping has dtype torch.float32"),
        ([0, 1, 2.5, 3], r"slot_mapping\[2\] = 2.5 is not an integer slot"),
    ],
)
def test_layout_bad_slot_mapping(slot_mapping, match):
    with pytest.raises(ValueError, match=match):
        PackLayout.from_seqlens([3, 1], slot_mapping)


def test_layout_direct_construction_is_checked():
    with pytest.raises(ValueError, match=r"cu_seqlens = \(0, 2, 4\)"):
        PackLayout(seqlens=(2, 3), cu_seqlens=(0, 2, 4), max_seqlen=3)
    with pytest.raises(ValueError, match=r"max_seqlen = 2"):
        PackLayout(seqlens=(2, 3), cu_seqlens=(0, 2, 5), max_seqlen=2)


def _check_mask_against_xformers(seqlens: list[int], dtype=torch.float32) -> None:
    attn_bias = pytest.importorskip("xformers.ops.fmha.attn_bias")
    lay = PackLayout.from_seqlens(seqlens)
    total = lay.total_tokens
    expected = attn_bias.BlockDiagonalCausalMask.from_seqlens(list(seqlens)).materialize(
        (total, total), dtype=dtype
    )
    mask = lay.materialize(dtype=dtype)
    assert mask.dtype == dtype and mask.shape == (total, total)
    assert torch.equal(mask, expected), f"mask differs from xformers for seqlens={seqlens}"
    # Positions / segment ids agree with the layout, too.
    assert lay.positions()[-1].item() == seqlens[-1] - 1
    assert torch.equal(torch.bincount(lay.segment_ids()), torch.tensor(seqlens))


@_settings(max_examples=40)
@given(seqlens=packs(max_total=512))
@example(seqlens=[1])
@example(seqlens=[1] * 64)
def test_layout_mask_matches_xformers(seqlens):
    _check_mask_against_xformers(seqlens)


@_settings(max_examples=3)
@given(seqlens=packs(max_total=4096))
@example(seqlens=[4096])
@example(seqlens=[64] * 64)
def test_layout_mask_matches_xformers_large(seqlens):
    _check_mask_against_xformers(seqlens)


def test_layout_mask_dtype_matches_xformers():
    _check_mask_against_xformers([7, 1, 20], dtype=torch.bfloat16)
    _check_mask_against_xformers([7, 1, 20], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# (b) packed_attention_cpu against the dense reference
# ---------------------------------------------------------------------------------------------

HEADS = {"mha": (4, 4), "gqa": (8, 2)}
HEADS_LARGE = {"mha": (2, 2), "gqa": (4, 1)}  # the float64 oracle is O(T^2) per head


def _qkv(total: int, num_heads: int, num_kv_heads: int, head_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(total, num_heads, head_size, generator=g)
    k = torch.randn(total, num_kv_heads, head_size, generator=g)
    v = torch.randn(total, num_kv_heads, head_size, generator=g)
    return q, k, v


def _check_kernel(seqlens, heads: str, head_size: int, table=HEADS) -> None:
    num_heads, num_kv_heads = table[heads]
    lay = PackLayout.from_seqlens(seqlens)
    q, k, v = _qkv(lay.total_tokens, num_heads, num_kv_heads, head_size, seed=len(seqlens))
    scale = head_size**-0.5
    out = packed_attention_cpu(q, k, v, lay, scale)
    ref = reference_attention(q, k, v, lay, scale)
    assert out.shape == q.shape and out.dtype == torch.float32
    _assert_close(out, ref, f"{heads} seqlens={list(seqlens)[:8]}... n={len(seqlens)}")


@pytest.mark.parametrize("heads", sorted(HEADS))
@_settings(max_examples=12)
@given(seqlens=packs(max_total=768))
@example(seqlens=[1])
@example(seqlens=[1] * 64)
def test_kernel_matches_reference(heads, seqlens):
    _check_kernel(seqlens, heads, head_size=64)


@pytest.mark.parametrize("heads", sorted(HEADS))
@_settings(max_examples=1)
@given(seqlens=packs(max_total=4096))
@example(seqlens=[4096 - 63] + [1] * 63)
def test_kernel_matches_reference_large(heads, seqlens):
    _check_kernel(seqlens, heads, head_size=32, table=HEADS_LARGE)


def test_kernel_writes_into_out_view():
    lay = PackLayout.from_seqlens([5, 9, 1, 17])
    q, k, v = _qkv(lay.total_tokens, 8, 2, 32, seed=1)
    # vLLM hands the impl a [T_padded, H, D] view of a [T_padded, H * D] buffer.
    buf = torch.full((lay.total_tokens + 3, 8 * 32), 7.0)
    out = buf.view(-1, 8, 32)[: lay.total_tokens]
    ret = packed_attention_cpu(q, k, v, lay, 0.2, out=out)
    assert ret is out
    _assert_close(out, reference_attention(q, k, v, lay, 0.2), "out= view")
    assert torch.all(buf[lay.total_tokens :] == 7.0), "wrote past the pack"
    # Non-contiguous q/k/v (e.g. slices of a fused qkv projection) are fine too.
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)
    qs, ks, vs = qkv.split([8 * 32, 2 * 32, 2 * 32], dim=1)
    out2 = packed_attention_cpu(
        qs.view(-1, 8, 32), ks.view(-1, 2, 32), vs.view(-1, 2, 32), lay, 0.2
    )
    assert torch.equal(out2, out)


def test_kernel_segments_are_independent():
    lay = PackLayout.from_seqlens([6, 10, 3])
    q, k, v = _qkv(lay.total_tokens, 4, 4, 32, seed=2)
    base = packed_attention_cpu(q, k, v, lay, 0.3)
    k2, v2 = k.clone(), v.clone()
    k2[6:16] += 5.0  # change prompt 1's keys and values only
    v2[6:16] -= 3.0
    moved = packed_attention_cpu(q, k2, v2, lay, 0.3)
    assert torch.equal(moved[:6], base[:6]) and torch.equal(moved[16:], base[16:])
    assert not torch.allclose(moved[6:16], base[6:16])
    # Each prompt alone gives the same rows as in the pack.
    for start, end in lay.segments():
        alone = packed_attention_cpu(
            q[start:end], k[start:end], v[start:end], PackLayout.from_seqlens([end - start]), 0.3
        )
        assert torch.equal(alone, base[start:end])


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((10, 4, 32), (10, 3, 32), (10, 3, 32)), "not a multiple of num_kv_heads"),
        (((9, 4, 32), (9, 2, 32), (9, 2, 32)), "total_tokens = 10"),
        (((10, 4, 32), (10, 2, 16), (10, 2, 16)), "head_size"),
        (((10, 128), (10, 2, 32), (10, 2, 32)), r"\[tokens, heads, head_size\]"),
    ],
)
def test_kernel_bad_shapes(shapes, match):
    lay = PackLayout.from_seqlens([4, 6])
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        packed_attention_cpu(q, k, v, lay, 1.0)


def test_kernel_bad_out_shape():
    lay = PackLayout.from_seqlens([4, 6])
    q, k, v = _qkv(10, 4, 2, 32, seed=3)
    with pytest.raises(ValueError, match="out shape"):
        packed_attention_cpu(q, k, v, lay, 1.0, out=torch.empty(10, 2, 32))


# ---------------------------------------------------------------------------------------------
# (c) against vLLM's CPU attention backend
# ---------------------------------------------------------------------------------------------

BLOCK_SIZE = 32  # CPU_ATTN needs a multiple of 32
VLLM_LAYERS = {
    # name: (num_heads, num_kv_heads, head_size)
    "gqa": ("model.layers.0.self_attn.attn", 8, 2, 64),
    "mha": ("model.layers.1.self_attn.attn", 4, 4, 32),
}

_TINY_LLAMA = """{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
 "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
 "intermediate_size": 256, "num_hidden_layers": 2, "vocab_size": 256,
 "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "torch_dtype": "float32"}"""


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


def _paged_batch(seqlens: list[int], seed: int):
    """Scattered block tables for fresh prefills, and the slot mapping they imply."""
    g = torch.Generator().manual_seed(seed)
    blocks_per_req = [math.ceil(n / BLOCK_SIZE) for n in seqlens]
    num_blocks = sum(blocks_per_req) + 4  # a few never-touched blocks
    perm = torch.randperm(num_blocks, generator=g).tolist()
    block_table = torch.zeros(len(seqlens), max(blocks_per_req), dtype=torch.int32)
    slots: list[int] = []
    used = 0
    for i, (n, nb) in enumerate(zip(seqlens, blocks_per_req)):
        block_table[i, :nb] = torch.tensor(perm[used : used + nb], dtype=torch.int32)
        used += nb
        slots.extend(
            perm[used - nb + p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(n)
        )
    return block_table, slots, num_blocks


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
