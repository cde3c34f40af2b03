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
