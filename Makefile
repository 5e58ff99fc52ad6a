# Two commands on a fresh machine: `make run` (the demo) and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# The system certificate store (it holds any corporate or sandbox egress CA), not uv's own.
export UV_SYSTEM_CERTS := 1
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
RECORDS ?= 20000

.PHONY: run test lint typecheck unit faults bench bench-full deploy-check env clean

.tools/bin/uv:
	python3 -m pip install --quiet --target .tools/lib uv==$(UV_VERSION)
	mkdir -p .tools/bin && ln -sf ../lib/bin/uv .tools/bin/uv

$(VENV)/.synced: pyproject.toml uv.lock service/_scan.c | $(UV)
	$(UV) sync --frozen --all-groups
	touch $@

env: $(VENV)/.synced

run: env
	$(VENV)/bin/tideway demo --records $(RECORDS)

lint: env
	$(VENV)/bin/ruff check service tests benchmarks
	$(VENV)/bin/ruff format --check service tests benchmarks
	$(VENV)/bin/mypy service

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

faults: env
	$(PY) -m pytest -q -m faults

bench: env
	$(PY) benchmarks/run_all.py --quick

bench-full: env
	$(PY) benchmarks/run_all.py

deploy-check: env
	PATH=$(abspath $(VENV))/bin:$$PATH bash deploy/check.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
