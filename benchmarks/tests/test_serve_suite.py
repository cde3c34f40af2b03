"""The serving A/B end to end on CPU: one run of both arms on a workload mix and one trace
replay, each through real ``vllm serve`` processes (no timing asserted). The parts without a
server: test_serve_traces.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import serve_report
from benchmarks.serve_pool import SERVER_MEANS
from benchmarks.tests.suite_env import ROOT, TRACE_CSV, subprocess_env

SERVE_ARGS = "--dtype float32 --enforce-eager --max-model-len 1024 --kv-cache-memory-bytes 67108864"


def _assert_measured_run(arm: str, r: dict, slo: dict) -> None:
    """One measured run of the smoke test: complete, every metric, the SLO passed to the
    client, and the server's /metrics agreeing with the trace."""
    b = r["bench"]
    assert r["ok"] and r["problems"] == [], (arm, r["problems"])
    assert b["completed"] == 10 and b["failed"] == 0 and len(b["ttfts_s"]) == 10
    for key in ("request_throughput", "output_throughput", "total_token_throughput",
                "request_goodput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
                "mean_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "p99_itl_ms"):
        assert b[key] is not None, (arm, key)
    assert f"--goodput ttft:{slo['ttft_ms']:.3f}" in r["bench_command"]
    assert "--dataset-name timed_trace" in r["bench_command"]
    assert r["metrics_cross_check"] == "agrees"
    m = r["metrics"]
    assert m["vllm:prompt_tokens_total"] == b["total_input_tokens"]
    assert m["vllm:request_success_total:length"] == 10
    assert m["vllm:prefix_cache_hits_total"] == 0
    assert m["vllm:iteration_tokens_total_count"] > 0  # the engine's steps, in either arm
    prepack_steps = m["vllm_prepack_steps_total"]
    assert prepack_steps == 0 if arm == "stock" else prepack_steps > 0
    busy = r["cpu_busy"]  # the API server, its engine processes and the client all worked
    assert set(busy) == {"api_server", "engine", "client"} and min(busy.values()) > 0, busy


@pytest.mark.engine
def test_serve_ab_smoke_both_arms_complete(tiny_model, tmp_path, engine_lock):
    out = tmp_path / "serve_ab.json"
    cmd = [sys.executable, "-m", "benchmarks.serve_ab", "--model", tiny_model,
           "--workload", "mmlu", "--n", "10", "--max-len", "512", "--output-len", "4",
           "--load-factors", "1.0", "--reps", "1", "--one-server-at-a-time",
           "--serve-args", SERVE_ARGS, "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    for key in ("device", "git_commit", "vllm", "torch", "command", "model", "tokenizer",
                "seed", "repetitions", "load_factors", "servers", "workload", "arms",
                "saturation", "slo", "rates", "runs", "per_load", "all_runs_complete"):
        assert key in d, key
    assert d["device"].startswith("CPU") and d["status"] == "complete"
    assert d["all_runs_complete"] and d["failed_runs"] == []
    w = d["workload"]
    assert w["n"] == 10 and w["padding_ratio"] >= 1 and w["output_len"] == "4"
    arms = d["arms"]
    assert arms["stock"]["scheduler_class"] == "vllm.v1.core.sched.scheduler.Scheduler"
    assert arms["prepack"]["scheduler_class"] == (
        "vllm_prepack.adapters.scheduler.PrepackSyncScheduler")
    assert "--scheduler" not in arms["stock"]["serve_args"]
    assert arms["prepack"]["serve_args"][-5:-2] == ["67108864", "--scheduler", "prepack"]
    for arm in ("stock", "prepack"):
        assert "--no-enable-prefix-caching" in arms[arm]["serve_args"]
        assert arms[arm]["non_default_args"]["enable_prefix_caching"] is False
        assert "enable_chunked_prefill=True" in arms[arm]["engine_config"]
    sat = d["saturation"]
    assert sat["request_throughput"] > 0 and "t=0" in sat["definition"]
    assert sat["run"]["ok"] and sat["run"]["bench"]["completed"] == 10
    slo = d["slo"]
    assert slo["ttft_ms"] > 0 and slo["source"] == "calibrated" and slo["calibration_run"]["ok"]
    assert d["rates"] == {"1": pytest.approx(sat["request_throughput"])}
    runs = {r["arm"]: r for r in d["runs"]}
    assert len(d["runs"]) == 2 and set(runs) == {"stock", "prepack"}
    assert slo["decided_utc"] <= runs["prepack"]["started_utc"]
    for arm, r in runs.items():
        _assert_measured_run(arm, r, slo)
    assert runs["prepack"]["packing"]["admitted"] == 10
    assert runs["prepack"]["packing"]["prefill_tokens"] == runs["prepack"]["bench"][
        "total_input_tokens"]
    assert "packing" not in runs["stock"] and "step_series" not in runs["stock"]
    series = runs["prepack"]["step_series"]  # the server's own steps, for the step model
    assert len(series["time"]) == runs["prepack"]["packing"]["steps"] == len(series["step"])
    assert sum(series["prefill_tokens"]) == runs["prepack"]["bench"]["total_input_tokens"]
    assert series["time"][0] == 0 and series["time"] == sorted(series["time"])
    ratios = d["per_load"]["1"]["ratios_prepack_vs_stock"]
    for metric in ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "request_throughput"):
        assert ratios[metric]["verdict"] == "single run" and ratios[metric]["n"] == 1
    section = serve_report.render_section(d)
    assert "| 1x |" in section and "PrepackSyncScheduler" in section
    assert (tmp_path / "serve_ab.png").stat().st_size > 0
    assert not (tmp_path / "serve_ab_ttft_by_arrival.png").exists()  # Poisson: no trace order


