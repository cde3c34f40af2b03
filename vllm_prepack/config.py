"""Plugin options: one flat, frozen dataclass, validated, carried in vLLM's ``additional_config``.

Imports no vLLM. The engine core sees only the pickled ``VllmConfig``, so the options travel
as ``additional_config["prepack"]`` (a plain dict) and are rebuilt there with
:meth:`PrepackConfig.from_additional_config`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm_prepack.planner import POLICIES

ADDITIONAL_CONFIG_KEY = "prepack"
STATS_PATH_ENV = "VLLM_PREPACK_STATS"

SCHEDULERS = ("default", "prepack")
# POLICIES (the admission orders) is the planner's own tuple: one definition of what is accepted.
PACKED_ATTENTION = ("auto", "on", "off")
KV_RESERVES = ("oldest", "off")
SCHEDULING_POLICIES = ("fcfs", "priority")
"""vLLM's ``--scheduling-policy`` values; prepack orders admission within a priority class."""


class PrepackConfigError(ValueError):
    """A plugin option has a value outside the accepted ones."""


@dataclass(frozen=True)
class PrepackConfig:
    """Options of ``--scheduler prepack`` (CLI: ``--prepack-<name>`` with dashes)."""

    policy: str = "stretch"
    """Admission order. ``stretch``: earliest deadline, deadline = the engine's prefill clock
    at arrival + ``stretch`` x the prompt's uncached tokens (short prompts overtake long ones,
    for a bounded while). ``fcfs``: arrival order, a prompt that does not fit whole is passed
    over. ``sjf``: fewest uncached tokens first, no aging. ``hrrn``: SGLang's highest response
    ratio next. Every policy fills the step: whole prompts first, then a chunk of the next."""

    stretch: float = 2.0
    """For ``policy=stretch``: how long a request may be overtaken, in multiples of its own
    uncached prompt tokens computed by the engine since it arrived (0: arrival order)."""

    tail_quantile: float = 0.9
    """Tail bound: a request that has waited longer than this quantile of the engine's recent
    times to first token, and is among the oldest ``1 - tail_quantile`` of the queue, is taken
    in arrival order before every other one and never passed over (0: off)."""

    lookahead: int = 128
    """How many waiting requests (in queue order) the planner looks at each step."""

    kv_reserve: str = "oldest"
    """``oldest``: no prompt is admitted with the free KV blocks the oldest waiting request
    needs to be admitted (its whole prompt's under vLLM's ``scheduler_reserve_full_isl``), so
    under KV pressure they gather for it, as under vLLM's FCFS; ``off``: every prompt that fits
    is admitted."""

    packed_attention: str = "auto"
    """Packed-prefill attention path: ``on``, ``off``, or ``auto`` (on where measured faster)."""

    stats_path: str | None = None
    """JSONL file for per-step packing statistics (default: ``$VLLM_PREPACK_STATS``)."""

    stats_log_interval_s: float = 10.0
    """Seconds between the engine core's packing-statistics log lines (0: never)."""

    def __post_init__(self) -> None:
        _choice("policy", self.policy, POLICIES)
        _choice("packed_attention", self.packed_attention, PACKED_ATTENTION)
        _choice("kv_reserve", self.kv_reserve, KV_RESERVES)
        if isinstance(self.stretch, bool) or not isinstance(self.stretch, (int, float)) or not (
            self.stretch >= 0 and math.isfinite(self.stretch)
        ):
            raise PrepackConfigError(
                f"prepack stretch must be a finite number >= 0, got {self.stretch!r}"
            )
        if isinstance(self.tail_quantile, bool) or not isinstance(
            self.tail_quantile, (int, float)) or not 0 <= self.tail_quantile < 1:
            raise PrepackConfigError(
                f"prepack tail_quantile must be a number in [0, 1), got {self.tail_quantile!r}"
            )
        lookahead = self.lookahead
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
            raise PrepackConfigError(
                f"prepack lookahead must be an integer >= 1, got {self.lookahead!r}"
            )
        if isinstance(self.stats_log_interval_s, bool) or not isinstance(
            self.stats_log_interval_s, (int, float)
        ) or not (self.stats_log_interval_s >= 0 and math.isfinite(self.stats_log_interval_s)):
            raise PrepackConfigError(
                "prepack stats_log_interval_s must be a number of seconds >= 0, "
                f"got {self.stats_log_interval_s!r}"
            )
        if self.stats_path is not None and not isinstance(self.stats_path, str):
            raise PrepackConfigError(
                f"prepack stats_path must be a file path, got {self.stats_path!r}"
            )

    # -- conversions -------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> PrepackConfig:
        """Build from a plain dict, rejecting unknown keys by name."""
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise PrepackConfigError(
                f"unknown prepack option(s) {unknown}; accepted: {list(cls.field_names())}"
            )
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_additional_config(cls, additional_config: Mapping[str, Any] | None) -> PrepackConfig:
        """The options carried to the engine core (defaults if none were given)."""
        return cls.from_dict((additional_config or {}).get(ADDITIONAL_CONFIG_KEY) or {})

    def resolved_stats_path(self, dp_rank: int | None = None) -> str | None:
        """The JSONL path; under data parallelism each engine core writes its own file,
        ``<stem>.dp<rank><suffix>`` (``stats.jsonl`` -> ``stats.dp0.jsonl``, ...)."""
        path = self.stats_path or os.environ.get(STATS_PATH_ENV) or None
        if path is None or dp_rank is None:
            return path
        root, ext = os.path.splitext(path)
        return f"{root}.dp{dp_rank}{ext}"



def _choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise PrepackConfigError(
            f"invalid prepack {name} {value!r}; accepted: {', '.join(accepted)}"
        )


def check_cache_aware_window(window: int) -> None:
    """vLLM 0.34's ``--cache-aware-admission-window`` moves requests with a cached prefix to
    the head of vLLM's FCFS queue; the prepack scheduler replaces that queue's order with its
    own, so with ``--scheduler prepack`` only 0 (vLLM's default: off) is accepted."""
    if window:
        raise PrepackConfigError(
            f"--cache-aware-admission-window {window} reorders vLLM's FCFS queue by cached "
            "prefix, which --scheduler prepack replaces with its own order (by uncached prompt "
            "tokens, prefix-cache hits counted); accepted with --scheduler prepack: 0"
        )


SCHEDULER_QUALNAME = "vllm_prepack.adapters.scheduler.PrepackScheduler"
"""What ``--scheduler prepack`` puts in vLLM's ``scheduler_cls``."""


def is_prepack_scheduler(scheduler_cls: Any) -> bool:
    """True when an engine's ``scheduler_cls`` is ours (as a path or as the class)."""
    if isinstance(scheduler_cls, str):
        return scheduler_cls.replace(":", ".") == SCHEDULER_QUALNAME
    if scheduler_cls is None:
        return False
    return f"{scheduler_cls.__module__}.{scheduler_cls.__qualname__}" == SCHEDULER_QUALNAME
