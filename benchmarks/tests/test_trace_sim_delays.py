"""Per-request delays in the trace simulator (:mod:`benchmarks.trace_sim_delays`): each TTFT split
into lag, hold and span, and an arm's differences from stock split the same way."""

from __future__ import annotations

import collections
import math
from types import SimpleNamespace

import pytest

from benchmarks import trace_sim, trace_sim_delays, trace_sim_drive, trace_sim_model

BUDGET = 256


def _requests(n: int = 60, rate: float = 400.0) -> list[trace_sim_drive.Request]:
    # Prompts of 8-407 tokens arriving faster than the engine drains them: a queue forms.
    return [trace_sim_drive.Request(i / rate, (17 * i) % 400 + 8, 4 + i % 5) for i in range(n)]


def _run(tiny_model: str, arm: str) -> trace_sim_drive.Run:
    return trace_sim_drive.simulate(
        arm, _requests(), model=tiny_model, budget=BUDGET, max_num_seqs=8, num_blocks=512,
        max_model_len=1024, step_model=trace_sim_model.STEP_MODELS["llama-3.1-8b"], seed=0,
        cpu_scale=0.0)


@pytest.mark.parametrize("arm", ["stock", "stretch"])
def test_lag_hold_and_span_sum_to_each_ttft(tiny_model, arm):
    run, reqs = _run(tiny_model, arm), _requests()
    ev = run.events
    assert set(ev.first) == set(run.ttft) == {f"r{i}" for i in range(len(reqs))}
    for i, r in enumerate(reqs):
        lag, hold, span = trace_sim_delays.parts(run, f"r{i}", r.arrival)
        assert lag >= 0 and hold >= 0 and span > 0
        assert lag + hold + span == pytest.approx(run.ttft[f"r{i}"])
        # A prompt takes at least as many steps as the budget needs to hold it.
        assert ev.prefill_steps[f"r{i}"] >= math.ceil(r.prompt_len / BUDGET)
    assert run.held == ev.held() and set(run.held) == set(run.ttft)
    assert any(ev.prefill_steps[f"r{i}"] > 1 for i, r in enumerate(reqs) if r.prompt_len <= BUDGET)
    assert not ev.preempted  # 512 blocks: no preemption


def test_an_arms_differences_split_into_their_parts(tiny_model):
    stock, ours = _run(tiny_model, "stock"), _run(tiny_model, "stretch")
    arrivals = {f"r{i}": r.arrival for i, r in enumerate(_requests())}
    b = trace_sim_delays.breakdown(stock, ours, arrivals, top=3)
    total = sum(ours.ttft.values()) - sum(stock.ttft.values())
    assert b["delayed"]["ttft_s"] + b["sped"]["ttft_s"] == pytest.approx(total)
    for side in ("delayed", "sped"):
        t = b[side]
        assert t["lag_s"] + t["hold_s"] + t["span_s"] == pytest.approx(t["ttft_s"])
    assert b["delayed"]["ttft_s"] > 0 > b["sped"]["ttft_s"]  # the order moved requests both ways
    assert b["sped"]["hold_s"] < 0  # short prompts overtake: the sped-up ones are held less
    rows = b["most_delayed"]
    assert 0 < len(rows) <= 3 and [r["delta_ms"] for r in rows] == sorted(
        (r["delta_ms"] for r in rows), reverse=True)
    for row in rows + b["most_sped"]:
        key = f"r{row['request']}"
        assert row["delta_ms"] == pytest.approx(1e3 * (ours.ttft[key] - stock.ttft[key]))
        assert row["lag_ms"] + row["hold_ms"] + row["span_ms"] == pytest.approx(row["delta_ms"])
        assert row["prefill_steps"] == [stock.events.prefill_steps[key],
                                        ours.events.prefill_steps[key]]


@pytest.mark.parametrize("arm", ["stock", "stretch"])
def test_each_hold_splits_by_what_its_steps_left(tiny_model, arm):
    """With KV to spare every hold is a step whose budget or slots were taken (both schedulers
    are work-conserving: no ``room``); with few KV blocks, holds for KV appear, and vLLM's FCFS
    holds requests that would fit behind a head that does not (``room``)."""
    for blocks in (512, 40):
        run = trace_sim_drive.simulate(
            arm, _requests(), model=tiny_model, budget=BUDGET, max_num_seqs=8,
            num_blocks=blocks, max_model_len=1024,
            step_model=trace_sim_model.STEP_MODELS["llama-3.1-8b"], seed=0, cpu_scale=0.0)
        why = collections.Counter()
        for i, r in enumerate(_requests()):
            held = run.events.held_for.get(f"r{i}", collections.Counter())
            assert set(held) <= set(trace_sim_delays.REASONS)
            assert sum(held.values()) == pytest.approx(trace_sim_delays.parts(
                run, f"r{i}", r.arrival)[1])  # the hold, step by step
            why.update(held)
        if blocks == 512:
            assert why["budget"] > 0 and why["kv"] == why["room"] == 0
        else:
            assert why["kv"] > 0 and (why["room"] > 0 or arm != "stock")


