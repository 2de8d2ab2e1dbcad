"""Snap on a sharded region: the same matched segments, and coverage, as on unsharded roads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config import settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, MATCHED_POINTS, MATCHED_SEGMENTS
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.shard_rollup import ROLLED_UP, coverage_by_shard, roll_up
from pipeline.coverage.stage import compute_coverage
from pipeline.io import read_table
from pipeline.roads import build_roads
from pipeline.roads.shard_build import build_sharded_roads
from pipeline.snap.stage import snap_traces
from tests.builders import drive_points, write_traces_batch

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]})
SNAP = replace(SETTINGS.snap, workers=1)
COVERAGE = SETTINGS.coverage
SEGMENT_COLUMNS = ["trip_id", "seq", "edge_id", "from_offset_m", "to_offset_m"]


def kubicka_points(drive: Path) -> gpd.GeoDataFrame:
    """The real 1 Hz trace of a Kubicka drive, as ingest's points."""
    raw = pd.read_csv(drive / "trace.csv")
    frame = pd.DataFrame(
        {
            "trace_id": raw["trace_id"], "trip_id": raw["trace_id"] + "-001",
            "contributor_id": "c1", "device_id": raw["device_id"],
            "observed_at": pd.to_datetime(raw["timestamp"], utc=True).dt.as_unit("ms"),
            "lon": raw["lon"], "lat": raw["lat"], "hdop": 1.0, "speed_mps": 10.0,
            "heading_deg": 0.0, "source_file": "trace.csv", "source_row": np.arange(len(raw)) + 2,
        }
    )  # fmt: skip
    return gpd.GeoDataFrame(frame, geometry=shapely.points(raw["lon"], raw["lat"]), crs=4326)


def matched(roads: Path, traces: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Snap the batch; return its segments and points in trip order."""
    snap_traces(roads, traces, out, SNAP, "b1")
    segments = pd.DataFrame(read_table(out / "matched_segments.parquet", MATCHED_SEGMENTS))
    points = pd.DataFrame(read_table(out / "matched_points.parquet", MATCHED_POINTS))
    read_table(out / "match_quality.parquet", MATCH_QUALITY)
    return (
        segments.sort_values(["trip_id", "seq"], ignore_index=True),
        points.sort_values(["trip_id", "observed_at"], ignore_index=True),
    )


def summary_edges(coverage_dir: Path) -> int:
    """Rows of a coverage folder's edge table (every edge of the region once)."""
    return read_edge_table(coverage_dir, columns=["edge_id"]).num_rows


def cells_crossed(points: pd.DataFrame, resolution: int) -> int:
    """How many H3 cells a batch's fixes fall in (with h3 itself)."""
    pairs = zip(points["lat"], points["lon"], strict=True)
    return len({h3.latlng_to_cell(lat, lon, resolution) for lat, lon in pairs})


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("extract", "resolutions"),
    [("osm/monaco-2016.osm.pbf", (6, 7)), ("mapmatch/kubicka-dev/00000005", (6, 7))],
)
def test_a_batch_matched_on_shards_equals_the_unsharded_match_and_coverage(
    extract: str, resolutions: tuple[int, int], shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / extract
    osm = source / "network.osm.bz2" if source.is_dir() else source
    whole = tmp_path / "whole"
    build_roads(osm, whole)
    if source.is_dir():
        points = kubicka_points(source)
    else:
        points, _ = drive_points(whole, trips=6, seed=11)
    traces = write_traces_batch(tmp_path / "traces", points, "b1")
    expected_segments, expected_points = matched(whole, traces, tmp_path / "m-whole")
    assert len(expected_segments) > 20
    expected = compute_coverage(whole, [tmp_path / "m-whole"], tmp_path / "c-whole", COVERAGE)
    for resolution in resolutions:
        assert cells_crossed(points, resolution) > 1  # trips cross shard borders
        sharded = tmp_path / f"sharded-{resolution}"
        build_sharded_roads(osm, sharded, resolution)
        segments, fixes = matched(sharded, traces, tmp_path / f"m-{resolution}")
        pd.testing.assert_frame_equal(segments[SEGMENT_COLUMNS], expected_segments[SEGMENT_COLUMNS])
        # the same times, but where a fix lies where two edges meet or share a line: the
        # matcher breaks that tie by its candidates' order, which differs between networks
        late = (segments["entered_at"] - expected_segments["entered_at"]).abs()
        assert (late == pd.Timedelta(0)).mean() >= 0.99
        assert late.max() <= pd.Timedelta(seconds=1)  # the fixes' interval
        # the same pieces of the same edges; lines within a centimetre (projected and back)
        apart = shapely.hausdorff_distance(
            segments.geometry.to_numpy(), expected_segments.geometry.to_numpy()
        )
        assert apart.max() < 1e-7
        # every fix snapped to the same place; at a node, or where two edges share a line, the
        # edge named may be the other one of a tie (candidates are indexed per network)
        moved = shapely.distance(fixes.geometry.to_numpy(), expected_points.geometry.to_numpy())
        assert np.nanmax(moved) < 1e-9
        pd.testing.assert_series_equal(fixes["distance_m"], expected_points["distance_m"])
        same_edge = (fixes["edge_id"] == expected_points["edge_id"]).sum()
        assert same_edge >= 0.99 * expected_points["edge_id"].notna().sum()
        summary = compute_coverage(
            sharded, [tmp_path / f"m-{resolution}"], tmp_path / f"c-{resolution}", COVERAGE
        )
        assert summary["road_km"] == expected["road_km"]  # exact
        assert summary["unique_km"] == pytest.approx(expected["unique_km"], rel=1e-3)
        assert summary["unique_km"] > 0
        shards = coverage_by_shard(tmp_path / f"c-{resolution}", sharded)
        assert len(shards) > 1
        assert shards["edges"].sum() == summary_edges(tmp_path / f"c-{resolution}")
        assert roll_up(shards) == {name: summary[name] for name in ROLLED_UP}  # exact, in mm
