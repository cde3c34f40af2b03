"""The algorithm is pure: only the glue (adapters/, compat.py, log.py) imports vLLM."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.harness.env import ROOT, run_python

PACKAGE = ROOT / "vllm_prepack"
GLUE = {"compat.py", "log.py", "__init__.py"}  # __init__ reaches vLLM only through compat


def _imports_vllm(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "vllm"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "vllm":
                found.append(node.module)
    return found


def test_only_the_glue_imports_vllm():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "adapters" or str(rel) in GLUE:
            continue
        if names := _imports_vllm(path):
            offenders[str(rel)] = names
    assert not offenders, offenders
    assert not _imports_vllm(PACKAGE / "__init__.py")


def test_pure_modules_import_without_vllm():
    plain = run_python("import sys, vllm_prepack.planner, vllm_prepack.layout\n"
                       "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vllm'))")
    assert plain.returncode == 0 and plain.stdout.strip() == "[]", plain.stdout + plain.stderr
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("vllm is blocked in this test")
sys.meta_path.insert(0, Block())
import vllm_prepack.planner, vllm_prepack.layout, vllm_prepack.config, vllm_prepack.stats
import vllm_prepack.metrics
import vllm_prepack.kernels
assert not any(m == "vllm" or m.startswith("vllm.") for m in sys.modules)
print("pure ok")
"""
    out = run_python(code)
    assert out.returncode == 0 and "pure ok" in out.stdout, out.stderr
