#!/usr/bin/env bash
# Create a venv with a vLLM GPU wheel (vLLM publishes no CPU build of 0.33 or 0.34) and the
# project with its test tools, for the scheduler-level suite on CPU (make test-vllm033,
# test-vllm034). The wheel goes in without dependencies, then every requirement it declares
# except the GPU kernels and media packages, with torch's CPU build (TORCH_VERSION) in place of
# the CUDA torch it pins: the suite runs no model. (`pip install vllm==0.34.0` cannot resolve
# anyway: it pins flashinfer-python==0.7.3, which PyPI does not have.) The tests select vLLM's
# CPU platform with VLLM_TARGET_DEVICE=cpu, since a GPU wheel finds no accelerator to detect.
#
#   VLLM_VERSION=0.33.0 VENV=.venv33 bash scripts/setup_venv_wheel.sh
set -euo pipefail
VLLM_VERSION=${VLLM_VERSION:?set VLLM_VERSION, e.g. 0.33.0}
VENV=${VENV:?set VENV, e.g. .venv33}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" >&2)
}
pip install -q --upgrade pip
pip install -q "torch==$TORCH_VERSION"
pip install -q --no-deps "vllm==$VLLM_VERSION"
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
