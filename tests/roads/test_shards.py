"""Sharded roads: the union of the shards' owned edges is the unsharded edge table, exactly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h3
import numpy as np
import osmium
import pandas as pd
import pyproj
import pytest
import shapely

import pipeline.roads.shards as shards
from pipeline.errors import ConfigError, InputDataError
from pipeline.roads import build_roads, read_edges, read_nodes, read_roads_meta
from pipeline.roads.highways import highway_filter_for
from pipeline.roads.shard_build import build_shard, build_sharded_roads
from pipeline.roads.shards import (
    CORE_WAYS_FILE,
    SHARDS_DIR,
    check_resolution,
    cut_extract,
    read_owners,
    read_plan,
)
from tests.builders import write_osm_network

EQUIVALENCE_CASES = [
    ("osm/monaco-2016.osm.pbf", 6),
    ("osm/monaco-2016.osm.pbf", 7),
    ("osm/monaco-2012.osm.gz", 8),
    ("mapmatch/kubicka-dev/00000005/network.osm.bz2", 6),
    ("mapmatch/kubicka-dev/00000005/network.osm.bz2", 7),
    ("mapmatch/kubicka-dev/00000012/network.osm.bz2", 5),
]


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """The unsharded roads folder of an extract, built once per extract."""
    folders: dict[Path, Path] = {}

    def roads_of(extract: Path) -> Path:
        if extract not in folders:
            folders[extract] = tmp_path_factory.mktemp("unsharded")
            build_roads(extract, folders[extract])
        return folders[extract]

    return roads_of


def way_refs(extract: Path) -> dict[int, list[int]]:
    """Every way of an OSM file and its node references (read with pyosmium)."""
    return {
        w.id: [n.ref for n in w.nodes] for w in osmium.FileProcessor(str(extract), osmium.osm.WAY)
    }


def midpoint_cell(geometry: shapely.LineString, resolution: int) -> str:
    """The H3 cell of the middle of a line, direction-free (computed with h3 and shapely)."""
    line = shapely.normalize(shapely.set_precision(geometry, 1e-7))
    middle = line.interpolate(0.5, normalized=True)
    return str(h3.latlng_to_cell(middle.y, middle.x, resolution))


@pytest.mark.shared_data
@pytest.mark.parametrize(("extract", "resolution"), EQUIVALENCE_CASES)
def test_owned_edges_of_all_shards_are_the_unsharded_edges(
    extract: str,
    resolution: int,
    shared_data: Path,
    tmp_path: Path,
    unsharded: Callable[[Path], Path],
) -> None:
    source = shared_data / extract
    whole = unsharded(source)
    meta = build_sharded_roads(source, tmp_path / "sharded", resolution)
    region = tmp_path / "sharded"
    expected, got = pd.DataFrame(read_edges(whole)), pd.DataFrame(read_edges(region))
    pd.testing.assert_frame_equal(got, expected)  # ids, lengths, geometry, every column
    pd.testing.assert_frame_equal(pd.DataFrame(read_nodes(region)), pd.DataFrame(read_nodes(whole)))
    whole_meta = read_roads_meta(whole)
    same = ("road_km", "directed_km", "edge_count", "node_count", "road_count", "by_highway",
            "ways_kept", "ways_clipped", "missing_node_refs", "source_sha256", "bbox")  # fmt: skip
    for key in same:
        assert meta[key] == whole_meta[key], key
    cells = meta["shards"]["cells"]
    assert len(cells) > 1
    assert sum(c["owned_edge_count"] for c in cells) == len(expected)
    assert sum(c["owned_road_km"] for c in cells) == pytest.approx(whole_meta["road_km"], abs=1e-5)


@pytest.mark.shared_data
def test_every_shard_edge_is_an_unsharded_edge_owned_by_one_shard(
    shared_data: Path, tmp_path: Path, unsharded: Callable[[Path], Path]
) -> None:
    source = shared_data / "osm/monaco-2016.osm.pbf"
    whole = read_edges(unsharded(source)).set_index("edge_id")
    build_sharded_roads(source, tmp_path / "sharded", 7)
    owners_seen: dict[int, set[str]] = {}
    buffer_edges = 0
    for cell in read_plan(tmp_path / "sharded")["cells"]:
        shard = tmp_path / "sharded" / SHARDS_DIR / cell
        edges = read_edges(shard).set_index("edge_id")
        owners = read_owners(shard).set_index("edge_id").loc[edges.index]
        # buffer edges too: same ids, the same line and length as in the unsharded graph
        assert edges.index.isin(whole.index).all()
        assert np.array_equal(edges["length_m"], whole.loc[edges.index, "length_m"])
        assert shapely.equals_exact(
            edges.geometry.values, whole.loc[edges.index].geometry.values, 0
        ).all()
        for edge_id, owned in owners["owned"].items():
            if owned:
                owners_seen.setdefault(edge_id, set()).add(cell)
        buffer_edges += int((~owners["owned"]).sum())
    assert set(owners_seen) == set(whole.index)
    assert all(len(cells) == 1 for cells in owners_seen.values())
    assert buffer_edges > 0
    plan_cells = set(read_plan(tmp_path / "sharded")["cells"])
    by_midpoint = [midpoint_cell(whole.loc[e].geometry, 7) for e in owners_seen]
    owner = [next(iter(owners_seen[e])) for e in owners_seen]
    in_shard = [m in plan_cells for m in by_midpoint]
    assert np.mean(in_shard) > 0.99
    assert all(o == m for o, m, inside in zip(owner, by_midpoint, in_shard, strict=True) if inside)


def test_both_directions_of_a_road_have_one_owner(tiny_osm: Path, tmp_path: Path) -> None:
    build_sharded_roads(tiny_osm, tmp_path, 12)
    shards = read_plan(tmp_path)["cells"]
    assert len(shards) > 1
    owners = pd.concat(
        [read_owners(tmp_path / SHARDS_DIR / c).query("owned") for c in shards], ignore_index=True
    )
    edges = read_edges(tmp_path).merge(owners, on="edge_id")
    assert len(edges) == len(read_edges(tmp_path))
    assert (edges.groupby("road_id")["owner_cell"].nunique() == 1).all()


def test_a_shard_extract_holds_complete_ways(tiny_osm: Path, tmp_path: Path) -> None:
    build_sharded_roads(tiny_osm, tmp_path, 12)
    source_ways = {
        w.id: [n.ref for n in w.nodes] for w in osmium.FileProcessor(str(tiny_osm), osmium.osm.WAY)
    }
    source_nodes = {node.id for node in osmium.FileProcessor(str(tiny_osm), osmium.osm.NODE)}
    for cell in read_plan(tmp_path)["cells"]:
        extract = tmp_path / SHARDS_DIR / cell / "extract.osm.pbf"
        nodes = {node.id for node in osmium.FileProcessor(str(extract), osmium.osm.NODE)}
        ways = {
            w.id: [n.ref for n in w.nodes]
            for w in osmium.FileProcessor(str(extract), osmium.osm.WAY)
        }
        assert ways
        for way_id, refs in ways.items():
            assert refs == source_ways[way_id]
            assert set(refs) & source_nodes <= nodes  # every node the extract has


@pytest.mark.parametrize("bad", ["16", "-1", "x", "7.5", ""])
def test_a_resolution_that_is_not_one_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="integer 0-15 or auto"):
        check_resolution(bad)


def test_auto_gives_one_shard_when_the_extract_fits(tiny_osm: Path, tmp_path: Path) -> None:
    meta = build_sharded_roads(tiny_osm, tmp_path, "auto")
    assert meta["shards"]["resolution"] == 0
    assert len(meta["shards"]["cells"]) == 1
    assert len(read_edges(tmp_path)) == len(
        read_edges(tmp_path / SHARDS_DIR / meta["shards"]["cells"][0]["cell"])
    )


def test_building_a_cell_that_is_not_a_shard_is_refused(tiny_osm: Path, tmp_path: Path) -> None:
    build_sharded_roads(tiny_osm, tmp_path, 12)
    with pytest.raises(Exception, match="not one of its"):
        build_shard(tmp_path, "8c2a1072b59ffff")


def test_cli_builds_a_sharded_region(tiny_osm: Path, tmp_path: Path) -> None:
    out = tmp_path / "roads"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "roads", "build", str(tiny_osm),
         "--shard-resolution", "12", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "shard(s) at resolution 12" in done.stdout
    assert read_roads_meta(out)["shards"]["resolution"] == 12
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "roads", "build", str(tiny_osm),
         "--shard-resolution", "99", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].endswith("give an integer 0-15 or auto")


def distance_to_cell_m(lines: dict[int, list[tuple[float, float]]], cell: str) -> dict[int, float]:
    """Metres from each line ((lon, lat) points) to an H3 cell's hexagon: pyproj and shapely.

    An azimuthal equidistant projection centred on the cell; the hexagon from h3's vertices.
    """
    lat0, lon0 = h3.cell_to_latlng(cell)
    project = pyproj.Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m",
        always_xy=True,
    ).transform  # fmt: skip
    hexagon = shapely.Polygon([project(lon, lat) for lat, lon in h3.cell_to_boundary(cell)])
    distances = {}
    for way, points in lines.items():
        xy = [project(lon, lat) for lon, lat in points]
        shape = shapely.LineString(xy) if len(xy) > 1 else shapely.Point(xy[0])
        distances[way] = shapely.distance(shape, hexagon)
    return distances


def core_ways_of(roads_dir: Path) -> dict[str, set[int]]:
    """Each shard's core ways, as the cut wrote them."""
    return {
        cell: set(np.load(roads_dir / SHARDS_DIR / cell / CORE_WAYS_FILE).tolist())
        for cell in read_plan(roads_dir)["cells"]
    }


