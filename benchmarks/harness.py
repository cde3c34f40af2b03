"""The run record every benchmark JSON carries (device, versions, git commit, command, vLLM
environment), the one way results are written, the environment of a child process, and an
engine process driven over stdin with replies as JSON files (:class:`EngineProcess`)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The commit that ran: ``$PREPACK_GIT_COMMIT`` when set (a copy of the tree without
    its own up-to-date .git, e.g. on a lent GPU machine), else ``git rev-parse HEAD``, marked
    ``-dirty`` where a tracked file other than a result (``benchmarks/results/``, which a run
    rewrites as it goes) differs from it."""
    if os.environ.get("PREPACK_GIT_COMMIT"):
        return os.environ["PREPACK_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=ROOT, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)benchmarks/results"],
                               capture_output=True, text=True, timeout=10,
                               cwd=ROOT).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("PREPACK_GIT_COMMIT")


@functools.cache
def git_object(commit: str | None, path: str) -> str | None:
    """The git object id of ``path`` (a file or folder of the repository) at ``commit``, or, for
    ``commit`` None, of the file as it is now in the checkout. None where git does not know the
    commit (a ``-dirty`` one included) or the path."""
    if commit is not None and (not commit or commit.endswith("-dirty")):
        return None
    args = (["hash-object", "--", path] if commit is None
            else ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}:{path}"])
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def plugin_tree(commit: str | None) -> str | None:
    """The git tree of ``vllm_prepack/`` at ``commit``: two commits with the same tree ran the
    same plugin code. None where git does not know the commit (a ``-dirty`` one included)."""
    return git_object(commit, "vllm_prepack") if commit else None


def plugin_code(commit: str | None) -> str | None:
    """A digest of the plugin's code at ``commit`` without its prose: the files of
    :func:`plugin_tree` with docstrings, comments and the ``help=`` texts of options left out.
    Two commits with the same digest run the same plugin, also where only that prose differs
    (their trees do not). None where git does not know the commit."""
    tree = plugin_tree(commit)
    return _code_digest(tree) if tree else None


@functools.cache
def _code_digest(tree: str) -> str | None:
    try:
        listing = subprocess.run(["git", "ls-tree", "-r", tree], capture_output=True,
                                 text=True, cwd=ROOT, timeout=10, check=True).stdout
        entries = [(line.split("\t", 1)[1], line.split()[2]) for line in listing.splitlines()]
        blobs = subprocess.run(["git", "cat-file", "--batch"], capture_output=True, cwd=ROOT,
                               input="".join(f"{oid}\n" for _, oid in entries).encode(),
                               timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    digest, at = hashlib.sha256(), 0
    for path, _ in entries:  # each blob: "<oid> blob <size>\n<bytes>\n"
        header_end = blobs.index(b"\n", at)
        header = blobs[at:header_end].split()
        if len(header) != 3 or header[1] != b"blob":
            return None  # a submodule or a missing object: not code git can show
        data = blobs[header_end + 1:header_end + 1 + int(header[2])]
        at = header_end + 2 + int(header[2])
        if path.endswith(".py"):
            try:
                data = ast.dump(_WithoutProse().visit(ast.parse(data))).encode()
            except (SyntaxError, ValueError):
                pass  # not Python this interpreter parses: compared byte for byte
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


class _WithoutProse(ast.NodeTransformer):
    """Drops docstrings (every statement that is only a string: a module's, a class's, a
    function's, an attribute's) and blanks the text of ``help=`` keywords; comments are not
    in an AST."""

    def visit_Expr(self, node):
        prose = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        return ast.Pass() if prose else self.generic_visit(node)

    def visit_keyword(self, node):
        if node.arg == "help":
            return ast.keyword(arg="help", value=ast.Constant(""))
        return self.generic_visit(node)


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
        "host": host(),
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


def cgroup_cpus(cpu_max: str | None) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("<quota> <period>"; "max": no quota)."""
    parts = (cpu_max or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def host() -> dict:
    """The host's CPU as this run saw it: model, CPUs it may use (affinity, cgroup quota), load,
    and a one-core probe (best of 5 times of a fixed pure-Python loop): hosts that report the
    same CPU count can differ several-fold in how fast a server's Python paths run."""
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    model = next((line.split(":", 1)[1].strip() for line in (read("/proc/cpuinfo") or "")
                  .splitlines() if line.startswith("model name")), platform.processor() or None)
    probe = []
    for _ in range(5):
        t0 = time.perf_counter()
        sum(i * i for i in range(200_000))
        probe.append(time.perf_counter() - t0)
    cpu_max = (read("/sys/fs/cgroup/cpu.max") or "").strip() or None
    return {"cpu_model": model, "usable_cpus": len(os.sched_getaffinity(0)),
            "cgroup_cpu_max": cpu_max, "cgroup_cpus": cgroup_cpus(cpu_max),
            "load_1m": round(os.getloadavg()[0], 2), "probe_ms": round(min(probe) * 1e3, 2)}


def add_flags(parser: argparse.ArgumentParser, options: type,
              helps: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """One ``--flag`` per field of the dataclass ``options``, the field's default its default
    (``int`` fields parsed as ints, ``bool`` ones as ``--flag``/``--no-flag``), with the help
    ``helps`` gives a field."""
    for field in dataclasses.fields(options):
        kind = {"int": {"type": int}, "bool": {"action": argparse.BooleanOptionalAction}}
        parser.add_argument("--" + field.name.replace("_", "-"), default=field.default,
                            **kind.get(str(field.type), {}),
                            **({"help": helps[field.name]} if field.name in (helps or {}) else {}))
    return parser


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark's child process: this one's, hashing seeded (digests of
    token ids compare across processes), plus ``extra``."""
    return {**os.environ, "PYTHONHASHSEED": "0", **extra}


def reply(result_dir: str | Path, name: str, payload: dict) -> None:
    """An engine process's answer ``<result_dir>/<name>.json``, written atomically."""
    path = Path(result_dir) / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.rename(path)


class EngineProcess:
    """``python -m <module> <argv>`` from the repository root, its output in
    ``<workdir>/engine.log``: commands go to its stdin as JSON lines, answers come back
    through :func:`reply` files in ``workdir``."""

    def __init__(self, name: str, module: str, argv: list[str], workdir: Path):
        self.name = name
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "engine.log", "w")
        cmd = [sys.executable, "-m", module, *argv, "--result-dir", str(self.dir)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env=child_env())

    def wait(self, name: str, timeout: float) -> dict:
        path = self.dir / f"{name}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                tail = (self.dir / "engine.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"arm {self.name} exited {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"arm {self.name}: no {name} in {timeout}s")
            time.sleep(0.05)
        return json.loads(path.read_text())

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"stop": True})
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()
