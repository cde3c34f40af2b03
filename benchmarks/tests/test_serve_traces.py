"""The serving A/B harness without a server: its traces (exact lengths, arrivals, unique hash
ids), their expansion by vLLM's own TimedTrace, the run checks, the ``/metrics`` parsing and
the packing statistics."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import serve_drive, serve_pool, serve_runs, serve_traces, workloads
from benchmarks.tests.suite_env import TRACE_CSV
from vllm_prepack.stats import summarize_records


def test_trace_has_exact_lengths_poisson_arrivals_and_unique_hash_ids():
    mix = workloads.make("sharegpt", 2000, seed=1)
    outs = serve_traces.output_lengths("8:64", 2000, seed=1)
    assert min(outs) >= 8 and max(outs) <= 64 and len(set(outs)) > 1
    assert serve_traces.output_lengths("8:64", 2000, seed=1) == outs
    entries = serve_traces.make_trace(mix.lengths, outs, rate=20.0, seed="s/rep0", hash_start=7)
    assert [e["input_length"] for e in entries] == list(mix.lengths)
    assert [e["output_length"] for e in entries] == outs
    stamps = [e["timestamp"] for e in entries]
    assert stamps == sorted(stamps) and stamps[0] > 0
    assert len(entries) / stamps[-1] == pytest.approx(20.0, rel=0.1)
    ids = [h for e in entries for h in e["hash_ids"]]
    assert len(ids) == len(set(ids)) and min(ids) == 7
    for e in entries:
        assert len(e["hash_ids"]) == math.ceil(e["input_length"] / serve_traces.CHUNK)
    # The same seed at twice the rate is the same process, twice as fast.
    faster = serve_traces.make_trace(mix.lengths, outs, rate=40.0, seed="s/rep0")
    assert [e["timestamp"] for e in faster] == pytest.approx([t / 2 for t in stamps], abs=1e-5)
    assert serve_traces.make_trace(mix.lengths, outs, rate=20.0, seed="s/rep1") != entries
    offline = serve_traces.make_trace(mix.lengths, outs, rate=None, seed=0)
    assert {e["timestamp"] for e in offline} == {0.0}
    with pytest.raises(ValueError, match="--output-len"):
        serve_traces.output_lengths("0", 4, seed=0)


def test_trace_book_never_repeats_hash_ids(tmp_path):
    book = serve_traces.TraceBook(tmp_path, [5, 40, 16], [2, 2, 2])
    a = book.get("a", 10.0, 0)[1]
    b = book.get("b", 10.0, 0)[1]
    assert book.get("a", 10.0, 0)[1] is a
    ids = [h for e in a + b for h in e["hash_ids"]]
    assert len(ids) == len(set(ids))
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == b


def test_timed_trace_expands_to_exactly_input_length_tokens(tiny_model, tmp_path):
    from vllm.benchmarks.datasets.datasets import TimedTrace
    from vllm.tokenizers import get_tokenizer

    lengths = [1, 15, 16, 17, 31, 32, 33, 100, 257, 1000]
    outs = [4] * len(lengths)
    entries = serve_traces.make_trace(lengths, outs, rate=5.0, seed=3)
    path = serve_traces.write_trace(tmp_path / "trace.jsonl", entries)
    dataset = TimedTrace(
        dataset_path=str(path), timed_trace_chunk_hash_size=serve_traces.CHUNK,
        timed_trace_sec_multiplier=1, timed_trace_label_timestamp="timestamp",
        timed_trace_label_input_length="input_length",
        timed_trace_label_output_length="output_length",
        timed_trace_label_hash_ids="hash_ids")
    tokenizer = get_tokenizer(tiny_model)
    samples = dataset.sample(tokenizer=tokenizer, num_requests=len(lengths))
    assert [len(s.prompt) for s in samples] == lengths
    assert [s.prompt_len for s in samples] == lengths
    assert [s.expected_output_len for s in samples] == outs
    assert [s.timestamp for s in samples] == [e["timestamp"] for e in entries]
    specials = set(tokenizer.all_special_ids)
    assert all(0 <= t < len(tokenizer) and t not in specials for s in samples for t in s.prompt)
    # No shared prefix: the first chunks of the multi-chunk prompts all differ.
    chunk = serve_traces.CHUNK
    heads = [tuple(s.prompt[:chunk]) for s in samples if len(s.prompt) > chunk]
    assert len(heads) == len(set(heads))


def test_metrics_parsing_and_packing_summary():
    steps = [
        {"prefill_tokens": 30, "admitted": 2, "fill": 0.5, "partial_prefills": 0, "overtakes": 1,
         "planned": 2, "plan_adhered": True, "planner_fault": False, "oldest_wait_s": 0.1},
        {"prefill_tokens": 0, "admitted": 0, "fill": 0.01, "partial_prefills": 0, "overtakes": 0,
         "planned": None, "plan_adhered": None, "planner_fault": False, "oldest_wait_s": 0.0},
        # Data parallelism: a throttled step vLLM deferred (not counted against adherence),
        # and a throttled step that admitted while capacity-bound (counted).
        {"prefill_tokens": 0, "admitted": 0, "fill": 0.0, "partial_prefills": 0, "overtakes": 0,
         "planned": 1, "plan_adhered": False, "planner_fault": False, "oldest_wait_s": 0.2,
         "throttled": True},
        {"prefill_tokens": 40, "admitted": 3, "fill": 0.7, "partial_prefills": 1,
         "overtakes": 0, "planned": 4, "plan_adhered": False, "planner_fault": False,
         "oldest_wait_s": 0.3, "throttled": True},
    ]
    s = summarize_records(steps)
    assert s["steps"] == 4 and s["prefill_steps"] == 2 and s["prefill_tokens"] == 70
    assert s["mean_prefill_fill"] == 0.6 and s["plan_adherence"] == 0.5 and s["overtakes"] == 1
    assert s["throttled_steps"] == 2 and s["throttled_admitted"] == 3
    before = {"vllm:prompt_tokens_total": 10.0}
    after = {"vllm:prompt_tokens_total": 25.0, "vllm:time_to_first_token_seconds_sum": 0.5,
             "vllm:time_to_first_token_seconds_count": 5.0, "vllm:num_requests_running": 0.0,
             "vllm:request_queue_time_seconds_sum": 0.2,
             "vllm:request_queue_time_seconds_count": 5.0}
    d = serve_pool.metrics_delta(before, after)
    assert d["vllm:prompt_tokens_total"] == 15.0 and d["server_ttft_mean_ms"] == 100.0
    assert d["server_queue_mean_ms"] == pytest.approx(40.0) and d["server_prefill_mean_ms"] is None
    assert d["server_tpot_mean_ms"] is None  # a series the server did not report
    entries = serve_traces.make_trace([3, 4], [2, 2], rate=None, seed=0)
    ok = {"completed": 2, "failed": 0, "input_lens": [3, 4], "output_lens": [2, 2]}
    assert serve_runs.check_run(ok, entries) == []
    lost = {**ok, "completed": 1, "failed": 1, "input_lens": [3, 0], "output_lens": [2, 0]}
    assert len(serve_runs.check_run(lost, entries)) == 3
    delta = {"vllm:prompt_tokens_total": 7.0, "vllm:generation_tokens_total": 4.0,
             "vllm:request_success_total:length": 2.0}
    assert serve_runs.cross_check(delta, entries) == []
    assert len(serve_runs.cross_check({**delta, "vllm:prompt_tokens_total": 3.0}, entries)) == 1


def test_a_run_takes_the_records_of_its_own_steps(tmp_path):
    """The steps ``/metrics`` counted between two scrapes select a run's records, per engine:
    a record of an earlier step that lands after the offsets (the engine's writer thread is a
    moment behind) is not the run's; a missing record is noted."""
    def line(step: int, **more: int) -> str:
        return json.dumps({"step": step, "admitted": 1, "prefill_tokens": 8, "fill": 0.1,
                           "partial_prefills": 0, "overtakes": 0, "oldest_wait_s": 0.0,
                           **more}) + "\n"

    lines = "".join(line(s) for s in (4, 5, 6))
    base = tmp_path / "prepack_stats.jsonl"
    base.write_text(lines)
    before = {"vllm_prepack_steps_total:0": 4.0}
    after = {"vllm_prepack_steps_total:0": 6.0, "vllm:prompt_tokens_total": 1.0}
    windows = serve_pool.step_windows(before, after)
    assert windows == {0: range(5, 7)}
    notes: list[str] = []
    out = serve_runs.packing_of_run(base, {}, windows, notes)
    assert out["packing"]["steps"] == 2 and out["packing"]["admitted"] == 2 and notes == []
    # Step 7 was counted and never written.
    out = serve_runs.packing_of_run(base, {}, {0: range(5, 8)}, notes, timeout=0)
    assert out["packing"]["steps"] == 2 and notes == ["statistics file records 2 != /metrics "
                                                      "steps 3"]
    base.unlink()
    for rank in (0, 1):  # data parallel: a file per rank, its records carry the rank
        (tmp_path / f"prepack_stats.dp{rank}.jsonl").write_text("".join(
            line(s, dp_rank=rank) for s in (1, 2)))
    out = serve_runs.packing_of_run(base, {}, {0: range(2, 3), 1: range(1, 3)}, [])
    assert {k: v["steps"] for k, v in out["packing_per_rank"].items()} == {
        "prepack_stats.dp0.jsonl": 1, "prepack_stats.dp1.jsonl": 2}
    # No step series on /metrics: every record past the offsets, noted.
    notes = []
    offsets = {tmp_path / "prepack_stats.dp0.jsonl": len(line(1, dp_rank=0))}
    out = serve_runs.packing_of_run(base, offsets, {}, notes, timeout=2)
    assert out["packing"]["steps"] == 3 and len(notes) == 1


