"""The plugin's logger: a child of vLLM's ``vllm`` logger (``vllm.prepack.*``), built with
vLLM's ``init_logger`` so its lines carry vLLM's format, process prefix and
``VLLM_LOGGING_LEVEL`` and it has vLLM's ``info_once``/``warning_once``."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    short = name.removeprefix("vllm_prepack.") if name != "vllm_prepack" else "plugin"
    full = f"vllm.prepack.{short}"
    try:
        from vllm.logger import init_logger
    except ImportError:  # the pure modules work without vLLM
        return logging.getLogger(full)
    return init_logger(full)
