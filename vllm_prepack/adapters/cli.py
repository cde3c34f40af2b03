"""CLI surface: ``--scheduler {default,prepack}`` and the ``--prepack-*`` options.

vLLM 0.32 loads general plugins inside ``AsyncEngineArgs.add_cli_args`` before it calls
``EngineArgs.add_cli_args``, so wrapping the latter adds our options to ``vllm serve`` and
``vllm bench throughput``. ``EngineArgs.from_cli_args`` keeps only its own dataclass fields,
so its wrapper maps our options onto ``scheduler_cls`` and ``additional_config["prepack"]``,
which reach the engine-core process inside the pickled ``VllmConfig``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from vllm_prepack import compat
from vllm_prepack.config import (
    ADDITIONAL_CONFIG_KEY,
    KV_RESERVES,
    PACKED_ATTENTION,
    POLICIES,
    SCHEDULER_QUALNAME,
    SCHEDULERS,
    PrepackConfig,
    PrepackConfigError,
    check_cache_aware_window,
)

# option name -> (argparse kwargs); the flag is --prepack-<name with dashes>.
_OPTIONS: dict[str, dict[str, Any]] = {
    "policy": dict(choices=POLICIES, help="Admission order: stretch (earliest deadline, "
                   "deadline = prefill clock at arrival + stretch x uncached prompt tokens), "
                   "fcfs (arrival order, passing over prompts that do not fit whole), sjf "
                   "(fewest uncached tokens first) or hrrn (SGLang's highest response ratio "
                   "next). Every policy fills the step."),
    "stretch": dict(type=float, metavar="X", help="For --prepack-policy stretch: a request may "
                    "be overtaken until the engine has computed X times its uncached prompt "
                    "tokens since it arrived (0: arrival order)."),
    "tail_quantile": dict(type=float, metavar="Q", help="Tail bound: a request that has "
                          "waited longer than this quantile of recent times to first token, "
                          "and is among the oldest 1 - Q of the queue, is taken in arrival "
                          "order first and never passed over (0: off)."),
    "lookahead": dict(type=int, metavar="N", help="Waiting requests the planner looks at "
                      "each step, in queue order."),
    "kv_reserve": dict(choices=KV_RESERVES, help="oldest: no prompt is admitted with the free "
                       "KV blocks the oldest waiting request needs to be admitted (its whole "
                       "prompt's under vLLM's scheduler_reserve_full_isl), so under KV pressure "
                       "they gather for it, as under vLLM's FCFS; off: every prompt that fits is "
                       "admitted."),
    "packed_attention": dict(choices=PACKED_ATTENTION, help="Packed-prefill attention path "
                             "for fresh prompts."),
    "stats_path": dict(metavar="PATH", help="Write per-step packing statistics as JSONL "
                       "(default: $VLLM_PREPACK_STATS)."),
    "stats_log_interval_s": dict(type=float, metavar="SECONDS", help="Seconds between "
                                 "packing-statistics log lines of the engine core (0: off)."),
}


def flag(name: str) -> str:
    return "--prepack-" + name.replace("_", "-")


def dest(name: str) -> str:
    return "prepack_" + name


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add our option group to an engine-arguments parser (once)."""
    if "--scheduler" in compat.parser_option_strings(parser):
        return parser
    group = parser.add_argument_group(
        title="PrepackConfig",
        description="vllm-prepack: bin-packed prefill admission (--scheduler prepack).",
    )
    group.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="default",
        help="Scheduler: default (vLLM's own) or prepack (vllm-prepack's packed prefill "
        "admission and packed-prefill attention).",
    )
    defaults = PrepackConfig()
    for name, kwargs in _OPTIONS.items():
        default = getattr(defaults, name)
        shown = "" if default is None else f" Default: {default}."
        kwargs = {**kwargs, "help": kwargs["help"] + shown}
        group.add_argument(flag(name), dest=dest(name), default=None, **kwargs)
    return parser


def options_from_namespace(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--prepack-*`` options given on the command line (unset ones are omitted)."""
    given = {}
    for name in _OPTIONS:
        value = getattr(args, dest(name), None)
        if value is not None:
            given[name] = value
    return given


def apply_scheduler_choice(engine_args: Any, scheduler: str, options: dict[str, Any]) -> Any:
    """Point ``engine_args`` at our scheduler and carry ``options`` to the engine core."""
    if scheduler not in SCHEDULERS:
        raise PrepackConfigError(
            f"invalid --scheduler {scheduler!r}; accepted: {', '.join(SCHEDULERS)}"
        )
    if scheduler == "default":
        if options:
            raise PrepackConfigError(
                f"{', '.join(flag(n) for n in options)} only apply with --scheduler prepack"
            )
        return engine_args
    compat.require_tested_version()
    if getattr(engine_args, "scheduler_cls", None) not in (None, SCHEDULER_QUALNAME):
        raise PrepackConfigError(
            f"--scheduler prepack and --scheduler-cls {engine_args.scheduler_cls!r} "
            "both choose a scheduler class; give one of them"
        )
    PrepackConfig.from_dict(options)  # validate here, before any engine starts
    check_cache_aware_window(compat.cache_aware_admission_window(engine_args))
    engine_args.scheduler_cls = SCHEDULER_QUALNAME
    additional = dict(getattr(engine_args, "additional_config", None) or {})
    additional[ADDITIONAL_CONFIG_KEY] = dict(options)
    engine_args.additional_config = additional
    return engine_args


def install() -> None:
    from vllm.engine.arg_utils import EngineArgs

    if getattr(EngineArgs.add_cli_args, "_prepack", False):
        return
    original_add = EngineArgs.add_cli_args
    original_from = EngineArgs.from_cli_args.__func__

    @functools.wraps(original_add)
    def add_cli_args(parser, *args, **kwargs):
        return add_arguments(original_add(parser, *args, **kwargs))

    def from_cli_args(cls, args: argparse.Namespace):
        import vllm_prepack

        vllm_prepack.announce()
        engine_args = original_from(cls, args)
        try:
            return apply_scheduler_choice(
                engine_args, getattr(args, "scheduler", "default"), options_from_namespace(args)
            )
        except (PrepackConfigError, compat.UntestedVllmError) as e:
            raise SystemExit(f"error: {e}") from None

    add_cli_args._prepack = True  # type: ignore[attr-defined]
    EngineArgs.add_cli_args = staticmethod(add_cli_args)
    EngineArgs.from_cli_args = classmethod(functools.wraps(original_from)(from_cli_args))
