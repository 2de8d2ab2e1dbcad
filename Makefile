# The two commands of the README:
#   make demo   set up .venv (first time) and run the main job on the embedded Helsinki demo
#   make test   set up .venv (first time) and run lint, type checks and the test suite
# The install compiles the numba kernels into their cache (`roadcover warmup`; NUMBA_CACHE_DIR
# chooses the folder), so the first stage does not.
# ROADCOVER_SHARED_DATA points the real-data tests at ../shared/data (skipped when absent).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
export ROADCOVER_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test lint pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	$(BIN)/roadcover warmup
	touch $@

# The demo's pseudonym key is not a secret; set ROADCOVER_PSEUDONYM_KEY to your own for real data.
demo: install
	ROADCOVER_PSEUDONYM_KEY=$${ROADCOVER_PSEUDONYM_KEY:-demo-key-not-a-secret-0123456789} \
	  $(BIN)/roadcover run --config $(CONFIG) --cores 2

lint: install
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks
	$(BIN)/mypy

# pytest exits 5 when it collects no test: say so and fail loudly rather than pass silently.
pytest: install
	$(BIN)/python -m pytest -n 2 --dist loadfile; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

test: lint pytest

bench: install
	$(BIN)/python benchmarks/bench_roads.py

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
