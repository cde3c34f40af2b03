"""The packed-prefill attention path on vLLM's real layers, metadata and forward context (no
engine): which layers take it, what it computes, what it skips. In a real engine:
tests/e2e/test_attention_engine.py."""

from __future__ import annotations

import pytest
import torch

import vllm_prepack
from tests.harness.kernels import BLOCK_SIZE
from tests.harness.kernels import TINY_LLAMA_CONFIG as _TINY_LLAMA
from tests.harness.kernels import paged_batch as _paged_batch
from vllm_prepack import compat
from vllm_prepack.adapters import attention
from vllm_prepack.config import SCHEDULER_QUALNAME
from vllm_prepack.layout import PackLayout

vllm_prepack.register()


def _vllm_config(tmp_path, *, prepack: bool, packed: str = "on"):
    from vllm.config import CacheConfig, ModelConfig, VllmConfig

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(_TINY_LLAMA)
    model_config = ModelConfig(model=str(tmp_path), dtype="float32", skip_tokenizer_init=True,
                               max_model_len=8192)
    config = VllmConfig(model_config=model_config, cache_config=CacheConfig(block_size=BLOCK_SIZE))
    if prepack:
        config.scheduler_config.scheduler_cls = SCHEDULER_QUALNAME
        config.additional_config["prepack"] = {"packed_attention": packed}
    return config


def _layer(config, name="model.layers.0.self_attn.attn", heads=(8, 2, 64), **kwargs):
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.attention import Attention

    num_heads, num_kv_heads, head_size = heads
    with set_current_vllm_config(config):
        layer = Attention(num_heads=num_heads, head_size=head_size, scale=head_size**-0.5,
                          num_kv_heads=num_kv_heads, prefix=name, **kwargs)
        spec = layer.get_kv_cache_spec(config)
        builder = None if spec is None else layer.attn_backend.get_builder_cls()(
            spec, [name], config, torch.device("cpu"))
    return layer, builder


def test_stock_engines_get_vllms_own_classes(tmp_path):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend, CPUAttentionBackendImpl

    for config in (_vllm_config(tmp_path, prepack=False),
                   _vllm_config(tmp_path, prepack=True, packed="off")):
        layer, builder = _layer(config)
        assert layer.attn_backend is CPUAttentionBackend
        assert type(layer.impl) is CPUAttentionBackendImpl


def test_auto_mode_leaves_the_cpu_backend_alone(tmp_path):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    layer, _ = _layer(_vllm_config(tmp_path, prepack=True, packed="auto"))
    assert layer.attn_backend is CPUAttentionBackend
    assert "FLASH_ATTN" in attention.AUTO_ON and "CPU_ATTN" not in attention.AUTO_ON


def test_auto_takes_the_path_only_on_a_vllm_whose_path_ran_on_a_gpu(monkeypatch):
    for version, on_gpu in (("0.32.0", True), ("0.33.0+cu130", True), ("0.34.0", False)):
        monkeypatch.setattr(compat, "installed_vllm_version", lambda v=version: v)
        assert attention.auto_on("FLASH_ATTN") is on_gpu
        assert attention.auto_on("CPU_ATTN") is False


def test_prepack_engine_gets_the_packed_backend(tmp_path):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    layer, _ = _layer(_vllm_config(tmp_path, prepack=True))
    assert layer.attn_backend is not CPUAttentionBackend
    assert issubclass(layer.attn_backend, CPUAttentionBackend)
    assert layer.attn_backend.get_name() == "CPU_ATTN"
    assert type(layer.impl).__name__ == "PackedCPUAttentionImpl"


@pytest.mark.parametrize("kwargs, reason", [
    (dict(per_layer_sliding_window=64), "sliding window"),
    (dict(attn_type="encoder_only"), "attention type"),
])
def test_uncovered_layers_go_to_stock(tmp_path, kwargs, reason):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    layer, _ = _layer(_vllm_config(tmp_path, prepack=True), **kwargs)
    assert layer.attn_backend is CPUAttentionBackend, reason


