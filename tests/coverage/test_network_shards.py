"""The network cache of a sharded region, computed shard by shard, is that of its edge table.

The oracle is the cache computed from the region's whole edge table (``edges.parquet``, which
the merge writes byte for byte as an unsharded build), a computation that never sees a shard:
every file of the cache built shard by shard must have its bytes, and a coverage update on the
sharded roads must write the outputs of one on the unsharded roads. The network is made so that
the partition of some edges (the cell of their road's midpoint, measured along the edge) is
across a shard border from their owner (the cell of their line's midpoint): two parallel
one-way roads, driven in opposite directions, cross each side of an H3 cell at its middle.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import settings_from_mapping
from pipeline.coverage import network_shards
from pipeline.coverage.cell_reader import read_cell_table
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.network_shards import SpilledShard, descendant_range
from pipeline.coverage.partitions import Network, load_network, parent_array
from pipeline.coverage.stage import compute_coverage
from pipeline.roads import build_roads, read_edges
from pipeline.roads.identity import roads_identity
from pipeline.roads.shard_build import build_sharded_roads
from pipeline.roads.shards import read_owners, shard_dirs
from tests.builders import write_matched_batch, write_osm_network

SHARD_RESOLUTION = 9
RESOLUTION = 10
CENTRE = h3.latlng_to_cell(43.7384, 7.4246, SHARD_RESOLUTION)
SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage
METRES_PER_DEGREE = 111_320.0


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m``, ``east_m`` metres from (lat, lon), on a local flat map."""
    scale = METRES_PER_DEGREE * math.cos(math.radians(lat))
    return lat + north_m / METRES_PER_DEGREE, lon + east_m / scale


def side_point(
    middle: tuple[float, float], out: tuple[float, float], outward: float, along: float
) -> tuple[float, float]:
    """The point ``outward`` metres out of a side's ``middle`` (unit normal ``out``: north,
    east), moved ``along`` metres along the side."""
    north_m = outward * out[0] - along * out[1]
    return offset(*middle, north_m, outward * out[1] + along * out[0])


def border_crossing_osm(path: Path) -> Path:
    """Two 40 m one-way roads, 8 m apart and in opposite directions, across each hexagon side.

    Each crosses the side at its middle, so that its midpoint lies on the border of two cells.
    """
    centre = h3.cell_to_latlng(CENTRE)
    corners = h3.cell_to_boundary(CENTRE)
    nodes: dict[int, tuple[float, float]] = {}
    ways: dict[int, tuple[list[int], str, bool]] = {}
    for side in range(len(corners)):
        (lat0, lon0), (lat1, lon1) = corners[side], corners[(side + 1) % len(corners)]
        middle = ((lat0 + lat1) / 2, (lon0 + lon1) / 2)
        north = (middle[0] - centre[0]) * METRES_PER_DEGREE
        east = (middle[1] - centre[1]) * METRES_PER_DEGREE * math.cos(math.radians(centre[0]))
        out = (north / math.hypot(north, east), east / math.hypot(north, east))
        for lane, (along, way_out) in enumerate([(0.0, 20.0), (8.0, -20.0)]):  # out, then in
            first = 1000 + 10 * side + 2 * lane
            nodes[first] = side_point(middle, out, -way_out, along)
            nodes[first + 1] = side_point(middle, out, way_out, along)
            ways[100 + 2 * side + lane] = ([first, first + 1], "residential", True)
    return write_osm_network(path, nodes, ways)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sharded roads of the border network, and its unsharded roads."""
    root = tmp_path_factory.mktemp("border")
    osm = border_crossing_osm(root / "border.osm")
    build_sharded_roads(osm, root / "region", SHARD_RESOLUTION)
    build_roads(osm, root / "whole")
    return root / "region", root / "whole"


def cache_files(network: Network) -> dict[str, bytes]:
    return {
        str(path.relative_to(network.folder)): path.read_bytes()
        for path in sorted(network.folder.rglob("*"))
        if path.is_file()
    }


def owner_cells(roads: Path) -> pd.Series:
    """Every edge's owner shard cell (int), by ``edge_id``."""
    owners = pd.concat([read_owners(folder) for folder in shard_dirs(roads)])
    return owners[owners["owned"]].set_index("edge_id")["owner_cell"]


