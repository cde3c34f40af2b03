"""The prepacking paper's prefill benchmark with Hugging Face transformers.

Zhao et al., AISTATS 2025, "Prepacking: a simple method for fast prefilling and increased
throughput in LLMs". Each method prefills a batch of prompts of different lengths, producing
every prompt's KV cache and first greedy token:

* ``padded``: full batching as in transformers: the prompts of a batch left-padded to the
  longest, an ``attention_mask``, position ids from the mask, one forward (``sdpa``).
* ``sorted``: the paper's length-ordered baseline: the dataset sorted by length, then cut into
  batches of the same size, each padded to its own longest.
* ``prepacked``: the prompts of a batch bin-packed first-fit-decreasing into packs of capacity
  the longest prompt of the batch. Each pack is one row of a ``[num_packs, pack_len]`` tensor
  (only the tail of a pack is padding), position ids restart at 0 for each prompt, and
  attention is block-diagonal causal per prompt (the paper's layout: several packs). All
  rows are described by one :class:`~vllm_prepack.layout.PackLayout` over the flattened
  ``num_packs * pack_len`` tokens, where each tail pad is a segment of its own; the attention
  runs as one varlen call over it: FA3 ``flash_attn_varlen_func`` from vLLM's bundled
  flash-attn on CUDA (fp16/bf16), else :func:`~vllm_prepack.kernels.packed_attention_cpu`
  (SDPA per segment, any device).
* ``prepacked_flat`` (optional): every prompt of the batch back to back in ONE row, no padding
  at all (vLLM's notion of a packed prefill).

The packed attention is registered with transformers' ``AttentionInterface`` as ``prepack``
and receives its layout through the forward kwargs (``prepack_plan=``). transformers builds
no mask for an attention implementation it has no mask function for, so the block-diagonal
structure comes from the layout alone; transformers' own packed-sequence mask (derived from
restarting position ids) is not applied once a cache is used, which is why it is not relied
on (see ``causal_mask_control`` in the correctness checks).

Every method's first tokens and per-layer K/V are checked against each prompt run alone
(``model(ids[None], use_cache=True)``) on a few prompts per run. Logits are computed only at
each prompt's last position for every method. A batch is timed from building its input
tensors to its first tokens on the host. TTFT: batches run back to back and each prompt gets
its first token when its batch finishes. Models have random weights (architecture shapes
from :mod:`benchmarks.models`) unless ``--model PATH`` is given.

    python -m benchmarks.paper --model-shape sheared-llama-1.3b --workload mmlu --n 256 \\
        --batch-sizes 4,8,16,32,64 --methods padded,sorted,prepacked --reps 3 \\
        --dtype float16 --out benchmarks/results/paper_X.json
    python -m benchmarks.paper --model .models/tiny-llama --n 12 --batch-sizes 4 --reps 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import analysis, harness, models, report, workloads  # noqa: E402
from vllm_prepack.kernels import packed_attention_cpu  # noqa: E402
from vllm_prepack.layout import PackLayout  # noqa: E402

BENCHMARK = "prepacking paper (HF transformers): padded vs length-sorted vs prepacked prefill"
ATTN_NAME = "prepack"
PLAN_KWARG = "prepack_plan"
METHODS = ("padded", "sorted", "prepacked", "prepacked_flat")
DEFAULT_METHODS = ("padded", "sorted", "prepacked")
PACKED_METHODS = ("prepacked", "prepacked_flat")
BASELINES = ("padded", "sorted")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
KERNELS = ("auto", "fa3", "sdpa")
DEVICES = ("auto", "cpu", "cuda")
KERNEL_FA3 = "fa3_varlen"
KERNEL_SDPA = "sdpa_per_prompt"
# Max |K/V| difference to the prompt-alone run under which a check counts as passed.
ATOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
PAD_ID = 0
REFERENCE = {
    "paper": "Zhao et al., 'Prepacking: a simple method for fast prefilling and increased "
             "throughput in LLMs', AISTATS 2025",
    "paper_headline": {"speedup_prepacked_vs_padded": 6.22, "batch_size": 64,
                       "workload": "mmlu", "model": "Sheared-LLaMA-1.3B, 4-bit",
                       "gpu": "NVIDIA RTX A6000"},
    "previous_measurement": {"speedup_prepacked_vs_padded": 2.36, "batch_size": 64,
                             "workload": "mmlu",
                             "method": "simple FFD packing with transformers' own mask"},
}


# ---------------------------------------------------------------------------------- packing
def ffd_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: indices of ``lengths`` grouped into packs of at most ``capacity``
    tokens. Longest first (ties in index order); each goes to the first pack it fits in."""
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise ValueError(f"prompt of {max(too_long)} tokens exceeds pack capacity {capacity}")
    packs: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for p, room in enumerate(free):
            if lengths[i] <= room:
                packs[p].append(i)
                free[p] -= lengths[i]
                break
        else:
            packs.append([i])
            free.append(capacity - lengths[i])
    return packs