@pytest.mark.parametrize("args, reason", [
    (dict(use_mla=True), "MLA"),
    (dict(has_sink=True), "attention sinks"),
    (dict(has_sliding_window=True), "sliding window"),
    (dict(attn_type="encoder_decoder"), "attention type"),
    (dict(attn_type="encoder"), "attention type"),
    (dict(kv_cache_dtype="fp8_e4m3"), "kv_cache_dtype"),
])
def test_layer_coverage_rules(args, reason):
    base = dict(kv_cache_dtype="auto", use_mla=False, has_sink=False, attn_type="decoder",
                has_sliding_window=False)
    assert attention.layer_covered(**base) is None
    assert reason in attention.layer_covered(**{**base, **args})


@pytest.mark.parametrize("impl_kwargs, reason", [
    (dict(alibi_slopes=[0.5] * 8), "ALiBi"),
    (dict(logits_soft_cap=30.0), "logit soft-cap"),
])
def test_impl_settings_go_to_stock(tmp_path, impl_kwargs, reason):
    """Settings only the impl sees: the packed impl stays on vLLM's path for them."""
    from vllm.config import set_current_vllm_config

    config = _vllm_config(tmp_path, prepack=True)
    layer, _ = _layer(config)
    with set_current_vllm_config(config):
        impl = type(layer.impl)(8, 64, 0.125, 2, kv_cache_dtype="auto", sliding_window=None,
                                **{"alibi_slopes": None, **impl_kwargs})
    assert impl.packed_unsupported == reason


def _common(lay: PackLayout, block_table, seq_lens=None):
    from vllm.v1.attention.backend import CommonAttentionMetadata

    seq_lens = lay.seqlens_tensor() if seq_lens is None else seq_lens
    return CommonAttentionMetadata(
        query_start_loc=lay.cu_seqlens_tensor(), query_start_loc_cpu=lay.cu_seqlens_tensor(),
        seq_lens=seq_lens, num_reqs=lay.num_seqs, num_actual_tokens=lay.total_tokens,
        max_query_len=lay.max_seqlen, max_seq_len=int(seq_lens.max()),
        block_table_tensor=block_table, slot_mapping=lay.slot_mapping, causal=True,
    )


