"""The simulator's calibration against a GPU server's replay, at CI size: the simulator runs on
the GPU result's own window, budget and loads, its ratios and decisions sit beside the GPU's,
and a point where the GPU's prepack arm made stock's admissions is marked as noise."""

from __future__ import annotations

import json

import pytest

from benchmarks import (
    calib_report,
    serve_pool,
    trace_calib,
    trace_calib_serve,
    trace_sim_options,
)
from benchmarks.tests.suite_env import TRACE_CSV


def _bench(ttft: float, p99: float, goodput: float) -> dict:
    return {"mean_ttft_ms": ttft, "median_ttft_ms": ttft, "p99_ttft_ms": p99,
            "mean_tpot_ms": 20.0, "request_throughput": goodput, "request_goodput": goodput,
            "output_throughput": 100.0, "total_token_throughput": 900.0}


def _gpu_result(overtakes: int, oldest: float, mode: str = "--enforce-eager") -> dict:
    runs = []
    for rep, (stock, prepack) in enumerate([(100.0, 80.0), (120.0, 90.0)]):
        for arm, ttft in (("stock", stock), ("prepack", prepack)):
            runs.append({"arm": arm, "rep": rep, "load_factor": 1.0, "ok": True,
                         "bench": _bench(ttft, 3 * ttft, 5.0), "metrics": {
                             "vllm:num_preemptions_total": rep + (4 if arm == "prepack" else 0)},
                         "packing": None if arm == "stock" else {
                             "overtakes": overtakes, "partial_prefills": 1,
                             "max_oldest_wait_s": oldest}})
    return {"benchmark": "serving A/B", "model_shape": "llama-3.1-8b", "vllm": "0.33.0",
            "device": "GPU: test", "git_commit": "0" * 40, "load_factors": [1.0],
            "repetitions": 2, "workload": {"start": 0, "n": 6, "description": "test window"},
            "saturation": {"request_throughput": 4.0},
            "arms": {"stock": {"serve_args": ["m", mode, "--max-num-batched-tokens", "256"]}},
            "runs": runs}


@pytest.mark.parametrize("overtakes, oldest, noise", [(0, 0.0, True), (3, 0.5, False)])
def test_calibration_puts_the_simulator_beside_the_gpu(tmp_path, overtakes, oldest, noise):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(_gpu_result(overtakes, oldest)))
    out = tmp_path / "calib.json"
    result = trace_calib.main(["--gpu", str(gpu), "--trace", str(trace), "--max-num-seqs", "4",
                               "--num-blocks", "256", "--out", str(out)])
    assert json.loads(out.read_text())["points"] == result["points"]
    (point,) = result["points"]
    assert (point["budget"], point["load"], point["gpu_file"]) == (256, 1.0, "gpu.json")
    g = point["gpu"]["ratios"]["mean_ttft_ms"]
    assert (g["min"], g["max"]) == pytest.approx((0.75, 0.8))
    assert point["gpu"]["overtakes_per_run"] == overtakes
    assert point["same_admissions_on_gpu"] is noise
    sim = point["sim"]
    assert sim["saturation_req_s"] > 0 and sim["overtakes_per_run"] is not None
    for metric, agreement in point["agreement"].items():
        s, gm = sim["ratios"][metric], point["gpu"]["ratios"][metric]
        assert agreement["within_15pct"] == (abs(s / gm["median"] - 1) <= 0.15)
        assert agreement["within_gpu_spread"] == (gm["min"] <= s <= gm["max"])
    # six requests that never queue: the simulated arms make the same admissions
    assert sim["ratios"]["mean_ttft_ms"] == pytest.approx(1.0, abs=0.05)
    assert not point["agreement"]["mean_ttft_ms"]["within_15pct"]
    # preemptions per run, each arm: the GPU's counter over its pairs, the simulator's own
    assert point["gpu"]["preemptions_per_run"] == {"stock": 0.5, "prepack": 4.5}
    assert sim["preemptions_per_run"] == {"stock": 0, "prepack": 0}  # 256 blocks: room for all
    row = next(line for line in calib_report.calibration_table(gpu, {**result, "git_commit": "0"})
               if "`gpu.json`" in line)
    assert row.endswith("| 0 / 4 vs 0 / 0 |")


def test_preemptions_are_not_counted_where_a_run_did_not_scrape_them(tmp_path):
    d = _gpu_result(3, 0.5)
    del d["runs"][0]["metrics"]
    agg = trace_calib_serve.per_load(d)["1"]
    assert trace_calib_serve.gpu_point(d, agg, "1")["preemptions_per_run"] is None


