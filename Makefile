# ebind developer commands. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes for `make test`. The suite mostly waits on servers, workers and timers, so
# more processes than cores pay off. Each process takes whole files (a file's shared server
# stays in one process), handed out in collection order: the long integration files first,
# the quick unit files last to fill the gaps. 0 runs everything in one process (for -s or pdb).
PYTEST_WORKERS ?= 4

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# ebind was installed under the name "ebind" before it became ebind-nats
	$(BIN)/pip uninstall -q -y ebind 2>/dev/null || true
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ebind with its dev tools

fmt: $(STAMP) ## format the code
	$(BIN)/ruff format ebind tests examples bench
	$(BIN)/ruff check --fix ebind tests examples bench

lint: $(STAMP) ## ruff format check + lint
	$(BIN)/ruff format --check ebind tests examples bench
	$(BIN)/ruff check ebind tests examples bench

type: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy ebind
	$(BIN)/mypy tests/typing

test: $(STAMP) ## the whole test suite in parallel processes (what .ci/run and the README call)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: $(STAMP) ## pure unit tests only (no NATS)
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

test-examples: $(STAMP) ## run every example as a subprocess
	$(BIN)/pytest -q tests/test_examples.py $(PYTEST_ARGS)

check: lint type test ## lint + type + test

bench: $(STAMP) ## benchmarks beside the raw nats-py floor (both sync settings): tasks, workflows, faults, sync API, pools, limits, processes, memory
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/loop.py
	$(BIN)/python bench/producer_cpu.py
	$(BIN)/python bench/workflow.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/cpu_pool.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/processes.py --cluster
	$(BIN)/python bench/fsync_rows.py
	$(BIN)/python bench/memory.py

PEERS := bench/peers
PEER_VENVS := $(foreach p,celery dramatiq taskiq arq,$(PEERS)/.venvs/$(p)/.installed)
PEERS_ARGS ?=

# Each peer in its own venv, from its pinned requirements, so their dependencies never meet.
$(PEERS)/.venvs/%/.installed: $(PEERS)/requirements-%.txt
	rm -rf $(PEERS)/.venvs/$*
	$(PY) -m venv $(PEERS)/.venvs/$*
	$(PEERS)/.venvs/$*/bin/pip install -q --upgrade pip
	$(PEERS)/.venvs/$*/bin/pip install -q -r $<
	touch $@

$(VENV)/.plot: $(STAMP) $(PEERS)/requirements-plot.txt
	$(BIN)/pip install -q -r $(PEERS)/requirements-plot.txt
	touch $@

bench-peers: $(VENV)/.plot $(PEER_VENVS) ## the same workloads on Celery, Dramatiq, taskiq-nats, arq, ebind and the floor (PEERS_ARGS=--quick)
	@# Debian's redis-server for the Redis-backed peers; without it those rows say why they were skipped.
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get update -q && apt-get install -y -q redis-server; } >/dev/null; } \
		|| echo "redis-server unavailable: the Redis rows will be skipped"
	$(BIN)/python $(PEERS)/run.py $(PEERS_ARGS)

demo: $(STAMP) ## embedded NATS + worker + tasks + a DAG, printed, then shut down
	$(BIN)/python -m ebind demo

docs: $(STAMP) ## serve the documentation site with live reload (mkdocs serve)
	$(BIN)/mkdocs serve

clean: ## remove the venv and caches
	rm -rf $(VENV) $(PEERS)/.venvs .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

.PHONY: help install fmt lint type test test-unit test-examples check bench bench-peers demo docs clean