def test_stats_files_include_every_data_parallel_rank(tmp_path):
    from benchmarks.serve_runs import stats_files

    base = tmp_path / "prepack_stats.jsonl"
    assert stats_files(base) == []
    for rank in (1, 0):
        (tmp_path / f"prepack_stats.dp{rank}.jsonl").write_text("")
    assert [p.name for p in stats_files(base)] == ["prepack_stats.dp0.jsonl",
                                                   "prepack_stats.dp1.jsonl"]


def test_per_rank_line_sums_each_data_parallel_rank_over_runs():
    from benchmarks.serve_report import _per_rank_line

    def run(a0, a1, t):
        return {"packing_per_rank": {
            "prepack_stats.dp0.jsonl": {"admitted": a0, "steps": 10, "throttled_steps": t},
            "prepack_stats.dp1.jsonl": {"admitted": a1, "steps": 9, "throttled_steps": t}}}

    assert _per_rank_line({"runs": [{"packing": {}}]}) == ""
    line = _per_rank_line({"runs": [run(3, 5, 6), run(4, 4, 7)]})
    assert "dp0 admitted 7, 20 steps, 13 throttled" in line
    assert "dp1 admitted 9, 18 steps, 13 throttled" in line


def test_trace_arrivals_keep_their_pattern_at_every_rate(tmp_path):
    from benchmarks.trace import load

    path = tmp_path / "trace.csv"
    path.write_text(TRACE_CSV)
    w = load(path)
    unit = [a * w.rate for a in w.arrivals]
    entries = serve_traces.make_trace(w.lengths, w.output_lens, rate=2.5, seed=0,
                                      unit_arrivals=unit)
    stamps = [e["timestamp"] for e in entries]
    # Mean rate 2.5 req/s: the trace compressed by 2.5 / (5 / 4 s).
    assert stamps == pytest.approx([a / 2.0 for a in w.arrivals], abs=1e-5)
    assert [e["input_length"] for e in entries] == list(w.lengths)
    assert [e["output_length"] for e in entries] == [4, 9, 5, 1, 12, 3]
    assert {e["timestamp"] for e in serve_traces.make_trace(
        w.lengths, w.output_lens, rate=None, seed=0, unit_arrivals=unit)} == {0.0}
    with pytest.raises(ValueError, match="one arrival per prompt"):
        serve_traces.make_trace([1, 2], [1, 1], rate=1.0, seed=0, unit_arrivals=[0.0])


@pytest.mark.parametrize("loads", [1, 2, 3])
def test_every_load_runs_each_arm_first_in_alternate_repetitions(loads):
    """Arm order must not be tied to the load: with an even number of loads, alternating by
    the (repetition, load) pair index ran one arm first at every repetition of a load."""
    for li in range(loads):
        firsts = [serve_drive.arm_order(rep, li)[0] for rep in range(4)]
        assert firsts[0::2] == [firsts[0]] * 2 and firsts[1::2] == [firsts[1]] * 2
        assert firsts[0] != firsts[1]
        assert sorted(serve_drive.arm_order(0, li)) == sorted(serve_pool.ARMS)
    if loads > 1:
        assert serve_drive.arm_order(0, 0) != serve_drive.arm_order(0, 1)


def test_moving_mean_of_ttft_by_arrival():
    from benchmarks.serve_plots import moving_mean

    assert moving_mean([1.0, 3.0, 5.0, 7.0], 2) == [2.0, 4.0, 6.0]
    assert moving_mean([4.0, 0.0, 2.0], 3) == [2.0]
    values = [0.1 * i * i for i in range(30)]
    assert moving_mean(values, 7) == pytest.approx(
        [sum(values[i:i + 7]) / 7 for i in range(24)])
