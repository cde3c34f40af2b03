"""The vLLM glue: one module per vLLM surface. Only this package imports vLLM.

Each runtime hook that vLLM 0.32 lacks is listed in :data:`HOOKS`; ``patches/<name>.patch``
is the same hook written as a change to vLLM itself (a test keeps the two sets equal).
"""

from __future__ import annotations

import importlib

HOOKS: dict[str, str] = {
    "attention-backend-selection": "attention",
    "engine-args-scheduler": "cli",
    "engine-core-scheduler-log": "engine_core",
}
"""Hook name -> the adapter module whose idempotent ``install()`` puts it in place."""

_installed: set[str] = set()


def install_all() -> list[str]:
    """Install every hook once per process; returns the names installed by this call."""
    new = []
    for name, module in HOOKS.items():
        if name not in _installed:
            importlib.import_module(f"{__name__}.{module}").install()
            _installed.add(name)
            new.append(name)
    return new


def installed_hooks() -> frozenset[str]:
    return frozenset(_installed)
