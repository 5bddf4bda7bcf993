# HFT Data Engine — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	@touch $(STAMP)

.PHONY: setup
setup: $(STAMP) ## Create .venv and install the engine with test and dev tools

.PHONY: demo
demo: $(STAMP) ## Run the whole engine on this machine (Ctrl-C stops everything)
	$(BIN)/hftengine demo

.PHONY: test
test: $(STAMP) ## Run the whole test suite (starts its own broker, PostgreSQL and registry)
	$(BIN)/python -m pytest

.PHONY: test-unit
test-unit: $(STAMP) ## Unit tests only (no services)
	$(BIN)/python -m pytest tests/unit

.PHONY: lint
lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

.PHONY: bench
bench: bench-kernels bench-pipeline ## All benchmarks (print figures)

.PHONY: bench-kernels
bench-kernels: $(STAMP) ## IV/Greeks and chain analytics throughput vs vollib and QuantLib
	$(BIN)/python bench/kernels.py

.PHONY: bench-pipeline
bench-pipeline: $(STAMP) ## Simulator → broker → workers → database throughput and freshness (chain pipeline, then with stateful analytics)
	$(BIN)/python bench/pipeline.py --no-stateful
	$(BIN)/python bench/pipeline.py

.PHONY: bench-replay
bench-replay: $(STAMP) ## Replay parsing/encoding throughput
	$(BIN)/python bench/replay.py

.PHONY: clean
clean: ## Remove local state (.data) and caches
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
