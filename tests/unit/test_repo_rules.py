"""Rules of the repository's layout: the tests never depend on the benchmarks, the benchmarks
are a package (no ``sys.path`` edits), and no benchmark module or function outgrows what a
maintainer reads at once (250 lines a module, 60 a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = sorted((ROOT / "tests").rglob("*.py"))
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py")
                    if "results" not in p.relative_to(ROOT).parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", TESTS, ids=_rel)
def test_tests_do_not_use_the_benchmarks(path):
    text = path.read_text()
    imported = {n for n in _imports(ast.parse(text)) if n.split(".")[0] == "benchmarks"}
    assert not imported, f"{_rel(path)} imports {sorted(imported)}"
    runs = "-m" + '", "' + "benchmarks."  # written apart so that this file passes its own rule
    assert f'"{runs}' not in text, f"{_rel(path)} runs a benchmark module"


@pytest.mark.parametrize("path", BENCHMARKS, ids=_rel)
def test_benchmark_modules_stay_small_and_touch_no_sys_path(path):
    text = path.read_text()
    assert "sys.path" not in text, f"{_rel(path)} touches sys.path"
    lines = len(text.splitlines())
    assert lines <= 250, f"{_rel(path)}: {lines} lines"
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in ast.walk(ast.parse(text))
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and f.end_lineno - f.lineno + 1 > 60]
    assert not long, f"{_rel(path)}: functions over 60 lines: {long}"


def test_the_rules_see_files():
    assert len(TESTS) > 20 and len(BENCHMARKS) > 20
