# effzero: `make train` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; for a GPU build: make install TORCH="torch --index-url <your CUDA index>"
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

.PHONY: help install train test test-slow test-all lint format bench device-wheels compare clean-logs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install effzero with its dev tools

train: $(STAMP) ## train EZ-V2 on CartPole on the CPU, logged to MLflow (logs/mlflow.db)
	$(BIN)/python src/train.py experiment=cartpole

test: $(STAMP) ## the test suite CI runs (everything but tests marked slow)
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP) ## only the tests marked slow (the 20-minute soak); CI runs them after `make test`
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP) ## every test, the slow ones included
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP) ## format and fix with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP) ## search speed against the peers (see bench/README.md)
	$(BIN)/python bench/search.py

device-wheels: $(STAMP) ## the wheels a lent GPU machine lacks, in .whl/ (bench/README.md: "For the GPU session")
	bash bench/device_wheels.sh

compare: $(STAMP) ## compare runs in MLflow: make compare ARGS="experiments=cartpole" (see README)
	$(BIN)/python src/compare.py $(ARGS)

clean-logs: ## delete runs, checkpoints and the MLflow database under logs/
	rm -rf logs/* && touch logs/.gitkeep
