"""Snap on a sharded region: the same matched segments, and coverage, as on unsharded roads."""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config import settings_from_mapping
from pipeline.contracts import EDGES, MATCH_QUALITY, MATCHED_POINTS, MATCHED_SEGMENTS
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.shard_rollup import ROLLED_UP, coverage_by_shard, roll_up
from pipeline.coverage.stage import compute_coverage
from pipeline.io import file_sha256, read_table, write_table
from pipeline.locking import LOCK_FILE
from pipeline.roads import build_roads, read_edges
from pipeline.roads.shard_build import build_sharded_roads
from pipeline.roads.shards import SHARDS_DIR, read_plan
from pipeline.snap import network as snap_network
from pipeline.snap import stage as snap_stage
from pipeline.snap.network import (
    MatchNetwork,
    build_match_network,
    load_match_network,
    save_match_network,
)
from pipeline.snap.shards import (
    EVICTIONS_FILE,
    NETWORKS_DIR,
    evict_networks,
    rebuilds_since,
    shard_network,
)
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


@pytest.fixture(scope="module")
def small_shards(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny network in 6 shards (H3 resolution 10, 20 m buffers: each holds 2-10 edges)."""
    roads = tmp_path_factory.mktemp("small-shards") / "roads"
    build_sharded_roads(tiny_osm, roads, 10, buffer_m=20.0)
    return roads


def shard_edge_ids(roads: Path, cell: str) -> set[int]:
    return set(read_edges(roads / SHARDS_DIR / cell)["edge_id"].tolist())


def two_overlapping_shards(roads: Path) -> tuple[str, str]:
    """Two shards sharing some edges, the first with an edge the second lacks."""
    cells = read_plan(roads)["cells"]
    for a, b in itertools.permutations(cells, 2):
        ids_a, ids_b = shard_edge_ids(roads, a), shard_edge_ids(roads, b)
        if ids_a & ids_b and ids_a - ids_b and ids_b - ids_a:
            return tuple(sorted((a, b)))  # type: ignore[return-value]
    raise AssertionError("no two shards overlap")


def expected_union(roads: Path, cells: tuple[str, ...]) -> MatchNetwork:
    """The network of the region's edges that are in any of the shards (by id)."""
    ids = set().union(*(shard_edge_ids(roads, cell) for cell in cells))
    edges = read_edges(roads)
    return build_match_network(edges[edges["edge_id"].isin(ids)].reset_index(drop=True))


def assert_same_network(got: MatchNetwork, expected: MatchNetwork) -> None:
    for field in dataclasses.fields(MatchNetwork):
        a, b = getattr(got, field.name), getattr(expected, field.name)
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=field.name)
        else:
            assert a == b, field.name


BUILD_DELAY_S = 0.0


