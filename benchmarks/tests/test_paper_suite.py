"""The prepacking-paper benchmark at CPU size (tiny model, fp32): every method's per-prompt KV
caches and first tokens equal the prompt run alone, the check catches a wrong mask, FFD
packing is sound, and the CLI writes a complete JSON. No timing is asserted."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from benchmarks import (
    paper_attention,
    paper_bench,
    paper_check,
    paper_methods,
    paper_options,
    paper_pack,
    paper_report,
)
from benchmarks.tests.suite_env import ROOT, subprocess_env

ATOL = 1e-4
# FFD at capacity 25 packs these as (25), (19, 3), (12, 7): prompts 2 and 0 share a row.
LENGTHS = [7, 19, 3, 12, 25]


@pytest.fixture(scope="module")
def model(tiny_model):
    model, _ = paper_bench.load_model(tiny_model, torch.float32, torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def prompts(model):
    rng = random.Random(0)
    vocab = model.config.vocab_size
    return [[rng.randrange(10, vocab - 10) for _ in range(n)] for n in LENGTHS]


@pytest.fixture(scope="module")
def alone(model, prompts):
    return [paper_methods.run_alone(model, p) for p in prompts]


def _assert_matches(out: paper_methods.BatchOutput, refs: list) -> None:
    assert out.first_tokens == [token for token, _ in refs]
    for layers, (_, ref) in zip(out.caches, refs):
        assert len(layers) == len(ref)
        for (k, v), (rk, rv) in zip(layers, ref):
            assert k.shape == rk.shape and v.shape == rv.shape
            torch.testing.assert_close(k, rk, atol=ATOL, rtol=0)
            torch.testing.assert_close(v, rv, atol=ATOL, rtol=0)


def test_ffd_packs_every_prompt_once_within_capacity():
    rng = random.Random(1)
    for _ in range(300):
        lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 40))]
        capacity = max(lengths) + rng.choice([0, 0, 5, 50])
        packs = paper_pack.ffd_pack(lengths, capacity)
        assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in pack) <= capacity for pack in packs)
        batch = paper_pack.pack_batch(lengths, capacity)
        assert batch.layout.total_tokens == batch.num_packs * batch.pack_len
        for i, (row, start, end) in enumerate(batch.places):
            assert end - start == lengths[i] and end <= capacity and i in batch.packs[row]
    assert paper_pack.ffd_pack(LENGTHS, 25) == [[4], [1, 2], [3, 0]]
    assert len(paper_pack.ffd_pack(LENGTHS, sum(LENGTHS))) == 1
    with pytest.raises(ValueError, match="exceeds pack capacity 24"):
        paper_pack.ffd_pack(LENGTHS, 24)


def test_sorted_batches_are_length_ordered():
    lengths = [5, 1, 4, 2, 3]
    assert paper_pack.make_batches(lengths, 2, "padded") == [[0, 1], [2, 3], [4]]
    assert paper_pack.make_batches(lengths, 2, "sorted") == [[1, 3], [4, 2], [0]]


def test_prepacked_caches_and_first_tokens_equal_prompt_alone(model, prompts, alone):
    out = paper_methods.run_packed(model, prompts, paper_attention.KERNEL_SDPA)
    assert (out.rows, out.row_len) == (3, 25)
    _assert_matches(out, alone)
    flat = paper_methods.run_packed(model, prompts, paper_attention.KERNEL_SDPA,
                                    capacity=sum(LENGTHS))
    assert (flat.rows, flat.row_len) == (1, sum(LENGTHS))
    _assert_matches(flat, alone)


def test_transformers_passes_no_mask_to_the_packed_attention(model, prompts):
    from transformers import AttentionInterface

    masks = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        masks.append(attention_mask)
        return paper_attention.prepack_attention(module, query, key, value, attention_mask,
                                                 **kwargs)

    AttentionInterface.register(paper_attention.ATTN_NAME, spy)
    try:
        paper_methods.run_packed(model, prompts, paper_attention.KERNEL_SDPA)
    finally:
        paper_attention.register_attention()
    assert len(masks) == model.config.num_hidden_layers and all(m is None for m in masks)


def test_check_catches_a_plain_causal_mask_over_packs(model, prompts, alone):
    # transformers' own mask with a cache: causal across the prompts of a row.
    out = paper_methods.run_packed_hf_mask(model, prompts, capacity=25)
    errors = paper_check.kv_errors(out, alone)
    assert errors[2] > 1e-2 and errors[0] > 1e-2, errors  # second in their packs
    assert max(errors[1], errors[3], errors[4]) < ATOL, errors  # first in their packs
    with pytest.raises(AssertionError):
        _assert_matches(out, alone)


def test_padded_and_sorted_equal_prompt_alone(model, prompts, alone):
    _assert_matches(paper_methods.run_padded(model, prompts), alone)
    order = paper_pack.make_batches(LENGTHS, len(LENGTHS), "sorted")[0]
    out = paper_methods.run_batch(model, "sorted", [prompts[i] for i in order],
                                  paper_attention.KERNEL_SDPA)
    _assert_matches(out, [alone[i] for i in order])


def test_check_methods_reports_every_method(model, prompts):
    check = paper_check.check_methods(model, prompts, paper_pack.DEFAULT_METHODS,
                                      paper_attention.KERNEL_SDPA, ATOL)
    assert set(check["methods"]) == {*paper_pack.DEFAULT_METHODS, "prepacked_flat"}
    for method, c in check["methods"].items():
        assert c["within_atol"] and c["first_token_agreement"] == 1.0, (method, c)
    assert not check["causal_mask_control"]["within_atol"]


def test_attention_needs_a_plan_and_kernel_falls_back_on_cpu():
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="prepack_plan"):
        paper_attention.prepack_attention(torch.nn.Module(), q, q, q, None, scaling=0.5)
    kernel, note = paper_attention.select_kernel("auto", torch.device("cpu"), torch.float32)
    assert kernel == paper_attention.KERNEL_SDPA and "not on CUDA" in note
    with pytest.raises(RuntimeError, match="fa3 unavailable"):
        paper_attention.select_kernel("fa3", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("argv, accepted", [
    (["--methods", "padded,nope"], "accepted: padded, sorted, prepacked"),
    (["--workload", "nope"], "accepted: mmlu"),
    (["--model-shape", "nope"], "accepted: llama-3.2-1b"),
    (["--dtype", "int8"], "accepted: auto, float32"),
    (["--batch-sizes", "4,x"], "positive integers"),
])
def test_cli_names_accepted_values(argv, accepted, capsys):
    with pytest.raises(SystemExit):
        paper_options.parse_args(argv)
    assert accepted in capsys.readouterr().err


def test_cli_end_to_end(tiny_model, tmp_path):
    out, png = tmp_path / "paper.json", tmp_path / "paper.png"
    cmd = [sys.executable, "-m", "benchmarks.paper", "--model", tiny_model, "--n", "12",
           "--batch-sizes", "4", "--reps", "1", "--workload", "mmlu",
           "--methods", "padded,sorted,prepacked,prepacked_flat", "--out", str(out),
           "--plot", str(png)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "prepacked ms" in proc.stdout and png.stat().st_size > 0
    d = json.loads(out.read_text())
    for key in ("benchmark", "device", "git_commit", "command", "torch", "transformers",
                "reference", "dtype", "seed", "n", "repetitions", "batch_sizes", "methods",
                "pack_mode", "timing", "runs"):
        assert key in d, key
    assert d["device"].startswith("CPU") and d["dtype"] == "float32"
    assert d["reference"]["paper_headline"]["speedup_prepacked_vs_padded"] == 6.22
    (run,) = d["runs"]
    for key in ("model_shape", "model_config", "parameters", "workload", "lengths",
                "packed_kernel", "correctness", "by_batch_size"):
        assert key in run, key
    assert run["packed_kernel"] == paper_attention.KERNEL_SDPA
    assert run["workload"]["n"] == 12 and run["workload"]["padding_ratio"] >= 1
    for c in run["correctness"]["methods"].values():
        assert c["within_atol"] and c["first_token_agreement"] == 1.0
        assert c["max_kv_abs_err"] <= ATOL
    entry = run["by_batch_size"]["4"]
    for method in paper_pack.METHODS:
        m = entry["methods"][method]
        assert m["oom"] is None and len(m["per_rep"]) == 1 and m["peak_mem_bytes"] is None
        assert len(m["per_rep"][0]["batch_ms"]) == len(m["batches"]) == 3
        assert m["batch_ms_median"] > 0 and m["ttft_mean_ms"]["mean"] > 0
        assert sum(b["prompts"] for b in m["batches"]) == 12
        assert m["padding_overhead"] >= 1.0
    assert entry["methods"]["prepacked_flat"]["padding_overhead"] == 1.0
    for key in ("prepacked_vs_padded", "prepacked_vs_sorted"):
        assert {"mean", "min", "max", "verdict"} <= set(entry["speedups"][key])
    section = paper_report.render_section([d])
    assert "| tiny-llama | mmlu | 4 |" in section and "prepacked vs padded" in section
