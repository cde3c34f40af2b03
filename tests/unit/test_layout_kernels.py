"""PackLayout, the CPU packed-attention kernel, and both against their references (no vLLM).

(a) PackLayout: examples, its mask against xformers' ``BlockDiagonalCausalMask``, bad input.
(b) ``packed_attention_cpu`` against the dense ``reference_attention`` (MHA and GQA).
Against vLLM's own CPU attention backend: tests/vllm/test_kernels_vs_vllm.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given

from tests.harness.kernels import assert_close as _assert_close
from tests.harness.kernels import hypothesis_settings as _settings
from tests.harness.kernels import packs
from vllm_prepack.kernels import packed_attention_cpu, reference_attention
from vllm_prepack.layout import PackLayout

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