def lines_of(extract: Path) -> dict[int, list[tuple[float, float]]]:
    """Every way's located points (lon, lat), read with pyosmium."""
    return {
        way.id: [(n.lon, n.lat) for n in way.nodes if n.location.valid()]
        for way in osmium.FileProcessor(str(extract)).with_locations()
        if way.is_way()
    }


def assert_cores_are_the_ways_within(
    roads_dir: Path, lines: dict[int, list[tuple[float, float]]], buffer_m: float
) -> int:
    """Each shard's core ways are the ways within ``buffer_m`` of its hexagon; returns checks.

    Ways within 1 % (and 2 m) of ``buffer_m`` are not judged: the two distances are measured
    on different figures of the Earth (a sphere, WGS84).
    """
    checked = 0
    for cell, core in core_ways_of(roads_dir).items():
        for way, distance in distance_to_cell_m(lines, cell).items():
            if abs(distance - buffer_m) < 0.01 * buffer_m + 2:
                continue
            assert (way in core) == (distance <= buffer_m), (cell, way, distance)
            checked += 1
    return checked


@pytest.mark.parametrize("resolution", [9, 10])  # cells wider than the buffer, and narrower
def test_a_shard_holds_the_ways_within_its_buffer_and_no_farther(
    resolution: int, tmp_path: Path
) -> None:
    cell = h3.latlng_to_cell(47.14, 9.52, resolution)
    lat0, lon0 = h3.cell_to_latlng(cell)
    geod = pyproj.Geod(ellps="WGS84")
    buffer_m = 150.0
    nodes: dict[int, tuple[float, float]] = {1: (lat0, lon0)}
    ways: dict[int, tuple[list[int], str, bool]] = {}
    east, north, _ = geod.fwd(lon0, lat0, 90, 20)  # a short way through the cell's centre
    nodes[2] = (north, east)
    ways[100] = ([1, 2], "residential", False)
    rng = np.random.default_rng(7)
    edge_m = h3.average_hexagon_edge_length(resolution, "m")
    for i in range(60):  # short ways around the cell, up to two and a half buffers from it
        bearing, reach = 6.0 * i, rng.uniform(edge_m, edge_m + 2.5 * buffer_m)
        lon, lat, _ = geod.fwd(lon0, lat0, bearing, reach)
        lon1, lat1, _ = geod.fwd(lon, lat, bearing + 90, 25)
        nodes[10 + 2 * i], nodes[11 + 2 * i] = (lat, lon), (lat1, lon1)
        ways[200 + i] = ([10 + 2 * i, 11 + 2 * i], "residential", False)
    extract = write_osm_network(tmp_path / "around.osm", nodes, ways)
    cut_extract(extract, tmp_path / "roads", resolution, buffer_m=buffer_m)
    lines = lines_of(extract)
    distances = distance_to_cell_m(lines, cell)
    near = {w for w, d in distances.items() if d <= buffer_m}
    far = {w for w, d in distances.items() if d > buffer_m}
    assert 100 in near and len(near) > 10 and len(far) > 10  # the data test both sides
    core = core_ways_of(tmp_path / "roads")[cell]
    margin = {w for w, d in distances.items() if abs(d - buffer_m) < 3}
    assert near - margin <= core
    assert not (far - margin) & core
    assert assert_cores_are_the_ways_within(tmp_path / "roads", lines, buffer_m) > 500


