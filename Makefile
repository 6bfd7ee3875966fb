# Every target sets up .venv itself: on a fresh machine with only python3, `make demo` and
# `make test` are the whole set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help demo test lint typecheck lab runbook bench clean browser-deps

help:
	@echo "make demo     export a demo image through the local emulator, poll, verify"
	@echo "make test     the whole test suite (installs what it needs)"
	@echo "make lab      start the emulator and JupyterLab on notebooks/ (imgtools lab .)"
	@echo "make runbook IMAGES=... CONTAINER=...   run notebooks/02_export_runbook.ipynb with papermill"
	@echo "make lint     ruff + mypy + lint-imports (the layers)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changed.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m imgtools.demo

test: $(STAMP) browser-deps
	$(PY) -m ruff check imgtools tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# lint-imports: the layers written down in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(PY) -m ruff check imgtools tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Debian's Chromium for the browser test; installed when missing and we may (root + apt).
browser-deps:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# The checkout is the lab's working folder: notebooks/ as they are, outputs in runs/.
lab: $(STAMP)
	$(PY) -m imgtools.lab .

runbook: $(STAMP)
	$(PY) -m imgtools.runbook --images "$(IMAGES)" --container "$(CONTAINER)" $(RUNBOOK_ARGS)

bench: $(STAMP)
	@echo "benchmarks run by hand: $(PY) benchmarks/<name>.py"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache runs tests/artifacts
