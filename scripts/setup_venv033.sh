#!/usr/bin/env bash
# Create .venv33: vLLM 0.33.0 (the GPU wheel; no CPU build of 0.33 exists) with the project and
# its test tools, for the scheduler-level suite on CPU (make test-vllm033). vLLM 0.33.0 pins
# torch 2.14; the tests select vLLM's CPU platform with VLLM_TARGET_DEVICE=cpu, since the GPU
# wheel finds no accelerator to detect.
set -euo pipefail
VENV=${VENV:-.venv33}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" >&2)
}
pip install -q --upgrade pip
pip install -q "vllm==0.33.0" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
pip install -q --no-deps -e .
VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c \
  "import vllm, vllm_prepack; print('vllm', vllm.__version__, 'ready in $VENV')"
