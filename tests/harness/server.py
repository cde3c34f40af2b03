"""One ``vllm serve`` process on 127.0.0.1, started in its own process group, waited for on
``/health`` and stopped by its group; the scheduler class its engine core logged."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness.env import ROOT, subprocess_env

SCHEDULER_LINE = re.compile(r"Engine core scheduler class: (\S+)")


def vllm_command() -> str:
    local = Path(sys.executable).parent / "vllm"
    found = str(local) if local.exists() else shutil.which("vllm")
    if not found:
        raise SystemExit("no vllm command next to this Python or on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                       "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        env.setdefault(key, value)
    env.update(extra)
    return env


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def settled(paths: list[Path], quiet_s: float = 1.0, timeout: float = 30) -> None:
    """Return once none of ``paths`` has changed size for ``quiet_s`` (a server's statistics
    files are written by a thread of each engine core's, a moment behind its steps)."""
    def sizes() -> list[int]:
        return [p.stat().st_size if p.exists() else -1 for p in paths]

    deadline = time.monotonic() + timeout
    last, since = sizes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = sizes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


class Server:
    """One ``vllm serve`` process on 127.0.0.1, stopped by its process group."""

    def __init__(self, arm: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.arm, self.argv, self.log_path = arm, argv, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")  # noqa: SIM115 (lives with the process)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [vllm_command(), "serve", *argv, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
            env=child_env() if env is None else env, cwd=cwd, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240) -> float:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.arm}: vllm serve exited {self.proc.returncode}:\n"
                                   f"{self.log()[-4000:]}")
            with contextlib.suppress(OSError):
                if http_get(self.url + "/health", timeout=2) is not None:
                    return time.monotonic() - self.started
            time.sleep(0.5)
        raise TimeoutError(f"{self.arm}: vllm serve not ready in {timeout}s:\n"
                           f"{self.log()[-4000:]}")

    def scheduler_class(self, timeout: float = 15) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            found = SCHEDULER_LINE.findall(self.log())
            if found or time.monotonic() > deadline:
                return found[-1] if found else None
            time.sleep(0.5)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)
        self._log.close()


class JsonServer(Server):
    """A ``vllm serve`` process with the tests' environment (:mod:`tests.harness.env`) and a
    JSON POST."""

    def __init__(self, args: list[str], log_path: Path, **env: str) -> None:
        super().__init__("vllm serve", args, log_path, env=subprocess_env(**env), cwd=ROOT)

    def post(self, path: str, body: dict, timeout: float = 120) -> dict:
        import json

        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def serve(args: list[str], log_path: Path, **env: str):
    """A :class:`JsonServer`, ready, stopped on exit."""
    server = JsonServer(args, log_path, **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
