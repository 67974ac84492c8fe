# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (everything).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
WHEELS  ?= $(HOME)/.cache/gpuguard/wheels
PYTEST_ARGS ?=

.PHONY: install demo serve test lint typecheck unit bench screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) WHEELS=$(WHEELS) bash scripts/install.sh
	touch $@

demo: install  ## the start-up scenario on embedded defaults, then the server with its web page
	$(VENV)/bin/gpuguard demo

serve: install
	$(VENV)/bin/gpuguard serve

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install  ## the llama-server tests use the binary install.sh built beside the wheels
	WHEELS=$(WHEELS) $(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck unit  ## installs, then ruff, mypy --strict and the whole pytest suite

bench: install
	$(PY) bench/guard_overhead.py
	$(PY) bench/indexing.py
	$(PY) bench/load.py

screenshots: install  ## the web page's main states, from the browser tests, into docs/screenshots
	GPUGUARD_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/browser -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
