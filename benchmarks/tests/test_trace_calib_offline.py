"""The simulator's calibration against an offline GPU replay (``LLM``/``LLMEngine``,
benchmarks.ab), at CI size: its loads, its engines' settings and steps file, and the defaults its
commit ran."""

from __future__ import annotations

import json

import pytest

from benchmarks import trace_calib
from benchmarks.tests.suite_env import TRACE_CSV


def _offline_row(rep: int, ttft: float, tok_s: float, overtakes: int) -> dict:
    return {"rep": rep, "prefill_tokens_per_s": 1000.0, "wall_s": 10.0, "ttft_mean_s": ttft,
            "ttft_p50_s": ttft, "ttft_p99_s": 3 * ttft, "engine_steps": 100,
            "split_prompts": 2, "output_tokens_per_s": tok_s, "requests_per_s": 1.0,
            "overtakes": overtakes}


def test_an_offline_replay_is_simulated_with_its_engines_settings_and_steps(tmp_path,
                                                                             monkeypatch):
    """An ``LLM`` replay (benchmarks.ab): its loads, its engines' resolved budget, sequences,
    KV blocks and scheduling, the prepack arm's options over its commit's defaults and a step
    model fitted to its steps file; a workload at a fixed compression (no load factor) is left
    out; a replay whose commit had another config module is refused."""
    from benchmarks import harness
    from benchmarks.tests.test_step_source import TRUTH, _records, _result

    configs = {("0" * 40, "vllm_prepack/config.py"): "blob", (None, "vllm_prepack/config.py"):
               "blob", ("1" * 40, "vllm_prepack/config.py"): "older"}
    monkeypatch.setattr(harness, "git_object", lambda commit, path: configs.get((commit, path)))

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    segments = step_source_segments(_result(_records(300, set(), set())))
    (tmp_path / "r_steps.json").write_text(json.dumps({"steps": {"w": {"stock": segments}}}))
    resolved = {"max_num_batched_tokens": 256, "max_num_seqs": 4, "max_model_len": 4096,
                "num_gpu_blocks": 300, "async_scheduling": True}
    extra = {"prepack": {"stretch": 4.0, "kv_reserve": "off"}}
    runs = {"stock": [_offline_row(0, 1.0, 50.0, 0), _offline_row(1, 2.0, 50.0, 0)],
            "prepack-default": [_offline_row(0, 0.5, 49.0, 3), _offline_row(1, 1.0, 50.0, 5)]}
    window = {"start": 0, "n": 6, "description": "test window"}
    result = {"benchmark": "offline A/B, trace replay", "baseline": "stock", "vllm": "0.33.0",
              "device": "GPU: test", "git_commit": "0" * 40, "model_shape": "llama-3.1-8b",
              "arms": {"stock": {"resolved": resolved, "engine_kwargs": {}},
                       "prepack-default": {"resolved": resolved,
                                           "engine_kwargs": {"additional_config": extra}}},
              "workloads": {"trace_1xsat": {"workload": window, "runs": runs,
                                            "load": {"load_factor": 1.0}},
                            "trace_4x": {"workload": window, "runs": runs,
                                         "load": {"compression": 4.0}}},
              "saturation": {"requests_per_s": 4.0}, "step_timing_file": "r_steps.json"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    out = trace_calib.main(["--gpu", str(path), "--trace", str(trace)])
    (point,) = out["points"]
    assert (point["budget"], point["load"], point["gpu_saturation_req_s"]) == (256, 1.0, 4.0)
    g = point["gpu"]
    assert g["ratios"]["ttft_mean_s"]["min"] == g["ratios"]["ttft_mean_s"]["max"] == 0.5
    assert g["ratios"]["output_tokens_per_s"]["min"] == pytest.approx(0.98)
    assert (g["overtakes_per_run"], g["split_per_run"], g["paired_reps"]) == (4, 2, 2)
    assert set(point["agreement"]) == {"ttft_mean_s", "ttft_p99_s", "output_tokens_per_s"}
    assert point["sim"]["simulator_arm"] == "stretch4q0.9-kv-off"
    used = out["step_models"]["r.json"]
    assert (used["num_blocks"], used["max_model_len"], used["async_scheduling"]) == (
        300, 4096, True)
    assert used["fitted_to"] == [str(tmp_path / "r_steps.json")]
    assert used["step_model"]["gpu_per_token"] == pytest.approx(TRUTH.gpu_per_token, rel=1e-3)
    with pytest.raises(ValueError, match="r_steps.json: not a trace replay result"):
        trace_calib.main(["--gpu", str(tmp_path / "r_steps.json"), "--trace", str(trace)])
    path.write_text(json.dumps({**result, "git_commit": "1" * 40}))
    with pytest.raises(ValueError, match="commit 1111111111111111111111111111111111111111: its "
                       "vllm_prepack/config.py is not this checkout's"):
        trace_calib.main(["--gpu", str(path), "--trace", str(trace)])


def step_source_segments(result: dict) -> list[dict]:
    """A serving result's step segments as one measured repetition (rep 1) of a steps file."""
    from benchmarks import step_source

    segments = step_source.serve_steps(result)["steps"]["serve"]["prepack"]
    return [{**seg, "rep": 1} for seg in segments]
