# Two commands do all set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real data sit beside the repo (as in CI); an explicit MEDDX_DATA_DIR wins.
export MEDDX_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test venv clean bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/meddx demo

# The viewer's browser test drives Debian's Chromium (Playwright uses it; it downloads no browser).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if command -v apt-get >/dev/null; then apt-get install -y -q chromium || (apt-get update -q && \
		apt-get install -y -q chromium); else echo "no apt-get: install Chromium at $(CHROMIUM) for the viewer test"; fi

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q tests --durations=25

bench: $(STAMP)
	$(BIN)/python benchmarks/medmnist.py

clean:
	rm -rf $(VENV) runs .pytest_cache