class _Spy:
    def __init__(self, monkeypatch):
        import vllm._custom_ops as ops

        self.calls = 0
        original = ops.cpu_attention_with_kv_cache

        def spy(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(ops, "cpu_attention_with_kv_cache", spy)


def _run_layer(config, layer, metadata, name, q, k, v, cache, slots):
    from vllm.forward_context import set_forward_context

    layer.bind_kv_cache(cache)
    with set_forward_context({name: metadata}, config, num_tokens=q.shape[0],
                             slot_mapping={name: slots}):
        return layer(q, k, v)


@pytest.mark.parametrize("seqlens", [[7, 100, 1, 64, 33], [1] * 16, [700, 300]])
def test_pack_layout_matches_vllm_metadata_and_skips_paged_attention(tmp_path, monkeypatch,
                                                                     seqlens):
    name = "model.layers.0.self_attn.attn"
    stock_config = _vllm_config(tmp_path / "s", prepack=False)
    stock_layer, stock_builder = _layer(stock_config)
    ours_config = _vllm_config(tmp_path / "p", prepack=True)
    layer, builder = _layer(ours_config)
    block_table, slots, num_blocks = _paged_batch(seqlens, seed=len(seqlens))
    lay = PackLayout.from_seqlens(seqlens, slots)
    attention.reset_counters()

    metadata = builder.build(0, _common(lay, block_table))
    stock_metadata = stock_builder.build(0, _common(lay, block_table))
    # The runtime path built a pure pack layout equal to vLLM's metadata for this step.
    assert isinstance(metadata.pack, PackLayout)
    assert list(metadata.pack.cu_seqlens) == stock_metadata.query_start_loc.tolist()
    assert torch.equal(metadata.pack.slot_mapping, stock_metadata.slot_mapping)
    assert attention.read_counters()["steps"] == 1

    g = torch.Generator().manual_seed(0)
    total = lay.total_tokens
    q, k, v = (torch.randn(total, h * 64, generator=g) for h in (8, 2, 2))
    init = torch.randn(num_blocks, 2, BLOCK_SIZE, 128, generator=g)
    spy = _Spy(monkeypatch)
    stock_cache, our_cache = init.clone(), init.clone()
    stock_out = _run_layer(stock_config, stock_layer,
                           stock_metadata, name, q, k, v, stock_cache, lay.slot_mapping)
    assert spy.calls == 1
    ours = _run_layer(ours_config, layer, metadata, name, q, k, v, our_cache, lay.slot_mapping)
    assert spy.calls == 1, "vLLM's paged attention ran for a fresh pack"
    assert attention.read_counters()["layer_calls"] == 1
    err = (ours - stock_out).abs().max().item()
    assert torch.allclose(ours, stock_out, atol=1e-5, rtol=1e-4), f"max abs error {err:.3g}"
    assert torch.equal(our_cache, stock_cache)


def test_layout_fault_falls_back_to_vllm_for_the_step(tmp_path, monkeypatch):
    """A fault while building the step's layout (before any K/V is written) leaves the step to
    vLLM's own attention, counted; a fault inside the packed kernel fails loudly."""
    name = "model.layers.0.self_attn.attn"
    config = _vllm_config(tmp_path, prepack=True)
    layer, builder = _layer(config)
    block_table, slots, num_blocks = _paged_batch([5, 9], seed=3)
    lay = PackLayout.from_seqlens([5, 9], slots)
    attention.reset_counters()

    def broken(*args, **kwargs):
        raise RuntimeError("injected layout fault")

    monkeypatch.setattr(attention, "pure_prefill_layout", broken)
    metadata = builder.build(0, _common(lay, block_table))
    assert getattr(metadata, "pack", None) is None
    assert attention.read_counters()["fallbacks"] == 1
    monkeypatch.undo()

    spy = _Spy(monkeypatch)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(14, h * 64, generator=g) for h in (8, 2, 2))
    cache = torch.randn(num_blocks, 2, BLOCK_SIZE, 128, generator=g)
    _run_layer(config, layer, metadata, name, q, k, v, cache, lay.slot_mapping)
    assert spy.calls == 1  # vLLM's paged attention ran the step

    packed = builder.build(0, _common(lay, block_table))
    assert packed.pack is not None
    import vllm_prepack.kernels as kernels

    def kernel_fault(*args, **kwargs):
        raise RuntimeError("injected kernel fault")

    monkeypatch.setattr(kernels.F, "scaled_dot_product_attention", kernel_fault)
    with pytest.raises(RuntimeError, match="injected kernel fault"):
        _run_layer(config, layer, packed, name, q, k, v, cache.clone(), lay.slot_mapping)


def test_decodes_and_prefix_hits_take_vllms_path(tmp_path, monkeypatch):
    name = "model.layers.0.self_attn.attn"
    config = _vllm_config(tmp_path, prepack=True)
    layer, builder = _layer(config)
    # Two decodes (1 query token, 40 and 9 tokens in the sequence) and one fresh prefill.
    lay = PackLayout.from_seqlens([1, 1, 12], list(range(14)))
    block_table = torch.arange(6, dtype=torch.int32).view(3, 2)
    attention.reset_counters()
    metadata = builder.build(0, _common(lay, block_table, torch.tensor([40, 9, 12],
                                                                        dtype=torch.int32)))
    assert getattr(metadata, "pack", None) is None
    spy = _Spy(monkeypatch)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(14, h * 64, generator=g) for h in (8, 2, 2))
    _run_layer(config, layer, metadata, name, q, k, v,
               torch.randn(8, 2, BLOCK_SIZE, 128, generator=g), lay.slot_mapping)
    assert spy.calls == 1
    assert attention.read_counters() == {"steps": 0, "tokens": 0, "layer_calls": 0,
                                         "fallbacks": 0}
