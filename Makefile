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
FUZZ_SECONDS ?= 60
SEEDS ?= 20

.PHONY: run test lint typecheck unit faults faults-table fuzz sim bench bench-full bench-tools deploy-check env clean agents

.tools/bin/uv:
	python3 -m pip install --quiet --target .tools/lib uv==$(UV_VERSION)
	mkdir -p .tools/bin && ln -sf ../lib/bin/uv .tools/bin/uv

# The environment of `make run` and `make test`: runtime dependencies, the `demo` extra (moto's
# server) and the `dev` group. `bench` and `deploy` are added on top (--inexact) by the targets
# that need them; they depend on .synced because an exact re-sync of it removes them.
$(VENV)/.synced: pyproject.toml uv.lock $(wildcard service/*.c service/*.h) | $(UV)
	$(UV) sync --frozen --extra demo
	touch $@

$(VENV)/.bench: $(VENV)/.synced
	$(UV) sync --frozen --inexact --extra demo --group bench
	touch $@

$(VENV)/.deploy: $(VENV)/.synced
	$(UV) sync --frozen --inexact --extra demo --group deploy
	touch $@

env: $(VENV)/.synced

run: env
	$(VENV)/bin/tideway demo --records $(RECORDS)

lint: env
	$(VENV)/bin/ruff check service tests benchmarks
	$(VENV)/bin/ruff format --check service tests benchmarks
	$(VENV)/bin/mypy service

# Two pytest workers (pytest-xdist; each test stolen by whichever is free): most of the
# suite's wall time is subprocesses and AWS round trips, so two overlap well on 2 cores.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

# Real log agents for tests/agents/ (syslog-ng and rsyslog from Debian's packages, unpacked
# into .tools/agents as the two conflict; the OpenTelemetry JS SDK into .tools/node). Needs
# root for apt-get; quick and idempotent once installed. CI runs it before `make test`. Also
# headless Chromium and its driver (Debian packages) for the console's browser test.
agents:
	bash tests/agents/install.sh
	bash tests/console/install_browser.sh

faults: env
	$(PY) -m pytest -q -m faults

# The fault suite's table (serve and consume as processes): benchmarks/results/faults.json and
# the table in docs/operations.md. Slow (about 15 minutes); run by hand, output committed.
faults-table: env
	$(PY) -m tests.faults.table

# The C scanner under AddressSanitizer, fed mutated log lines for FUZZ_SECONDS.
fuzz: env
	$(PY) tests/fuzz/fuzz_scan_asan.py --seconds $(FUZZ_SECONDS)

# Deterministic simulation of the consumer: SEEDS seeded runs.
sim: env
	$(PY) -m pytest -q -p no:cacheprovider tests/sim --sim-seeds=$(SEEDS)

# wrk, the ingest benchmark's load generator (Debian's, unpacked into .tools/wrk); without
# it benchmarks/ingest.py falls back to its Python client.
bench-tools:
	bash benchmarks/install_wrk.sh || echo "bench-tools: no wrk; the ingest benchmark uses its Python client"

bench: $(VENV)/.bench bench-tools
	$(PY) benchmarks/run_all.py --quick

bench-full: $(VENV)/.bench bench-tools
	$(PY) benchmarks/run_all.py

deploy-check: $(VENV)/.deploy
	PATH=$(abspath $(VENV))/bin:$$PATH bash deploy/check.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
