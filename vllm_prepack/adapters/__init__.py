"""The vLLM glue: one module per vLLM surface. Only this package imports vLLM.

Each runtime hook that vLLM 0.32 lacks is listed in :data:`HOOKS`; ``patches/<name>.patch``
is the same hook written as a change to vLLM itself (a test keeps the two sets equal).
"""

from __future__ import annotations

from collections.abc import Callable

from vllm_prepack.log import get_logger

logger = get_logger(__name__)


def _install_engine_args_scheduler() -> None:
    from vllm_prepack.adapters import cli

    cli.install()


def _install_engine_core_scheduler_log() -> None:
    from vllm_prepack.adapters import engine_core

    engine_core.install()


def _install_attention_backend_selection() -> None:
    from vllm_prepack.adapters import attention

    attention.install()


HOOKS: dict[str, Callable[[], None]] = {
    "attention-backend-selection": _install_attention_backend_selection,
    "engine-args-scheduler": _install_engine_args_scheduler,
    "engine-core-scheduler-log": _install_engine_core_scheduler_log,
}
"""Hook name -> installer. Each installer is idempotent."""

_installed: set[str] = set()


def install_all() -> list[str]:
    """Install every hook once per process; returns the names installed by this call."""
    new = []
    for name, install in HOOKS.items():
        if name in _installed:
            continue
        install()
        _installed.add(name)
        new.append(name)
    return new


def installed_hooks() -> frozenset[str]:
    return frozenset(_installed)