def refuse_edges() -> pd.DataFrame:
    raise AssertionError("the sharded cache read the region's edge table")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scratch row groups of 3 rows, edge arrays merged 5 ids at a time: as on a country."""
    monkeypatch.setattr(network_shards, "SCRATCH_ROW_GROUP", 3)
    monkeypatch.setattr(network_shards, "INDEX_SAMPLE_EVERY", 2)
    monkeypatch.setattr(network_shards, "INDEX_RANGE_ROWS", 5)


@pytest.mark.parametrize("partition_resolution", [8, 9, 10, "auto"])
def test_a_cache_built_shard_by_shard_is_the_cache_of_the_region_edges(
    region: tuple[Path, Path], tmp_path: Path, partition_resolution: int | str, small_chunks: None
) -> None:
    roads, _ = region
    sha256 = roads_identity(roads)["edges_sha256"]
    whole = load_network(
        lambda: read_edges(roads), sha256, tmp_path / "whole", RESOLUTION, partition_resolution
    )
    sharded = load_network(
        refuse_edges, sha256, tmp_path / "sharded", RESOLUTION, partition_resolution,
        shard_dirs(roads),
    )  # fmt: skip
    assert len(shard_dirs(roads)) > 1
    assert cache_files(sharded) == cache_files(whole)
    assert not list((tmp_path / "sharded" / "network").glob(".scratch-*"))  # scratch removed
    owners = owner_cells(roads)
    parts = sharded.edge_parts(owners.index.to_numpy())
    part_cells = np.array([int(key.rsplit("-", 1)[1], 16) for key in parts])
    level = min(sharded.partition_resolution, SHARD_RESOLUTION)
    across = parent_array(part_cells, level) != parent_array(owners.to_numpy(), level)
    if sharded.partition_resolution >= SHARD_RESOLUTION:  # partitions in one shard or the next
        assert across.any()  # an edge's partition is across a border from its owner


def test_a_coverage_update_on_the_sharded_roads_writes_the_unsharded_outputs(
    region: tuple[Path, Path], tmp_path: Path
) -> None:
    roads, whole = region
    settings = dataclasses.replace(SETTINGS, h3_resolution=RESOLUTION, partition_resolution=9)
    edges = read_edges(whole)
    start = pd.Timestamp("2026-09-01T08:00Z")
    drives = pd.DataFrame(
        {
            "edge_id": edges["edge_id"].to_numpy(),
            "trip_id": [f"trip{i % 3}" for i in range(len(edges))],
            "contributor_id": [f"c{i % 2}" for i in range(len(edges))],
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy() / 2,
            "entered_at": start,
            "exited_at": start + pd.Timedelta(seconds=5),
        }
    )
    outputs = {}
    for name, folder in (("sharded", roads), ("whole", whole)):
        batch = write_matched_batch(tmp_path / f"batch-{name}", edges, drives, roads_dir=folder)
        summary = compute_coverage(folder, [batch], tmp_path / name, settings)
        outputs[name] = (
            json.dumps({k: v for k, v in summary.items() if k != "roads"}, sort_keys=True),
            read_cell_table(tmp_path / name),
            read_edge_table(tmp_path / name),
        )
    assert outputs["sharded"][0] == outputs["whole"][0]
    assert outputs["sharded"][1].equals(outputs["whole"][1])
    assert outputs["sharded"][2].equals(outputs["whole"][2])
    assert json.loads(outputs["whole"][0])["unique_km"] > 0


@pytest.mark.parametrize(("level", "resolution"), [(5, 7), (7, 9), (9, 9), (0, 2)])
def test_the_descendant_range_bounds_a_cells_children(level: int, resolution: int) -> None:
    for cell in [h3.latlng_to_cell(43.7384, 7.4246, level), sorted(h3.get_pentagons(level))[0]]:
        children = [h3.str_to_int(child) for child in h3.cell_to_children(cell, resolution)]
        low, high = descendant_range(h3.str_to_int(cell), level, resolution)
        assert (low, high) == (min(children), max(children))


def spilled_cells(tmp_path: Path, name: str, cells: dict[int, float]) -> SpilledShard:
    shard = SpilledShard(tmp_path / name, 0, pd.DataFrame(), None)
    table = pa.table({"cell": list(cells), "road_mm": list(cells.values())})
    pq.write_table(table, shard.path("cells.parquet"))
    return shard


def test_a_cell_has_no_road_only_when_no_shard_has_road_in_it(tmp_path: Path) -> None:
    grazed = spilled_cells(tmp_path, "a", {11: math.nan, 12: 5.0})
    driven = spilled_cells(tmp_path, "b", {11: 3.0, 13: 2.0})
    assert not network_shards._a_cell_has_no_road([grazed, driven])
    assert not network_shards._a_cell_has_no_road([driven, grazed])
    alone = spilled_cells(tmp_path, "c", {14: math.nan})
    assert network_shards._a_cell_has_no_road([grazed, driven, alone])
