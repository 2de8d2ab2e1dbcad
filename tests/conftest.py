"""Shared fixtures: the real data beside the checkout, and small roads folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
TEST_DATA = TESTS_DIR / "data"


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
def tiny_osm() -> Path:
    """A hand-written OSM XML network (tests/data/tiny_network.osm)."""
    return TEST_DATA / "tiny_network.osm"
