"""The roads folder: what ``roadcover roads build`` writes and how later stages load it.

``ROADS_DIR`` holds ``edges.parquet`` and ``nodes.parquet`` (contract-checked GeoParquet),
``graph.pickle`` (the OSMnx MultiDiGraph, pickled: it loads many times faster than GraphML, see
docs/benchmarks.md) and ``meta.json``. The pickle is only trusted when it was written by the
same networkx version; otherwise the graph is rebuilt from the two tables.
"""

from __future__ import annotations

import json
import pickle
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from pipeline.contracts import EDGES, NODES
from pipeline.errors import InputDataError
from pipeline.io import atomic_path, read_table, write_json, write_table

if TYPE_CHECKING:
    import networkx as nx

EDGES_FILE = "edges.parquet"
NODES_FILE = "nodes.parquet"
GRAPH_FILE = "graph.pickle"
META_FILE = "meta.json"


def write_roads(
    roads_dir: Path,
    graph: nx.MultiDiGraph,
    edges: gpd.GeoDataFrame,
    nodes: gpd.GeoDataFrame,
    meta: dict[str, Any],
) -> None:
    """Write the four files of a roads folder, each atomically; ``meta.json`` last."""
    roads_dir.mkdir(parents=True, exist_ok=True)
    write_table(edges, roads_dir / EDGES_FILE, EDGES)
    write_table(nodes, roads_dir / NODES_FILE, NODES)
    with atomic_path(roads_dir / GRAPH_FILE) as temp, temp.open("wb") as handle:
        pickle.dump(graph, handle, protocol=pickle.HIGHEST_PROTOCOL)
    write_json({**meta, "networkx_version": package_version("networkx")}, roads_dir / META_FILE)


def read_roads_meta(roads_dir: str | Path) -> dict[str, Any]:
    """Return ``meta.json`` of a roads folder.

    Raises
    ------
    InputDataError
        If the folder was not written by ``roadcover roads build``.
    """
    path = Path(roads_dir) / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(
            f"{path}: not found; build the roads folder first with `roadcover roads build`"
        ) from None
    return meta


def read_edges(roads_dir: str | Path) -> gpd.GeoDataFrame:
    """Return the contract-checked ``edges`` table of a roads folder."""
    return read_table(Path(roads_dir) / EDGES_FILE, EDGES)


def read_nodes(roads_dir: str | Path) -> gpd.GeoDataFrame:
    """Return the contract-checked ``nodes`` table of a roads folder."""
    return read_table(Path(roads_dir) / NODES_FILE, NODES)


def load_road_graph(roads_dir: str | Path) -> nx.MultiDiGraph:
    """Load the OSMnx road graph of a roads folder.

    The pickle is used when it was written with this networkx version; otherwise the graph is
    rebuilt from ``nodes.parquet`` and ``edges.parquet`` with :func:`osmnx.graph_from_gdfs`.
    """
    roads_dir = Path(roads_dir)
    meta = read_roads_meta(roads_dir)
    graph_path = roads_dir / GRAPH_FILE
    if meta.get("networkx_version") == package_version("networkx") and graph_path.exists():
        with graph_path.open("rb") as handle:
            graph: nx.MultiDiGraph = pickle.load(handle)  # written by write_roads only
        return graph
    return graph_from_tables(read_nodes(roads_dir), read_edges(roads_dir))


def graph_from_tables(nodes: gpd.GeoDataFrame, edges: gpd.GeoDataFrame) -> nx.MultiDiGraph:
    """Rebuild the OSMnx graph from the ``nodes`` and ``edges`` tables."""
    gdf_nodes = nodes.rename(columns={"lon": "x", "lat": "y"}).set_index("node_id")
    gdf_nodes.index.name = "osmid"
    gdf_edges = edges.rename(columns={"length_m": "length"}).set_index(["u", "v", "key"])
    import osmnx as ox  # here: importing it costs about a second, and few callers need it

    return ox.graph_from_gdfs(gdf_nodes, gdf_edges, graph_attrs={"crs": str(edges.crs)})
