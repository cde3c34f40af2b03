#!/usr/bin/env bash
# Create .venv34: vLLM 0.34.0 (the GPU wheel; no CPU build of 0.34 exists) with the project and
# its test tools, for the scheduler-level suite on CPU (make test-vllm034). vLLM 0.34.0 pins
# flashinfer-python==0.7.3, which PyPI does not have, so `pip install vllm==0.34.0` cannot
# resolve: the wheel goes in without dependencies, then every requirement it declares except the
# GPU kernels and media packages, with torch 2.13.0's CPU build in place of its CUDA torch 2.14.0
# (the suite runs no model). The tests select vLLM's CPU platform with VLLM_TARGET_DEVICE=cpu.
set -euo pipefail
VENV=${VENV:-.venv34}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" >&2)
}
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q --no-deps "vllm==0.34.0"
# vLLM's declared requirements (markers kept for pip to evaluate), less the GPU-only ones.
"$VENV/bin/python" - > "$VENV/vllm-cpu-requirements.txt" <<'PYEOF'
import re
from importlib.metadata import requires

GPU_ONLY = re.compile(r"^(torch|torchaudio|torchvision|torchcodec|pynvvideocodec|flashinfer|"
                      r"apache-tvm-ffi|tilelang|nvidia-|nvtx|fastsafetensors|instanttensor|"
                      r"quack-kernels|tokenspeed-mla|humming-kernels)\b", re.I)
for req in requires("vllm") or []:
    if "extra ==" not in req and not GPU_ONLY.match(req):
        print(req)
PYEOF
pip install -q -r "$VENV/vllm-cpu-requirements.txt" "pytest>=8" "pytest-timeout>=2.3" \
  "hypothesis>=6.100"
pip install -q --no-deps -e .
VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c \
  "import vllm, vllm_prepack; print('vllm', vllm.__version__, 'ready in $VENV')"
