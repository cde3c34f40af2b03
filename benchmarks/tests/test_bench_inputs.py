"""Benchmark inputs: the seeded prompt-length mixes and the Azure-format trace loader."""

from __future__ import annotations

import pytest

from benchmarks import workloads


@pytest.mark.parametrize("name", list(workloads.MIXES))
def test_workloads_are_seeded_and_report_padding(name):
    a, b = workloads.make(name, 64, seed=3), workloads.make(name, 64, seed=3)
    assert a == b and a.prompts(500, rep=1) == b.prompts(500, rep=1)
    assert a.prompts(500, rep=1) != a.prompts(500, rep=2)  # fresh tokens per repetition
    assert [len(p) for p in a.prompts(500)] == list(a.lengths)
    d = a.describe()
    assert d["padding_ratio"] == pytest.approx(max(a.lengths) * 64 / sum(a.lengths), rel=1e-3)
    assert d["padding_ratio"] >= 1.0 and d["arrival"] == "offline"
    poisson = workloads.make(name, 64, seed=3, rate=10.0)
    assert poisson.describe()["arrival"] == "poisson"
    assert list(poisson.arrivals) == sorted(poisson.arrivals) and poisson.arrivals[0] > 0


def test_unknown_workload_is_named():
    with pytest.raises(ValueError, match="unknown workload 'nope'.*mmlu"):
        workloads.make("nope", 4)


def test_trace_loader_windows_compresses_and_clips(trace_file):
    from benchmarks import trace

    path = trace_file
    full = trace.load(path)
    assert full.arrivals == (0.0, 0.5, 1.0, 2.0, 2.5, 4.0) and full.raw_span_s == 4.0
    assert full.lengths == (374, 96, 1879, 91, 500, 40)
    assert full.output_lens == (4, 9, 5, 1, 12, 3)  # at least one output token
    assert full.clipped == 0 and full.rate == pytest.approx(5 / 4.0)
    # Window: rows 1..3, arrivals relative to the window's first request.
    w = trace.load(path, start=1, n=3)
    assert w.arrivals == (0.0, 0.5, 1.5) and w.lengths == (96, 1879, 91)
    assert w.describe()["start"] == 1 and w.describe()["n"] == 3
    # Compression divides the arrival offsets; a rate picks the compression.
    c = trace.load(path, start=1, n=3, compression=4)
    assert c.arrivals == pytest.approx((0.0, 0.125, 0.375)) and c.span_s == pytest.approx(0.375)
    r = trace.load(path, start=1, n=3, rate=8.0)
    assert r.rate == pytest.approx(8.0) and r.compression == pytest.approx(6.0)
    assert r.compressed(2.0).arrivals == pytest.approx((0.0, 0.25, 0.75))
    assert set(full.compressed(float("inf")).arrivals) == {0.0}
    # Clipping: a prompt longer than max_model_len - output is cut, and counted.
    clip = trace.load(path, max_model_len=1024)
    assert clip.lengths[2] == 1024 - 5 and clip.clipped == 1
    assert clip.describe()["clipped_prompts"] == 1
    assert all(p + o <= 1024 for p, o in zip(clip.lengths, clip.output_lens))
    # Fresh prompts per repetition, the same for a given repetition; exact lengths.
    assert [len(p) for p in clip.prompts(500, rep=0)] == list(clip.lengths)
    assert clip.prompts(500, rep=0) == clip.prompts(500, rep=0)
    assert clip.prompts(500, rep=0)[0] != clip.prompts(500, rep=1)[0]
    d = clip.describe()
    assert d["arrival"] == "trace" and "CC-BY 4.0" in d["attribution"]
    assert d["output_tokens_total"] == sum(clip.output_lens)
    with pytest.raises(ValueError, match="asked 10"):
        trace.load(path, start=2, n=10)
    with pytest.raises(ValueError, match="not both"):
        trace.load(path, compression=2, rate=3)


def test_azure_conversation_trace_loads_when_present():
    from benchmarks import trace

    try:
        path = trace.default_path()
    except FileNotFoundError:
        pytest.skip("no azure_conv_2023.csv here")
    w = trace.load(path, start=0, n=500, compression=4, max_model_len=8192)
    assert len(w.lengths) == 500 and w.arrivals[0] == 0.0 and w.clipped == 0
    assert w.rate == pytest.approx(4 * trace.load(path, n=500).rate)
