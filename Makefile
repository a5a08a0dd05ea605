# The README's commands. `make demo` and `make test` set everything up on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test quick bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	@touch $@

# The peer frameworks the benchmarks compare with (Lightning, Keras, skorch: ~1.5 GB); only
# `make bench` needs them, so the default setup leaves them out.
$(VENV)/.bench-installed: $(VENV)/.installed
	VENV=$(VENV) EXTRAS=dev,bench bash scripts/setup.sh
	@touch $@

# TensorBoard and MLflow (the `all` extra): the logger tests read their output back with them;
# Chromium (BROWSER=1): the report's browser test renders in it. `make demo` needs none of them.
$(VENV)/.test-installed: $(VENV)/.installed
	VENV=$(VENV) EXTRAS=dev,all BROWSER=1 bash scripts/setup.sh
	@touch $@

demo: setup
	$(VENV)/bin/nnfit train --dataset breast_cancer

test: $(VENV)/.test-installed
	$(PY) -m pytest -q

# For iteration: everything but the slow end-to-end runs (what CI runs is `make test`).
quick: $(VENV)/.test-installed
	$(PY) -m pytest -q -x -m "not slow"

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/bench.py

lint: setup
	$(VENV)/bin/ruff check src tests examples

clean:
	rm -rf $(VENV) runs .pytest_cache