@pytest.mark.shared_data
def test_every_shard_holds_the_ways_within_its_buffer_on_a_real_extract(
    shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "osm/monaco-2016.osm.pbf"
    plan = cut_extract(source, tmp_path, 8, buffer_m=300.0)
    cores = core_ways_of(tmp_path)
    everything = set().union(*cores.values())
    lines = {w: p for w, p in lines_of(source).items() if w in everything}
    assert len(plan["cells"]) > 10
    assert assert_cores_are_the_ways_within(tmp_path, lines, 300.0) > 0.9 * len(lines) * len(cores)


def extract_content(extract: Path) -> tuple[list[tuple], list[tuple]]:
    """The nodes (id, location, tags) and ways (id, refs, tags) of an OSM file, in file order."""
    nodes = [
        (n.id, n.location.lon, n.location.lat, dict(n.tags))
        for n in osmium.FileProcessor(str(extract), osmium.osm.NODE)
    ]
    ways = [
        (w.id, [r.ref for r in w.nodes], dict(w.tags))
        for w in osmium.FileProcessor(str(extract), osmium.osm.WAY)
    ]
    return nodes, ways


@pytest.mark.shared_data
def test_a_shard_extract_holds_its_core_ways_the_roads_at_their_nodes_and_their_nodes(
    shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "osm/monaco-2016.osm.pbf"
    cut_extract(source, tmp_path, 7)
    keeps = highway_filter_for("drive", None).keeps
    roads = {
        w.id: [r.ref for r in w.nodes]
        for w in osmium.FileProcessor(str(source), osmium.osm.WAY)
        if keeps(dict(w.tags))
    }
    source_nodes = {n.id for n in osmium.FileProcessor(str(source), osmium.osm.NODE)}
    for cell, core in core_ways_of(tmp_path).items():
        core_nodes = {ref for way in core for ref in roads[way]}
        expected = core | {way for way, refs in roads.items() if core_nodes & set(refs)}
        nodes, ways = extract_content(tmp_path / SHARDS_DIR / cell / "extract.osm.pbf")
        assert {w[0] for w in ways} == expected
        assert {n[0] for n in nodes} == {r for w in expected for r in roads[w]} & source_nodes


@pytest.mark.shared_data
def test_the_cut_is_the_same_in_small_chunks_and_many_passes(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared_data / "mapmatch/kubicka-dev/00000005/network.osm.bz2"
    whole = cut_extract(source, tmp_path / "whole", 7)
    monkeypatch.setattr(shards, "WAY_CHUNK", 100)  # many chunks of ways
    monkeypatch.setattr(shards, "WRITERS_PER_PASS", 3)  # many passes over the extract
    monkeypatch.setattr(shards, "CORE_WAYS_PER_PASS", 500)  # and passes of 1 shard
    pieces = cut_extract(source, tmp_path / "pieces", 7)
    assert len(whole["cells"]) > 6
    assert {k: v for k, v in pieces.items() if k != "source_file"} == {
        k: v for k, v in whole.items() if k != "source_file"
    }
    for cell in whole["cells"]:
        one, other = (tmp_path / part / SHARDS_DIR / cell for part in ("whole", "pieces"))
        assert extract_content(one / "extract.osm.pbf") == extract_content(
            other / "extract.osm.pbf"
        )
        assert np.array_equal(np.load(one / CORE_WAYS_FILE), np.load(other / CORE_WAYS_FILE))


def test_a_loop_of_length_0_has_an_owner(tmp_path: Path) -> None:
    nodes = {1: (47.14, 9.52), 2: (47.141, 9.52), 3: (47.141, 9.521)}
    ways = {100: ([1, 2, 3], "residential", False), 101: ([2, 2], "residential", False)}
    extract = write_osm_network(tmp_path / "loop.osm", nodes, ways)
    whole = build_roads(extract, tmp_path / "whole")
    meta = build_sharded_roads(extract, tmp_path / "sharded", 11)
    edges = pd.DataFrame(read_edges(tmp_path / "sharded"))
    assert (edges["length_m"] == 0).any()  # the loop is an edge
    pd.testing.assert_frame_equal(edges, pd.DataFrame(read_edges(tmp_path / "whole")))
    assert meta["edge_count"] == whole["edge_count"]


def test_an_extract_without_roads_of_the_network_is_refused(tmp_path: Path) -> None:
    nodes = {1: (47.14, 9.52), 2: (47.141, 9.52)}
    extract = write_osm_network(tmp_path / "paths.osm", nodes, {7: ([1, 2], "footway", False)})
    with pytest.raises(InputDataError, match="no road of the chosen network"):
        cut_extract(extract, tmp_path / "roads", 9)
    broken = tmp_path / "broken.osm"
    broken.write_text("<osm><node id='1' lat='x'")
    with pytest.raises(InputDataError, match="broken.osm"):
        cut_extract(broken, tmp_path / "roads", 9)
    assert not (tmp_path / "roads" / SHARDS_DIR).exists()
