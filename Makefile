# worldboot: the two commands a newcomer needs are `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build that lies on disk here; GPU users: `make setup TORCH_SPEC="torch>=2.4"` inside their CUDA env.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# The suite's tests run one torch thread each, so two processes use both cores of a 2-core
# machine: 575 s instead of 893 s for the whole suite here (--durations, docs/log.md). Whole
# files go to one process (--dist loadfile), so that a module's fixtures are built once, in
# the order tests/conftest.py gives them (the longest first; --no-loadscope-reorder).
PYTEST_WORKERS ?= 2

.PHONY: setup test test-slow lint demo clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch comes through pip, which reads the machine's pip configuration (here: the CPU wheel on
# disk). The rest comes through uv, from PyPI, with its bytecode compiled as pip would: the
# whole setup 42 s cold instead of 92 s with pip alone (docs/log.md); pip does it where uv
# cannot be had or fails.
# DS_BUILD_OPS=0: DeepSpeed without compiled CUDA ops.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	if $(BIN)/pip install -q "uv>=0.5"; then \
	    DS_BUILD_OPS=0 $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e ".[dev]" \
	    || DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[dev]"; \
	else DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[dev]"; fi
	@bash scripts/install-browser.sh || echo "no Chromium: the browser tests will be skipped"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The opt-in slow tests (the world models' learning checks; minutes each on 2 cores).
test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

demo: setup
	$(BIN)/worldboot demo --preset default --out runs/demo

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache runs
