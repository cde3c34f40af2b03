"""The packed attention the prepacking paper's ``prepacked`` methods run through transformers'
``AttentionInterface`` (``prepack``): one varlen call over a :class:`PackLayout`, FA3 from
vLLM's bundled flash-attn on CUDA, else SDPA per segment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vllm_prepack.kernels import packed_attention_cpu
from vllm_prepack.layout import PackLayout

ATTN_NAME = "prepack"
PLAN_KWARG = "prepack_plan"
KERNEL_FA3 = "fa3_varlen"
KERNEL_SDPA = "sdpa_per_prompt"


@dataclass(frozen=True)
class AttentionPlan:
    """What the ``prepack`` attention function needs for one forward."""

    layout: PackLayout
    kernel: str
    cu_seqlens: torch.Tensor | None = None  # int32 on the device, for FA3


_FA3: dict[str, Any] = {}


def load_fa3() -> tuple[Callable[..., Any] | None, str | None]:
    """vLLM's bundled ``flash_attn_varlen_func`` if FA3 runs here, else ``(None, reason)``."""
    if "fn" not in _FA3:
        try:
            from vllm.vllm_flash_attn import (
                fa_version_unsupported_reason,
                flash_attn_varlen_func,
                is_fa_version_supported,
            )

            if is_fa_version_supported(3):
                _FA3.update(fn=flash_attn_varlen_func, reason=None)
            else:
                _FA3.update(fn=None, reason=f"FA3 unsupported: "
                                            f"{fa_version_unsupported_reason(3)}")
        except Exception as exc:  # an import of vllm can fail in many ways
            _FA3.update(fn=None, reason=f"vllm.vllm_flash_attn import failed: {exc!r}")
    return _FA3["fn"], _FA3["reason"]


def select_kernel(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Packed-attention kernel for ``requested`` (auto, fa3, sdpa) and why."""
    if requested == "sdpa":
        return KERNEL_SDPA, "requested"
    if device.type != "cuda":
        reason = "not on CUDA"
    elif dtype not in (torch.float16, torch.bfloat16):
        reason = f"FA3 needs float16/bfloat16, not {dtype}"
    else:
        fn, reason = load_fa3()
        if fn is not None:
            return KERNEL_FA3, "FA3 varlen from vllm.vllm_flash_attn"
    if requested == "fa3":
        raise RuntimeError(f"--packed-kernel fa3 unavailable: {reason}")
    return KERNEL_SDPA, f"fallback: {reason}"


def make_plan(layout: PackLayout, kernel: str, device: torch.device) -> AttentionPlan:
    cu = layout.cu_seqlens_tensor(device) if kernel == KERNEL_FA3 else None
    return AttentionPlan(layout=layout, kernel=kernel, cu_seqlens=cu)


def prepack_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: block-diagonal causal attention over the layout in
    ``kwargs['prepack_plan']``; ``attention_mask`` is ignored.

    ``query`` is ``[rows, heads, row_len, head_dim]``, ``key``/``value`` ``[rows, kv_heads,
    row_len, head_dim]`` (GQA is handled by the kernels); returns ``[rows, row_len, heads,
    head_dim]``.
    """
    plan: AttentionPlan | None = kwargs.get(PLAN_KWARG)
    if plan is None:
        raise RuntimeError(f"attention {ATTN_NAME!r} needs {PLAN_KWARG}=AttentionPlan(...)")
    rows, heads, row_len, head_dim = query.shape
    if key.shape[2] != row_len:
        raise ValueError(f"{ATTN_NAME!r} attention prefills an empty cache only: "
                         f"{key.shape[2]} keys for {row_len} queries")
    total = rows * row_len
    if total != plan.layout.total_tokens:
        raise ValueError(f"{total} tokens in the batch, layout packs {plan.layout.total_tokens}")
    scale = head_dim ** -0.5 if scaling is None else scaling
    q = query.transpose(1, 2).reshape(total, heads, head_dim)
    k = key.transpose(1, 2).reshape(total, key.shape[1], head_dim)
    v = value.transpose(1, 2).reshape(total, value.shape[1], head_dim)
    if plan.kernel == KERNEL_FA3:
        fn, _ = load_fa3()
        out = torch.empty_like(q)
        fn(q=q, k=k, v=v, out=out, cu_seqlens_q=plan.cu_seqlens, cu_seqlens_k=plan.cu_seqlens,
           max_seqlen_q=plan.layout.max_seqlen, max_seqlen_k=plan.layout.max_seqlen,
           softmax_scale=scale, causal=True, fa_version=3)
    else:
        out = packed_attention_cpu(q, k, v, plan.layout, scale)
    return out.view(rows, row_len, heads, head_dim), None


def register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, prepack_attention)


def use_attention(model: Any, name: str) -> None:
    """Switch ``model`` to attention implementation ``name`` (no-op when already set)."""
    if model.config._attn_implementation != name:
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:
            raise RuntimeError(f"could not set attention implementation {name!r}")
