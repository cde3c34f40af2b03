"""Serving points measured in parts: which results pool, which runs pair, and the split."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import serve_parts


def run(arm, rep, ttft, lf=1.0, ok=True, queue=100.0, prefill=50.0, server=400.0):
    metrics = {"server_ttft_mean_ms": server, "server_queue_mean_ms": queue,
               "server_prefill_mean_ms": prefill,
               "vllm:num_preemptions_total": 2.0 if arm == "prepack" else 1.0}
    return {"arm": arm, "rep": rep, "load_factor": lf, "ok": ok, "metrics": metrics,
            "bench": {"mean_ttft_ms": ttft, "p99_ttft_ms": 2 * ttft, "request_goodput": 10.0}}


def result(runs, commit="abc", stats="/tmp/a/stats.jsonl", rate=15.14):
    args = [".models/m", "--max-num-batched-tokens", "8192"]
    return {"device": "GPU: X", "vllm": "0.33.0", "git_commit": commit, "model_shape": "8b",
            "arms": {"stock": {"serve_args": args},
                     "prepack": {"serve_args": [*args, "--scheduler", "prepack",
                                                "--prepack-stats-path", stats]}},
            "workload": {"source": "t.csv", "start": 0, "n": 300}, "rates": {"1": rate},
            "warmup_replay": True, "per_load": {"1": {}}, "runs": runs}


def test_two_invocations_of_one_point_pool_their_pairs():
    a = result([run("stock", 0, 1000.0), run("prepack", 0, 1300.0)], stats="/tmp/a/s.jsonl")
    b = result([run("stock", 0, 1500.0), run("prepack", 0, 1350.0),
                run("stock", 1, 1000.0), run("prepack", 1, 1000.0, queue=10.0),
                run("prepack", 2, 100.0),  # no stock run to pair with
                run("stock", 3, 900.0), run("prepack", 3, 90.0, ok=False)],
               stats="/tmp/b/s.jsonl")
    [point] = serve_parts.pooled_points([(Path("a.json"), a), (Path("b.json"), b)])
    assert point["files"] == ["a.json", "b.json"] and point["load"] == "1"
    assert point["pairs"] == 3  # 1 + 2: the unpaired and the failed runs are left out
    ttft = point["ratios"]["mean_ttft_ms"]
    assert (ttft["min"], ttft["max"], ttft["n"]) == (0.9, 1.3, 3)
    assert ttft["mean"] == pytest.approx((1.3 + 0.9 + 1.0) / 3)
    engine = point["ratios"]["engine"]  # (queue + prefill) of prepack over stock's
    assert engine["min"] == pytest.approx(60 / 150) and engine["max"] == 1.0
    stock, prepack = point["split_means"]["stock"], point["split_means"]["prepack"]
    assert stock == {"engine": 150.0, "queue": 100.0, "prefill": 50.0, "server_rest": 250.0,
                     "client_rest": pytest.approx((600 + 1100 + 600) / 3)}
    assert prepack["engine"] == pytest.approx((150 + 150 + 60) / 3)
    assert prepack["queue"] == pytest.approx((100 + 100 + 10) / 3) and prepack["prefill"] == 50
    assert point["preemptions"] == {"stock": 3, "prepack": 6}  # paired runs only
    lines = serve_parts.section([(Path("a.json"), a), (Path("b.json"), b)])
    assert "| `a.json`, `b.json` | 1x | 3 | 1.07 [0.90-1.30], median 1.00 |" in "\n".join(lines)
    assert lines[-2].endswith("| 70 + 50 / 100 + 50 | 280 / 250 | 817 / 767 | 6 / 3 | "
                              "1.30 (1), 0.95 (2) |")  # b.json: sqrt(0.9 * 1.0)
    assert point["by_file"][1][0] == pytest.approx(0.9 ** 0.5)
    del b["runs"][2]["metrics"]["vllm:num_preemptions_total"]  # a paired run without the counter
    [point] = serve_parts.pooled_points([(Path("a.json"), a), (Path("b.json"), b)])
    assert point["preemptions"] is None
    assert serve_parts.section([(Path("a.json"), a), (Path("b.json"), b)])[-2].endswith(
        "| - | 1.30 (1), 0.95 (2) |")


@pytest.mark.parametrize("change", [{"commit": "def"}, {"rate": 12.0}])
def test_results_of_different_points_do_not_pool(change):
    a = result([run("stock", 0, 1000.0), run("prepack", 0, 1300.0)])
    b = result([run("stock", 0, 1500.0), run("prepack", 0, 1350.0)], **change)
    assert serve_parts.pooled_points([(Path("a.json"), a), (Path("b.json"), b)]) == []
    assert serve_parts.section([(Path("a.json"), a), (Path("b.json"), b)]) == []


def test_split_needs_the_servers_three_means():
    assert serve_parts.split(run("stock", 0, 1000.0)) == {
        "engine": 150.0, "queue": 100.0, "prefill": 50.0, "server_rest": 250.0,
        "client_rest": 600.0}
    bare = run("stock", 0, 1000.0)
    del bare["metrics"]["server_queue_mean_ms"]
    assert serve_parts.split(bare) is None


def test_time_outside_the_engine_per_arm_and_its_table():
    a = result([run("stock", 0, 1000.0), run("prepack", 0, 700.0, server=300.0),
                run("prepack", 1, 9000.0, ok=False)])  # a failed run is left out
    parts = serve_parts.outside_engine(a)
    assert parts["stock"] == {"engine": 150.0, "outside": 850.0, "beyond_server": 600.0}
    assert parts["prepack"] == {"engine": 150.0, "outside": 550.0, "beyond_server": 400.0}
    bare = result([run("stock", 0, 1000.0), run("prepack", 0, 800.0)])
    for r in bare["runs"]:
        del r["metrics"]["server_queue_mean_ms"]  # a server that recorded no split
    assert serve_parts.outside_engine(bare)["stock"] == {
        "engine": None, "outside": None, "beyond_server": 600.0}
    a["host"] = {"cpu_model": "EPYC", "probe_ms": 9.5}
    cpu = {**bare, "device": "CPU: x86_64, 2 cores"}
    lines = serve_parts.host_section([(Path("a.json"), a), (Path("b.json"), bare),
                                      (Path("c.json"), cpu)])
    table = "\n".join(lines)
    assert "| `a.json` | X |" in table and "| 150 / 150 | 850 / 550 | 600 / 400 | EPYC, probe " \
        "9.5 ms |" in table
    assert "| - / - | - / - | 600 / 400 | - |" in table  # b.json: no split, no host record
    assert "c.json" not in table  # GPU results only
    assert serve_parts.host_section([(Path("c.json"), cpu)]) == []


def test_commits_with_the_same_plugin_code_pool(monkeypatch):
    codes = {"abc": "code1", "def": "code1", "fed": "code2"}
    monkeypatch.setattr(serve_parts.harness, "plugin_code", codes.get)
    a = result([run("stock", 0, 1000.0), run("prepack", 0, 1300.0)], commit="abc")
    b = result([run("stock", 0, 1500.0), run("prepack", 0, 1350.0)], commit="def")
    c = result([run("stock", 0, 1500.0), run("prepack", 0, 1350.0)], commit="fed")
    [point] = serve_parts.pooled_points([(Path(f"{n}.json"), r) for n, r in
                                         (("a", a), ("b", b), ("c", c))])
    assert point["files"] == ["a.json", "b.json"] and point["pairs"] == 2
