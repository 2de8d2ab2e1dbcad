"""Cached kernels: renewed when a kernel they call from another file changes; loaded cheaply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


ALLOCATING = """import json, sys
import numpy as np
from pipeline.jit import cached_njit


@cached_njit
def total(n):
    return np.arange(n).sum()


if __name__ == "__main__":
    value = int(total(10))
    hits = total.stats.cache_hits.popitem()[1] if total.stats.cache_hits else 0
    print(json.dumps([value, hits, sorted(sys.modules)]))
"""
# a numba extension, installed as a distribution of the folder (its entry point is what numba
# loads before compiling): imported when numba loads it
EXTENSION = "def init():\n    pass\n"
EXTENSION_ENTRY_POINTS = "[numba_extensions]\ninit = probe_extension:init\n"
# modules numba imports only to load its compiler's registries (target_context.refresh())
REGISTRY_MODULES = ("numba.np.npyimpl", "numba.cpython.printimpl", "numba.typed.typedlist")


def run_script(folder: Path, script: str) -> list[Any]:
    """Run a script of ``folder`` in a fresh process; return its last line of JSON."""
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}",
           "NUMBA_CACHE_DIR": str(folder / "cache")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(folder / script)], env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    result: list[Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run_caller(folder: Path) -> tuple[int, int]:
    """Run the caller in a fresh process; return ``g()`` and whether it was loaded from cache."""
    value, hits = run_script(folder, "caller.py")
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


def test_a_kernel_loaded_from_the_cache_runs_without_the_compilers_registries_or_extensions(
    tmp_path: Path,
) -> None:
    """Numba's runtime is started (the kernel allocates an array); its registries are not loaded,
    nor are numba's extensions (a distribution's ``numba_extensions`` entry point).

    The registries (of every type and function numba can compile) are what numba's own cache
    loads first; numba reads every installed package's entry points for its extensions before
    a call with new argument types (pipeline.jit does without); compiling loads both.
    """
    (tmp_path / "allocating.py").write_text(ALLOCATING)
    (tmp_path / "probe_extension.py").write_text(EXTENSION)
    dist_info = tmp_path / "probe_extension-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-extension\n"
                                        "Version: 1.0\n")  # fmt: skip
    (dist_info / "entry_points.txt").write_text(EXTENSION_ENTRY_POINTS)
    value, hits, modules = run_script(tmp_path, "allocating.py")
    assert (value, hits) == (45, 0) and set(REGISTRY_MODULES) <= set(modules)  # compiled
    assert "probe_extension" in modules  # loaded before compiling
    value, hits, modules = run_script(tmp_path, "allocating.py")
    assert (value, hits) == (45, 1)  # 0 + 1 + ... + 9, from the cache
    assert sorted(set(REGISTRY_MODULES) & set(modules)) == []
    assert "probe_extension" not in modules