@dataclass(frozen=True)
class PackedBatch:
    """Prompts of one batch in ``num_packs`` rows of ``pack_len`` tokens.

    ``layout`` covers the flattened rows: the prompts of each pack, then its tail pad as a
    segment of its own. ``places[i]`` is prompt ``i``'s ``(row, start, end)``.
    """

    packs: tuple[tuple[int, ...], ...]
    pack_len: int
    layout: PackLayout
    places: tuple[tuple[int, int, int], ...]

    @property
    def num_packs(self) -> int:
        return len(self.packs)

    @property
    def compute_tokens(self) -> int:
        return self.num_packs * self.pack_len


def pack_batch(lengths: Sequence[int], capacity: int | None = None) -> PackedBatch:
    """FFD-pack ``lengths`` into rows of ``capacity`` (default: the longest prompt)."""
    capacity = max(lengths) if capacity is None else capacity
    packs = ffd_pack(lengths, capacity)
    seqlens: list[int] = []
    places: dict[int, tuple[int, int, int]] = {}
    for row, pack in enumerate(packs):
        start = 0
        for i in pack:
            places[i] = (row, start, start + lengths[i])
            seqlens.append(lengths[i])
            start += lengths[i]
        if start < capacity:
            seqlens.append(capacity - start)
    return PackedBatch(packs=tuple(tuple(p) for p in packs), pack_len=capacity,
                       layout=PackLayout.from_seqlens(seqlens),
                       places=tuple(places[i] for i in range(len(lengths))))


def make_batches(lengths: Sequence[int], batch_size: int, method: str) -> list[list[int]]:
    """Prompt indices of each batch: dataset order, or length order for ``sorted``."""
    order = list(range(len(lengths)))
    if method == "sorted":
        order.sort(key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------- attention
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


# ---------------------------------------------------------------------------------- forwards
@dataclass
class BatchOutput:
    """First greedy token and per-layer ``(K, V)`` (``[kv_heads, len, head_dim]`` views) of
    each prompt, in input order; ``rows x row_len`` tokens were computed."""

    first_tokens: list[int]
    caches: list[list[tuple[torch.Tensor, torch.Tensor]]]
    rows: int
    row_len: int

    @property
    def compute_tokens(self) -> int:
        return self.rows * self.row_len


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _first_tokens(model: Any, hidden: torch.Tensor) -> list[int]:
    return model.get_output_embeddings()(hidden).argmax(-1).tolist()


def _split(cache: Any, places: Sequence[tuple[int, int, int]]) -> list[list[tuple]]:
    return [[(layer.keys[row, :, s:e], layer.values[row, :, s:e]) for layer in cache.layers]
            for row, s, e in places]


def run_padded(model: Any, prompts: Sequence[Sequence[int]]) -> BatchOutput:
    """Left-padded batch, ``attention_mask`` and position ids from the mask."""
    use_attention(model, "sdpa")
    device = _device(model)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD_ID] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    with torch.inference_mode():
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                               use_cache=True)
        first = _first_tokens(model, out.last_hidden_state[:, -1])
    places = [(i, width - len(p), width) for i, p in enumerate(prompts)]
    return BatchOutput(first, _split(out.past_key_values, places), len(prompts), width)


