"""Attention surface: the packed-prefill path, for engines that run ``--scheduler prepack``.

When every request of a step is a fresh prefill (nothing computed or cached before the step:
query length == sequence length), the step is a *pure prefill pack*. Its attention is then
computed over the contiguous packed Q/K/V with a block-diagonal causal mask instead of
reading K/V back through the page table; vLLM's own cache write (one slot-mapping scatter
per layer, ``do_kv_cache_update``) still puts the pack's K/V into the paged blocks. Any other
step (decodes, chunk continuations, prefix-cache hits, mixed batches) runs vLLM's stock code.

Selection: the wrapper around vLLM's ``get_attn_backend`` (as the attention layer calls it)
hands back vLLM's own backend class unless the engine being built runs our scheduler with
the packed path on and the layer is one the path covers. vLLM caches its own choice per
argument tuple; the wrapper sits outside that cache, so each engine decides for itself.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from vllm_prepack import compat
from vllm_prepack.config import PrepackConfig, is_prepack_scheduler
from vllm_prepack.layout import PackLayout
from vllm_prepack.log import get_logger

logger = get_logger(__name__)


@dataclass
class PackedCounters:
    """Work that took the packed path in this process (a worker)."""

    steps: int = 0
    tokens: int = 0
    layer_calls: int = 0
    fallbacks: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"steps": self.steps, "tokens": self.tokens, "layer_calls": self.layer_calls,
                "fallbacks": self.fallbacks}


COUNTERS = PackedCounters()


def read_counters(*_: Any) -> dict[str, int]:
    """Counters of this process (``llm.collective_rpc(read_counters)`` reads the workers')."""
    return COUNTERS.as_dict()


def reset_counters(*_: Any) -> None:
    COUNTERS.__init__()  # type: ignore[misc]


# -- the pack layout of a step ------------------------------------------------------------


def pure_prefill_layout(common: Any) -> PackLayout | None:
    """The step's pack layout if every request is a fresh prefill, else None.

    ``common`` is vLLM's ``CommonAttentionMetadata`` for the step, in the runner's row order
    (which need not be the plan's order)."""
    if not isinstance(common.causal, bool) or not common.causal:
        return None
    n = common.num_reqs
    if n == 0:
        return None
    starts = common.query_start_loc_cpu[: n + 1]
    query_lens = (starts[1:] - starts[:-1]).tolist()
    seq_lens = _seq_lens_cpu(common, n)
    if seq_lens is None or query_lens != seq_lens or min(query_lens) < 1:
        return None
    total = int(starts[n])
    if total != common.num_actual_tokens:
        return None
    return PackLayout.from_seqlens(query_lens, slot_mapping=common.slot_mapping[:total])


def _seq_lens_cpu(common: Any, n: int) -> list[int] | None:
    if common.seq_lens.device.type == "cpu":
        return common.seq_lens[:n].tolist()
    # GPU: no device sync. An upper bound equal to the query length means nothing was
    # computed before this step (computed tokens are never negative).
    bound = compat.seq_lens_upper_bound(common)
    return None if bound is None else bound[:n].tolist()


# -- which layers take the path -------------------------------------------------------------


AUTO_ON = frozenset({"FLASH_ATTN"})
"""Backends where ``packed_attention=auto`` takes the packed path: measured faster there
(FA3 on H100, benchmarks/results/kernel_h100.json). The CPU path (SDPA per prompt) measured
slower than vLLM's CPU kernel, so ``auto`` leaves CPU_ATTN alone."""


def gpu_verified() -> bool:
    """Whether the packed path ran on a GPU under the installed vLLM's series
    (``compat.GPU_VERIFIED_VLLM``)."""
    return compat.is_tested_version(compat.installed_vllm_version(), compat.GPU_VERIFIED_VLLM)


def auto_on(backend_name: str) -> bool:
    """Whether ``packed_attention=auto`` takes the path on ``backend_name``: one of
    :data:`AUTO_ON`, under a vLLM series whose packed path ran on a GPU (``on`` takes it under
    any supported series, with a warning where it has not run on a GPU)."""
    if backend_name not in AUTO_ON:
        return False
    if gpu_verified():
        return True
    logger.info_once("Packed-prefill attention is off under vLLM %s (auto: on where it ran on "
                     "a GPU, vLLM %s.x); --prepack-packed-attention on takes it",
                     compat.installed_vllm_version(), ".x, ".join(compat.GPU_VERIFIED_VLLM))
    return False


def packed_mode(vllm_config: Any) -> str:
    """``on``/``off``/``auto`` for this engine; ``off`` unless it runs our scheduler."""
    if vllm_config is None or not is_prepack_scheduler(vllm_config.scheduler_config.scheduler_cls):
        return "off"
    return PrepackConfig.from_additional_config(vllm_config.additional_config).packed_attention


def layer_covered(kv_cache_dtype: str | None, use_mla: bool, has_sink: bool,
                  attn_type: str | None, has_sliding_window: bool, use_sparse: bool = False,
                  **_: Any) -> str | None:
    """None if the packed path covers the layer, else the reason it does not."""
    if use_mla:
        return "MLA"
    if use_sparse:
        return "sparse attention"
    if has_sink:
        return "attention sinks"
    if has_sliding_window:
        return "sliding window"
    if attn_type not in (None, "decoder"):
        return f"attention type {attn_type}"
    if kv_cache_dtype not in (None, "auto") and not kv_cache_dtype.startswith(("bfloat", "float")):
        return f"kv_cache_dtype {kv_cache_dtype}"
    return None


def _packed_backend_for(stock: type) -> type | None:
    name = stock.get_name()
    if name == "CPU_ATTN":
        return cpu_backend(stock)
    if name == "FLASH_ATTN":
        return flash_backend(stock)
    return None


def install() -> None:
    import vllm.model_executor.layers.attention.attention as attention_module
    from vllm.config import get_current_vllm_config

    original = attention_module.get_attn_backend
    if getattr(original, "_prepack", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def get_attn_backend(*args: Any, **kwargs: Any) -> type:
        stock = original(*args, **kwargs)
        mode = packed_mode(get_current_vllm_config())
        if mode == "off" or (mode == "auto" and not auto_on(stock.get_name())):
            return stock
        if mode == "on" and not gpu_verified():
            logger.warning_once("--prepack-packed-attention on: the packed path has not run on a "
                                "GPU under vLLM %s", compat.installed_vllm_version())
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        reason = layer_covered(**bound.arguments)
        packed = None if reason else _packed_backend_for(stock)
        if packed is None:
            logger.info_once(
                "Packed-prefill attention not used for %s layers (%s); vLLM's own path runs",
                stock.get_name(), reason or f"backend {stock.get_name()}",
            )
            return stock
        return packed

    get_attn_backend._prepack = True  # type: ignore[attr-defined]
    attention_module.get_attn_backend = get_attn_backend


class _PackingBuilder:
    """Mixin for a metadata builder: attach the step's pack layout to vLLM's metadata.

    Never during CUDA-graph capture: a captured graph replays for later batches of the same
    shape (decodes), which must run vLLM's own attention."""

    packed_metadata_cls: type
    _capturing = False

    def build(self, common_prefix_len: int, common_attn_metadata: Any,
              fast_build: bool = False) -> Any:
        metadata = super().build(common_prefix_len, common_attn_metadata, fast_build)
        if self._capturing or common_prefix_len:
            return metadata
        try:
            pack = pure_prefill_layout(common_attn_metadata)
        except Exception:  # before any K/V is written: this step runs vLLM's own path
            COUNTERS.fallbacks += 1
            logger.exception("packed-prefill layout failed; vLLM's attention runs this step")
            return metadata
        if pack is None:
            return metadata
        COUNTERS.steps += 1
        COUNTERS.tokens += pack.total_tokens
        fields = {f.name: getattr(metadata, f.name) for f in dataclasses.fields(metadata)}
        return self.packed_metadata_cls(
            **fields, pack=pack,
            pack_cu_seqlens=common_attn_metadata.query_start_loc[: pack.num_seqs + 1],
        )

    def build_for_cudagraph_capture(self, common_attn_metadata: Any) -> Any:
        self._capturing = True
        try:
            return super().build_for_cudagraph_capture(common_attn_metadata)
        finally:
            self._capturing = False


class _PackingImpl:
    """Mixin for a backend impl: pure prefill packs take ``packed_attention``; everything
    else (and every layer setting the path does not cover) takes vLLM's ``forward``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packed_unsupported = _impl_unsupported(self)

    def forward(self, layer: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, attn_metadata: Any, output: torch.Tensor,
                output_scale: Any = None, output_block_scale: Any = None) -> torch.Tensor:
        pack = getattr(attn_metadata, "pack", None)
        if (pack is None or self.packed_unsupported or output_scale is not None
                or output_block_scale is not None):
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output,
                                   output_scale, output_block_scale)
        total = pack.total_tokens
        out = output[:total].view(total, self.num_heads, self.head_size)
        self.packed_attention(query[:total], key[:total], value[:total], pack, attn_metadata,
                              out)
        COUNTERS.layer_calls += 1
        return output


def _impl_unsupported(impl: Any) -> str | None:
    if getattr(impl, "alibi_slopes", None) is not None:
        return "ALiBi"
    if getattr(impl, "logits_soft_cap", None):
        return "logit soft-cap"
    if getattr(impl, "sliding_window", None) not in (None, -1, (-1, -1)):
        return "sliding window"
    if getattr(impl, "sinks", None) is not None:
        return "attention sinks"
    if str(getattr(impl, "kv_cache_dtype", "auto")).startswith("fp8"):
        return "fp8 KV cache"
    return None


def _packed_backend(stock: type, metadata: type, builder: type, impl: type) -> type:
    """``stock`` with the packed metadata, builder and impl (same name, same declarations,
    FlashAttention's CUDA-graph support included)."""

    @dataclass
    class PackedMetadata(metadata):  # type: ignore[misc, valid-type]
        pack: PackLayout | None = None
        pack_cu_seqlens: torch.Tensor | None = None

    class PackedBuilder(_PackingBuilder, builder):  # type: ignore[misc, valid-type]
        packed_metadata_cls = PackedMetadata

    class PackedBackend(stock):  # type: ignore[misc, valid-type]
        @staticmethod
        def get_impl_cls() -> type:
            return impl

        @staticmethod
        def get_builder_cls() -> type:
            return PackedBuilder

    for cls, name in ((PackedMetadata, metadata.__name__), (PackedBuilder, builder.__name__),
                      (PackedBackend, stock.__name__)):
        cls.__name__ = cls.__qualname__ = "Packed" + name.removeprefix("Packed")
    PackedBackend.__doc__ = f"vLLM's {stock.get_name()} backend with the packed-prefill path."
    return PackedBackend


# -- CPU --------------------------------------------------------------------------------------


@functools.cache
def cpu_backend(stock: type) -> type:
    from vllm.v1.attention.backends.cpu_attn import (
        CPUAttentionBackendImpl,
        CPUAttentionMetadata,
        CPUAttentionMetadataBuilder,
    )

    from vllm_prepack.kernels import packed_attention_cpu

    class PackedCPUAttentionImpl(_PackingImpl, CPUAttentionBackendImpl):
        def packed_attention(self, q, k, v, pack, attn_metadata, out) -> None:
            packed_attention_cpu(q, k, v, pack, self.scale, out=out)

    return _packed_backend(stock, CPUAttentionMetadata, CPUAttentionMetadataBuilder,
                           PackedCPUAttentionImpl)


# -- GPU (FlashAttention 3) -------------------------------------------------------------------


@functools.cache
def flash_backend(stock: type) -> type:
    from vllm.v1.attention.backends.flash_attn import (
        FlashAttentionImpl,
        FlashAttentionMetadata,
        FlashAttentionMetadataBuilder,
    )
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    class PackedFlashAttentionImpl(_PackingImpl, FlashAttentionImpl):
        def packed_attention(self, q, k, v, pack, attn_metadata, out) -> None:
            cu = attn_metadata.pack_cu_seqlens
            flash_attn_varlen_func(
                q=q, k=k, v=v, out=out, cu_seqlens_q=cu, cu_seqlens_k=cu,
                max_seqlen_q=pack.max_seqlen, max_seqlen_k=pack.max_seqlen,
                softmax_scale=self.scale, causal=True, fa_version=self.vllm_flash_attn_version,
            )

    return _packed_backend(stock, FlashAttentionMetadata, FlashAttentionMetadataBuilder,
                           PackedFlashAttentionImpl)
