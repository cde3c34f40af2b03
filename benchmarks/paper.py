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

Modules: :mod:`benchmarks.paper_options` (options, CLI), :mod:`benchmarks.paper_pack` (FFD
packing), :mod:`benchmarks.paper_attention` (the packed attention),
:mod:`benchmarks.paper_methods` (the methods' forwards), :mod:`benchmarks.paper_check` (the KV
check), :mod:`benchmarks.paper_bench` (timing, speedups) and :mod:`benchmarks.paper_report`.

    python -m benchmarks.paper --model-shape sheared-llama-1.3b --workload mmlu --n 256 \\
        --batch-sizes 4,8,16,32,64 --methods padded,sorted,prepacked --reps 3 \\
        --dtype float16 --out benchmarks/results/paper_X.json
    python -m benchmarks.paper --model .models/tiny-llama --n 12 --batch-sizes 4 --reps 1
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from benchmarks import harness
from benchmarks.paper_bench import bench_model
from benchmarks.paper_options import PaperOptions, parse
from benchmarks.paper_report import plot, print_table

BENCHMARK = "prepacking paper (HF transformers): padded vs length-sorted vs prepacked prefill"
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


def _record(opts: PaperOptions, runs: list[dict]) -> dict:
    from transformers import __version__ as transformers_version

    return {
        "benchmark": BENCHMARK, **harness.environment(), "transformers": transformers_version,
        "reference": REFERENCE, "device_type": opts.device, "dtype": opts.dtype,
        "seed": opts.seed, "n": opts.n, "max_len": opts.max_len, "repetitions": opts.reps,
        "batch_sizes": list(opts.batch_sizes), "methods": list(opts.methods),
        "packed_kernel_requested": opts.packed_kernel, "check_prompts": opts.check_prompts,
        "pack_mode": "prepacked: FFD packs of capacity = longest prompt of the batch, rows "
                     "of [num_packs, pack_len], tail-padded; prepacked_flat: one row, no "
                     "padding",
        "timing": "perf_counter around each batch (inputs to first tokens on host), CUDA "
                  "synchronized; totals and TTFT per repetition; speedups = ratio of totals",
        "runs": runs,
    }


def run(opts: PaperOptions) -> dict:
    """Every model, workload, batch size, repetition and method; the result JSON (written to
    ``opts.out`` after each model: a time-limited run keeps what it finished)."""
    from tqdm import tqdm

    torch.manual_seed(opts.seed)
    total = (len(opts.sources) * len(opts.workload) * len(opts.batch_sizes) * opts.reps
             * len(opts.methods))
    runs: list[dict] = []
    with tqdm(total=total, desc="paper", unit="pass") as bar:
        for source in opts.sources:
            runs += bench_model(source, opts, bar)
            if opts.out:
                harness.write_json(opts.out, _record(opts, runs))
    return _record(opts, runs)


def main(argv: Sequence[str] | None = None) -> dict:
    opts = parse(argv, __doc__)
    out = run(opts)
    if opts.out:
        print(f"wrote {harness.write_json(opts.out, out)}")
    if opts.plot:
        print(f"wrote {plot(out, opts.plot)}")
    print_table(out)
    return out


if __name__ == "__main__":
    main()
