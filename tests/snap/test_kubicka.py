"""Map-matching accuracy on a subset of the real Kubicka drives (needs ../shared/data).

The drives are those with the smallest road networks (fast to build; 00000013, ~300k arcs,
is left to ``benchmarks/bench_snap_peers.py``), matched with roadcover's default
:class:`MatchParams`. The score is the route mismatch fraction of Newson & Krumm measured
geometrically (7.5 m buffer, in the match network's UTM zone), as in
``benchmarks/bench_snap_kubicka.py``. The thresholds come from that benchmark
(docs/benchmarks.md) with a margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.roads import build_roads, read_edges
from pipeline.snap import MatchNetwork, build_match_network, match_trip, traversed_segments

BUFFER_M = 7.5
# The five drives with the smallest networks (1.6k-8.3k arcs, 450-1,450 fixes each).
DRIVES = ("00000005", "00000006", "00000007", "00000011", "00000014")
# Measured with the defaults: mean 0.0098, worst drive 0.0228 (00000014); see docs/benchmarks.md.
MEAN_RMF_MAX = 0.03
DRIVE_RMF_MAX = 0.06


def route_mismatch_fraction(
    net: MatchNetwork, matched: gpd.GeoSeries, truth: shapely.Geometry
) -> float:
    """(matched > 7.5 m from truth + truth > 7.5 m from matched) / truth length, in metres."""
    truth_m = gpd.GeoSeries([truth], crs="EPSG:4326").to_crs(net.crs).iloc[0]
    matched_m = shapely.union_all(matched.to_crs(net.crs).to_numpy())
    if matched_m.is_empty:
        return 1.0
    extra = matched_m.difference(truth_m.buffer(BUFFER_M)).length
    missed = truth_m.difference(matched_m.buffer(BUFFER_M)).length
    return float((extra + missed) / truth_m.length)


def match_drive(drive_dir: Path, roads_dir: Path) -> float:
    build_roads(drive_dir / "network.osm.bz2", roads_dir, network="all")
    net = build_match_network(read_edges(roads_dir))
    trace = pd.read_csv(drive_dir / "trace.csv")
    t_s = (pd.to_datetime(trace["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")).dt
    trip = match_trip(
        net, trace["lon"].to_numpy(), trace["lat"].to_numpy(), t_s.total_seconds().to_numpy()
    )
    feature = json.loads((drive_dir / "truth.geojson").read_text())
    truth = shapely.geometry.shape(feature["geometry"])
    return route_mismatch_fraction(net, traversed_segments(net, trip).geometry, truth)


@pytest.mark.shared_data
def test_kubicka_subset_mean_route_mismatch(shared_data: Path, tmp_path: Path) -> None:
    kubicka = shared_data / "mapmatch" / "kubicka-dev"
    rmf = {drive: match_drive(kubicka / drive, tmp_path / drive) for drive in DRIVES}
    summary = ", ".join(f"{drive} {value:.4f}" for drive, value in rmf.items())
    assert np.mean(list(rmf.values())) < MEAN_RMF_MAX, f"mean RMF too high: {summary}"
    assert max(rmf.values()) < DRIVE_RMF_MAX, f"a drive's RMF is too high: {summary}"
