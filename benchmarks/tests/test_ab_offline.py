"""``benchmarks.ab`` at CI size (CPU, tiny model): both arms complete and the JSON has every
field. No timing is asserted."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks.harness import ROOT

ENGINE = ('{"dtype": "float32", "enforce_eager": true, "max_model_len": 1024, '
          '"kv_cache_memory_bytes": 67108864}')


def _run_ab(tiny_model: str, tmp_path, env: dict, *args: str) -> dict:
    """``benchmarks.ab`` at CI size (stock and prepack, one engine at a time); its JSON."""
    import subprocess

    out = tmp_path / "ab.json"
    cmd = [sys.executable, "-m", "benchmarks.ab", "--model", tiny_model, *args,
           "--arms", "stock,prepack", "--isolate", "--max-num-batched-tokens", "1024",
           "--max-len", "1000", "--engine-args", ENGINE, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.engine
def test_ab_smoke_both_arms_complete(tiny_model, tmp_path, engine_lock, bench_env):
    d = _run_ab(tiny_model, tmp_path, bench_env, "--workload", "mmlu,wikitext256", "--n", "12",
                "--reps", "2")
    for key in ("device", "git_commit", "vllm", "torch", "command", "model", "seed",
                "repetitions", "chunked_prefill", "arms", "workloads", "baseline"):
        assert key in d, key
    assert d["device"].startswith("CPU")
    assert d["arms"]["stock"]["scheduler_class"] == "vllm.v1.core.sched.scheduler.Scheduler"
    assert d["arms"]["prepack"]["scheduler_class"].endswith("PrepackSyncScheduler")
    assert d["arms"]["prepack"]["resolved"]["additional_config"]["prepack"]
    for name in ("mmlu", "wikitext256"):
        w = d["workloads"][name]
        assert w["workload"]["n"] == 12 and w["workload"]["padding_ratio"] >= 1
        for arm in ("stock", "prepack"):
            runs = w["runs"][arm]
            assert len(runs) == 2
            for r in runs:
                for key in ("wall_s", "prefill_tokens_per_s", "ttft_mean_s", "ttft_p50_s",
                            "ttft_p99_s", "engine_steps", "split_prompts",
                            "mean_prefill_fill", "packed_share"):
                    assert r[key] is not None, (arm, key)
                assert len(r["ttft_s"]) == 12
        assert w["same_first_tokens_as_baseline"] == {"stock": True, "prepack": True}
        ratios = w["ratios_vs_stock"]["prepack"]
        for metric in ("prefill_tokens_per_s", "ttft_mean_s", "engine_steps"):
            assert ratios[metric]["verdict"] in ("win", "tie", "loss")
            assert ratios[metric]["n"] == 2


@pytest.mark.engine
def test_ab_poisson_arrivals_complete_every_request(tiny_model, tmp_path, engine_lock, bench_env):
    d = _run_ab(tiny_model, tmp_path, bench_env, "--workload", "alpaca", "--n", "10", "--reps", "1",
                "--rate", "40")
    assert d["arrivals"] == "poisson 40 req/s" and d["rate_req_per_s"] == 40
    w = d["workloads"]["alpaca"]
    assert w["workload"]["arrival"] == "poisson" and w["workload"]["duration_s"] > 0
    for arm in ("stock", "prepack"):
        (run,) = w["runs"][arm]
        assert len(run["ttft_s"]) == 10 and all(t > 0 for t in run["ttft_s"])
        # The run spans the arrivals: it cannot end before the last request arrived.
        assert run["wall_s"] >= w["workload"]["duration_s"]
    assert w["same_first_tokens_as_baseline"] == {"stock": True, "prepack": True}


def test_ab_refuses_reordering_arms_with_timed_arrivals(bench_env):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.ab", "--model", "x", "--rate", "5",
                           "--arms", "stock,stock-sorted"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=bench_env)
    assert proc.returncode != 0
    assert "['stock-sorted'] reorder the prompts" in proc.stderr
    assert "prepack-packed" in proc.stderr


@pytest.mark.engine
def test_ab_trace_replay_llmengine_saturation_and_step_timing(tiny_model, tmp_path, engine_lock,
                                                            bench_env, trace_file):
    """Offline trace replay through LLMEngine: a saturation run on stock, one load at 1x of
    it, per-request output lengths from the trace, prefix caching at vLLM's default, and a
    step-timing file with a row per engine step."""
    import subprocess

    out = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "benchmarks.ab", "--model", tiny_model, "--workload", "trace",
           "--trace", str(trace_file), "--n", "6", "--load-factors", "1.0",
           "--reps", "1", "--entry-point", "llmengine", "--arms", "stock,prepack",
           "--isolate", "--max-num-batched-tokens", "1024", "--engine-args", ENGINE,
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=bench_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["benchmark"] == "offline A/B, trace replay" and d["entry_point"] == "llmengine"
    assert d["prefix_caching"] == "default" and d["arrivals"] == "trace"
    t = d["trace"]
    assert t["n"] == 6 and t["clipped_prompts"] == 1 and t["max_model_len"] == 1024
    assert "CC-BY 4.0" in t["attribution"]
    sat = d["saturation"]
    assert sat["arm"] == "stock" and sat["requests_per_s"] > 0
    for arm in ("stock", "prepack"):
        resolved = d["arms"][arm]["resolved"]
        assert resolved["enable_prefix_caching"] is True  # vLLM's default
        assert resolved["max_num_seqs"] == 128  # LLMEngine: SchedulerConfig's default
        assert "enable_prefix_caching" not in d["arms"][arm]["engine_kwargs"]
    (name,) = d["workloads"]
    w = d["workloads"][name]
    assert w["load"]["load_factor"] == 1.0
    assert w["load"]["rate_req_per_s"] == pytest.approx(sat["requests_per_s"])
    for arm in ("stock", "prepack"):
        (run,) = w["runs"][arm]
        assert run["output_lengths_as_trace"] and run["output_tokens"] == t["output_tokens_total"]
        assert len(run["ttft_s"]) == 6 and run["prefix_cache_hit_tokens"] == 0
        # Each TTFT's engine part: vLLM's queue time, then its first step to its first token.
        assert len(run["queue_s"]) == len(run["prefill_s"]) == len(run["preemptions"]) == 6
        for ttft, queue, prefill in zip(run["ttft_s"], run["queue_s"], run["prefill_s"]):
            assert queue >= 0 and 0 < prefill and queue + prefill <= ttft + 1e-3
        for key in ("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "output_tokens_per_s",
                    "requests_per_s", "wall_s"):
            assert run[key] > 0, (arm, key)
        assert run["step_timing"]["steps"] >= 1 and run["step_timing"]["sched_ms_mean"] > 0
        proc = run["step_timing"]["process"]  # the engine process's counters over the run
        assert 0 < proc["thread_cpu_s"] <= proc["cpu_user_s"] + proc["cpu_sys_s"] + 1e-3
        assert proc["wall_s"] <= run["wall_s"] + 1.0 and len(proc["gc_collections"]) == 3
    ratios = w["ratios_vs_stock"]["prepack"]
    for metric in ("ttft_mean_s", "ttft_p99_s", "output_tokens_per_s", "wall_s"):
        assert ratios[metric]["n"] == 1
    assert d["step_timing_file"] == "trace_steps.json"
    check_steps_file(json.loads((tmp_path / "trace_steps.json").read_text()), name,
                     t["total_tokens"])
    assert (tmp_path / "trace_ttft_load.png").stat().st_size > 0
    assert (tmp_path / "trace_ttft_cdf.png").stat().st_size > 0


def check_steps_file(steps: dict, name: str, total_tokens: int) -> None:
    """A trace replay's steps file: a row per engine step of the stock arm's run on the
    workload ``name``, every prompt token scheduled once, the saturation run's steps too."""
    rows = steps["steps"][name]["stock"][0]
    n = len(rows["t"])
    assert n >= 2 and all(len(rows[c]) == n for c in steps["columns"])
    assert sum(rows["prefill"]) == total_tokens  # every prompt token, once
    assert all(x >= 0 for x in rows["t_out"]) and all(x > 0 for x in rows["sched_cpu_s"])
    assert all(x >= 0 for x in rows["exec_cpu_s"]) and sum(rows["exec_cpu_s"]) > 0
    assert "trace_saturation" in steps["steps"]
