"""Per-step CPU cost of the packed-prefill path's worker code on the steps it leaves to vLLM.

On every step the packed backend's metadata builder tests whether the step is a pure prefill
pack (``pure_prefill_layout``), and every attention layer's ``forward`` looks for a pack before
it calls vLLM's own. A decode step fails the test and runs vLLM's attention, so the plugin adds
the test once a step and the look once a layer. This times both on decode steps of N requests:
the test on a vLLM ``CommonAttentionMetadata`` (its tensors on the step's device, CUDA where
there is one, the CPU copies the runner keeps), and the look with vLLM's ``forward`` replaced
by a no-op, so that only the plugin's added work is timed.

    python -m benchmarks.runner_cost --decodes 1,128,1024 --layers 32 \\
        --out benchmarks/results/runner_cost_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from vllm.v1.attention.backend import CommonAttentionMetadata

from benchmarks import harness
from vllm_prepack.adapters.attention import _PackingImpl, pure_prefill_layout


def step_metadata(query_lens: list[int], seq_lens: list[int],
                  device: str) -> CommonAttentionMetadata:
    """vLLM's per-step attention metadata for requests of these query and sequence lengths."""
    starts = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32)
    seq = torch.tensor(seq_lens, dtype=torch.int32)
    tokens = int(starts[-1])
    return CommonAttentionMetadata(
        query_start_loc=starts.to(device), query_start_loc_cpu=starts,
        seq_lens=seq.to(device), num_reqs=len(seq_lens), num_actual_tokens=tokens,
        max_query_len=max(query_lens), max_seq_len=max(seq_lens),
        block_table_tensor=torch.zeros((len(seq_lens), 8), dtype=torch.int32, device=device),
        slot_mapping=torch.zeros(tokens, dtype=torch.int64, device=device),
        seq_lens_cpu_upper_bound=seq)


class _VllmForward:
    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output,
                output_scale=None, output_block_scale=None):
        return output


class _PluginForward(_PackingImpl, _VllmForward):
    """The plugin's impl over the no-op, built by its own ``__init__`` (a covered layer)."""


def per_call_us(fn, calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean microseconds of one call."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append(1e6 * (time.perf_counter() - t0) / calls)
    return statistics.median(times)


def row(decodes: int, layers: int, calls: int, device: str) -> dict:
    """The plugin's added CPU time on one decode step of ``decodes`` requests."""
    metadata = step_metadata([1] * decodes, [100 + 7 * i for i in range(decodes)], device)
    assert pure_prefill_layout(metadata) is None, "a decode step passed the pure-prefill test"
    test_us = per_call_us(lambda: pure_prefill_layout(metadata), calls)
    plain, plugin, md = _VllmForward(), _PluginForward(), SimpleNamespace()
    args = (None, None, None, None, None, md, None)
    look_us = max(0.0, per_call_us(lambda: plugin.forward(*args), calls)
                  - per_call_us(lambda: plain.forward(*args), calls))
    return {"decodes": decodes, "test_us": round(test_us, 2),
            "look_us_per_layer": round(look_us, 3),
            "step_us": round(test_us + layers * look_us, 1)}


@dataclass(frozen=True)
class Options:
    """The CLI of ``python -m benchmarks.runner_cost``, one field per flag."""

    decodes: str = "1,128,1024"
    layers: int = 32
    calls: int = 2000
    out: str | None = None


def run(o: Options) -> dict:
    """Every batch size; the JSON (also to ``o.out``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prefill = step_metadata([5, 3], [5, 3], device)
    assert pure_prefill_layout(prefill) is not None, "a pure prefill step failed the test"
    rows = []
    for n in (int(x) for x in o.decodes.split(",")):
        rows.append(row(n, o.layers, o.calls, device))
        r = rows[-1]
        print(f"{n:5d} decodes: pure-prefill test {r['test_us']:.1f} us, look "
              f"{r['look_us_per_layer']:.2f} us a layer; {r['step_us']:.1f} us a step of "
              f"{o.layers} layers", flush=True)
    result = {"benchmark": "packed-path worker cost on decode steps", **harness.environment(),
              "tensors_on": device, "layers": o.layers, "calls": o.calls,
              "timer": "time.perf_counter, mean of --calls calls, median of 5", "rows": rows}
    if o.out:
        harness.write_json(o.out, result)
        print("wrote", o.out)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner_cost",
                                     description=__doc__.splitlines()[0])
    harness.add_flags(parser, Options)
    return run(Options(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
