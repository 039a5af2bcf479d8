# worldboot: the two commands a newcomer needs are `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build that lies on disk here; GPU users: `make setup TORCH_SPEC="torch>=2.4"` inside their CUDA env.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Test processes: the suite is mostly single-threaded (tiny models on one torch thread), so two
# workers use both cores of a laptop; each file stays on one worker (its module fixtures run once),
# in collection order, which puts the end-to-end demo first (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: setup test lint demo clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[dev]"  # DeepSpeed without compiled CUDA ops
	@bash scripts/install-browser.sh || echo "no Chromium: the browser tests will be skipped"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) $(PYTEST_ARGS)

demo: setup
	$(BIN)/worldboot demo --out runs/demo

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache runs
