"""Engine-core surface: log the scheduler class the engine core built.

vLLM 0.32's ``EngineCore`` builds ``scheduler_config.get_scheduler_cls()(...)`` right after
loading general plugins and logs only a warning for custom classes. The wrapper makes the
built class visible in the engine-core log for every engine, stock ones included.
"""

from __future__ import annotations

import functools
from typing import Any

from vllm_prepack.log import get_logger

logger = get_logger(__name__)


def install() -> None:
    from vllm.config.scheduler import SchedulerConfig

    original = SchedulerConfig.get_scheduler_cls
    if getattr(original, "_prepack", False):
        return

    @functools.wraps(original)
    def get_scheduler_cls(self: Any) -> Any:
        cls = original(self)

        def build(*args: Any, **kwargs: Any) -> Any:
            scheduler = cls(*args, **kwargs)
            kind = type(scheduler)
            logger.info("Engine core scheduler class: %s.%s", kind.__module__, kind.__qualname__)
            return scheduler

        return build

    get_scheduler_cls._prepack = True  # type: ignore[attr-defined]
    SchedulerConfig.get_scheduler_cls = get_scheduler_cls
