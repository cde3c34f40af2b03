"""The trace simulator's models without a simulation: the step-time model (its fit to the H200
step timings, the one-step lag of async scheduling, the check against measured steps) and the
scheduler's CPU-time model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import trace_sim_model

RESULTS = Path(__file__).resolve().parents[1] / "results"
STEPS = RESULTS / "trace_llm_8b_b2048_4x_h200_steps.json"
HOST_FIT = RESULTS / "trace_sim_host_fit_cpu.json"


def test_step_model_fit_on_the_h200_step_timings():
    model, fit = trace_sim_model.fit_step_model(json.loads(STEPS.read_text()))
    assert fit["steps"] > 1000 and abs(fit["total_time_error"]) < 1e-6 and fit["lag"] == 1
    assert 0.005 < model.base < 0.05 and model.gpu_per_token > 0
    committed = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    for name in ("base", "per_decode", "gpu_base", "gpu_per_token"):
        assert getattr(committed, name) == pytest.approx(getattr(model, name), rel=0.02), name
    assert trace_sim_model.STEP_NOISE == pytest.approx(fit["log_residual_sd"], abs=0.01)


def test_step_model_predicts_the_full_budget_steps_of_both_h200_files():
    # Steps of 1900-2048 prefill tokens (each period one step late, see the next test): the
    # compute term, fitted on one file, predicts the median of both within 15%.
    import numpy as np

    model = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    for path in (STEPS, RESULTS / "trace_llm_8b_b2048_1.0sat_h200_vllm033_steps.json"):
        measured, predicted = [], []
        for arms in json.loads(path.read_text())["steps"].values():
            for runs in arms.values():
                for run in runs:
                    period = np.diff(run["t"])[1:]
                    for k, p in enumerate(period):
                        if run["prefill"][k] >= 1900 and p < 1.0:
                            measured.append(p)
                            predicted.append(model.seconds({
                                "prefill_tokens": run["prefill"][k],
                                "decodes": run["decode_reqs"][k], "attn": 0, "decode_ctx": 0}))
        assert len(measured) > 100
        assert np.median(predicted) == pytest.approx(np.median(measured), rel=0.15), path.name


def test_async_scheduling_schedules_a_step_after_the_output_of_the_step_before_last():
    # What lag 1 rests on: in the H200 steps, schedule() k + 1 follows step k - 1's output.
    import numpy as np

    for arms in json.loads(STEPS.read_text())["steps"].values():
        for runs in arms.values():
            for run in runs:
                t, t_out = np.asarray(run["t"]), np.asarray(run["t_out"])
                after_last_but_one = np.median(np.abs(t[2:] - t_out[:-2]))
                before_last = np.median(t[1:] - t_out[:-1])  # schedule() k + 1 before output k
                assert after_last_but_one < 3e-3 and before_last < -1e-2


def test_step_model_fit_recovers_launch_and_compute_seen_one_step_late():
    truth = trace_sim_model.StepModel(base=0.015, per_token=0.0, per_decode=5e-5,
                                      gpu_base=0.003, gpu_per_token=2e-5)
    prefill = [(k * 613) % 2049 if k % 3 else 0 for k in range(600)]
    decodes = [(k * 37) % 128 for k in range(600)]
    t = [0.0, 0.01]  # the period after schedule() k is step k - 1's time
    for k in range(1, 599):
        t.append(t[-1] + truth.seconds({"prefill_tokens": prefill[k - 1], "decodes": decodes[k - 1],
                                        "attn": 0, "decode_ctx": 0}))
    steps = {"steps": {"w": {"arm": [{"rep": 1, "t": t, "prefill": prefill,
                                      "decode_reqs": decodes}]}}}
    model, fit = trace_sim_model.fit_step_model(steps)
    for name in ("base", "per_decode", "gpu_base", "gpu_per_token"):
        assert getattr(model, name) == pytest.approx(getattr(truth, name), rel=1e-6), name
    assert fit["mean_abs_error_s"] < 1e-9
    _, same_step = trace_sim_model.fit_step_model(steps, lag=0)
    assert same_step["mean_abs_error_s"] > 1e-3


def _steps_of(model, n: int = 600) -> dict:
    """A steps file whose periods ``model`` gives exactly, each one step late (lag 1)."""
    prefill = [(k * 613) % 2049 if k % 3 else 0 for k in range(n)]
    decodes = [(k * 37) % 250 for k in range(n)]
    ctx = [p + 900 * d for p, d in zip(prefill, decodes)]
    t = [0.0, 0.01]
    for k in range(1, n - 1):
        f = {"prefill_tokens": prefill[k - 1], "decodes": decodes[k - 1], "attn": 0,
             "decode_ctx": 900 * decodes[k - 1]}
        t.append(t[-1] + model.seconds(f))
    return {"steps": {"w": {"arm": [{"rep": 0, "t": t, "prefill": prefill,
                                     "decode_reqs": decodes, "ctx": ctx}]}}}


def test_step_model_check_puts_the_model_beside_the_measured_steps():
    import dataclasses

    truth = trace_sim_model.StepModel(base=0.015, per_token=0.0, per_decode=5e-5,
                                      per_ctx=0.02, gpu_base=0.003, gpu_per_token=2e-5)
    steps = _steps_of(truth)
    exact = trace_sim_model.step_model_check(steps, truth)
    assert exact["steps"] == 598 and exact["model_over_measured"] == pytest.approx(1.0)
    assert {(b["decodes"], b["prompt_tokens"]) for b in exact["bins"]} >= {
        ("0-39", False), ("0-39", True), (">=200", False), (">=200", True)}
    for b in exact["bins"]:
        assert b["model_ms"] == pytest.approx(b["measured_ms"]), b
    # the launch floor of every step 10 ms lower: the model falls short where launch decides
    slow = trace_sim_model.step_model_check(steps, dataclasses.replace(truth, base=0.005))
    assert slow["model_over_measured"] < 0.9
    decode_only = {b["decodes"]: b for b in slow["bins"] if not b["prompt_tokens"]}
    assert decode_only["0-39"]["model_ms"] < decode_only["0-39"]["measured_ms"] - 9


def test_a_step_takes_the_longer_of_launch_and_compute():
    model = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    decode_only = {"prefill_tokens": 0, "decodes": 100, "attn": 0, "decode_ctx": 0}
    full = {**decode_only, "prefill_tokens": 8192}
    assert model.seconds(decode_only) == pytest.approx(model.base + 100 * model.per_decode)
    assert model.seconds(full) == pytest.approx(model.gpu_base + 8292 * model.gpu_per_token)
    assert model.seconds(full) > 4 * model.seconds(decode_only)


def test_host_model_fit_recovers_a_linear_cost():
    truth = trace_sim_model.HostModel(base=2e-4, per_scheduled=3e-5, per_new=1e-4)
    samples = [(s, n, truth.seconds(s, n)) for s in range(1, 400, 37) for n in range(0, 30, 7)]
    model, fit = trace_sim_model.fit_host_model(samples)
    for name in ("base", "per_scheduled", "per_new"):
        assert getattr(model, name) == pytest.approx(getattr(truth, name), rel=1e-6)
    assert abs(fit["total_time_error"]) < 1e-9


def test_the_committed_host_model_is_the_committed_fit():
    fit = json.loads(HOST_FIT.read_text())
    assert trace_sim_model.HOST_MODEL == trace_sim_model.HostModel(**fit["host_model"]["model"])
    assert fit["host_model"]["fit"]["steps"] > 10_000
    model = trace_sim_model.HOST_MODEL
    assert model.per_scheduled > 0 and model.seconds(300, 0) > model.seconds(10, 0)
    assert set(fit["per_arm"]) == set(fit["arms"])