def packed_inputs(batch: PackedBatch, prompts: Sequence[Sequence[int]],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and restarting ``position_ids``, both ``[num_packs, pack_len]``."""
    rows = []
    for pack in batch.packs:
        row = [t for i in pack for t in prompts[i]]
        rows.append(row + [PAD_ID] * (batch.pack_len - len(row)))
    ids = torch.tensor(rows, device=device)
    positions = batch.layout.positions(device).view(batch.num_packs, batch.pack_len)
    return ids, positions


def _packed_forward(model: Any, prompts: Sequence[Sequence[int]], batch: PackedBatch,
                    **kwargs: Any) -> BatchOutput:
    device = _device(model)
    ids, positions = packed_inputs(batch, prompts, device)
    rows = torch.tensor([r for r, _, _ in batch.places], device=device)
    ends = torch.tensor([e - 1 for _, _, e in batch.places], device=device)
    with torch.inference_mode():
        out = model.base_model(input_ids=ids, position_ids=positions, use_cache=True, **kwargs)
        first = _first_tokens(model, out.last_hidden_state[rows, ends])
    return BatchOutput(first, _split(out.past_key_values, batch.places), batch.num_packs,
                       batch.pack_len)


def run_packed(model: Any, prompts: Sequence[Sequence[int]], kernel: str,
               capacity: int | None = None) -> BatchOutput:
    """FFD packs of ``capacity`` (default the longest prompt) with the ``prepack`` attention."""
    use_attention(model, ATTN_NAME)
    batch = pack_batch([len(p) for p in prompts], capacity)
    plan = make_plan(batch.layout, kernel, _device(model))
    return _packed_forward(model, prompts, batch, **{PLAN_KWARG: plan})


def run_packed_hf_mask(model: Any, prompts: Sequence[Sequence[int]],
                       capacity: int | None = None) -> BatchOutput:
    """Control: packs of ``capacity`` (default all prompts in one row) and restarting
    positions through ``sdpa`` with the mask that transformers builds itself under
    ``use_cache=True`` (plain causal across the prompts of a row)."""
    use_attention(model, "sdpa")
    lengths = [len(p) for p in prompts]
    batch = pack_batch(lengths, sum(lengths) if capacity is None else capacity)
    return _packed_forward(model, prompts, batch)


def run_batch(model: Any, method: str, prompts: Sequence[Sequence[int]],
              kernel: str) -> BatchOutput:
    if method in BASELINES:
        return run_padded(model, prompts)
    if method == "prepacked":
        return run_packed(model, prompts, kernel)
    if method == "prepacked_flat":
        return run_packed(model, prompts, kernel, capacity=sum(len(p) for p in prompts))
    raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")


def run_alone(model: Any, prompt: Sequence[int]) -> tuple[int, list[tuple]]:
    """First token and per-layer ``(K, V)`` of ``prompt`` run alone through ``model``."""
    use_attention(model, "sdpa")
    ids = torch.tensor([list(prompt)], device=_device(model))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
    cache = [(layer.keys[0], layer.values[0]) for layer in out.past_key_values.layers]
    return int(out.logits[0, -1].argmax()), cache


# ---------------------------------------------------------------------------------- checks
def kv_errors(out: BatchOutput, refs: Sequence[tuple[int, list[tuple]]]) -> list[float]:
    """Max |K/V difference| to the prompt-alone cache, per prompt."""
    errors = []
    for layers, (_, ref) in zip(out.caches, refs):
        err = 0.0
        for (k, v), (rk, rv) in zip(layers, ref):
            err = max(err, (k.float() - rk.float()).abs().max().item(),
                      (v.float() - rv.float()).abs().max().item())
        errors.append(err)
    return errors


def _summary(out: BatchOutput, refs: Sequence[tuple[int, list[tuple]]], atol: float) -> dict:
    errors = kv_errors(out, refs)
    agree = [a == r for a, (r, _) in zip(out.first_tokens, refs)]
    return {"max_kv_abs_err": max(errors), "per_prompt_kv_abs_err": errors,
            "first_token_agreement": sum(agree) / len(agree), "atol": atol,
            "within_atol": max(errors) <= atol}


def check_methods(model: Any, prompts: Sequence[Sequence[int]], methods: Sequence[str],
                  kernel: str, atol: float) -> dict:
    """Each method's caches and first tokens on ``prompts`` (one batch) against each prompt
    alone. ``prepacked_flat`` is always checked: its one row holds several prompts even where
    the longest prompt leaves no room beside it in a ``prepacked`` pack."""
    refs = [run_alone(model, p) for p in prompts]
    ref_scale = max(max(k.float().abs().max().item(), v.float().abs().max().item())
                    for _, layers in refs for k, v in layers)
    result: dict[str, Any] = {"prompts": len(prompts), "lengths": [len(p) for p in prompts],
                              "max_abs_kv_value": ref_scale, "methods": {}}
    for method in dict.fromkeys([*methods, "prepacked_flat"]):
        order = make_batches([len(p) for p in prompts], len(prompts), method)[0]
        out = run_batch(model, method, [prompts[i] for i in order], kernel)
        result["methods"][method] = {**_summary(out, [refs[i] for i in order], atol),
                                     "rows": out.rows, "row_len": out.row_len}
    control = _summary(run_packed_hf_mask(model, prompts), refs, atol)
    result["causal_mask_control"] = {
        **control, "note": "all prompts in one row through sdpa with transformers' own mask "
                           "(use_cache=True): expected to differ for every prompt but the first"}
    return result


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(model: Any, method: str, prompts: Sequence[Sequence[int]],
              batches: Sequence[Sequence[int]], kernel: str) -> dict:
    """Every batch of the dataset back to back: per-batch seconds, TTFT, peak memory."""
    device = _device(model)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for idx in batches:
        batch = [prompts[i] for i in idx]
        _sync(device)
        start = time.perf_counter()
        out = run_batch(model, method, batch, kernel)
        _sync(device)
        times.append(time.perf_counter() - start)
        del out
    done, ttft_sum = 0.0, 0.0
    for idx, t in zip(batches, times):
        done += t
        ttft_sum += done * len(idx)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"batch_ms": [t * 1e3 for t in times], "total_ms": sum(times) * 1e3,
            "ttft_mean_ms": ttft_sum / len(prompts) * 1e3, "peak_mem_bytes": peak}


def batch_shapes(lengths: Sequence[int], batches: Sequence[Sequence[int]],
                 method: str) -> list[dict]:
    """Rows, row length and real tokens of each batch of ``method``."""
    shapes = []
    for idx in batches:
        lens = [lengths[i] for i in idx]
        if method in BASELINES:
            rows, width = len(lens), max(lens)
        else:
            packed = pack_batch(lens, sum(lens) if method == "prepacked_flat" else None)
            rows, width = packed.num_packs, packed.pack_len
        shapes.append({"prompts": len(lens), "rows": rows, "row_len": width,
                       "real_tokens": sum(lens), "compute_tokens": rows * width})
    return shapes


def _median(values: Sequence[float]) -> float:
    return analysis.spread(list(values))["median"]


def summarize_method(passes: list[dict], shapes: list[dict], oom: str | None) -> dict:
    real = sum(s["real_tokens"] for s in shapes)
    compute = sum(s["compute_tokens"] for s in shapes)
    summary: dict[str, Any] = {"oom": oom, "batches": shapes, "real_tokens": real,
                               "compute_tokens": compute, "padding_overhead": compute / real,
                               "per_rep": passes}
    if passes:
        totals = [p["total_ms"] for p in passes]
        summary.update(
            batch_ms_median=_median([t for p in passes for t in p["batch_ms"]]),
            total_ms=analysis.spread(totals),
            ttft_mean_ms=analysis.spread([p["ttft_mean_ms"] for p in passes]),
            prefill_tokens_per_s=analysis.spread([real / t * 1e3 for t in totals]),
            peak_mem_bytes=None if passes[0]["peak_mem_bytes"] is None
            else max(p["peak_mem_bytes"] for p in passes))
    return summary


def speedups(methods: dict[str, dict]) -> dict[str, dict]:
    """``baseline total / packed total`` per repetition, for every pair that ran."""
    out = {}
    for packed in PACKED_METHODS:
        for base in BASELINES:
            a, b = methods.get(base), methods.get(packed)
            if not a or not b or a["oom"] or b["oom"]:
                continue
            ratios = [x["total_ms"] / y["total_ms"] for x, y in zip(a["per_rep"], b["per_rep"])]
            s = analysis.spread(ratios)
            s["verdict"] = analysis.verdict(s, higher_is_better=True)
            out[f"{packed}_vs_{base}"] = s
    return out


# ---------------------------------------------------------------------------------- models
def load_model(source: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, dict]:
    """A model shape of :mod:`benchmarks.models` (random weights, built on ``device``) or a
    local model directory; with ``sdpa`` attention. Returns the model and its config dict."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    register_attention()
    if source in models.SHAPES:
        config = AutoConfig.from_pretrained(models.config_dir(source, ROOT / ".models"))
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                     attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype,
                                                     attn_implementation="sdpa")
        model.to(device)
    model.eval()
    return model, model.config.to_dict()


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_workload(model: Any, workload: workloads.Workload, args: argparse.Namespace,
                   kernel: str, bar: Any) -> dict:
    """Every batch size, repetition and method on one workload."""
    vocab = model.config.vocab_size
    lengths = list(workload.lengths)
    prompt_sets = [workload.prompts(vocab, rep) for rep in range(args.reps)]
    by_size = {}
    for size in args.batch_sizes:
        batches = {m: make_batches(lengths, size, m) for m in args.methods}
        passes: dict[str, list[dict]] = {m: [] for m in args.methods}
        oom: dict[str, str | None] = dict.fromkeys(args.methods)
        for method in args.methods:  # warm-up: first two batches, untimed
            try:
                for idx in batches[method][:2]:
                    run_batch(model, method, [prompt_sets[0][i] for i in idx], kernel)
            except torch.OutOfMemoryError as exc:
                oom[method] = str(exc).splitlines()[0]
            _free(_device(model))
        for rep in range(args.reps):
            shift = rep % len(args.methods)  # rotate the method order every repetition
            for method in args.methods[shift:] + args.methods[:shift]:
                bar.update()
                if oom[method]:
                    continue
                try:
                    passes[method].append(time_pass(model, method, prompt_sets[rep],
                                                    batches[method], kernel))
                except torch.OutOfMemoryError as exc:
                    oom[method], passes[method] = str(exc).splitlines()[0], []
                _free(_device(model))
        methods = {m: summarize_method(passes[m], batch_shapes(lengths, batches[m], m), oom[m])
                   for m in args.methods}
        by_size[str(size)] = {"methods": methods, "speedups": speedups(methods)}
    return by_size


