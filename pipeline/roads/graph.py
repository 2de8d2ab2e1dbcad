"""Build the OSMnx road graph of an extract and turn it into the edge and node tables.

The graph is an OSMnx ``MultiDiGraph`` built by OSMnx's own path and one-way logic
(``oneway``, ``-1``, roundabouts), then topologically simplified with OSMnx, keeping OSM way
boundaries (``edge_attrs_differ=["osmid"]``) so that each edge belongs to exactly one way.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version as package_version

import geopandas as gpd
import networkx as nx
import numpy as np
import osmnx as ox
import osmnx.graph
import pandas as pd
import shapely

from pipeline.errors import InputDataError
from pipeline.roads.osm import RoadWays

GRAPH_CRS = "epsg:4326"


def build_road_graph(ways: RoadWays, source: str) -> nx.MultiDiGraph:
    """Build the simplified OSMnx graph of ``ways``.

    Parameters
    ----------
    ways
        Road ways read by :func:`pipeline.roads.osm.read_road_ways`.
    source
        The extract's path, for error messages.

    Raises
    ------
    InputDataError
        If no way in the extract is a road of the chosen network.
    """
    if not ways.paths:
        raise InputDataError(
            f"{source}: no road of the chosen network in this extract "
            f"({ways.ways_kept} matching way(s), none with two nodes inside the file); "
            "check the file or choose a wider --network"
        )
    graph = nx.MultiDiGraph(crs=GRAPH_CRS, created_with=f"OSMnx {package_version('osmnx')}")
    used = {node for path in ways.paths for node in path["nodes"]}
    graph.add_nodes_from((node, ways.nodes[node]) for node in sorted(used))
    osmnx.graph._add_paths(graph, ways.paths, bidirectional=False)
    graph = ox.distance.add_edge_lengths(graph)
    graph = ox.simplify_graph(graph, edge_attrs_differ=["osmid"])
    nx.set_node_attributes(graph, ox.stats.count_streets_per_node(graph), name="street_count")
    return graph


def edge_table(graph: nx.MultiDiGraph) -> gpd.GeoDataFrame:
    """Return the ``edges`` table (see docs/data-contracts.md) of a road graph."""
    raw = ox.graph_to_gdfs(graph, nodes=False, edges=True, fill_edge_geometry=True).reset_index()
    edges = gpd.GeoDataFrame(
        {
            "edge_id": stable_ids(raw["u"], raw["v"], raw["key"]),
            "u": raw["u"].astype("int64"),
            "v": raw["v"].astype("int64"),
            "key": raw["key"].astype("int64"),
            "osmid": raw["osmid"].map(_first).astype("int64"),
            "highway": raw["highway"].map(_first).astype(str),
            "oneway": raw["oneway"].astype(bool),
            "reversed": raw["reversed"].map(_first).astype(bool),
            "name": _optional_text(raw, "name"),
            "maxspeed": _optional_text(raw, "maxspeed"),
            "length_m": raw["length"].astype("float64"),
        },
        geometry=raw.geometry.to_numpy(),
        crs=GRAPH_CRS,
    )
    edges["road_id"] = road_ids(edges)
    return edges.sort_values(["u", "v", "key"], ignore_index=True)


def node_table(graph: nx.MultiDiGraph) -> gpd.GeoDataFrame:
    """Return the ``nodes`` table of a road graph."""
    raw = ox.graph_to_gdfs(graph, nodes=True, edges=False).reset_index()
    return gpd.GeoDataFrame(
        {
            "node_id": raw["osmid"].astype("int64"),
            "lon": raw["x"].astype("float64"),
            "lat": raw["y"].astype("float64"),
            "street_count": raw["street_count"].astype("int64"),
        },
        geometry=raw.geometry.to_numpy(),
        crs=GRAPH_CRS,
    ).sort_values("node_id", ignore_index=True)


def stable_ids(*columns: pd.Series) -> np.ndarray:
    """Hash aligned columns row by row into non-negative int64 ids (blake2b, 63 bits)."""
    rows = zip(*(column.astype(str) for column in columns), strict=True)
    return np.fromiter(
        (_hash63("|".join(row).encode()) for row in rows), dtype="int64", count=len(columns[0])
    )


def road_ids(edges: gpd.GeoDataFrame) -> np.ndarray:
    """Give both directions of the same physical road one id.

    Two edges are the same road when they join the same pair of nodes along the same
    geometry, whatever their direction; a two-way street is one road, two one-way carriageways
    with distinct geometries are two.
    """
    low = np.minimum(edges["u"].to_numpy(), edges["v"].to_numpy())
    high = np.maximum(edges["u"].to_numpy(), edges["v"].to_numpy())
    canonical = shapely.normalize(shapely.set_precision(edges.geometry.to_numpy(), 1e-7))
    shapes = pd.Series(shapely.to_wkb(canonical, hex=True))
    return stable_ids(pd.Series(low), pd.Series(high), shapes)


def _hash63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def _first(value: object) -> object:
    return value[0] if isinstance(value, list) else value


def _optional_text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series([None] * len(frame), dtype="object")
    texts = [None if _is_missing(v) else str(v) for v in frame[column].map(_first)]
    return pd.Series(texts, dtype="object")


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
