"""The snap stage's kernels compiled ahead of time: found by their key, used only for their types.

The module's build and the snap command that loads it are tested in tests/test_warmup.py, on the
warm-up's own sample (after ``roadcover warmup`` into a fresh NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline import aot
from pipeline.jit import cached_njit, dispatcher_of

REPO = Path(pipeline.__file__).resolve().parent.parent
F8_C = ["array", "<f8", 1, "C", True]  # float64, one dimension, C-contiguous, writable
I8_C = ["array", "<i8", 1, "C", True]


def test_the_module_key_changes_when_a_kernel_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module built before a kernel's source changed is stale: another key names it."""
    (tmp_path / "probe_kernels.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(aot, "SOURCE_MODULES", ("probe_kernels",))
    before = aot.module_key()
    assert aot.module_key() == before  # the same sources, versions and CPU: the same module
    (tmp_path / "probe_kernels.py").write_text("def f(x):\n    return x + 1\n")
    assert aot.module_key() != before


def test_a_missing_or_stale_module_is_not_loaded_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the module of this key is loaded; without it the kernels go through numba."""
    folder = tmp_path / aot.FOLDER
    folder.mkdir()
    stale = aot.module_file(folder, "0" * 20)  # built for other sources
    stale.write_bytes(b"not loaded")
    monkeypatch.setattr(aot, "module_dirs", lambda: [folder])
    monkeypatch.delenv(aot.AOT_ENV, raising=False)
    aot.loaded_module.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=aot.__name__):
            assert aot.loaded_module() is None
            assert aot.aot_kernel("_kahan_sums", (np.zeros(2), np.array([0, 2]))) is None
    finally:
        aot.loaded_module.cache_clear()
    assert caplog.text.count("no ahead-of-time module") == 1


@pytest.mark.parametrize(
    ("arg", "kind", "expected"),
    [
        (np.zeros(3), F8_C, True),
        (np.zeros(3, dtype=np.float32), F8_C, False),  # another dtype
        (np.zeros(3, dtype=np.int32), I8_C, False),  # a narrower integer
        (np.zeros((3, 2)), F8_C, False),  # two dimensions, not one
        (np.zeros(6)[::2], F8_C, False),  # strided: not C-contiguous
        (np.zeros(6)[::2], ["array", "<f8", 1, "A", True], True),  # any layout
        (np.zeros(3).view(">f8"), F8_C, False),  # big-endian
        (np.frombuffer(bytes(24)), F8_C, False),  # read-only
        ([0.0, 1.0, 2.0], F8_C, False),  # a list
        (2.5, ["float"], True),
        (np.float64(2.5), ["float"], True),
        (2, ["float"], False),  # an integer where numba compiled a float
        (3, ["int"], True),
        (np.int64(3), ["int"], True),
        (True, ["int"], False),  # a bool is not an integer to numba
        (True, ["bool"], True),
        (1, ["bool"], False),
        ((1.0, np.zeros(2)), ["tuple", [["float"], F8_C]], True),
        ((1.0, np.zeros(2, dtype=np.float32)), ["tuple", [["float"], F8_C]], False),
        ((1.0,), ["tuple", [["float"], F8_C]], False),  # a tuple one short
    ],
)
def test_an_argument_matches_only_the_type_it_was_compiled_for(
    arg: object, kind: list[object], expected: bool
) -> None:
    """The compiled module reads any argument as its compiled type: others must not reach it."""
    assert aot.matches((arg,), [kind]) is expected


def test_the_kinds_of_numba_types_are_what_matches_checks() -> None:
    from numba.core import types

    f8 = types.Array(types.float64, 1, "C")
    read_only = types.Array(types.int8, 1, "C", readonly=True)
    pair = types.Tuple((types.int64, types.Array(types.int32, 2, "A")))
    signature = (f8, pair, types.boolean, types.UniTuple(read_only, 2), types.float64)
    assert aot.argument_kinds(signature) == [
        F8_C,
        ["tuple", [["int"], ["array", "<i4", 2, "A", True]]],
        ["bool"],
        ["tuple", [["array", "|i1", 1, "C", False]] * 2],
        ["float"],
    ]


def test_a_kernel_of_more_than_one_signature_is_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The build fails whole, with a warning: the kernels stay with numba."""

    @cached_njit
    def twice(x):  # type: ignore[no-untyped-def]
        return x * 2

    assert twice(2) == 4 and twice(2.5) == 5.0  # two signatures
    monkeypatch.setattr(aot, "module_dirs", lambda: [tmp_path / aot.FOLDER])
    with caplog.at_level(logging.WARNING, logger=aot.__name__):
        assert aot.build({"twice": dispatcher_of(twice)}) is None
    assert "not compiled ahead of time" in caplog.text
    assert not list((tmp_path / aot.FOLDER).glob(f"{aot.MODULE_PREFIX}*"))


def test_importing_the_snap_stage_imports_no_numba() -> None:
    """The kernels are declared without numba: it is imported at the first kernel call."""
    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "import pipeline.snap.stage\n"
        "from pipeline.snap.group_stats import group_sums\n"
        "before = 'numba' in sys.modules\n"
        "sums, counts = group_sums(np.array([1.0, np.nan, 2.0]), np.array([0, 2, 3]))\n"
        "print(json.dumps([before, 'numba' in sys.modules, sums.tolist(), counts.tolist()]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), aot.AOT_ENV: "0"}  # through numba
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    before, after, sums, counts = json.loads(done.stdout.splitlines()[-1])
    assert (before, after) == (False, True)
    assert (sums, counts) == ([1.0, 2.0], [1, 1])  # by hand: NaN skipped, one value each
