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

.PHONY: all demo test test-rust test-python test-versions loom bench stress lint fmt wheel develop clean services audit-eval check-free-threaded

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

# The main demo: 2,000 LLM calls against a local provider, unbounded vs with admission.
# Options: make demo DEMO_ARGS="--calls 500 --server-rate 100" (see python -m admission demo --help).
# Its dependencies are the `demo` extra of pyproject.toml, installed by the same build.
DEMO_ARGS ?=
demo: $(VENV)/.dev-stamp
	$(VENV)/bin/maturin develop --release --quiet --extras demo
	$(VPY) -m admission demo $(DEMO_ARGS)

test: test-rust test-python

test-rust:
	cargo test -p admission-core --quiet
	$(MAKE) --no-print-directory loom

# Model-checks the lock-free core under every interleaving loom can find.
loom:
	RUSTFLAGS="--cfg loom" cargo test -p admission-core --release --test loom --quiet \
	  --target-dir target/loom

# Servers the integration tests start themselves (never skipped): PostgreSQL, Redis, PgBouncer.
# Installed from the distribution's packages when missing.
services:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; fi
	@if ! command -v pgbouncer >/dev/null 2>&1 && ! test -x /usr/sbin/pgbouncer; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer; fi

test-python: develop services
	$(VPY) -m pytest -q -m "not stress"

# The unit suite against a wheel built for each of these other CPythons (names on PATH or paths,
# e.g. PYTHONS="$(pyenv root)/versions/3.1*/bin/python3.1?" from a shell), each in
# a fresh venv (opt-in: `make test` covers the venv's own CPython). Missing ones are skipped.
# (pyproject's --ignore-glob for conftest.py is relative to where pytest runs: given again.)
PYTHONS ?= python3.10 python3.12 python3.13 python3.14
# The test tools: the same list cibuildwheel installs to test each wheel.
TEST_REQUIRES = $(VPY) -c 'import tomllib; \
  print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["cibuildwheel"]["test-requires"]))'

test-versions: $(VENV)/.dev-stamp
	@set -e; for py in $(PYTHONS); do \
	  if ! $$py -c "" 2>/dev/null; then echo "== $$py: not found, skipped"; continue; fi; \
	  echo "== $$py"; \
	  ( tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; set -e; \
	    $(VENV)/bin/maturin build --release -i $$py --out $$tmp/dist --quiet; \
	    $$py -m venv $$tmp/venv; \
	    $(TEST_REQUIRES) > $$tmp/test-requires.txt; \
	    $$tmp/venv/bin/python -m pip install -q $$tmp/dist/*.whl -r $$tmp/test-requires.txt; \
	    cd $$tmp && venv/bin/python -m pytest $(CURDIR)/tests/unit -q -p no:cacheprovider \
	      --rootdir=$(CURDIR) -c $(CURDIR)/pyproject.toml \
	      --ignore-glob='$(CURDIR)/**/conftest.py' ); \
	done

stress: develop
	$(VPY) -m pytest tests -q -m stress

# The per-call report of every group, and the chart; pytest-benchmark's own tables (per round,
# not per call) go to .bench/pytest.txt. A full run also rewrites the chart and the generated
# block of RESULTS.md (commit them together); BENCH=TEXT runs the groups whose name or file
# name contains TEXT, and leaves both alone (its chart: .bench/chart.png).
BENCH ?=
bench: develop services $(VENV)/.bench-stamp
	@mkdir -p .bench
	@echo "benchmarks running (a few minutes); raw pytest-benchmark output: .bench/pytest.txt"
	@$(VPY) -m pytest benches -q --benchmark-only --benchmark-json=.bench/latest.json \
	  $(if $(BENCH),--bench-group='$(BENCH)') > .bench/pytest.txt 2>&1 \
	  || { tail -n 40 .bench/pytest.txt; exit 1; }
	@tail -n 1 .bench/pytest.txt
	@$(VPY) benches/report.py .bench/latest.json \
	  $(if $(BENCH),--chart .bench/chart.png,--chart benches/chart.png --results benches/RESULTS.md)

$(VENV)/.audit-eval-stamp: requirements/audit-eval.txt $(VENV)/.dev-stamp
	$(VPY) -m pip install -q -r requirements/audit-eval.txt
	touch $@

# The audit's precision on real code (opt-in, needs the package index): pinned sdists from
# benches/audit_eval/corpus.txt (labels.csv) and holdout.txt ... holdout30.txt
# (holdout_labels.csv ... holdout30_labels.csv), beside ruff (its findings labelled in
# *_ruff_labels.csv) and flake8-async; writes each corpus's tables into benches/RESULTS.md.
# AUDIT_EVAL_CORPUS selects (seen, holdout, holdout2 ... holdout30; by default the first
# thirty, each read for fixes once its unseen run was written, over which the comparison
# with ruff is made; each held-out corpus's unseen run stays in its own block, NAME-unseen,
# written with --corpus NAME --block NAME-unseen), AUDIT_EVAL_ARGS adds options (--no-flake8:
# flake8-async takes about an hour per corpus). A new held-out corpus stays out of the
# default until its false positives are read for fixes (holdout30, pinned, is out, sealed
# for the next rules' unseen run).
AUDIT_EVAL_CORPUS ?= seen holdout holdout2 holdout3 holdout4 holdout5 holdout6 holdout7 holdout8 \
	holdout9 holdout10 holdout11 holdout12 holdout13 holdout14 holdout15 holdout16 holdout17 \
	holdout18 holdout19 holdout20 holdout21 holdout22 holdout23 holdout24 holdout25 holdout26 \
	holdout27 holdout28 holdout29
AUDIT_EVAL_ARGS ?=
audit-eval: develop $(VENV)/.audit-eval-stamp
	$(VPY) benches/audit_eval/run.py --corpus $(AUDIT_EVAL_CORPUS) --write-results $(AUDIT_EVAL_ARGS)

# The stub test imports the extension: built first (a fresh clone's CI runs lint before test).
lint: develop
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VPY) rust/module_cycles.py rust/core/src rust/py/src
	$(MAKE) --no-print-directory check-free-threaded
	$(VENV)/bin/ruff check python tests benches rust
	$(VENV)/bin/ruff format --check python tests benches rust
	$(VENV)/bin/mypy
	$(VPY) -m mypy.stubtest admission._native --allowlist .stubtest-allowlist

# The bindings build for a free-threaded CPython 3.14 too (clippy, warnings as errors). No such
# interpreter is needed: PyO3 reads the build's configuration from a file.
FT_CONFIG := target/free-threaded/pyo3-config.txt
check-free-threaded:
	@mkdir -p $(dir $(FT_CONFIG))
	@printf '%s\n' implementation=CPython version=3.14 shared=true abi3=false \
	  build_flags=Py_GIL_DISABLED suppress_build_script_link_lines=true pointer_width=64 \
	  > $(FT_CONFIG)
	PYO3_CONFIG_FILE=$(abspath $(FT_CONFIG)) cargo clippy -p admission-py --quiet \
	  --target-dir target/free-threaded -- -D warnings

fmt: $(VENV)/.dev-stamp
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches rust
	$(VENV)/bin/ruff check --fix python tests benches rust

# A release wheel in dist/ for this CPython (one per version: the bindings are not abi3).
wheel: $(VENV)/.dev-stamp
	rm -rf dist
	$(VENV)/bin/maturin build --release --out dist --quiet
	$(VENV)/bin/maturin sdist --out dist

clean:
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
