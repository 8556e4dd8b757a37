# Two entry points a new user needs (see README): `make demo` and `make test`.
# Both create .venv and install with constraints.txt (torch pinned to the CPU wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint typecheck browser clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

# torchattacks is a test oracle only: --no-deps keeps torchvision (and its torch build) out.
$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps torchattacks==3.5.1
	touch $@ $(VENV)/.installed-runtime

# The HTML report test renders the page in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: $(VENV)/.installed-runtime
	$(BIN)/tailwise analyze

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: $(VENV)/.installed-dev browser lint typecheck
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/fit_vs_powerlaw.py
	$(BIN)/python benchmarks/analyze_vs_weightwatcher.py
	$(BIN)/python benchmarks/streaming_memory.py
	$(BIN)/python benchmarks/prune_speedup.py
	$(BIN)/python benchmarks/prune_large.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
