# The two commands of the README:
#   make demo   set up .venv (first time) and run the main job on the embedded Helsinki demo
#   make test   set up .venv (first time) and run lint, type checks and the test suite
# The install compiles the numba kernels into their cache (`roadcover warmup`; NUMBA_CACHE_DIR
# chooses the folder), so the first stage does not.
# ROADCOVER_SHARED_DATA points the real-data tests at ../shared/data (skipped when absent).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= pipeline/configs/demo.yaml
export ROADCOVER_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test lint pytest bench mutation clean

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
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

test: lint pytest

# The wheel in dist/, built offline (this env's setuptools, no build isolation). build/ is removed
# first: setuptools would put the files left there by an earlier build in the wheel.
.PHONY: wheel
wheel: install
	rm -rf build dist
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation --no-index --quiet --wheel-dir dist .

bench: install
	$(BIN)/python benchmarks/bench_roads.py

# Mutation testing (docs/testing.md): mutmut mutates MUTATE and runs MUTATION_TESTS against each
# mutant, in a copy of the tree under /tmp (mutmut writes its mutants/ beside the code), on
# one core at the lowest priority; it prints the mutants that survived. mutmut runs, for a
# mutant, the tests that reached its function, and counts a module-scoped fixture's calls for
# the first test using it only: the copy's MUTATION_TESTS get function-scoped fixtures (and
# hypothesis, in the copy's conftest, is told that its tests may use them). mutmut skips
# decorated functions: the copy's MUTATE files lose their `@cached_njit` lines, so that their
# numba kernels are mutated and run as Python. MUTANTS (optional) restricts the run to the
# mutants whose names match its patterns, e.g. 'pipeline.export.feeds.stage.x_verify_release*'.
MUTATE ?= pipeline/coverage/intervals.py
MUTATION_TESTS ?= tests/coverage/test_intervals.py tests/coverage/test_overlap_with_runs.py \
	tests/coverage/test_coverage_tables.py
MUTANTS ?=
MUTMUT := $(abspath $(BIN))/mutmut

mutation: install
	@work=$$(mktemp -d) && cp -r pipeline tests docs pyproject.toml "$$work"/ && cd "$$work" && \
	sed -i 's/@pytest.fixture(scope="module")/@pytest.fixture/' $(MUTATION_TESTS) && \
	sed -i '/^@cached_njit$$/d' $(MUTATE) && \
	sed -i -e 's/^from hypothesis import settings$$/from hypothesis import HealthCheck, settings/' \
	  -e 's/database=database)/database=database, suppress_health_check=[HealthCheck.function_scoped_fixture])/' \
	  tests/conftest.py && grep -q function_scoped_fixture tests/conftest.py && \
	{ echo "[mutmut]"; echo "source_paths = pipeline"; echo "only_mutate ="; for m in $(MUTATE); do echo "    $$m"; done; \
	  echo "also_copy ="; echo "    docs"; \
	  echo "pytest_add_cli_args = -p no:cacheprovider -q"; \
	  echo "pytest_add_cli_args_test_selection ="; for t in $(MUTATION_TESTS); do echo "    $$t"; done; \
	} > setup.cfg && \
	env -u PYTHONPATH nice -n 19 $(MUTMUT) run --max-children 1 $(MUTANTS) >mutmut.log 2>&1; \
	tail -c 200 mutmut.log | tr '\r' '\n' | tail -2; \
	env -u PYTHONPATH $(MUTMUT) results; echo "mutants and log in $$work"

clean:
	rm -rf $(VENV) results build dist .pytest_cache .mypy_cache .ruff_cache
