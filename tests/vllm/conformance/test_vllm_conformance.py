"""vLLM's own scheduler unit tests (from the sdist of the installed release, unedited) against
stock vLLM and against each prepack subclass.

Stock must pass every test. With ``PrepackSyncScheduler`` in place of ``Scheduler`` (arm
``sync``) and ``PrepackAsyncScheduler`` in place of ``AsyncScheduler`` (arm ``async``), every
test passes except those listed in ``expected_differences_<release>.txt`` for that arm, each
with its reason; a listed test that passes fails the run too (the list must stay true). Each
arm runs in its own pytest process, in the extracted tree (vLLM's tests import themselves as
``tests.*``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import offline_hub  # noqa: E402
import vllm_suite  # noqa: E402
from prepack_swap import platform_skips, read_expected  # noqa: E402


def expected_file() -> Path:
    """The expected differences of the installed vLLM release."""
    return HERE / f"expected_differences_{vllm_suite.installed_release()}.txt"


@pytest.fixture(scope="module")
def vllm_tests() -> Path:
    """vLLM's test tree; fetching it must work (a failure here is an error, never a skip)."""
    return vllm_suite.tests_tree()


@pytest.fixture(scope="module")
def hub() -> Path:
    return offline_hub.build(vllm_suite.CACHE)


def run_arm(arm: str, tree: Path, hub: Path, report: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hub),
        PYTHONPATH=os.pathsep.join([str(HERE), str(vllm_suite.ROOT),
                                    env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "prepack_swap", "-p", "no:cacheprovider",
        "--rootdir", str(tree), "-c", os.devnull, "-W", "ignore", "-rfEX",
        "--prepack-arm", arm, "--prepack-expected", str(expected_file()),
        "--prepack-report", str(report), *vllm_suite.TEST_FILES,
    ]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.conformance
@pytest.mark.parametrize("arm", ["stock", "sync", "async"])
def test_vllm_scheduler_suite(arm, vllm_tests, hub, tmp_path):
    report = tmp_path / f"{arm}.json"
    proc = run_arm(arm, vllm_tests, hub, report)
    assert report.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(report.read_text())
    tests = result["tests"]
    outcomes = {t: r["outcome"] for t, r in tests.items()}
    summary = {o: sum(1 for v in outcomes.values() if v == o) for o in set(outcomes.values())}
    print(f"\n{arm}: {len(tests)} tests, {summary}, built {result['built']}")
    _, collected = vllm_suite.TESTED[vllm_suite.installed_release()]
    assert len(tests) == collected, (len(tests), collected)

    expected = read_expected(expected_file(), arm) if arm != "stock" else {}
    skips = platform_skips()
    unexpected = sorted(t for t, o in outcomes.items()
                        if o not in ("passed", "xfailed")
                        and not (o == "skipped" and t in skips))
    assert not unexpected, (
        f"{arm}: unexpected outcomes (a failure not listed in {expected_file().name}, or a listed "
        f"one that passes now):\n"
        + "\n".join(f"  {outcomes[t]}: {t}" for t in unexpected) + "\n" + proc.stdout[-6000:]
    )
    assert sorted(t for t, o in outcomes.items() if o == "xfailed") == sorted(expected)
    assert proc.returncode == 0, proc.stdout[-6000:]
    if arm == "stock":
        assert not result["built"]
        return
    # The swap took: our class was built, in most of the tests that build a scheduler.
    ours = {"sync": "PrepackSyncScheduler", "async": "PrepackAsyncScheduler"}[arm]
    assert result["swapped"], "no scheduler name swapped"
    with_ours = [t for t, r in tests.items() if r.get("built", {}).get(ours)]
    print(f"{arm}: {len(with_ours)} tests built {ours} ({result['built'][ours]} instances)")
    assert len(with_ours) >= {"sync": 150, "async": 15}[arm], len(with_ours)
