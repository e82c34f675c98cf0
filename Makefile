# The two commands of the Quickstart: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test clean

install: $(STAMP)

# torch is installed on its own first: pip then takes the CPU build from the local wheel
# instead of resolving a multi-GB CUDA build as a dependency of ax/transformers.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/mixsweep run examples/quickstart.yaml --dir runs/quickstart-$$(date +%Y%m%d-%H%M%S)

# Chromium renders the Ray dashboard in tests/integration/test_dashboard.py (skipped, with the reason, without it).
test: install
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: tests/integration/test_dashboard.py will skip"
	$(PY) -m pytest -q --durations=30

clean:
	rm -rf $(VENV) runs .pytest_cache
