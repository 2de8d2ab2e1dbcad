"""benchmarks/scale_network.py: N shifted copies of a network, checked by other readers.

The replicas are read back with pyosmium and pyrosm (not with the generator's code), their way
lengths measured with pyproj's geodesic, and one is built by the roads stage.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import osmium
import pyproj
import pytest

from pipeline.roads import build_roads

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "scale_network.py"
GEOD = pyproj.Geod(ellps="WGS84")
SMALL_KUBICKA = ("mapmatch", "kubicka-dev", "00000005", "network.osm.bz2")  # 1,579 edges


def replicate(
    source: Path, factor: int, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the generator's command line."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(source), "--factor", str(factor), "-o", str(out), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def read_osm(path: Path) -> tuple[dict[int, tuple[float, float]], dict[int, list[int]]]:
    """Node id -> (lon, lat) and way id -> node ids, read with pyosmium."""
    nodes: dict[int, tuple[float, float]] = {}
    ways: dict[int, list[int]] = {}
    node_ids, way_ids = Counter[int](), Counter[int]()
    for obj in osmium.FileProcessor(str(path)):
        if obj.is_node():
            nodes[obj.id] = (obj.location.lon, obj.location.lat)
            node_ids[obj.id] += 1
        elif obj.is_way():
            ways[obj.id] = [n.ref for n in obj.nodes]
            way_ids[obj.id] += 1
    assert max(node_ids.values()) == 1 and max(way_ids.values()) == 1  # no id written twice
    return nodes, ways


def way_metres(nodes: dict[int, tuple[float, float]], refs: list[int]) -> float:
    """Geodesic length (WGS84) of the way through its nodes present in the file."""
    present = [nodes[r] for r in refs if r in nodes]
    if len(present) < 2:
        return 0.0
    lons, lats = zip(*present, strict=True)
    return float(GEOD.line_length(lons, lats))


@pytest.fixture(scope="module")
def tiny_x3(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "tiny-x3.osm.pbf"
    result = replicate(tiny_osm, 3, out, "--gap-deg", "0.5")
    assert result.returncode == 0, result.stderr
    return out


def test_copies_have_the_source_ways_moved_east_with_new_ids(tiny_osm: Path, tiny_x3: Path):
    src_nodes, src_ways = read_osm(tiny_osm)
    nodes, ways = read_osm(tiny_x3)
    assert len(nodes) == 3 * len(src_nodes) and len(ways) == 3 * len(src_ways)
    stride = max(*src_nodes, *src_ways)  # 107: nodes 1..11, ways 100..107 in the tiny file
    lons = [lon for lon, _ in src_nodes.values()]
    shift = max(lons) - min(lons) + 0.5
    for k in range(3):
        for node_id, (lon, lat) in src_nodes.items():
            assert nodes[node_id + k * stride] == pytest.approx((lon + k * shift, lat), abs=1e-9)
        for way_id, refs in src_ways.items():
            assert ways[way_id + k * stride] == [r + k * stride for r in refs]


def test_each_copy_has_exactly_the_source_way_lengths(tiny_osm: Path, tiny_x3: Path):
    src_nodes, src_ways = read_osm(tiny_osm)
    nodes, ways = read_osm(tiny_x3)
    stride = max(*src_nodes, *src_ways)
    for k in range(3):
        for way_id, refs in src_ways.items():
            copy = ways[way_id + k * stride]
            assert way_metres(nodes, copy) == pytest.approx(way_metres(src_nodes, refs), abs=1e-6)
    source_m = sum(way_metres(src_nodes, r) for r in src_ways.values())
    assert sum(way_metres(nodes, r) for r in ways.values()) == pytest.approx(3 * source_m, 1e-12)


@pytest.mark.shared_data
def test_a_2x_kubicka_replica_is_twice_the_network_for_pyrosm_and_the_roads_stage(
    shared_data: Path, tmp_path: Path
):
    import pyrosm

    source = shared_data.joinpath(*SMALL_KUBICKA)
    x1, x2 = tmp_path / "x1.osm.pbf", tmp_path / "x2.osm.pbf"
    for factor, out in ((1, x1), (2, x2)):
        assert replicate(source, factor, out).returncode == 0
    one = pyrosm.OSM(str(x1)).get_network("all")
    two = pyrosm.OSM(str(x2)).get_network("all")
    assert len(two) == 2 * len(one) == 2 * 1_579  # one two-node way per arc
    assert two["length"].sum() == pytest.approx(2 * one["length"].sum(), rel=1e-9)
    meta_one = build_roads(x1, tmp_path / "roads-x1")
    meta_two = build_roads(x2, tmp_path / "roads-x2")
    assert meta_two["edge_count"] == 2 * meta_one["edge_count"]
    assert meta_two["node_count"] == 2 * meta_one["node_count"]
    assert meta_two["road_km"] == pytest.approx(2 * meta_one["road_km"], abs=2e-6)


def test_copies_that_would_pass_180_degrees_are_refused_in_one_line(tiny_osm: Path, tmp_path: Path):
    result = replicate(tiny_osm, 200, tmp_path / "x200.osm.pbf", "--gap-deg", "1")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "--factor 200" in result.stderr and "180 degrees" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_missing_source_is_one_line(tmp_path: Path):
    result = replicate(tmp_path / "nope.osm.pbf", 2, tmp_path / "x2.osm.pbf")
    assert result.returncode == 1
    missing = tmp_path / "nope.osm.pbf"
    assert result.stderr.strip() == f"scale_network: error: {missing}: OSM extract not found"
