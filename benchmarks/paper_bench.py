"""The prepacking paper's measurement: the model (a shape with random weights, or a local
directory), every batch of the dataset timed back to back per method, repetitions in rotating
method order, each method's summary and the packed/baseline speedups."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import analysis, models, workloads
from benchmarks.paper_attention import register_attention, select_kernel
from benchmarks.paper_check import check_methods
from benchmarks.paper_methods import _device, run_batch
from benchmarks.paper_pack import BASELINES, PACKED_METHODS, make_batches, pack_batch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Max |K/V| difference to the prompt-alone run under which a check counts as passed.
ATOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


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
            r = speedup(methods.get(base), methods.get(packed))
            if r is not None:
                out[f"{packed}_vs_{base}"] = r
    return out


def speedup(base: dict | None, packed: dict | None) -> dict | None:
    """``base`` total / ``packed`` total over paired repetitions (None: one did not run)."""
    if not base or not packed or base["oom"] or packed["oom"]:
        return None
    n = min(len(base["per_rep"]), len(packed["per_rep"]))
    return analysis.paired_ratio([x["total_ms"] for x in base["per_rep"][:n]],
                                 [y["total_ms"] for y in packed["per_rep"][:n]],
                                 higher_is_better=True)


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


def bench_workload(model: Any, workload: workloads.Workload, args: Any,
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


def bench_model(source: str, args: Any, bar: Any) -> list[dict]:
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
