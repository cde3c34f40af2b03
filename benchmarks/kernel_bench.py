"""Attention kernel micro-benchmark: packed contiguous K/V vs vLLM's paged K/V (GPU, FA3).

For prefill packs of 8k-32k tokens (prompt lengths from the lognormal mix), times
``flash_attn_varlen_func`` over the contiguous packed K/V (``cu_seqlens_k = cu_seqlens_q``,
what ``--scheduler prepack``'s packed path calls) against the same call reading K/V through
a block table from a paged cache (what vLLM's FlashAttention backend calls), for the
Llama-3.2-1B and Llama-3.1-8B head shapes; checks both give the same output. Ratio
paged/packed time > 1 means the packed path is faster.

    python -m benchmarks.kernel_bench --out benchmarks/results/kernel_h100.json
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

from benchmarks import analysis, harness, workloads

HEAD_SHAPES = {"llama-3.2-1b": (32, 8, 64), "llama-3.1-8b": (32, 8, 128)}


def pack_lengths(total: int, seed: int) -> list[int]:
    draw = workloads.MIXES["lognormal"][1]
    rng = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(min(draw(rng), total - sum(lengths)))
    return lengths


def time_ms(fn, iters: int) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def paged_cache(k, v, lengths: list[int], block_size: int, seed: int):
    """``(k_cache, v_cache, block_table)`` in vLLM's FlashAttention layout ``[num_blocks,
    block_size, Hkv, D]``: each prompt's blocks scattered at random, filled with the same
    K/V (one scatter)."""
    import torch

    dev, (hkv, d) = k.device, k.shape[1:]
    blocks = [-(-n // block_size) for n in lengths]
    num_blocks = sum(blocks) + 8
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
    table = torch.zeros(len(lengths), max(blocks), dtype=torch.int32)
    slots, used = [], 0
    for i, (n, nb) in enumerate(zip(lengths, blocks)):
        table[i, :nb] = torch.tensor(perm[used:used + nb])
        slots += [perm[used + p // block_size] * block_size + p % block_size for p in range(n)]
        used += nb
    k_cache = torch.zeros(num_blocks * block_size, hkv, d, device=dev, dtype=k.dtype)
    v_cache = torch.zeros_like(k_cache)
    slot_t = torch.tensor(slots, device=dev)
    k_cache[slot_t], v_cache[slot_t] = k, v
    return (k_cache.view(num_blocks, block_size, hkv, d),
            v_cache.view(num_blocks, block_size, hkv, d), table.to(dev))


def timed_pair(packed, paged, reps: int, iters: int) -> dict[str, list[float]]:
    """Each call's time per repetition, the order alternating each repetition."""
    times = {"packed_ms": [], "paged_ms": []}
    for r in range(reps):
        pair = [("packed_ms", packed), ("paged_ms", paged)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            times[name].append(time_ms(fn, iters))
    return times


def run_shape(shape: str, total: int, block_size: int, reps: int, iters: int, seed: int) -> dict:
    import torch
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    hq, hkv, d = HEAD_SHAPES[shape]
    lengths = pack_lengths(total, seed)
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(seed)
    q = torch.randn(total, hq, d, device=dev, dtype=dt, generator=g)
    k = torch.randn(total, hkv, d, device=dev, dtype=dt, generator=g)
    v = torch.randn(total, hkv, d, device=dev, dtype=dt, generator=g)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=dev,
                      dtype=torch.int32)
    seqlens = torch.tensor(lengths, device=dev, dtype=torch.int32)
    m = max(lengths)
    k_cache, v_cache, table = paged_cache(k, v, lengths, block_size, seed)
    out_packed = torch.empty_like(q)
    out_paged = torch.empty_like(q)
    scale = d ** -0.5

    def packed():
        flash_attn_varlen_func(q=q, k=k, v=v, out=out_packed, cu_seqlens_q=cu,
                               cu_seqlens_k=cu, max_seqlen_q=m, max_seqlen_k=m,
                               softmax_scale=scale, causal=True, fa_version=3)

    def paged():
        flash_attn_varlen_func(q=q, k=k_cache, v=v_cache, out=out_paged, cu_seqlens_q=cu,
                               seqused_k=seqlens, max_seqlen_q=m, max_seqlen_k=m,
                               block_table=table, softmax_scale=scale, causal=True,
                               fa_version=3)

    packed()
    paged()
    torch.cuda.synchronize()
    max_err = (out_packed.float() - out_paged.float()).abs().max().item()
    times = timed_pair(packed, paged, reps, iters)
    # paged/packed time per repetition: through analysis, the one place ratios are made
    speedup = analysis.paired_ratio(times["paged_ms"], times["packed_ms"],
                                    higher_is_better=True)
    return {"shape": shape, "heads_q_kv_dim": [hq, hkv, d],
            "pack_tokens": total, "prompts": len(lengths), "max_prompt": m,
            "block_size": block_size, "max_abs_diff_packed_vs_paged": max_err,
            "packed_ms": analysis.spread(times["packed_ms"]),
            "paged_ms": analysis.spread(times["paged_ms"]),
            "speedup_paged_over_packed": speedup}


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.kernel_bench``, one field per flag."""

    tokens: str = "8192,16384,32768"
    shapes: str = ",".join(HEAD_SHAPES)
    block_size: int = 16
    reps: int = 7
    iters: int = 20
    seed: int = 0
    out: str | None = None


def run(o: Options) -> dict:
    """Every shape at every pack size; the JSON (also to ``o.out``)."""
    rows = []
    for shape in o.shapes.split(","):
        for total in map(int, o.tokens.split(",")):
            row = run_shape(shape, total, o.block_size, o.reps, o.iters, o.seed)
            s = row["speedup_paged_over_packed"]
            print(f"{shape:>14} {total:>6} tok {row['prompts']:>4} prompts: packed "
                  f"{row['packed_ms']['median']:.3f} ms, paged {row['paged_ms']['median']:.3f} ms,"
                  f" paged/packed x{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] "
                  f"{s['verdict']} (max diff {row['max_abs_diff_packed_vs_paged']:.2e})",
                  flush=True)
            rows.append(row)
    result = {"benchmark": "FA3 varlen: packed contiguous K/V vs paged K/V, causal prefill",
              **harness.environment(), "dtype": "bfloat16", "fa_version": 3,
              "workload": "prompt lengths from the lognormal mix, cut to fill each pack",
              "reps": o.reps, "iters": o.iters, "seed": o.seed, "results": rows}
    if o.out:
        harness.write_json(o.out, result)
        print("wrote", o.out)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernel_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_flags(p, Options)
    ns = p.parse_args(sys.argv[1:] if argv is None else argv)
    return run(Options(**vars(ns)))


if __name__ == "__main__":
    main()
