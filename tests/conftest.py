"""Shared fixtures: the real data beside the checkout, and small roads folders.

Tests write only under pytest's temporary folders: hypothesis' example database, numba's
compiled-function cache and the validated configs' memos are pointed into this session's
temporary folder before any test module (and so numba) is imported, through environment
variables that the processes tests start inherit too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

TESTS_DIR = Path(__file__).parent
TEST_DATA = TESTS_DIR / "data"


@pytest.hookimpl(trylast=True)  # after pytest's own tmp_path set-up
def pytest_configure(config: pytest.Config) -> None:
    """Send hypothesis' files, numba's cache and the config memos to this session's tmp folder.

    An ``NUMBA_CACHE_DIR`` already set is kept (a persistent one saves compiling the kernels,
    about 30 s, in every session); pytest-xdist's workers inherit the controller's.
    """
    session_dir = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    os.environ.setdefault("NUMBA_CACHE_DIR", str(session_dir / "numba-cache"))
    os.environ["ROADCOVER_CONFIG_MEMO_DIR"] = str(session_dir / "config-memos")
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(session_dir / "hypothesis")
    database = DirectoryBasedExampleDatabase(session_dir / "hypothesis" / "examples")
    settings.register_profile("session-tmp", database=database)
    settings.load_profile("session-tmp")


def _shared_data_dir() -> Path:
    configured = os.environ.get("ROADCOVER_SHARED_DATA")
    return Path(configured) if configured else TESTS_DIR.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, the real data sets; skips (or fails in CI) when it is absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared data at {path} (ROADCOVER_SHARED_DATA)")
        pytest.skip(f"real data not found at {path}; set ROADCOVER_SHARED_DATA to run this test")
    return path


@pytest.fixture(scope="session")
def monaco_roads(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The roads of the Monaco 2012 extract (../shared/data), built once; read them only."""
    from pipeline.roads import build_roads

    folder = tmp_path_factory.mktemp("monaco") / "roads"
    build_roads(shared_data / "osm/monaco-2012.osm.gz", folder)
    return folder


@pytest.fixture(scope="session")
def tiny_osm() -> Path:
    """A hand-written OSM XML network (tests/data/tiny_network.osm)."""
    return TEST_DATA / "tiny_network.osm"