def test_each_prompt_length_class_is_set_beside_the_gpus(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)  # prompts 374, 96, 1879, 91, 500, 40 tokens
    d = _gpu_result(3, 0.5)
    d["workload"].update(source="trace.csv", total_tokens=2980)
    for r in d["runs"]:  # prepack: short prompts in half the time, the long one in twice
        r["bench"]["ttfts_s"] = [0.1] * 6 if r["arm"] == "stock" else [0.05] * 2 + [0.2] + [
            0.05] * 3
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(d))
    result = trace_calib.main(["--gpu", str(gpu), "--trace", str(trace), "--max-num-seqs", "4",
                               "--num-blocks", "256"])
    (point,) = result["points"]
    by = point["by_length"]
    assert by["< 512"]["gpu"]["median"] == pytest.approx(0.5)
    assert by["512-2047"]["gpu"]["median"] == pytest.approx(2.0) and set(by) == {
        "< 512", "512-2047"}
    for b in by.values():
        assert b["sim"] > 0 and b["within_15pct"] == (abs(b["sim"] / b["gpu"]["median"] - 1)
                                                      <= 0.15)
    lines = calib_report.calibration_table(gpu, {**result, "git_commit": "0" * 40})
    assert any(line.startswith("By prompt-length class") for line in lines)
    assert any("`gpu.json`, 256, 1x | 0.50" in line for line in lines)


def test_calibration_skips_a_replay_with_cuda_graphs(tmp_path):
    """The step model is eager: a compiled, graph-captured replay gets no simulator row."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    eager, graphs = tmp_path / "eager.json", tmp_path / "graphs.json"
    eager.write_text(json.dumps(_gpu_result(3, 0.5)))
    graphs.write_text(json.dumps(_gpu_result(3, 0.5, mode="--max-model-len=8192")))
    steps = tmp_path / "x_steps.json"
    steps.write_text(json.dumps({"steps": {"w": {"stock": [{
        "rep": 0, "t": [0.0, 0.02, 0.04, 0.06, 0.08], "prefill": [0, 0, 0, 0, 0],
        "decode_reqs": [8, 8, 8, 8, 8], "ctx": [800] * 5}]}}}))
    result = trace_calib.main(["--gpu", str(graphs), str(eager), "--trace", str(trace),
                               "--max-num-seqs", "4", "--num-blocks", "256",
                               "--steps", str(steps)])
    assert [p["gpu_file"] for p in result["points"]] == ["eager.json"]
    assert result["skipped"] == [{"gpu_file": "graphs.json", "reason": trace_calib.SKIP_GRAPHS}]
    # the 8B step model beside three measured 20 ms decode steps of 8 requests
    check = result["step_model_checks"]["x_steps.json"]
    model = trace_calib.STEP_MODELS["llama-3.1-8b"]
    assert check["steps"] == 3
    assert check["model_over_measured"] == pytest.approx((model.base + 8 * model.per_decode) / 0.02)


def test_the_simulator_runs_the_options_the_gpu_server_logged():
    """The prepack server's own log line decides the simulated arm; a replay that did not
    record it is simulated with the defaults of its commits (stretch 8, tail quantile 0.9)."""
    from vllm_prepack.config import PrepackConfig

    log = ("(EngineCore_DP0 pid=7) INFO 12-03 22:40:00 [kv_cache_utils.py:1316] GPU KV cache "
           "size: 271,008 tokens\n"
           "(EngineCore_DP0 pid=7) INFO 12-03 22:40:01 [scheduler.py:298] Engine core built "
           f"PrepackAsyncScheduler ({PrepackConfig(stretch=2.5).to_dict()})\n")
    assert serve_pool.log_facts(log)["kv_cache_tokens"] == 271_008
    cpu = "(EngineCore pid=9) INFO [kv_cache_utils.py:2327] CPU KV cache size: 524,288 tokens, "
    assert serve_pool.log_facts(cpu)["kv_cache_tokens"] == 524_288
    ran = serve_pool.log_facts(log)["prepack_options"]
    assert ran == PrepackConfig(stretch=2.5).to_dict()
    result = _gpu_result(3, 0.5)
    assert trace_calib_serve.sim_arm(result) == trace_calib_serve.ARM == "stretch8q0.9-kv-off"
    result["arms"]["prepack"] = {"prepack_options": ran}
    assert trace_calib_serve.sim_arm(result) == "stretch2.5q0.9"  # kv_reserve=oldest, the default
    result["arms"]["prepack"] = {"prepack_options": {k: v for k, v in ran.items()
                                                     if k != "kv_reserve"}}
    # a server from before the option
    assert trace_calib_serve.sim_arm(result) == "stretch2.5q0.9-kv-off"
    result["arms"]["prepack"]["prepack_options"] = {**ran, "lookahead": 64}
    assert trace_calib_serve.sim_arm(result) == "stretch2.5q0.9l64"
    assert trace_sim_options.arm_options("stretch2.5q0.9l64") == {
        "stretch": 2.5, "tail_quantile": 0.9, "lookahead": 64}
    result["arms"]["prepack"]["prepack_options"] = {**ran, "policy": "hrrn"}
    with pytest.raises(ValueError, match="hrrn"):
        trace_calib_serve.sim_arm(result)


def test_a_replay_with_step_series_is_simulated_with_its_own_steps_and_kv_cache(tmp_path):
    """A CUDA-graph replay whose prepack runs recorded the server's steps gets a simulator row,
    with a step model fitted to those steps and the KV cache its servers logged."""
    from benchmarks.serve_runs import step_series
    from benchmarks.tests.test_step_source import TRUTH, _records

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    result = _gpu_result(3, 0.5, mode="--max-model-len=8192")
    result["arms"]["stock"]["kv_cache_tokens"] = 4096
    result["arms"]["prepack"] = {"scheduler_class": "PrepackAsyncScheduler"}  # lag 1
    for run, n in zip((r for r in result["runs"] if r["arm"] == "prepack"), (300, 200)):
        run["step_series"] = step_series(_records(n, {40}, set()))
    graphs = tmp_path / "graphs.json"
    graphs.write_text(json.dumps(result))
    out = trace_calib.main(["--gpu", str(graphs), "--trace", str(trace), "--max-num-seqs", "4",
                            "--num-blocks", "256"])
    assert out["skipped"] == [] and [p["gpu_file"] for p in out["points"]] == ["graphs.json"]
    used = out["step_models"]["graphs.json"]
    assert used["num_blocks"] == 4096 // 16 and used["fitted_to"] == [str(graphs)]
    assert used["step_model"]["gpu_per_token"] == pytest.approx(TRUTH.gpu_per_token, rel=1e-3)


def test_a_synchronous_server_without_a_shape_is_simulated_as_it_ran(tmp_path):
    """A result of a model directory (no shape; here the 8B config's), from a synchronous
    server whose steps hold its scheduler's time: simulated on that directory, synchronously,
    with no scheduler time added, at the server's model length."""
    from benchmarks.models import config_dir
    from benchmarks.serve_runs import step_series
    from benchmarks.tests.test_step_source import TRUTH, _records

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    result = _gpu_result(3, 0.5)
    result["model_shape"], result["model"] = None, str(config_dir("llama-3.1-8b"))
    result["arms"]["stock"]["serve_args"] += ["--max-model-len", "4096"]
    result["arms"]["prepack"] = {"scheduler_class": "PrepackSyncScheduler"}
    for run in (r for r in result["runs"] if r["arm"] == "prepack"):
        run["step_series"] = step_series(_records(300, {40}, set(), lag=0))
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(result))
    options = trace_calib_serve.sim_options(path, result, ["1"], trace_calib.parse(["--gpu", "x"]))
    assert options.sync_scheduling and options.cpu_scale == 0.0
    assert (options.model, options.max_model_len) == (result["model"], 4096)
    out = trace_calib.main(["--gpu", str(path), "--trace", str(trace), "--max-num-seqs", "4",
                            "--num-blocks", "256"])
    used = out["step_models"]["cpu.json"]
    assert not used["async_scheduling"] and used["cpu_scale"] == 0.0
    assert used["step_model"]["gpu_per_token"] == pytest.approx(TRUTH.gpu_per_token, rel=1e-3)
    assert [p["gpu_file"] for p in out["points"]] == ["cpu.json"]


