"""The benchmark harness at CI size (CPU, tiny model): both arms complete and the JSON has
every field. No timing is asserted."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, subprocess_env

from benchmarks import workloads

ENGINE = ('{"dtype": "float32", "enforce_eager": true, "max_model_len": 1024, '
          '"kv_cache_memory_bytes": 67108864}')


@pytest.mark.parametrize("name", list(workloads.MIXES))
def test_workloads_are_seeded_and_report_padding(name):
    a, b = workloads.make(name, 64, seed=3), workloads.make(name, 64, seed=3)
    assert a == b and a.prompts(500, rep=1) == b.prompts(500, rep=1)
    assert a.prompts(500, rep=1) != a.prompts(500, rep=2)  # fresh tokens per repetition
    assert [len(p) for p in a.prompts(500)] == list(a.lengths)
    d = a.describe()
    assert d["padding_ratio"] == pytest.approx(max(a.lengths) * 64 / sum(a.lengths), rel=1e-3)
    assert d["padding_ratio"] >= 1.0 and d["arrival"] == "offline"
    poisson = workloads.make(name, 64, seed=3, rate=10.0)
    assert poisson.describe()["arrival"] == "poisson"
    assert list(poisson.arrivals) == sorted(poisson.arrivals) and poisson.arrivals[0] > 0


def test_unknown_workload_is_named():
    with pytest.raises(ValueError, match="unknown workload 'nope'.*mmlu"):
        workloads.make("nope", 4)


def _run_ab(tiny_model: str, tmp_path, *args: str) -> dict:
    """``benchmarks.ab`` at CI size (stock and prepack, one engine at a time); its JSON."""
    import subprocess

    out = tmp_path / "ab.json"
    cmd = [sys.executable, "-m", "benchmarks.ab", "--model", tiny_model, *args,
           "--arms", "stock,prepack", "--isolate", "--max-num-batched-tokens", "1024",
           "--max-len", "1000", "--engine-args", ENGINE, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.engine
def test_ab_smoke_both_arms_complete(tiny_model, tmp_path, engine_lock):
    d = _run_ab(tiny_model, tmp_path, "--workload", "mmlu,wikitext256", "--n", "12",
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


def test_render_writes_tables_from_committed_results(tmp_path):
    from benchmarks import render

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{render.START}\nold\n{render.END}\ntail\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.render", "--readme", str(readme),
                           "--plots-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    if any((ROOT / "benchmarks" / "results").glob("ab_*.json")):
        assert "| mix | padding | arm |" in text and "ttft_cdf.png" in text
        assert list(tmp_path.glob("*_ttft_cdf.png"))


@pytest.mark.engine
def test_ab_poisson_arrivals_complete_every_request(tiny_model, tmp_path, engine_lock):
    d = _run_ab(tiny_model, tmp_path, "--workload", "alpaca", "--n", "10", "--reps", "1",
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


def test_ab_refuses_reordering_arms_with_timed_arrivals():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.ab", "--model", "x", "--rate", "5",
                           "--arms", "stock,stock-sorted"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=subprocess_env())
    assert proc.returncode != 0
    assert "['stock-sorted'] reorder the prompts" in proc.stderr
    assert "prepack-packed" in proc.stderr


TRACE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.0000000,374,4
2023-11-16 18:15:46.5000000,96,9
2023-11-16 18:15:47.0000000,1879,5
2023-11-16 18:15:48.0000000,91,0
2023-11-16 18:15:48.5000000,500,12
2023-11-16 18:15:50.0000000,40,3
"""


