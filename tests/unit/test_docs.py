"""The documentation against the code: the README's options table against ``PrepackConfig``
and the CLI flags, and every repository path the README and ``docs/`` name. No vLLM engine."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vllm_prepack.adapters import cli
from vllm_prepack.config import PrepackConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "patches" / "README.md",
        ROOT / "benchmarks" / "README.md",
        ROOT / "benchmarks" / "results" / "archive" / "README.md"]

# Top-level entries a backticked path may start with to count as a repository path (other
# paths in the text are vLLM's, or files a run writes).
REPO_DIRS = ("vllm_prepack", "tests", "benchmarks", "patches", "scripts", "docs")
REPO_FILES = ("Makefile", "pyproject.toml", "LICENSE", "README.md")
RESULTS = ROOT / "benchmarks" / "results"


def options_table() -> dict[str, dict[str, str]]:
    """The README's options table: option -> {flag, values, default, meaning}."""
    text = README.read_text()
    header = "| option | flag | values | default | meaning |"
    assert header in text, "README has no options table"
    rows = {}
    for line in text.split(header, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, line
        name = cells[0].strip("`")
        rows[name] = dict(zip(("flag", "values", "default", "meaning"), cells[1:]))
    return rows


def test_options_table_lists_every_option_once():
    assert list(options_table()) == list(PrepackConfig.field_names())
    assert list(cli._OPTIONS) == list(PrepackConfig.field_names())


@pytest.mark.parametrize("field", dataclasses.fields(PrepackConfig), ids=lambda f: f.name)
def test_options_table_row_matches_config_and_cli(field):
    row = options_table()[field.name]
    assert row["flag"] == f"`{cli.flag(field.name)}`"
    assert row["default"] == f"`{field.default}`", (row["default"], field.default)
    choices = cli._OPTIONS[field.name].get("choices")
    if choices is not None:
        assert re.findall(r"`([^`]+)`", row["values"]) == list(choices)
    assert row["meaning"], field.name


def test_readme_is_short_and_states_results_and_losses():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for section in ("## Results on real traffic", "## Where it wins, ties and loses"):
        assert section in text
    assert "**Loses**" in text and ".json" in text.split("## Results on real traffic")[1]


def named_paths(doc: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) for each repository path ``doc`` names: Markdown links relative to
    the file, and backticked paths that start at a top-level entry of the repository or name a
    file under ``benchmarks/results/``."""
    text = doc.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are commands, not links
    found = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        found.append((target, doc.parent / target.split("#", 1)[0]))
    for span in re.findall(r"`([^`\s]+)`", text):
        path = re.split(r"::|:(?=[A-Za-z_])", span, maxsplit=1)[0].rstrip("/")
        if any(ch in path for ch in "*<>$[]{}(),=\"'") or path.startswith(("-", ".", "/")):
            continue
        first = path.split("/", 1)[0]
        if "/" in path and first in REPO_DIRS or path in REPO_FILES:
            found.append((span, ROOT / path))
        elif re.fullmatch(r"[\w.-]+\.(json|png|log)", path):
            found.append((span, RESULTS / path))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_path_exists(doc):
    assert doc.exists()
    paths = named_paths(doc)
    missing = [written for written, path in paths if not path.exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_docs_are_linked_from_the_readme():
    text = README.read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{doc.name})" in text, doc.name
    assert "](patches/README.md)" in text and "](LICENSE)" in text


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_linked_anchor_exists(doc):
    for target in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, anchor = target.split("#", 1)
        linked = (doc.parent / path) if path else doc
        headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
        assert anchor in {slug(h) for h in headings}, (doc.name, target)


def test_make_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    # Rule lines: every name before the first colon (a rule may name several targets).
    targets = {t for names in re.findall(r"^([\w. %/-]+?)\s*:(?!=)", makefile, flags=re.M)
               for t in names.split()}
    named = set(re.findall(r"\bmake ([\w-]+)", README.read_text()))
    assert named and named <= targets, named - targets


def test_engine_kwargs_accepts_exactly_the_config_options(monkeypatch):
    """``vllm_prepack.engine_kwargs(...)``, the Python way to pass the options the table lists:
    every option by its field name, and an unknown one rejected naming the accepted ones."""
    import vllm_prepack
    from vllm_prepack import compat
    from vllm_prepack.config import ADDITIONAL_CONFIG_KEY, SCHEDULER_QUALNAME, PrepackConfigError

    # The version gate reads the installed vLLM (tests/vllm/test_plugin.py covers it); here,
    # without vLLM, only the options.
    monkeypatch.setattr(compat, "require_tested_version", lambda: None)
    defaults = PrepackConfig().to_dict()
    assert list(defaults) == list(options_table())
    for name, value in defaults.items():
        assert vllm_prepack.engine_kwargs(**{name: value}) == {
            "scheduler_cls": SCHEDULER_QUALNAME,
            "additional_config": {ADDITIONAL_CONFIG_KEY: {name: value}},
        }
    every = vllm_prepack.engine_kwargs(**defaults, additional_config={"other": 1})
    assert every["additional_config"] == {"other": 1, ADDITIONAL_CONFIG_KEY: defaults}
    with pytest.raises(PrepackConfigError) as err:
        vllm_prepack.engine_kwargs(bogus_option=1)
    for name in ("bogus_option", *PrepackConfig.field_names()):
        assert name in str(err.value), err.value
