"""Every ``python -m benchmarks.<module>`` that benchmarks/README.md documents runs: its
``--help`` exits 0 and prints its usage (the CI-size runs of each suite are in the other
test files)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks.harness import ROOT

README = ROOT / "benchmarks" / "README.md"
MODULES = sorted(set(re.findall(r"python -m benchmarks\.(\w+)", README.read_text())))


def test_the_readme_documents_every_suite():
    assert {"ab", "serve_ab", "paper", "equivalence", "kernel_bench", "planner_cost",
            "step_timing", "trace_sim", "trace_calib", "render"} <= set(MODULES)


@pytest.mark.cli
@pytest.mark.parametrize("module", MODULES)
def test_documented_command_runs(module, bench_env):
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, env=bench_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