def _trace_file(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(TRACE_CSV)
    return path


def test_trace_loader_windows_compresses_and_clips(tmp_path):
    from benchmarks import trace

    path = _trace_file(tmp_path)
    full = trace.load(path)
    assert full.arrivals == (0.0, 0.5, 1.0, 2.0, 2.5, 4.0) and full.raw_span_s == 4.0
    assert full.lengths == (374, 96, 1879, 91, 500, 40)
    assert full.output_lens == (4, 9, 5, 1, 12, 3)  # at least one output token
    assert full.clipped == 0 and full.rate == pytest.approx(5 / 4.0)
    # Window: rows 1..3, arrivals relative to the window's first request.
    w = trace.load(path, start=1, n=3)
    assert w.arrivals == (0.0, 0.5, 1.5) and w.lengths == (96, 1879, 91)
    assert w.describe()["start"] == 1 and w.describe()["n"] == 3
    # Compression divides the arrival offsets; a rate picks the compression.
    c = trace.load(path, start=1, n=3, compression=4)
    assert c.arrivals == pytest.approx((0.0, 0.125, 0.375)) and c.span_s == pytest.approx(0.375)
    r = trace.load(path, start=1, n=3, rate=8.0)
    assert r.rate == pytest.approx(8.0) and r.compression == pytest.approx(6.0)
    assert r.compressed(2.0).arrivals == pytest.approx((0.0, 0.25, 0.75))
    assert set(full.compressed(float("inf")).arrivals) == {0.0}
    # Clipping: a prompt longer than max_model_len - output is cut, and counted.
    clip = trace.load(path, max_model_len=1024)
    assert clip.lengths[2] == 1024 - 5 and clip.clipped == 1
    assert clip.describe()["clipped_prompts"] == 1
    assert all(p + o <= 1024 for p, o in zip(clip.lengths, clip.output_lens))
    # Fresh prompts per repetition, the same for a given repetition; exact lengths.
    assert [len(p) for p in clip.prompts(500, rep=0)] == list(clip.lengths)
    assert clip.prompts(500, rep=0) == clip.prompts(500, rep=0)
    assert clip.prompts(500, rep=0)[0] != clip.prompts(500, rep=1)[0]
    d = clip.describe()
    assert d["arrival"] == "trace" and "CC-BY 4.0" in d["attribution"]
    assert d["output_tokens_total"] == sum(clip.output_lens)
    with pytest.raises(ValueError, match="asked 10"):
        trace.load(path, start=2, n=10)
    with pytest.raises(ValueError, match="not both"):
        trace.load(path, compression=2, rate=3)


def test_azure_conversation_trace_loads_when_present():
    from benchmarks import trace

    try:
        path = trace.default_path()
    except FileNotFoundError:
        pytest.skip("no azure_conv_2023.csv here")
    w = trace.load(path, start=0, n=500, compression=4, max_model_len=8192)
    assert len(w.lengths) == 500 and w.arrivals[0] == 0.0 and w.clipped == 0
    assert w.rate == pytest.approx(4 * trace.load(path, n=500).rate)


@pytest.mark.engine
def test_ab_trace_replay_llmengine_saturation_and_step_timing(tiny_model, tmp_path, engine_lock):
    """Offline trace replay through LLMEngine: a saturation run on stock, one load at 1x of
    it, per-request output lengths from the trace, prefix caching at vLLM's default, and a
    step-timing file with a row per engine step."""
    import subprocess

    out = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "benchmarks.ab", "--model", tiny_model, "--workload", "trace",
           "--trace", str(_trace_file(tmp_path)), "--n", "6", "--load-factors", "1.0",
           "--reps", "1", "--entry-point", "llmengine", "--arms", "stock,prepack",
           "--isolate", "--max-num-batched-tokens", "1024", "--engine-args", ENGINE,
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=subprocess_env())
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
        for key in ("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "output_tokens_per_s",
                    "requests_per_s", "wall_s"):
            assert run[key] > 0, (arm, key)
        assert run["step_timing"]["steps"] >= 1 and run["step_timing"]["sched_ms_mean"] > 0
    ratios = w["ratios_vs_stock"]["prepack"]
    for metric in ("ttft_mean_s", "ttft_p99_s", "output_tokens_per_s", "wall_s"):
        assert ratios[metric]["n"] == 1
    steps = json.loads((tmp_path / "trace_steps.json").read_text())
    assert d["step_timing_file"] == "trace_steps.json"
    rows = steps["steps"][name]["stock"][0]
    n = len(rows["t"])
    assert n >= 2 and all(len(rows[c]) == n for c in steps["columns"])
    assert sum(rows["prefill"]) == t["total_tokens"]  # every prompt token, once
    assert all(x >= 0 for x in rows["t_out"]) and all(x > 0 for x in rows["sched_cpu_s"])
    assert "trace_saturation" in steps["steps"]
    assert (tmp_path / "trace_ttft_load.png").stat().st_size > 0
    assert (tmp_path / "trace_ttft_cdf.png").stat().st_size > 0


def test_step_timer_records_each_step_and_its_output():
    """The wrappers on a fake engine core: one row per schedule(), features from the
    scheduled requests, executor time and output time attributed to the right step."""
    from types import SimpleNamespace as NS

    from benchmarks import step_timing

    requests = {"a": NS(num_computed_tokens=0, num_prompt_tokens=100),
                "b": NS(num_computed_tokens=50, num_prompt_tokens=50)}
    plan = iter([{"a": 64, "b": 1}, {"a": 36, "b": 1}])

    class Scheduler:
        waiting, running = [1, 2], [3]

        def __init__(self):
            self.requests = requests

        def schedule(self):
            step = next(plan)
            for req_id, n in step.items():  # vLLM advances computed tokens while scheduling
                requests[req_id].num_computed_tokens += n
            return NS(num_scheduled_tokens=step, total_num_scheduled_tokens=sum(step.values()))

        def update_from_output(self, output, model_output):
            return model_output

    class Executor:
        def execute_model(self, output, non_block=False):
            return "future"

        def sample_tokens(self, grammar, non_block=False):
            return None

    core = NS(scheduler=Scheduler(), model_executor=Executor())
    timer = step_timing.attach(core)
    first = core.scheduler.schedule()
    assert core.model_executor.execute_model(first, non_block=True) == "future"
    second = core.scheduler.schedule()
    core.model_executor.sample_tokens(None, non_block=True)
    assert core.scheduler.update_from_output(second, "out2") == "out2"
    core.scheduler.update_from_output(first, "out1")
    cols = timer.columns()
    assert list(cols) == list(step_timing.COLUMNS) and len(cols["t"]) == 2
    assert cols["prefill"] == [64, 36] and cols["prefill_reqs"] == [1, 1]
    assert cols["decode_reqs"] == [1, 1] and cols["tokens"] == [65, 37]
    assert cols["ctx"] == [64 + 51, 100 + 52]
    assert cols["waiting_before"] == [2, 2] and cols["running"] == [1, 1]
    assert all(x >= 0 for x in cols["t_out"]) and cols["t_out"][1] <= cols["t_out"][0]
    summary = step_timing.summarize(cols)
    assert summary["steps"] == 2 and summary["prefill_steps"] == 2
    timer.reset()
    assert timer.columns()["t"] == []