@pytest.fixture
def build_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file with a line per match network built, by this process or one it forks.

    Each build takes ``BUILD_DELAY_S`` longer (a test sets it so that two processes asking at
    once overlap).
    """
    log_path = tmp_path / "builds.log"
    log_path.touch()
    real = snap_network.build_match_network

    def logged(*args: Any, **kwargs: Any) -> MatchNetwork:
        with log_path.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(BUILD_DELAY_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(snap_network, "build_match_network", logged)
    return log_path


def builds(log_path: Path) -> int:
    return len(log_path.read_text().splitlines())


def _union_in_child(roads: Path, cells: tuple[str, ...], start: Any, out: Path) -> None:
    start.wait()
    save_match_network(shard_network(roads, cells, cache_mb=100, lock_timeout_s=60), out)


def test_two_processes_build_a_union_once_a_second_batch_reuses_it_a_changed_shard_rebuilds(
    small_shards: Path, tmp_path: Path, build_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "BUILD_DELAY_S", 0.5)  # past the other's start
    roads = tmp_path / "roads"
    shutil.copytree(small_shards, roads)
    cells = two_overlapping_shards(roads)
    expected = expected_union(roads, cells)
    fork = multiprocessing.get_context("fork")  # the children see the build log's spy
    start = fork.Barrier(2)
    children = [
        fork.Process(target=_union_in_child, args=(roads, cells, start, tmp_path / f"{i}.npz"))
        for i in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    assert builds(build_log) == 1  # the second waited for the first's, then loaded it
    for i in range(2):
        assert_same_network(load_match_network(tmp_path / f"{i}.npz"), expected)
    caches = list((roads / NETWORKS_DIR).glob("*/match_network.npz"))
    assert len(caches) == 1
    # the next batch (another process, or this one) loads the cached union
    assert_same_network(shard_network(roads, cells, cache_mb=100), expected)
    assert builds(build_log) == 1
    # a shard rebuilt with other edges: the union is rebuilt, in place
    edges = read_edges(roads / SHARDS_DIR / cells[0])
    dropped = min(shard_edge_ids(roads, cells[0]) - shard_edge_ids(roads, cells[1]))
    write_table(
        edges[edges["edge_id"] != dropped], roads / SHARDS_DIR / cells[0] / "edges.parquet", EDGES
    )
    net = shard_network(roads, cells, cache_mb=100)
    assert builds(build_log) == 2
    assert dropped not in net.edge_id.tolist()
    assert len(net.edge_id) == len(expected.edge_id) - 1
    assert list((roads / NETWORKS_DIR).glob("*/match_network.npz")) == caches


def test_a_single_shard_is_matched_on_its_own_cached_network(
    small_shards: Path, tmp_path: Path, build_log: Path
) -> None:
    roads = tmp_path / "roads"
    shutil.copytree(small_shards, roads)
    cell = read_plan(roads)["cells"][0]
    net = shard_network(roads, (cell,), cache_mb=100)
    assert_same_network(net, expected_union(roads, (cell,)))
    assert (roads / SHARDS_DIR / cell / "match_network.npz").exists()
    shard_network(roads, (cell,), cache_mb=100)
    assert builds(build_log) == 1


def test_the_least_recently_used_unions_are_emptied_beyond_the_cache_size(
    small_shards: Path, tmp_path: Path
) -> None:
    roads = tmp_path / "roads"
    shutil.copytree(small_shards, roads)
    cells = read_plan(roads)["cells"]
    unions = [(cells[0], cells[1]), (cells[1], cells[2]), (cells[2], cells[3])]
    for union in [*unions, unions[0]]:  # the second union is the least recently used
        shard_network(roads, union, cache_mb=100)
        time.sleep(0.02)  # past the file system's timestamp tick
    folders = {u: next(f for f in (roads / NETWORKS_DIR).iterdir() if _holds(f, u)) for u in unions}
    size = {
        u: sum(p.stat().st_size for p in folders[u].iterdir() if p.name != LOCK_FILE)
        for u in unions
    }
    budget_mb = (size[unions[0]] + size[unions[2]]) / 2**20
    emptied = evict_networks(roads / NETWORKS_DIR, budget_mb, keep=folders[unions[2]])
    assert emptied == [folders[unions[1]]]
    assert sorted(p.name for p in folders[unions[1]].iterdir()) == [LOCK_FILE, EVICTIONS_FILE]
    assert (folders[unions[0]] / "match_network.npz").exists()
    assert evict_networks(roads / NETWORKS_DIR, 0, keep=folders[unions[2]]) == [folders[unions[0]]]
    assert (folders[unions[2]] / "match_network.npz").exists()


def test_a_union_built_again_after_it_was_emptied_is_counted(
    small_shards: Path, tmp_path: Path, build_log: Path
) -> None:
    roads = tmp_path / "roads"
    shutil.copytree(small_shards, roads)
    cells = read_plan(roads)["cells"]
    first, second = (cells[0], cells[1]), (cells[1], cells[2])
    started = time.time()
    shard_network(roads, first, cache_mb=0)  # a cache of 0 MB: every other union is emptied
    shard_network(roads, second, cache_mb=0)  # empties the first
    assert builds(build_log) == 2
    assert rebuilds_since(roads / NETWORKS_DIR, started) == 0  # built once each: no rebuild
    shard_network(roads, first, cache_mb=0)  # emptied, so built again (and the second emptied)
    assert builds(build_log) == 3
    assert rebuilds_since(roads / NETWORKS_DIR, started) == 1
    assert rebuilds_since(roads / NETWORKS_DIR, time.time() + 1) == 0  # before `since`: not counted
    shard_network(roads, first, cache_mb=0)  # still there: loaded
    shard_network(roads, second, cache_mb=100)  # emptied before: built again, kept this time
    shard_network(roads, second, cache_mb=100)
    assert builds(build_log) == 4
    assert rebuilds_since(roads / NETWORKS_DIR, started) == 2


def test_the_unions_disk_is_64_mb_a_shard_unless_set(small_shards: Path, tmp_path: Path) -> None:
    shards = len(json.loads((small_shards / "meta.json").read_text())["shards"]["cells"])
    assert shards == 6  # the fixture's
    assert SNAP.shard_network_cache_mb is None  # the default
    assert snap_stage.union_cache_mb(small_shards, SNAP) == 64 * 6
    assert snap_stage.union_cache_mb(small_shards, replace(SNAP, shard_network_cache_mb=10)) == 10
    unsharded = tmp_path / "roads"
    unsharded.mkdir()
    (unsharded / "meta.json").write_text(json.dumps({"edge_count": 12}))
    assert snap_stage.union_cache_mb(unsharded, SNAP) == 0


def _holds(folder: Path, cells: tuple[str, ...]) -> bool:
    stamp = folder / "match_network.json"
    return stamp.exists() and sorted(json.loads(stamp.read_text())["union_of_shards"]) == list(
        cells
    )


def fixes_along(edges: gpd.GeoDataFrame, chains: list[list[int]]) -> gpd.GeoDataFrame:
    """A trip along each chain of nodes: a fix every 5 m or so of its edges' lines, 1 s apart."""
    by_nodes = edges.drop_duplicates(["u", "v"]).set_index(["u", "v"])
    lines = []
    for i, chain in enumerate(chains):
        for u, v in itertools.pairwise(chain):
            at = np.arange(0.0, 1.0, 5.0 / by_nodes.loc[(u, v), "length_m"])
            line = by_nodes.geometry.loc[(u, v)]
            points = shapely.line_interpolate_point(line, at, normalized=True)
            lines.append(pd.DataFrame({"trip": i, "point": points}))
    fixes = pd.concat(lines, ignore_index=True)
    lon, lat = shapely.get_x(fixes["point"]), shapely.get_y(fixes["point"])
    trace = "trace" + fixes["trip"].astype(str)
    frame = pd.DataFrame(
        {
            "trace_id": trace, "trip_id": trace + "-001", "contributor_id": "c1",
            "device_id": "d1", "observed_at": pd.Timestamp("2026-10-01", tz="UTC").as_unit("ms")
            + pd.to_timedelta(fixes.groupby("trip").cumcount(), unit="s"),
            "lon": lon, "lat": lat, "hdop": 1.0, "speed_mps": 5.0, "heading_deg": 0.0,
            "source_file": "trace.csv", "source_row": np.arange(len(fixes)) + 2,
        }
    )  # fmt: skip
    return gpd.GeoDataFrame(frame, geometry=shapely.points(lon, lat), crs=4326)