def test_passed_by_counts_later_arrivals_scheduled_first():
    ev = trace_sim_delays.Events(first={"r0": 3.0, "r1": 1.0, "r2": 2.0, "r3": 3.0})
    assert trace_sim_delays.passed_by(ev) == {"r0": 2, "r1": 0, "r2": 0, "r3": 0}


def test_breakdown_of_hand_made_runs():
    def run(first: dict, ttft: dict, preempted=()):
        ev = trace_sim_delays.Events(visible={r: 0.0 for r in first}, first=first,
                                     preempted=set(preempted))
        return SimpleNamespace(ttft=ttft, events=ev, prompt_lens={"r0": 100, "r1": 10})

    stock = run({"r0": 0.0, "r1": 1.0}, {"r0": 1.0, "r1": 2.0})
    ours = run({"r0": 1.0, "r1": 0.0}, {"r0": 2.5, "r1": 0.5}, preempted=["r0"])
    stock.events.held_for = {"r1": collections.Counter(budget=0.75, kv=0.25)}
    ours.events.held_for = {"r0": collections.Counter(room=1.0)}
    b = trace_sim_delays.breakdown(stock, ours, {"r0": 0.0, "r1": 0.0})
    assert b["delayed"] == {"requests": 1, "ttft_s": 1.5, "lag_s": 0.0, "hold_s": 1.0,
                            "span_s": 0.5, "preempted_here_only": 1, "hold_by_reason_s": {
                                "budget": 0.0, "slots": 0.0, "kv": 0.0, "room": 1.0}}
    assert b["sped"] == {"requests": 1, "ttft_s": -1.5, "lag_s": 0.0, "hold_s": -1.0,
                         "span_s": -0.5, "preempted_here_only": 0, "hold_by_reason_s": {
                             "budget": -0.75, "slots": 0.0, "kv": -0.25, "room": 0.0}}
    (row,) = b["most_delayed"]
    assert row["request"] == 0 and row["passed_by"] == [0, 1] and row["preempted"] == [False, True]
    assert [r["request"] for r in b["most_sped"]] == [1]


def test_the_cli_takes_delays():
    assert trace_sim.parse(["--delays"]).delays and not trace_sim.parse([]).delays


def test_the_report_shows_where_the_differences_come_from():
    from benchmarks import sim_report

    def side(n, ttft, hold, span, lag, pre=0):
        why = {"budget": hold / 2, "slots": 0.0, "kv": hold / 4, "room": hold / 4}
        return {"requests": n, "ttft_s": ttft, "hold_s": hold, "span_s": span, "lag_s": lag,
                "preempted_here_only": pre, "hold_by_reason_s": why}

    worst = {"request": 7, "prompt_tokens": 900, "stock_ms": 300.0, "delta_ms": 120.0,
             "hold_ms": 100.0, "span_ms": 15.0, "lag_ms": 5.0, "prefill_steps": [1, 2],
             "preempted": [False, False], "passed_by": [0, 3]}
    windows = [{"delayed": side(4, 1.0, 0.8, 0.1, 0.1, 1), "sped": side(2, -2.0, -2.0, 0, 0),
                "most_delayed": [worst], "most_sped": []},
               {"delayed": side(2, 0.0, 0.0, 0.0, 0.0), "sped": side(0, 0, 0, 0, 0),
                "most_delayed": [], "most_sped": []}]
    d = {"points": [{"budget": 2048, "load": 1.5, "delays": {"stretch": windows}},
                    {"budget": 8192, "load": 1.0}]}
    lines = sim_report.delays_table(d)
    rows = [x for x in lines if x.startswith("| 2048")]
    assert rows == ["| 2048 | 1.50x | stretch | 3 | +0.50: +0.40 / +0.05 / +0.05 | "
                    "+0.20 / +0.00 / +0.10 / +0.10 | 0.5 | 1 | "
                    "-1.00: -1.00 / +0.00 / +0.00 | 7 (900 tokens): +120 ms on 300 (hold +100, "
                    "span +15), passed by 3 |"]
    assert not any(x.startswith("| 8192") for x in lines)  # no delays recorded there
    assert sim_report.delays_table({"points": [{"budget": 1, "load": 1.0}]}) == []