@pytest.mark.engine
def test_serve_ab_trace_replay_completes(tiny_model, tmp_path, engine_lock):
    """A trace window through vllm serve: exact lengths (one prompt clipped to
    --max-model-len), prefix caching at vLLM's default, a saturation run and one load."""
    path = tmp_path / "trace.csv"
    path.write_text(TRACE_CSV)
    out = tmp_path / "serve_trace.json"
    cmd = [sys.executable, "-m", "benchmarks.serve_ab", "--model", tiny_model,
           "--workload", "trace", "--trace", str(path), "--n", "6", "--load-factors", "1.0",
           "--reps", "1", "--one-server-at-a-time", "--ttft-slo-ms", "5000", "--warmup-replay",
           "--serve-args", SERVE_ARGS + " --max-num-batched-tokens 1024",
           "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["status"] == "complete" and d["all_runs_complete"]
    assert d["prefix_caching"] == "default"
    w = d["workload"]
    assert w["arrival"] == "trace" and w["n"] == 6 and w["clipped_prompts"] == 1
    assert "CC-BY 4.0" in w["attribution"] and w["output_tokens_total"] == 34
    for arm in ("stock", "prepack"):
        args = d["arms"][arm]["serve_args"]
        assert "--no-enable-prefix-caching" not in args and "1024" in args
    assert d["saturation"]["request_throughput"] > 0
    assert d["slo"]["source"] == "fixed (--ttft-slo-ms)"
    runs = {r["arm"]: r for r in d["runs"]}
    assert set(runs) == {"stock", "prepack"}
    for r in runs.values():
        assert r["ok"] and r["bench"]["completed"] == 6 and len(r["bench"]["ttfts_s"]) == 6
        assert r["bench"]["total_output_tokens"] == 34
        # The server's own split of its mean TTFT: engine queue and prefill (engine core
        # timestamps) lie within the API server's arrival-to-first-token time.
        ttft, queue, prefill, tpot = (r["metrics"][k] for k in SERVER_MEANS)
        assert min(ttft, queue, prefill) >= 0 and prefill > 0 and tpot > 0
        assert queue + prefill <= ttft + 1
    # --warmup-replay: each server replayed the trace once, with other prompts, before its
    # first measured run (stock's too, though its server ran the saturation run before).
    assert [w["arm"] for w in d["warmup_runs"]] == [r["arm"] for r in d["runs"]]
    for warm in d["warmup_runs"]:
        run = runs[warm["arm"]]
        assert warm["ok"] and not warm["measured"] and warm["started_utc"] <= run["started_utc"]
        assert warm["trace"] != run["trace"] and len(d["arms"][warm["arm"]]["starts"]) == 1
        assert run["metrics"]["vllm:prefix_cache_hits_total"] == 0
    section = serve_report.render_section(d)
    assert "CC-BY 4.0" in section and "then one unmeasured replay" in section
    cell = serve_report.server_split(d, "1", "prepack")
    assert " / ".join([*(f"{v:.0f}" for v in cell[:3]), f"{cell[3]:.1f}"]) in section
    assert (tmp_path / "serve_trace.png").stat().st_size > 0
    assert (tmp_path / "serve_trace_ttft_cdf.png").stat().st_size > 0
    assert (tmp_path / "serve_trace_ttft_by_arrival.png").stat().st_size > 0


@pytest.mark.engine
def test_serve_ab_aa_runs_a_second_stock_server(tiny_model, tmp_path, engine_lock):
    """``--aa``: both servers build vLLM's own scheduler class, the second has no prepack
    option and writes no packing statistics, and the report names it ``stock B``."""
    out = tmp_path / "serve_aa.json"
    cmd = [sys.executable, "-m", "benchmarks.serve_ab", "--model", tiny_model, "--aa",
           "--workload", "mmlu", "--n", "6", "--max-len", "256", "--output-len", "2",
           "--load-factors", "1.0", "--reps", "1", "--one-server-at-a-time",
           "--saturation-rate", "4", "--ttft-slo-ms", "5000", "--serve-args", SERVE_ARGS,
           "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["aa"] is True and d["all_runs_complete"] and d["first_server"] == "prepack"
    orders = sorted(s["order"] for arm in d["arms"].values() for s in arm["starts"])
    assert orders == list(range(len(orders))) and len(orders) >= 2  # every start, numbered
    for arm in ("stock", "prepack"):
        assert d["arms"][arm]["scheduler_class"] == "vllm.v1.core.sched.scheduler.Scheduler"
        assert not any(a.startswith("--prepack") or a == "--scheduler"
                       for a in d["arms"][arm]["serve_args"])
    runs = {r["arm"]: r for r in d["runs"]}
    assert set(runs) == {"stock", "prepack"} and all(r["ok"] for r in runs.values())
    assert "packing" not in runs["prepack"] and runs["prepack"]["metrics"][
        "vllm_prepack_steps_total"] == 0
    section = serve_report.render_section(d)
    assert section.startswith("#### Serving A/A") and "| stock B |" in section
