"""The roads folder holds no pickle: the graph comes from Parquet; a planted pickle never runs."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import networkx as nx
import pytest
import shapely

from pipeline.roads import build_roads, load_road_graph
from pipeline.roads.graph import build_road_graph
from pipeline.roads.highways import highway_filter_for
from pipeline.roads.osm import read_road_ways


class _CreatesFileWhenUnpickled:
    """A pickle payload: unpickling it calls ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def plant_pickle(roads_dir: Path, marker: Path) -> None:
    """Make ``roads_dir`` look like an older roads folder with a crafted ``graph.pickle``."""
    (roads_dir / "graph.pickle").write_bytes(pickle.dumps(_CreatesFileWhenUnpickled(marker)))
    meta_path = roads_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["networkx_version"] = package_version("networkx")  # what older folders recorded
    meta_path.write_text(json.dumps(meta))


@pytest.fixture
def tiny_roads(tiny_osm: Path, tmp_path: Path) -> Path:
    roads_dir = tmp_path / "roads"
    build_roads(tiny_osm, roads_dir)
    return roads_dir


def test_the_planted_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload the next tests plant does create its file when unpickled."""
    marker = tmp_path / "control-marker"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickle.dumps(_CreatesFileWhenUnpickled(marker)),
        check=True,
        timeout=60,
    )
    assert marker.exists()


def test_roads_build_writes_no_pickle(tiny_roads: Path) -> None:
    assert sorted(p.name for p in tiny_roads.iterdir()) == [
        ".roadcover.lock", "edges.parquet", "meta.json", "nodes.parquet"
    ]  # fmt: skip


def test_a_planted_graph_pickle_is_never_unpickled(
    tiny_roads: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    plant_pickle(tiny_roads, marker)
    with caplog.at_level(logging.WARNING, logger="pipeline.roads.store"):
        graph = load_road_graph(tiny_roads)
    assert not marker.exists()
    assert graph.number_of_edges() == 10  # the tiny network's ten directed edges
    assert "graph.pickle: ignored, never unpickled" in caplog.text


def test_simulate_on_a_roads_folder_with_a_planted_pickle_runs_no_code(
    tiny_roads: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    plant_pickle(tiny_roads, marker)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "simulate", "--roads", str(tiny_roads),
         "-o", str(tmp_path / "fleet"), "--devices", "1", "--days", "1"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert not marker.exists(), result.stderr
    assert result.returncode == 0, result.stderr
    # the simulator reads the roads' tables, never a graph file
    assert (tmp_path / "fleet" / "simulation.json").is_file()


def test_roads_build_deletes_an_old_graph_pickle(
    tiny_osm: Path, tiny_roads: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    plant_pickle(tiny_roads, marker)
    build_roads(tiny_osm, tiny_roads)
    assert not (tiny_roads / "graph.pickle").exists()
    assert not marker.exists()


def test_graph_from_parquet_equals_the_graph_osmnx_builds(
    shared_data: Path, tmp_path: Path
) -> None:
    """On real Monaco (2012 extract): same nodes, edges, keys and the attributes used downstream."""
    extract = shared_data / "osm" / "monaco-2012.osm.gz"
    built = build_road_graph(read_road_ways(extract, highway_filter_for("drive", None)), "monaco")
    build_roads(extract, tmp_path / "roads")
    loaded = load_road_graph(tmp_path / "roads")

    assert isinstance(loaded, nx.MultiDiGraph)
    assert loaded.graph["crs"] == built.graph["crs"]
    assert set(loaded.nodes) == set(built.nodes)
    assert set(loaded.edges(keys=True)) == set(built.edges(keys=True))
    assert len(built.edges) > 800  # Monaco 2012: 852 drivable edges
    for node, data in built.nodes(data=True):
        got = loaded.nodes[node]
        assert (got["x"], got["y"], got["street_count"]) == (
            data["x"], data["y"], data["street_count"]
        )  # fmt: skip
    for u, v, key, data in built.edges(keys=True, data=True):
        got = loaded.edges[u, v, key]
        assert got["length"] == data["length"]
        assert got["oneway"] == data["oneway"]
        for name in ("osmid", "highway", "reversed"):
            value = data[name]
            assert got[name] == (value[0] if isinstance(value, list) else value)
        expected_line = data.get("geometry") or shapely.LineString(
            [(built.nodes[u]["x"], built.nodes[u]["y"]), (built.nodes[v]["x"], built.nodes[v]["y"])]
        )
        assert shapely.equals_exact(got["geometry"], expected_line, tolerance=0)
    assert nx.number_strongly_connected_components(
        loaded
    ) == nx.number_strongly_connected_components(built)


ASK_PYPROJ = """
import sys, pyproj
if len(sys.argv) > 1:
    from pipeline.roads import load_road_graph
    load_road_graph(sys.argv[1])
print(pyproj.CRS("EPSG:4326").to_json())
"""


def test_loading_the_graph_leaves_what_epsg_4326_means_to_pyproj_alone(tiny_roads: Path) -> None:
    """GeoParquet files written after the load carry the CRS of a process that did not load."""
    command = [sys.executable, "-c", ASK_PYPROJ]
    fresh, after_load = (
        subprocess.run(command + extra, capture_output=True, text=True, check=True, timeout=120)
        for extra in ([], [str(tiny_roads)])
    )
    assert after_load.stdout == fresh.stdout
