"""``benchmarks.ab`` without an engine: its options survive the trip to an engine process,
and its ratios come from ``analysis.compare`` in the JSON shape the results rely on."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import ab


def test_options_round_trip_through_the_engine_process_argv():
    o = ab.resolve(ab.Options(model="m", workload="trace", n=6, load_factors="0.5,1",
                              rate=None, isolate=True, max_num_seqs=4,
                              engine_args='{"max_model_len": 1024}'))
    assert o.prefix_caching == "default" and o.step_timing == "on"
    ns = ab.parser().parse_args(ab.to_argv(o))
    fields = {f.name for f in dataclasses.fields(ab.Options)}
    assert ab.Options(**{k: v for k, v in vars(ns).items() if k in fields}) == o


def test_problem_names_each_bad_combination():
    assert ab.problem(ab.Options(model="m")) is None
    assert "--rate must be > 0" in ab.problem(ab.Options(model="m", rate=0))
    assert "give one of" in ab.problem(ab.Options(model="m", workload="trace",
                                                  compression="2", rate=3.0))
    assert "give --model or --model-shape" in ab.problem(ab.Options())


def test_engines_alive_together_must_fit_the_gpu():
    three = ab.Options(model="m", arms="stock,prepack-fcfs,prepack-default",
                       engine_args='{"gpu_memory_utilization": 0.4}')
    error = ab.problem(three)
    assert "3 engines alive at once" in error and "1.20" in error and "0.33" in error
    assert ab.problem(dataclasses.replace(three, isolate=True)) is None
    assert ab.problem(dataclasses.replace(three, arms="stock,prepack")) is None
    assert ab.problem(dataclasses.replace(three, engine_args="{}")) is None  # CPU: no share
    assert "must be a JSON object" in ab.problem(dataclasses.replace(three, engine_args="[1"))


def test_aggregate_keeps_the_json_shape_and_drops_partly_measured_metrics():
    rows = {"stock": [{"wall_s": 2.0, "ttft_mean_s": 1.0, "packed_share": 0.0},
                      {"wall_s": 4.0, "ttft_mean_s": None, "packed_share": 0.0}],
            "prepack": [{"wall_s": 1.0, "ttft_mean_s": 0.5, "packed_share": 0.5},
                        {"wall_s": 2.1, "ttft_mean_s": 0.5, "packed_share": 0.5}]}
    out = ab.aggregate(rows, "stock")
    assert list(out) == ["per_arm", "ratios_vs_stock"]
    assert set(out["per_arm"]["stock"]) == {"wall_s", "packed_share"}
    assert set(out["per_arm"]["prepack"]) == {"wall_s", "ttft_mean_s", "packed_share"}
    (ratios,) = out["ratios_vs_stock"].values()
    assert list(ratios) == ["wall_s"]  # ttft_mean_s: the baseline missed a repetition
    assert ratios["wall_s"]["mean"] == pytest.approx((0.5 + 0.525) / 2)
    assert ratios["wall_s"]["n"] == 2 and ratios["wall_s"]["verdict"] == "win"
