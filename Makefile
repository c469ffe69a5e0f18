# meshlens: `make demo` runs the mesh on the embedded store, `make test` runs every check.
# Every target creates .venv and installs what it needs; nothing is done by hand.
SHELL := /bin/bash
# .venv's interpreter: the distribution's python3 when it is 3.11+ with venv (Debian builds it
# with PGO and LTO, linked statically: here ~20 % faster on interpreted code than pyenv's
# default build, a shared libpython without either, and the sidecar ~10 % less CPU per request;
# python:3.11-slim, our image's base, is built with PGO and LTO too), else python3 from PATH.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-installed

.PHONY: demo up test lint typecheck unit bench clean native

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests and benchmarks drive (nginx and wrk for the proxy benchmark,
# chromium for the UI tests). Installed once per machine; skipped when already present.
$(SYSSTAMP): scripts/system-deps.sh | $(BIN)/python
	PYTHON=$(BIN)/python bash scripts/system-deps.sh
	touch $(SYSSTAMP)

# The sidecar's hot-path modules compiled with mypyc (sidecar/_native.py lists them); used only
# while their sources are unchanged, else pure Python. Outside CI it never fails: without a C
# compiler, Python headers or mypyc it prints one line and the sidecar runs as pure Python; with
# CI set (.ci/run), a build that does not compile fails, so the suite cannot pass on the fallback.
# Cheap when up to date (the script compares source hashes), so every target below runs it.
native: $(STAMP)
	$(BIN)/python scripts/build_native.py $(if $(CI),--require)

demo: $(STAMP) native
	$(BIN)/meshlens demo

up: $(STAMP) native
	$(BIN)/meshlens up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test: $(STAMP) $(SYSSTAMP) native
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc
	@# the suite above runs the compiled sidecar when `native` built it; its own tests run again
	@# as pure Python, the fallback every machine without a C compiler uses (~30 s)
	MESHLENS_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider tests/unit/sidecar tests/integration/test_sidecar_*.py

bench: $(STAMP) $(SYSSTAMP) native
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .meshlens .pytest_cache .mypy_cache .ruff_cache build/native
