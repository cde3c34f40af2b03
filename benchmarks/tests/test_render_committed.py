"""``benchmarks.render`` on the committed results: the README tables and figures."""

from __future__ import annotations

import sys

from benchmarks.harness import ROOT


def test_render_writes_tables_from_committed_results(tmp_path, bench_env):
    from benchmarks import render

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{render.START}\nold\n{render.END}\ntail\n")
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.render", "--readme", str(readme),
                           "--plots-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=bench_env)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    if any((ROOT / "benchmarks" / "results").glob("ab_*.json")):
        assert "| mix | padding | arm |" in text and "ttft_cdf.png" in text
        assert list(tmp_path.glob("*_ttft_cdf.png"))
