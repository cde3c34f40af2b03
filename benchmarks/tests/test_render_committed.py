"""``benchmarks.render`` on the committed results: the README tables and figures."""

from __future__ import annotations

import sys

from benchmarks.harness import ROOT


def test_render_writes_tables_from_committed_results(tmp_path, bench_env):
    from benchmarks import render

    readme = tmp_path / "README.md"
    stale = "stale section text"  # a phrase no rendered table contains
    readme.write_text(f"# x\n{render.START}\n{stale}\n{render.END}\ntail\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.render", "--readme", str(readme),
                           "--plots-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=bench_env)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert stale not in text and text.endswith("tail\n")
    if any((ROOT / "benchmarks" / "results").glob("ab_*.json")):
        assert "| mix | padding | arm |" in text and "ttft_cdf.png" in text
        assert list(tmp_path.glob("*_ttft_cdf.png"))
    if any((ROOT / "benchmarks" / "results").glob("trace_sim_*_serve.json")):
        assert "#### Trace simulation, llama-3.1-8b" in text and "| stretch (" in text
        assert (tmp_path / "trace_sim_8b_serve_frontier.png").exists()


def test_simulation_section_and_frontier_from_a_result(tmp_path):
    from benchmarks import sim_report

    spread = {"median": 0.9, "min": 0.8, "max": 1.1, "mean": 0.9}
    ratios = {m: spread for m in sim_report.METRICS}
    result = {"shape": "llama-3.1-8b", "max_num_seqs": 1024, "vllm": "0.32.0",
              "git_commit": "abc", "seeds": [0, 1], "workload": {"n": 8, "start": 0,
                                                                   "trace": "credit"},
              "arms": {"stock": None, "stretch": {}, "stretch4": {"stretch": 4.0}},
              "points": [{"budget": 2048, "load": 1.5,
                          "ratios": {"stretch": ratios, "stretch4": ratios}}]}
    text = "\n".join(sim_report.section(tmp_path / "sim.json", result))
    assert "| 2048 | 1.50x | - | stretch (defaults of its commit) | 0.90 [0.80-1.10] |" in text
    assert "\n| | | | stretch4 (stretch 4) | 0.90 [0.80-1.10] |" in text
    result["policies"] = {"stock": None, "stretch": {"stretch": 2.0}, "stretch4": None}
    result["points"][0]["per_arm"] = {"stock": [{"ttft_mean_s": 0.2}, {"ttft_mean_s": 0.4}]}
    text = "\n".join(sim_report.section(tmp_path / "sim.json", result))
    assert "| 2048 | 1.50x | 0.300 / - | stretch (stretch 2) | 0.90 [0.80-1.10] |" in text
    for run, waiting in zip(result["points"][0]["per_arm"]["stock"], (0.1, 0.2)):
        run["held_mean_s"] = waiting
    text = "\n".join(sim_report.section(tmp_path / "sim.json", result))
    assert "| 2048 | 1.50x | 0.300 / 0.150 | stretch (stretch 2) |" in text
    assert text.count("| - / - |") == 2 and "KV cache" not in text  # not recorded
    for arm, counts in (("stock", (3, 4)), ("stretch", (5, 6)), ("stretch4", (0, 0))):
        per_arm = result["points"][0]["per_arm"].setdefault(arm, [{}, {}])
        for run, n in zip(per_arm, counts):
            run["preemptions"] = n
    result["num_blocks"] = 7185
    text = "\n".join(sim_report.section(tmp_path / "sim.json", result))
    assert "| 11 / 7 |" in text and "| 0 / 7 |" in text
    assert "KV cache: 7,185 blocks of 16 tokens." in text
    assert "step-time noise" not in text
    result.update(replicas=5, step_noise=0.29)
    text = "\n".join(sim_report.section(tmp_path / "sim.json", result))
    assert "2 windows, 5 run(s) each with step-time noise (log-sigma 0.29)" in text
    assert sim_report.figures(tmp_path / "sim.json", result, tmp_path) == ["sim_frontier.png"]
    assert (tmp_path / "sim_frontier.png").stat().st_size > 0


def test_serving_section_names_the_options_the_prepack_server_ran(tmp_path):
    """A serving result that recorded its prepack server's options shows them; one that did
    not shows none (its commit's defaults ran)."""
    import json

    from benchmarks import report_sections

    path = (ROOT / "benchmarks" / "results"
            / "trace_serve_8b_b8192_1.5_graphs_stretch2_h200_vllm033.json")
    d = json.loads(path.read_text())
    text = "\n".join(report_sections.serving_section(path, d))
    assert "policy stretch, stretch 2, tail quantile 0.9, lookahead 128" in text
    del d["arms"]["prepack"]["prepack_options"]
    assert "Prepack options" not in "\n".join(report_sections.serving_section(path, d))
