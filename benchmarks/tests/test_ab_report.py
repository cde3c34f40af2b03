"""``benchmarks.ab_report``: the decode-only step period of each arm against the
baseline's, paired by repetition, from the runs' step-timing summaries; each arm's engine part
of the TTFT from its per-request times."""

from __future__ import annotations

import pytest

from benchmarks import ab_report


def _run(decode_ms: float | None) -> dict:
    timing = {"decode_only_step_period_by_waiting": {"0-50": {"steps": 9, "mean_ms": decode_ms}}}
    return {"step_timing": timing} if decode_ms is not None else {}


def _result(stock: list, prepack: list) -> dict:
    return {"baseline": "stock", "workloads": {"trace_1.5xsat": {"runs": {
        "stock": [_run(x) for x in stock], "prepack-default": [_run(x) for x in prepack]}}}}


def test_step_speed_pairs_runs_by_repetition():
    d = _result([10.0, 20.0, 10.0], [11.0, 22.0, 11.5])
    r = ab_report.step_speed(d["workloads"]["trace_1.5xsat"], "stock")["prepack-default"]
    assert r["n"] == 3
    assert r["min"] == pytest.approx(1.1) and r["max"] == pytest.approx(1.15)
    assert r["verdict"] == "loss"  # slower steps, lower is better
    (line,) = ab_report.step_speed_lines(d)
    assert "trace_1.5xsat" in line and "prepack-default 1.12 [1.10-1.15] **loss**" in line
    assert line in ab_report.ratio_lines({**d, "workloads": {
        k: {**w, "ratios_vs_stock": {}} for k, w in d["workloads"].items()}}, True)


def test_step_speed_needs_the_step_timing_of_both_arms():
    assert ab_report.step_speed_lines(_result([10.0], [None])) == []
    assert ab_report.step_speed_lines(_result([None, None], [10.0, 11.0])) == []
    partial = ab_report.step_speed(_result([10.0, 10.0], [12.0, None])["workloads"]
                                   ["trace_1.5xsat"], "stock")
    assert partial["prepack-default"]["n"] == 1


def test_engine_split_per_arm_where_every_run_recorded_it():
    def run(queue: list, prefill: list, preemptions: list) -> dict:
        return {"queue_s": queue, "prefill_s": prefill, "preemptions": preemptions}

    d = {"baseline": "stock", "workloads": {"trace_1.5xsat": {"runs": {
        "stock": [run([0.1, 0.3], [0.05, 0.05], [0, 2]), run([0.2], [0.04], [0])],
        "prepack-default": [run([0.1], [0.06], [1]), {}]}}}}
    (line,) = ab_report.engine_split_lines(d)
    # stock: queue (200 + 200) / 2 ms, prefill (50 + 40) / 2 ms, one request preempted in 2 runs
    assert "trace_1.5xsat" in line and "stock 200 + 45 ms, 0.5 preempted a run." in line
    assert "prepack-default" not in line  # one of its runs did not record the split
    d["workloads"]["trace_1.5xsat"]["runs"]["stock"][1] = {}
    assert ab_report.engine_split_lines(d) == []


def test_host_lines_show_each_arms_executor_time_and_process_counters():
    def run(exec_ms: float, cpu_ms: float, switches: int, gc_s: float) -> dict:
        return {"step_timing": {
            "decode_only_parts": {"steps": 9, "exec_ms": exec_ms, "exec_cpu_ms": cpu_ms},
            "process": {"wall_s": 10.0, "thread_involuntary_switches": switches,
                        "gc_s": gc_s, "loadavg_1m": [1.0, 3.0]}}}

    d = {"baseline": "stock", "workloads": {"trace_1.5xsat": {"runs": {
        "stock": [run(14.0, 13.0, 100, 0.1), run(16.0, 15.0, 300, 0.3)],
        "prepack-default": [run(18.0, 12.0, 5000, 0.2)]}}}}
    (line,) = ab_report.host_lines(d)
    assert "stock executor 15.00 ms (its CPU 14.00), 20 involuntary switches/s" in line
    assert "prepack-default executor 18.00 ms (its CPU 12.00), 500 involuntary switches/s" in line
    assert "GC 0.20 s, host load 3.0" in line
    # A run without the counters (an older steps file): no line.
    d["workloads"]["trace_1.5xsat"]["runs"]["stock"][0] = {}
    assert ab_report.host_lines(d) == []
