# make demo   — quick-start run of learned budgets on the embedded MNIST sample, then evaluation
# make test   — install into .venv (created if missing) and run the test suite
# make lint   — ruff and mypy (configured in pyproject.toml)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Real MNIST for the tests that need it: ../shared/data when present (CI), else $CTXBUDGET_DATA.
DATA   ?= $(or $(wildcard ../shared/data),$(CTXBUDGET_DATA))
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint venv clean bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install_torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,export,lint]"
	touch $@

demo: venv
	rm -rf runs/demo-learned runs/demo-uniform
	$(BIN)/ctxbudget train --config quickstart --out runs/demo-learned
	$(BIN)/ctxbudget train --config quickstart-uniform --out runs/demo-uniform
	$(BIN)/ctxbudget evaluate runs/demo-learned --liu-limit 32
	$(BIN)/ctxbudget evaluate runs/demo-uniform --liu-limit 32
	$(BIN)/ctxbudget visualize runs/demo-learned
	$(BIN)/ctxbudget report runs/demo-uniform runs/demo-learned --out runs/demo-report.md
	@echo "results: runs/demo-report.md, runs/demo-*/results.json; figures: runs/demo-learned/figures/"

test: venv
	CTXBUDGET_DATA=$(DATA) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	CTXBUDGET_DATA=$(DATA) $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

bench: venv
	CTXBUDGET_DATA=$(DATA) $(BIN)/python benchmarks/bench_bounds.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info .pytest_cache
