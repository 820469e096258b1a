# The two commands a user needs: `make demo` and `make test`. Everything installs itself.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Tests may not leave a process-wide hypothesis database in the clone.
export HYPOTHESIS_STORAGE_DIRECTORY := $(abspath $(VENV))/hypothesis

.PHONY: all demo test test-rust test-python loom bench stress lint fmt wheel develop clean services

all: test

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

$(VENV)/.dev-stamp: requirements/dev.txt | $(VPY)
	$(VPY) -m pip install -q -r requirements/dev.txt
	touch $@

$(VENV)/.bench-stamp: requirements/bench.txt $(VENV)/.dev-stamp
	$(VPY) -m pip install -q -r requirements/bench.txt
	touch $@

# Builds the extension (optimised: benchmarks and the demo measure it) into the venv.
develop: $(VENV)/.dev-stamp
	$(VENV)/bin/maturin develop --release --quiet

$(VENV)/.demo-stamp: requirements/demo.txt | $(VPY)
	$(VPY) -m pip install -q -r requirements/demo.txt
	touch $@

# The main demo: 2,000 LLM calls against a local provider, unbounded vs with admission.
# Options: make demo DEMO_ARGS="--calls 500 --server-rate 100" (see python -m admission demo --help).
DEMO_ARGS ?=
demo: develop $(VENV)/.demo-stamp
	$(VPY) -m admission demo $(DEMO_ARGS)

test: test-rust test-python

test-rust:
	cargo test -p admission-core --quiet
	$(MAKE) --no-print-directory loom

# Model-checks the lock-free core under every interleaving loom can find.
loom:
	RUSTFLAGS="--cfg loom" cargo test -p admission-core --release --test loom --quiet \
	  --target-dir target/loom

# Servers the integration tests start themselves (never skipped): PostgreSQL, Redis.
# Installed from the distribution's packages when missing.
services:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; fi

test-python: develop services
	$(VPY) -m pytest -q -m "not stress"

stress: develop
	$(VPY) -m pytest tests -q -m stress

bench: develop services $(VENV)/.bench-stamp
	$(VPY) -m pytest benches -q --benchmark-only --benchmark-sort=mean \
	  --benchmark-columns=min,median,mean,stddev,rounds

lint: $(VENV)/.dev-stamp
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	$(VPY) -m mypy.stubtest admission._native --allowlist .stubtest-allowlist

fmt: $(VENV)/.dev-stamp
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

# A release wheel in dist/ for this CPython (one per version: the bindings are not abi3).
wheel: $(VENV)/.dev-stamp
	rm -rf dist
	$(VENV)/bin/maturin build --release --out dist --quiet
	$(VENV)/bin/maturin sdist --out dist

clean:
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
