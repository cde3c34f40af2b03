"""The plugin's logger: a child of vLLM's ``vllm`` logger, so its lines carry vLLM's format,
handlers and ``VLLM_LOGGING_LEVEL`` (no vLLM import needed)."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    short = name.split(".", 1)[1] if name.startswith("vllm_prepack.") else name
    return logging.getLogger(f"vllm.prepack.{short}")
