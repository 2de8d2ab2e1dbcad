"""Cached kernels: a kernel's cache is renewed when a kernel it calls from another file changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CALLEE = "from pipeline.jit import cached_njit\n\n\n@cached_njit\ndef f():\n    return {value}\n"
CALLER = """import json
from pipeline.jit import cached_njit
from callee import f


@cached_njit{options}
def g():
    return f()


if __name__ == "__main__":
    value = g()
    print(json.dumps([value, g.stats.cache_hits.popitem()[1] if g.stats.cache_hits else 0]))
"""


def run_caller(folder: Path) -> tuple[int, int]:
    """Run the caller in a fresh process; return ``g()`` and whether it was loaded from cache."""
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}",
           "NUMBA_CACHE_DIR": str(folder / "cache")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(folder / "caller.py")], env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    value, hits = json.loads(done.stdout.splitlines()[-1])
    return value, hits


@pytest.mark.parametrize(("options", "renewed"), [('(depends_on=("callee",))', True), ("", False)])
def test_a_kernel_naming_the_module_it_calls_is_compiled_anew_when_that_module_changes(
    tmp_path: Path, options: str, renewed: bool
) -> None:
    """Without ``depends_on`` numba keeps the caller's code of the old callee (its limit)."""
    (tmp_path / "callee.py").write_text(CALLEE.format(value=1))
    (tmp_path / "caller.py").write_text(CALLER.format(options=options))
    assert run_caller(tmp_path) == (1, 0)  # compiled, then cached
    assert run_caller(tmp_path) == (1, 1)  # from the cache
    (tmp_path / "callee.py").write_text(CALLEE.format(value=2))
    assert run_caller(tmp_path) == ((2, 0) if renewed else (1, 1))
    if renewed:
        assert run_caller(tmp_path) == (2, 1)  # the renewed code is cached in turn