def test_a_second_batch_on_a_sharded_region_builds_no_network(
    small_shards: Path, tmp_path: Path, build_log: Path
) -> None:
    roads = tmp_path / "roads"
    shutil.copytree(small_shards, roads)
    chains = [[1, 2, 5, 9], [6, 3, 2, 1], [3, 2, 5], [11, 10]]  # node ids, across shards
    traces = write_traces_batch(tmp_path / "traces", fixes_along(read_edges(roads), chains), "b1")
    snap_traces(roads, traces, tmp_path / "m1", SNAP, "b1")
    assert builds(build_log) > 1
    assert list((roads / NETWORKS_DIR).glob("*/match_network.npz"))  # trips across shards
    first = builds(build_log)
    snap_stage._worker_network.cache_clear()  # as a new worker process
    snap_traces(roads, traces, tmp_path / "m2", SNAP, "b1")
    assert builds(build_log) == first
    assert json.loads((tmp_path / "m2" / "meta.json").read_text())["shard_network_rebuilds"] == 0
    for name in ("matched_points.parquet", "matched_segments.parquet", "match_quality.parquet"):
        assert file_sha256(tmp_path / "m1" / name) == file_sha256(tmp_path / "m2" / name)
    unions = len(list((roads / NETWORKS_DIR).glob("*/match_network.npz")))
    assert unions >= 2
    # a cache of 0 MB keeps only the union just used: the next batch builds every union again
    tight = replace(SNAP, shard_network_cache_mb=0)
    snap_traces(roads, traces, tmp_path / "m3", tight, "b1")
    snap_stage._worker_network.cache_clear()
    snap_traces(roads, traces, tmp_path / "m4", tight, "b1")
    rebuilds = [
        json.loads((tmp_path / name / "meta.json").read_text())["shard_network_rebuilds"]
        for name in ("m3", "m4")
    ]
    assert rebuilds[1] == unions
    assert rebuilds[0] == builds(build_log) - first - unions  # each of m3's builds was a rebuild
