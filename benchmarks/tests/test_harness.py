"""``benchmarks.harness``: the commit a result names (a rewritten result is not a change of
code, any other tracked file is), the plugin code a commit ran, and the flags of a benchmark's
options dataclass."""

from __future__ import annotations

import subprocess

from benchmarks import harness


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_commit_is_dirty_for_code_not_for_results(tmp_path, monkeypatch):
    monkeypatch.delenv("PREPACK_GIT_COMMIT", raising=False)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"run": 1}\n')
    (tmp_path / "untracked.txt").write_text("not part of the commit\n")
    assert harness.git_commit() == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert harness.git_commit() == head + "-dirty"
    monkeypatch.setenv("PREPACK_GIT_COMMIT", "f" * 40)
    assert harness.git_commit() == "f" * 40



def test_plugin_tree_is_equal_for_commits_that_change_only_other_files(tmp_path, monkeypatch):
    (tmp_path / "vllm_prepack").mkdir()
    (tmp_path / "vllm_prepack" / "planner.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("a\n")
    git(tmp_path, "init", "-q")

    def commit(path, text):
        (tmp_path / path).write_text(text)
        git(tmp_path, "add", ".")
        git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", path)
        return subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()

    first = commit("README.md", "a\n")
    docs_only = commit("README.md", "b\n")
    code = commit("vllm_prepack/planner.py", "x = 2\n")
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    harness.git_object.cache_clear()
    assert harness.plugin_tree(first) == harness.plugin_tree(docs_only[:7]) is not None
    assert harness.plugin_tree(code) not in (None, harness.plugin_tree(first))
    assert harness.plugin_tree(code + "-dirty") is None  # not the committed code
    assert harness.plugin_tree("f" * 40) is None and harness.plugin_tree(None) is None
    # a file at a commit, and as it is now
    planner = "vllm_prepack/planner.py"
    assert harness.git_object(code, planner) == harness.git_object(None, planner) is not None
    assert harness.git_object(first, planner) != harness.git_object(None, planner)
    harness.git_object.cache_clear()


def test_plugin_code_leaves_out_docstrings_comments_and_help_texts(tmp_path, monkeypatch):
    code = ('"""Module."""\nimport argparse\n\n\nclass C:\n    """Class."""\n    x: str = "on"\n'
            '    """Attribute."""\n\n\ndef f(p):\n    """Function."""\n'
            '    p.add_argument("--x", help="Help " "text.")  # comment\n    return "on"\n')
    prose = (code.replace("Module.", "A module.").replace("Attribute.", "Its x.")
             .replace('"Help " "text."', '"Other help."').replace("# comment", "# other"))
    commits = {}
    (tmp_path / "vllm_prepack").mkdir()
    git(tmp_path, "init", "-q")
    value, returned = (code.replace('= "on"', '= "off"'),
                       code.replace('return "on"', 'return "off"'))
    for name, text in [("code", code), ("prose", prose), ("value", value),
                       ("returned", returned)]:
        (tmp_path / "vllm_prepack" / "m.py").write_text(text)
        git(tmp_path, "add", ".")
        git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", name)
        commits[name] = git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    harness.git_object.cache_clear()
    digest = {name: harness.plugin_code(c) for name, c in commits.items()}
    assert harness.plugin_tree(commits["code"]) != harness.plugin_tree(commits["prose"])
    assert digest["code"] == digest["prose"] is not None  # the same code, other prose
    assert len({digest["code"], digest["value"], digest["returned"]}) == 3  # strings that run
    assert harness.plugin_code("f" * 40) is None and harness.plugin_code(None) is None
    (tmp_path / "vllm_prepack" / "broken.py").write_text("def (\n")  # compared byte for byte
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "broken")
    assert harness.plugin_code(git(tmp_path, "rev-parse", "HEAD")) not in (None, *digest.values())
    harness.git_object.cache_clear()


def test_add_flags_gives_each_option_field_a_flag():
    import argparse
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Options:
        max_len: int = 8
        arms: str = "stock,prepack"
        out: str | None = None

    p = harness.add_flags(argparse.ArgumentParser(), Options, {"out": "write here"})
    assert vars(p.parse_args([])) == {"max_len": 8, "arms": "stock,prepack", "out": None}
    ns = p.parse_args(["--max-len", "16", "--out", "x.json"])
    assert Options(**vars(ns)) == Options(max_len=16, out="x.json")
    assert "write here" in p.format_help()
