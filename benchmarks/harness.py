"""The run record every benchmark JSON carries (device, versions, git commit, command, vLLM
environment) and the one way results are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def git_commit() -> str | None:
    """The commit that ran: ``$PREPACK_GIT_COMMIT`` when set (a copy of the tree without
    its own up-to-date .git, e.g. on a lent GPU machine), else ``git rev-parse HEAD``."""
    if os.environ.get("PREPACK_GIT_COMMIT"):
        return os.environ["PREPACK_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("PREPACK_GIT_COMMIT")


def environment() -> dict:
    import torch

    env = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit() or os.environ.get("PREPACK_GIT_COMMIT"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host_cpus": os.cpu_count(),
        # vLLM settings taken from the environment (batch invariance, NCCL library, ...)
        "vllm_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("VLLM_")
                     and not any(s in k for s in ("KEY", "TOKEN", "SECRET"))},
    }
    if torch.cuda.is_available():
        env["device"] = f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        env["device"] = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    try:
        import vllm

        env["vllm"] = vllm.__version__
    except ImportError:
        env["vllm"] = None
    return env


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return path
