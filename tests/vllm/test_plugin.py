"""The plugin as vLLM loads it, without an engine: entry points, register(), the version gate,
the runtime hooks against patches/. The CLI, serving and the patched vLLM:
tests/e2e/test_plugin_cli.py."""

from __future__ import annotations

import importlib.metadata as md
import re
import textwrap

from tests.harness.env import ROOT, run_python
from vllm_prepack import compat

PATCHES = sorted((ROOT / "patches").glob("*.patch"))


def test_entry_points_are_found():
    eps = {ep.name: ep.value for ep in md.entry_points(group="vllm.general_plugins")}
    assert eps.get("prepack") == "vllm_prepack:register"
    named = {ep.name: ep.value for ep in md.entry_points(group="vllm.schedulers")}
    assert named.get("prepack") == "vllm_prepack.adapters.scheduler:PrepackScheduler"
    loggers = {ep.name: ep.value for ep in md.entry_points(group="vllm.stat_logger_plugins")}
    assert loggers.get("prepack") == "vllm_prepack.adapters.metrics:PrepackStatLogger"
    from vllm.plugins import load_plugins_by_group

    plugins = load_plugins_by_group("vllm.general_plugins")
    import vllm_prepack

    assert plugins["prepack"] is vllm_prepack.register
    from vllm.v1.metrics.loggers import load_stat_logger_plugin_factories

    from vllm_prepack.adapters.metrics import PrepackStatLogger

    assert PrepackStatLogger in load_stat_logger_plugin_factories()


def test_register_twice_is_harmless():
    out = run_python(textwrap.dedent("""
        import vllm_prepack
        from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
        from vllm.config.scheduler import SchedulerConfig
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        vllm_prepack.register()
        add, frm = EngineArgs.add_cli_args, EngineArgs.from_cli_args
        get = SchedulerConfig.get_scheduler_cls
        vllm_prepack.register()
        assert EngineArgs.add_cli_args is add and SchedulerConfig.get_scheduler_cls is get
        assert EngineArgs.from_cli_args.__func__ is frm.__func__
        parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
        n = sum("--scheduler" in a.option_strings for a in parser._actions)
        print("scheduler options:", n)
    """))
    assert out.returncode == 0, out.stderr
    assert "scheduler options: 1" in out.stdout


def test_untested_vllm_version_warns_and_patches_nothing():
    out = run_python(textwrap.dedent("""
        import vllm
        vllm.__version__ = "0.99.0"
        import vllm_prepack
        from vllm.engine.arg_utils import EngineArgs
        from vllm.config.scheduler import SchedulerConfig
        add, get = EngineArgs.add_cli_args, SchedulerConfig.get_scheduler_cls
        vllm_prepack.register(); vllm_prepack.register()
        assert EngineArgs.add_cli_args is add and SchedulerConfig.get_scheduler_cls is get
        from vllm_prepack import adapters
        assert not adapters.installed_hooks()
        try:
            vllm_prepack.engine_kwargs()
        except Exception as e:
            print("engine_kwargs error:", e)
    """), VLLM_PLUGINS="")
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert len(re.findall(r"installed vLLM is 0\.99\.0", log)) == 2, log  # one warning + error
    assert "engine_kwargs error:" in log and all(f"{v}.x" in log for v in compat.TESTED_VLLM)


def test_untested_version_cli_prepack_fails_naming_the_supported_ones(tiny_model):
    code = textwrap.dedent(f"""
        import sys, vllm
        vllm.__version__ = "0.99.0"
        from vllm.entrypoints.cli.main import main
        sys.argv = ["vllm", "serve", {tiny_model!r}, "--scheduler", "prepack"]
        main()
    """)
    out = run_python(code)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert "0.99.0" in log and all(f"{v}.x" in log for v in compat.TESTED_VLLM), log
    assert "--scheduler prepack" in log, log


def test_runtime_hooks_equal_patches():
    from vllm_prepack.adapters import HOOKS

    assert {p.stem for p in PATCHES} == set(HOOKS)
