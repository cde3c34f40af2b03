"""vllm-prepack: prepacked prefill for vLLM, as a general plugin.

``register()`` is vLLM's entry point (group ``vllm.general_plugins``); vLLM calls it in the API
server, the engine core and every worker. ``engine_kwargs()`` is the Python way to select the
prepack scheduler: ``LLM(model, **vllm_prepack.engine_kwargs(policy="sjf"))``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from vllm_prepack.config import ADDITIONAL_CONFIG_KEY, PrepackConfig, PrepackConfigError
from vllm_prepack.log import get_logger

__version__ = "0.1.0"
__all__ = ["register", "engine_kwargs", "PrepackConfig", "PrepackConfigError", "__version__"]

_registered = False
_warned_version = False


def register() -> None:
    """vLLM general-plugin entry point: idempotent, cheap, no accelerator work, never raises
    on a tested vLLM (an exception here would stop every vLLM process)."""
    global _registered, _warned_version
    if _registered:
        return
    from vllm_prepack import compat

    version = compat.installed_vllm_version()
    if not compat.is_tested_version(version):
        if not _warned_version:
            _warned_version = True
            get_logger(__name__).warning(
                "%s Patching nothing.", compat.untested_message(version)
            )
        if _cli_asks_for_prepack(sys.argv):
            raise SystemExit(f"error: {compat.untested_message(version)}")
        return
    from vllm_prepack import adapters

    adapters.install_all()
    _registered = True
    announce()


_announced = False


def announce() -> None:
    """Log the registration once vLLM's logging is configured in this process (the API
    server configures it only after parsing the command line)."""
    global _announced
    if _announced or not _registered or not logging.getLogger("vllm").handlers:
        return
    _announced = True
    from vllm_prepack import adapters

    get_logger(__name__).info(
        "vllm-prepack %s registered in process %d (hooks: %s)",
        __version__, os.getpid(), ", ".join(sorted(adapters.installed_hooks())),
    )


def engine_kwargs(**options: Any) -> dict[str, Any]:
    """Engine keyword arguments selecting ``--scheduler prepack`` with ``options``
    (the ``--prepack-*`` options, with underscores). Pass ``additional_config=`` to merge
    other entries."""
    from vllm_prepack import compat
    from vllm_prepack.config import SCHEDULER_QUALNAME

    compat.require_tested_version()
    additional = dict(options.pop("additional_config", None) or {})
    PrepackConfig.from_dict(options)
    additional[ADDITIONAL_CONFIG_KEY] = dict(options)
    return {"scheduler_cls": SCHEDULER_QUALNAME, "additional_config": additional}


def _cli_asks_for_prepack(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg == "--scheduler=prepack" or (
            arg == "--scheduler" and i + 1 < len(argv) and argv[i + 1] == "prepack"
        ):
            return True
    return False
