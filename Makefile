# vllm-prepack: `make test` (the CI command) and `make demo`. Both create .venv when missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= .models/tiny-llama
export HF_HUB_OFFLINE ?= 1
export VLLM_HOST_IP ?= 127.0.0.1
export VLLM_LOOPBACK_IP ?= 127.0.0.1
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test test-fast demo lint soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh scripts/vllm_cpu_distinfo.py
	VENV=$(VENV) bash scripts/setup_venv.sh
	touch $@

$(MODEL)/config.json: | venv
	$(PY) -m vllm_prepack.tiny_model $(MODEL)

test: venv $(MODEL)/config.json
	$(PY) -m ruff check vllm_prepack tests benchmarks
	$(PY) -m pytest -ra -p no:cacheprovider tests

test-fast: venv
	$(PY) -m pytest -ra -m "not engine and not cli and not conformance" tests

demo: venv $(MODEL)/config.json
	$(PY) scripts/demo.py --model $(MODEL)

lint: venv
	$(PY) -m ruff check vllm_prepack tests benchmarks

clean:
	rm -rf $(VENV) .models build *.egg-info

soak: venv $(MODEL)/config.json
	PREPACK_SOAK_STEPS=10000 $(PY) -m pytest -q -s tests/test_soak.py
