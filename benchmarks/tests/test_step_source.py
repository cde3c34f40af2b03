"""Step timings from a serving result: the prepack arm's step series cut at idle gaps and
missing records, fitted to the model that produced them, and read beside a steps file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import step_source, trace_sim_model
from benchmarks.serve_runs import step_series

RESULTS = Path(__file__).resolve().parents[1] / "results"
STEPS = RESULTS / "trace_llm_8b_b2048_4x_h200_steps.json"
TRUTH = trace_sim_model.StepModel(base=0.004, per_token=0.0, per_decode=2e-5,
                                  gpu_base=0.002, gpu_per_token=1.5e-5)


def _records(n: int, idle_at: set[int], missing: set[int], lag: int = 1,
             t0: float = 1.7e9) -> list[dict]:
    """Statistics records of ``n`` steps whose periods ``TRUTH`` gives ``lag`` steps late (1:
    async scheduling); before each step in ``idle_at`` the engine idles 0.5 s and every running
    request is new; the records of ``missing`` are lost."""
    prefill = [(k * 613) % 8193 if k % 3 else 0 for k in range(n)]
    decodes = [(k * 37) % 250 + 1 for k in range(n)]
    t = [t0, t0 + 0.01][:lag + 1]
    for k in range(lag, n - 1):
        t.append(t[-1] + TRUTH.seconds({"prefill_tokens": prefill[k - lag],
                                        "decodes": decodes[k - lag], "attn": 0, "decode_ctx": 0})
                 + 0.5 * (k + 1 in idle_at))
    records = []
    for k in range(n):
        running = decodes[k] + (prefill[k] > 0)
        records.append({"step": k, "time": t[k], "prefill_tokens": prefill[k],
                        "scheduled_tokens": prefill[k] + decodes[k], "running": running,
                        "admitted": running if k in idle_at else (prefill[k] > 0)})
    return [r for k, r in enumerate(records) if k not in missing]


def _result(*runs: list[dict], scheduler: str = "PrepackAsyncScheduler") -> dict:
    cls = f"vllm_prepack.adapters.scheduler.{scheduler}"
    return {"arms": {"prepack": {"scheduler_class": cls}},
            "runs": [{"arm": "stock", "ok": True},
                     *({"arm": "prepack", "ok": True, "step_series": step_series(r)}
                       for r in runs),
                     {"arm": "prepack", "ok": False, "step_series": step_series(runs[0])}]}


def test_step_series_is_in_step_order_from_the_first_step():
    records = _records(50, set(), set())
    cols = step_series(list(reversed(records)))
    assert cols["step"] == list(range(50)) and cols["time"][0] == 0.0
    assert cols["time"][1] == pytest.approx(0.01) and len(cols["running"]) == 50


def test_serve_steps_cut_at_idle_gaps_and_missing_records():
    steps = step_source.serve_steps(_result(_records(40, {10, 25}, {33})))
    segments = steps["steps"]["serve"]["prepack"]
    assert [len(s["t"]) for s in segments] == [10, 15, 8, 6]  # 0-9, 10-24, 25-32, 34-39
    assert all(s["rep"] == 0 for s in segments)
    assert all(p < 0.5 for s in segments for p in (b - a for a, b in zip(s["t"], s["t"][1:])))


def test_a_model_fitted_to_serve_steps_is_the_one_that_made_them(tmp_path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(_result(_records(600, {100, 350}, {420}),
                                       _records(300, {50}, set()))))
    model, fit = step_source.fitted((str(path),))
    for name in ("base", "per_decode", "gpu_base", "gpu_per_token"):
        # times kept to the microsecond
        assert getattr(model, name) == pytest.approx(getattr(TRUTH, name), rel=1e-3), name
    assert fit["mean_abs_error_s"] < 1e-5 and fit["files"] == ["serve.json"]
    # without the cuts, the idle gaps land in the fit
    recs = _records(600, {100, 350}, set())
    loose = {"steps": {"s": {"prepack": [{
        "rep": 0, "t": [r["time"] for r in recs], "prefill": [r["prefill_tokens"] for r in recs],
        "decode_reqs": [r["scheduled_tokens"] - r["prefill_tokens"] for r in recs]}]}}}
    _, loose_fit = trace_sim_model.fit_step_model(loose, skip_reps=())
    assert loose_fit["mean_abs_error_s"] > 100 * fit["mean_abs_error_s"]


def test_the_cli_writes_the_fit_with_its_run_record(tmp_path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(_result(_records(600, {100, 350}, {420}))))
    out = step_source.main([str(path), "--out", str(tmp_path / "fit.json")])
    written = json.loads((tmp_path / "fit.json").read_text())
    assert written["step_model"] == out["step_model"] and written["fit"] == out["fit"]
    assert written["benchmark"] == "step-time model fit" and written["git_commit"]


def test_load_steps_reads_steps_files_without_their_warm_up():
    merged = step_source.load_steps([STEPS])
    runs = [r for arms in merged["steps"].values() for rs in arms.values() for r in rs]
    assert runs and all(r["rep"] != 0 for r in runs)
    committed = trace_sim_model.STEP_MODELS["llama-3.1-8b"]
    model, _ = step_source.fitted((str(STEPS),))
    assert model.gpu_per_token == pytest.approx(committed.gpu_per_token, rel=0.02)


@pytest.mark.parametrize("content, why", [
    ({"benchmark": "x"}, "neither a benchmarks.ab steps file"),
    ({"runs": [{"arm": "prepack", "ok": True}]}, "no step timings"),
])
def test_files_without_step_timings_are_named(tmp_path, content, why):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=why) as e:
        step_source.load_steps([path])
    assert "bad.json" in str(e.value)


def test_trace_sim_takes_its_step_model_from_step_timings():
    from benchmarks import trace_sim

    opts = trace_sim.parse(["--step-timings", str(STEPS)])
    assert opts.step_timings == (str(STEPS),)
    assert trace_sim.step_model(opts) == step_source.fitted((str(STEPS),))[0]
    assert trace_sim.step_model(trace_sim.parse([])) == trace_sim_model.STEP_MODELS["llama-3.1-8b"]


def test_a_serving_section_states_the_fit_of_its_own_steps():
    result = _result(_records(300, {40}, set()))
    sentence = step_source.describe(result)
    _, fit = trace_sim_model.fit_step_model(step_source.serve_steps(result), skip_reps=())
    assert fit["steps"] == 296 and "(`benchmarks/step_source.py`, 296 steps)" in sentence
    assert f"compute {1e3 * TRUTH.gpu_base:.1f} ms + {1e6 * TRUTH.gpu_per_token:.1f} us" in sentence
    assert step_source.describe(_result(_records(20, set(), set()))) == ""
    assert step_source.describe({"runs": [{"arm": "prepack", "ok": True}]}) == ""


def test_a_synchronous_server_is_fitted_without_the_lag(tmp_path):
    sync, mixed = tmp_path / "sync.json", tmp_path / "async.json"
    sync.write_text(json.dumps(_result(_records(600, {100}, set(), lag=0),
                                       scheduler="PrepackSyncScheduler")))
    mixed.write_text(json.dumps(_result(_records(100, set(), set()))))
    assert step_source.load_steps([sync])["lag"] == 0
    assert step_source.scheduled_async({"runs": []})  # no class recorded: vLLM's GPU default
    model, fit = step_source.fitted((str(sync),))
    assert fit["lag"] == 0 and fit["mean_abs_error_s"] < 1e-5
    assert model.gpu_per_token == pytest.approx(TRUTH.gpu_per_token, rel=1e-3)
    with pytest.raises(ValueError, match="synchronous and asynchronous"):
        step_source.load_steps([sync, mixed])


def test_the_cpu_servers_steps_take_the_second_start():
    """On the CPU server a decode request costs about eight prompt tokens: started from the
    largest prefills, the fit ends with every step on compute, error 2.6 ms; started from the
    median prefill it keeps a launch term per decode request, error 0.9 ms."""
    import numpy as np

    path = RESULTS / "trace_serve_tiny_replay_1.0_steps_cpu.json"
    model, fit = step_source.fitted((str(path),))
    assert fit["lag"] == 0 and fit["mean_abs_error_s"] < 1.2e-3
    assert model.per_decode > 5 * model.gpu_per_token > 0
    x, y = trace_sim_model.step_periods(step_source.load_steps([path]), (), 0)
    *_, first, on_gpu = trace_sim_model._alternate(x, y, x[:, 0] >= 0.9 * x[:, 0].max())
    assert on_gpu.all() and np.abs(first - y).mean() > 2 * fit["mean_abs_error_s"]