def bench_model(source: str, args: argparse.Namespace, bar: Any) -> list[dict]:
    """Every workload on one model; the model is built once."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model, config = load_model(source, dtype, device)
    kernel, kernel_note = select_kernel(args.packed_kernel, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    model_bytes = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    runs = []
    for name in args.workload:
        workload = workloads.make(name, args.n, args.seed, max_len=args.max_len)
        check_prompts = workload.prompts(config["vocab_size"], 0)[:args.check_prompts]
        correctness = check_methods(model, check_prompts, args.methods, kernel,
                                    ATOL[args.dtype])
        _free(device)
        for method, c in correctness["methods"].items():
            if not c["within_atol"]:
                print(f"WARNING: {source}/{name} {method}: max K/V error {c['max_kv_abs_err']:.2e}"
                      f" > atol {c['atol']:.0e}", file=sys.stderr)
        runs.append({
            "model_shape": source if source in models.SHAPES else Path(source).name,
            "model": None if source in models.SHAPES else str(source),
            "weights": "random" if source in models.SHAPES else "loaded",
            "model_config": config, "parameters": params, "model_bytes": model_bytes,
            "workload": workload.describe(), "lengths": list(workload.lengths),
            "packed_kernel": kernel, "packed_kernel_note": kernel_note,
            "correctness": correctness,
            "by_batch_size": bench_workload(model, workload, args, kernel, bar)})
    del model
    _free(device)
    return runs


# ---------------------------------------------------------------------------------- reporting
def _fmt_ms(m: dict | None, key: str = "total_ms") -> str:
    if not m:
        return "-"
    return "OOM" if m["oom"] else f"{m[key]['mean']:.1f}"


def _fmt_mem(padded: dict | None, prepacked: dict | None) -> str:
    def gib(m: dict | None) -> str | None:
        if not m or m["oom"] or m.get("peak_mem_bytes") is None:
            return None
        return f"{m['peak_mem_bytes'] / 2**30:.2f}"

    a, b = gib(padded), gib(prepacked)
    return "n/a" if a is None and b is None else f"{a or '-'}/{b or '-'}"


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for run in result["runs"]:
        for size, entry in run["by_batch_size"].items():
            m, s = entry["methods"], entry["speedups"]
            ttft = "/".join(_fmt_ms(m.get(k), "ttft_mean_ms") for k in
                            ("padded", "sorted", "prepacked"))
            rows.append([run["model_shape"], run["workload"]["name"], size,
                         _fmt_ms(m.get("padded")), _fmt_ms(m.get("sorted")),
                         _fmt_ms(m.get("prepacked")), _fmt_ms(m.get("prepacked_flat")),
                         report.fmt_ratio(s.get("prepacked_vs_padded")),
                         report.fmt_ratio(s.get("prepacked_vs_sorted")),
                         report.fmt_ratio(s.get("prepacked_flat_vs_padded")), ttft,
                         _fmt_mem(m.get("padded"), m.get("prepacked"))])
    return rows


HEADER = ["shape", "workload", "batch", "padded ms", "sorted ms", "prepacked ms", "flat ms",
          "prepacked vs padded", "prepacked vs sorted", "flat vs padded",
          "TTFT mean ms padded/sorted/prepacked", "peak mem GiB padded/prepacked"]


def render_section(results: list[dict]) -> str:
    """Markdown: one table per result JSON (ms: all batches of the dataset, mean over
    repetitions; speedups: ratio of those totals, mean [min-max] over repetitions, **win**
    where the spread excludes 1.0; flat: ``prepacked_flat``)."""
    lines: list[str] = []
    for d in results:
        lines += [f"#### Prepacking paper, HF transformers ({d['device']}, {d['dtype']}, "
                  f"transformers {d.get('transformers')}, commit {str(d['git_commit'])[:10]}, "
                  f"{d['repetitions']} reps, n={d['n']})", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(d)]
        lines.append("")
    return "\n".join(lines)


def print_table(result: dict) -> None:
    rows = [HEADER, *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def plot(result: dict, path: str | Path) -> Path:
    """PNG: speedup over ``padded`` (total time) against batch size, one line per method,
    one panel per (model, workload)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    cols = min(3, len(runs))
    nrows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.5 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        sizes = [int(s) for s in run["by_batch_size"]]
        for method in METHODS[1:]:
            xs, ys, lo, hi = [], [], [], []
            for size in sizes:
                m = run["by_batch_size"][str(size)]["methods"]
                if method not in m or "padded" not in m or m[method]["oom"] or m["padded"]["oom"]:
                    continue
                ratios = [a["total_ms"] / b["total_ms"]
                          for a, b in zip(m["padded"]["per_rep"], m[method]["per_rep"])]
                s = analysis.spread(ratios)
                xs.append(size)
                ys.append(s["mean"])
                lo.append(s["mean"] - s["min"])
                hi.append(s["max"] - s["mean"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=method)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("speedup over padded")
        ax.set_title(f"{run['model_shape']} / {run['workload']['name']}", fontsize=9)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle(f"prefill speedup ({result['device']}, {result['dtype']})", fontsize=10)
    fig.tight_layout()
    return report.save_figure(fig, path)


# ---------------------------------------------------------------------------------- CLI
def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _choices(parser: argparse.ArgumentParser, flag: str, values: list[str],
             accepted: Sequence[str]) -> list[str]:
    bad = [v for v in values if v not in accepted]
    if bad or not values:
        parser.error(f"{flag}: unknown value(s) {', '.join(bad) or '(none)'}; accepted: "
                     f"{', '.join(accepted)}")
    return values


def _positive_ints(parser: argparse.ArgumentParser, flag: str, value: str) -> list[int]:
    try:
        values = [int(v) for v in _csv(value)]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        parser.error(f"{flag}: {value!r} is not a comma-separated list of positive integers")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-shape", default=None,
                        help=f"comma-separated, random weights; one of {', '.join(models.SHAPES)}"
                             " (default sheared-llama-1.3b)")
    parser.add_argument("--model", default=None, help="a local model directory instead")
    parser.add_argument("--workload", default="mmlu",
                        help=f"comma-separated; one of {', '.join(workloads.MIXES)}")
    parser.add_argument("--n", type=int, default=256, help="prompts per workload")
    parser.add_argument("--max-len", type=int, default=None, help="cap prompt lengths")
    parser.add_argument("--batch-sizes", default="4,8,16,32,64")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated; of {', '.join(METHODS)}")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dtype", default="auto",
                        help=f"auto (float16 on CUDA, else float32) or {', '.join(DTYPES)}")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    parser.add_argument("--packed-kernel", default="auto", help=f"one of {', '.join(KERNELS)}")
    parser.add_argument("--check-prompts", type=int, default=4,
                        help="prompts per run checked against the prompt-alone forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--plot", default=None, help="write the speedup PNG here")
    args = parser.parse_args(argv)
    if args.model and args.model_shape:
        parser.error("--model and --model-shape are exclusive")
    if args.model:
        if not (Path(args.model) / "config.json").exists():
            parser.error(f"--model: no config.json in {args.model}")
        args.sources = [args.model]
    else:
        args.sources = _choices(parser, "--model-shape",
                                _csv(args.model_shape or "sheared-llama-1.3b"), list(models.SHAPES))
    args.workload = _choices(parser, "--workload", _csv(args.workload), list(workloads.MIXES))
    args.methods = _choices(parser, "--methods", _csv(args.methods), METHODS)
    args.batch_sizes = _positive_ints(parser, "--batch-sizes", args.batch_sizes)
    _choices(parser, "--device", [args.device], DEVICES)
    _choices(parser, "--packed-kernel", [args.packed_kernel], KERNELS)
    _choices(parser, "--dtype", [args.dtype], ["auto", *DTYPES])
    for flag, value in (("--n", args.n), ("--reps", args.reps),
                        ("--check-prompts", args.check_prompts), ("--max-len", args.max_len)):
        if value is not None and value <= 0:
            parser.error(f"{flag}: {value} is not a positive integer")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.dtype == "auto":
        args.dtype = "float16" if args.device == "cuda" else "float32"
    args.check_prompts = min(args.check_prompts, args.n)
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm
    from transformers import __version__ as transformers_version

    torch.manual_seed(args.seed)
    total = (len(args.sources) * len(args.workload) * len(args.batch_sizes) * args.reps
             * len(args.methods))
    runs: list[dict] = []

    def result() -> dict:
        return {
            "benchmark": BENCHMARK, **harness.environment(), "transformers": transformers_version,
            "reference": REFERENCE, "device_type": args.device, "dtype": args.dtype,
            "seed": args.seed, "n": args.n, "max_len": args.max_len, "repetitions": args.reps,
            "batch_sizes": args.batch_sizes, "methods": args.methods,
            "packed_kernel_requested": args.packed_kernel, "check_prompts": args.check_prompts,
            "pack_mode": "prepacked: FFD packs of capacity = longest prompt of the batch, rows "
                         "of [num_packs, pack_len], tail-padded; prepacked_flat: one row, no "
                         "padding",
            "timing": "perf_counter around each batch (inputs to first tokens on host), CUDA "
                      "synchronized; totals and TTFT per repetition; speedups = ratio of totals",
            "runs": runs,
        }

    with tqdm(total=total, desc="paper", unit="pass") as bar:
        for source in args.sources:
            runs += bench_model(source, args, bar)
            if args.out:  # after each model: a time-limited run keeps what it finished
                harness.write_json(args.out, result())
    out = result()
    if args.out:
        print(f"wrote {harness.write_json(args.out, out)}")
    if args.plot:
        print(f"wrote {plot(out, args.plot)}")
    print_table(out)
    return out


if __name__ == "__main__":
    main()
