"""The trace simulator's options (:class:`SimOptions`, one per grid: the CLI's flags) and the
engine settings and step model they give each simulated run."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from benchmarks.trace_sim_model import CPU_SCALE, STEP_MODELS, StepModel
from vllm_prepack.config import PrepackConfig

ARMS: dict[str, dict | None] = {
    # name: prepack options (None: stock vLLM)
    "stock": None,
    "stretch": {},
    "stretch-kv-off": {"kv_reserve": "off"},
    "fcfs": {"policy": "fcfs", "tail_quantile": 0},
    "sjf": {"policy": "sjf", "tail_quantile": 0},
    "hrrn": {"policy": "hrrn"},
}


_STRETCH_ARM = re.compile(r"stretch(?P<stretch>[0-9.]+)(q(?P<tail_quantile>[0-9.]+))?"
                          r"(l(?P<lookahead>[0-9]+))?(?P<kv_off>-kv-off)?")


def arm_options(arm: str) -> dict | None:
    """An arm's prepack options: a name of :data:`ARMS`, or ``stretch<X>[q<Q>][l<L>][-kv-off]``
    (stretch X, tail quantile Q, lookahead L, ``kv_reserve=off``; the defaults for what is left
    out)."""
    if arm in ARMS:
        return ARMS[arm]
    with contextlib.suppress(ValueError):  # a number pattern that is no number: 1.2.3
        if m := _STRETCH_ARM.fullmatch(arm):
            groups = m.groupdict()
            options: dict = {"kv_reserve": "off"} if groups.pop("kv_off") else {}
            options.update({k: (int if k == "lookahead" else float)(v)
                            for k, v in groups.items() if v is not None})
            return options
    raise ValueError(f"unknown arm {arm!r}; accepted: {', '.join(ARMS)}, "
                     "stretch<X>[q<Q>][l<L>][-kv-off]")


def arm_name(options: Mapping[str, Any]) -> str:
    """The simulator arm (:func:`arm_options`) of a prepack scheduler's options (``to_dict``'s);
    a ``kv_reserve`` left out is ``off`` (a server from before the option). Options of another
    policy than ``stretch`` are an error naming them."""
    if options.get("policy", "stretch") != "stretch":
        raise ValueError(f"prepack options {dict(options)} have no simulator arm; accepted: "
                         "policy stretch")
    lookahead = options.get("lookahead", PrepackConfig.lookahead)
    kv = "" if options.get("kv_reserve", "off") == "oldest" else "-kv-off"
    return (f"stretch{options['stretch']:g}q{options['tail_quantile']:g}"
            + (f"l{lookahead}" if lookahead != PrepackConfig.lookahead else "") + kv)


def policy_of(arm: str) -> dict | None:
    """The admission options an arm ran (None: stock vLLM): its options over the defaults."""
    options = arm_options(arm)
    if options is None:
        return None
    c = PrepackConfig.from_dict(options)
    return {"policy": c.policy, "stretch": c.stretch, "tail_quantile": c.tail_quantile,
            "lookahead": c.lookahead, "kv_reserve": c.kv_reserve}


@dataclasses.dataclass(frozen=True)
class SimOptions:
    """One simulated grid: the CLI's flags, as attributes of the same names."""

    shape: str = "llama-3.1-8b"
    trace: str | None = None
    start: int = 0
    n: int = 500
    budgets: tuple[int, ...] = (2048, 8192)
    max_num_seqs: int = 1024
    loads: tuple[float, ...] = (0.5, 0.8, 1.0, 1.2, 1.5)
    compression: float | None = None
    arms: tuple[str, ...] = tuple(ARMS)
    seeds: tuple[int, ...] = (0, 1, 2)
    num_blocks: int = 40_000
    max_model_len: int = 8192
    cpu_scale: float = CPU_SCALE
    host: str = "model"
    fit_host: bool = False
    step_noise: float = 0.0
    replicas: int = 1
    step_timings: tuple[str, ...] = ()
    model: str | None = None
    sync_scheduling: bool = False
    delays: bool = False
    out: str | None = None


def engine_settings(opts: SimOptions, budget: int, **extra) -> dict:
    """:func:`simulate`'s engine settings for one budget: the model directory ``opts.model``, else
    the shape's config (:func:`benchmarks.models.config_dir`)."""
    from benchmarks.models import config_dir

    return dict(model=opts.model or str(config_dir(opts.shape)), budget=budget,
                max_num_seqs=opts.max_num_seqs, num_blocks=opts.num_blocks,
                max_model_len=opts.max_model_len, step_model=step_model(opts),
                cpu_scale=opts.cpu_scale, async_scheduling=not opts.sync_scheduling, **extra)


def step_model(opts: SimOptions) -> StepModel:
    """The shape's fitted step model, or one fitted to ``opts.step_timings`` (the only one for
    a model directory, ``opts.model``)."""
    if not opts.step_timings:
        if opts.model:
            raise ValueError(f"model {opts.model}: no step model fitted to it; give its steps "
                             "(step_timings, --step-timings)")
        return STEP_MODELS[opts.shape]
    from benchmarks.step_source import fitted

    return fitted(tuple(opts.step_timings))[0]
