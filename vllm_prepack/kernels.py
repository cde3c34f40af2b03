"""Packed-prefill attention on CPU: causal attention within each prompt of a pack, none across.

Imports no vLLM. :func:`packed_attention_cpu` runs ``scaled_dot_product_attention`` once per
prompt (segment) with ``is_causal=True``, so it never builds a mask over the whole pack.
:func:`reference_attention` is the test oracle: dense attention under
:meth:`PackLayout.materialize`'s block-diagonal causal mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_prepack.layout import PackLayout


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackLayout) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"q, k, v must be [tokens, heads, head_size]; got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    total = layout.total_tokens
    if q.shape[0] != total or k.shape[0] != total or v.shape[0] != total:
        raise ValueError(
            f"q, k, v hold {q.shape[0]}, {k.shape[0]}, {v.shape[0]} tokens; the layout "
            f"packs total_tokens = {total}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k shape {tuple(k.shape)} != v shape {tuple(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q head_size {q.shape[2]} != k head_size {k.shape[2]}")
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    if num_kv_heads == 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_heads = {num_heads} is not a multiple of num_kv_heads = {num_kv_heads}"
        )


def packed_attention_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: PackLayout,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block-diagonal causal attention over a pack of prompts.

    Args:
        q: ``[T, Hq, D]`` queries of the packed tokens (``T = layout.total_tokens``).
        k, v: ``[T, Hkv, D]``; ``Hq`` a multiple of ``Hkv`` (GQA: query head ``h`` reads
            KV head ``h // (Hq // Hkv)``, vLLM's convention).
        layout: the pack.
        scale: softmax scale.
        out: optional ``[T, Hq, D]`` tensor written in place (may be a view, e.g. of vLLM's
            ``output``); allocated when None.

    Returns:
        ``out``.
    """
    _check_qkv(q, k, v, layout)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    elif out.shape != q.shape:
        raise ValueError(f"out shape {tuple(out.shape)} != q shape {tuple(q.shape)}")
    gqa = q.shape[1] != k.shape[1]
    # [T, H, D] -> [H, T, D]: one 3-D SDPA call per segment, heads as the batch dimension.
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    for start, end in layout.segments():
        seg_out = F.scaled_dot_product_attention(
            qh[:, start:end],
            kh[:, start:end],
            vh[:, start:end],
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        )
        out[start:end].copy_(seg_out.transpose(0, 1))
    return out


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: PackLayout,
    scale: float,
) -> torch.Tensor:
    """Test oracle: dense softmax attention under ``layout.materialize()``, in float64.

    Builds the ``T x T`` mask and scores (one head at a time), so keep ``T`` moderate.
    Returns ``[T, Hq, D]`` in ``q.dtype``.
    """
    _check_qkv(q, k, v, layout)
    group = q.shape[1] // k.shape[1]
    mask = layout.materialize(dtype=torch.float64, device=q.device)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    for h in range(q.shape[1]):
        qd = q[:, h].to(torch.float64)
        kd = k[:, h // group].to(torch.float64)
        vd = v[:, h // group].to(torch.float64)
        probs = torch.softmax(qd @ kd.T * scale + mask, dim=-1)
        out[:, h] = (probs @ vd).to(q.dtype)
    return out