def test_a_result_without_steps_takes_the_step_timings_given(tmp_path):
    """A CUDA-graph result with no steps of its own is simulated on the steps given for it
    (``--step-timings``: another run of the same server) instead of being skipped."""
    from benchmarks.serve_runs import step_series
    from benchmarks.tests.test_step_source import TRUTH, _records

    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_CSV)
    source = _gpu_result(3, 0.5, mode="--max-model-len=8192")
    source["arms"]["prepack"] = {"scheduler_class": "PrepackAsyncScheduler"}
    for run in (r for r in source["runs"] if r["arm"] == "prepack"):
        run["step_series"] = step_series(_records(300, set(), set()))
    steps, bare = tmp_path / "steps.json", tmp_path / "bare.json"
    steps.write_text(json.dumps(source))
    bare.write_text(json.dumps(_gpu_result(3, 0.5, mode="--max-model-len=8192")))
    argv = ["--gpu", str(bare), "--trace", str(trace), "--max-num-seqs", "4", "--num-blocks", "256"]
    assert trace_calib.main(argv)["skipped"][0]["gpu_file"] == "bare.json"
    out = trace_calib.main(argv + ["--step-timings", str(steps)])
    used = out["step_models"]["bare.json"]
    assert out["skipped"] == [] and used["fitted_to"] == [str(steps)]
    assert used["async_scheduling"] and used["cpu_scale"] == trace_calib.SimOptions.cpu_scale
    assert used["step_model"]["gpu_per_token"] == pytest.approx(TRUTH.gpu_per_token, rel=1e-3)

