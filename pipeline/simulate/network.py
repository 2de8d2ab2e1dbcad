"""The road network the fleet simulator drives on: routing, speeds and metric geometry.

:class:`DrivingNetwork` holds the largest strongly connected component of a roads folder's
graph (so every origin reaches every destination, one-way streets respected), every edge's
geometry in a local azimuthal-equidistant projection (metres, centred on the graph), a typical
driving speed per edge (from ``maxspeed`` when it parses, else from the road class), and a
small Dijkstra over compact arrays whose results are cached per origin, within a memory
budget (:data:`PATH_CACHE_BYTES`).

It is built from the roads folder's two tables, without the OSMnx graph: the strongly connected
components come from a plain directed graph of the edges' end nodes (networkx), which holds a
fraction of the memory of the attributed MultiDiGraph (at 307k edges the network loaded with a
peak of about 1 GB through the OSMnx graph).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from pipeline.errors import InputDataError
from pipeline.roads.store import read_edges, read_nodes, read_roads_meta
from pipeline.simulate.drive_kernels import route_distances, route_vertices, walk_back
from pipeline.snap.graph_kernels import shortest_path_tree

log = logging.getLogger(__name__)

#: Typical free-flow driving speed (m/s) of each OSM road class, without a ``maxspeed`` tag.
CLASS_SPEED_MPS: dict[str, float] = {
    "motorway": 25.0,
    "trunk": 17.0,
    "primary": 14.0,
    "secondary": 12.5,
    "tertiary": 11.0,
    "unclassified": 8.5,
    "residential": 7.5,
    "living_street": 4.0,
    "road": 8.0,
    "busway": 10.0,
    "service": 5.0,
}
DEFAULT_SPEED_MPS = 6.0
LINK_SPEED_FACTOR = 0.75  # slip roads (``*_link``) are driven slower than their road
MAXSPEED_FACTOR = 0.85  # drivers average below the posted limit
MPH_MPS = 0.44704
_MAXSPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)
_CACHE_SIZE = 4096
#: Memory the cached shortest-path trees of a network may hold: a tree is two arrays of 8 bytes
#: per node (16 B x 153k nodes = 2.5 MB at 307k edges, where 4,096 trees would hold 10 GB), so a
#: large network keeps fewer trees. The cache only saves time: the routes are the same.
PATH_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Route:
    """A drive along the network: its edges in order and their metric polyline.

    Attributes
    ----------
    edges
        Row indexes into the network's edge arrays, in driving order.
    xy
        The route polyline (metres, local projection), consecutive duplicate vertices kept.
    cum_m
        Distance along the polyline at each vertex, from 0.
    edge_start_m
        Distance along the route where each edge starts; ``length_m`` where the route ends
        is appended, so the array has ``len(edges) + 1`` elements.
    step
        The polyline's segments as vectors (``np.diff(xy, axis=0)``), metres.
    step_m
        The segments' lengths, metres (0 between duplicate vertices).
    """

    edges: np.ndarray
    xy: np.ndarray
    cum_m: np.ndarray
    edge_start_m: np.ndarray
    step: np.ndarray
    step_m: np.ndarray

    @property
    def length_m(self) -> float:
        """Length of the route polyline, metres."""
        return float(self.cum_m[-1])


class DrivingNetwork:
    """The drivable part of a roads folder, prepared for routing and driving.

    Parameters
    ----------
    nodes
        The ``nodes`` table (``read_nodes``: ``node_id``, ``lon``, ``lat``).
    edges
        The ``edges`` table (``read_edges``).

    Raises
    ------
    InputDataError
        If the graph has no two nodes connected both ways (nothing to drive).
    """

    def __init__(self, nodes: pd.DataFrame, edges: gpd.GeoDataFrame) -> None:
        component = largest_strong_component(
            nodes["node_id"].to_numpy("int64"),
            edges["u"].to_numpy("int64"),
            edges["v"].to_numpy("int64"),
        )
        if len(component) < 2:
            raise InputDataError(
                "the road graph has no two nodes connected in both directions, so there is "
                "nothing to drive; build the roads folder from a larger extract"
            )
        in_component = edges["u"].isin(component) & edges["v"].isin(component)
        table = edges.loc[in_component].sort_values(["u", "v", "key"], ignore_index=True)
        self.node_ids = np.array(sorted(component), dtype="int64")
        position = nodes.set_index("node_id").loc[self.node_ids]
        lon = position["lon"].to_numpy("float64")
        lat = position["lat"].to_numpy("float64")
        self.lon0 = float(np.round((lon.min() + lon.max()) / 2, 6))
        self.lat0 = float(np.round((lat.min() + lat.max()) / 2, 6))
        crs = f"+proj=aeqd +lat_0={self.lat0} +lon_0={self.lon0} +datum=WGS84 +units=m +no_defs"
        self._forward = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        self._inverse = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        self.node_xy = np.column_stack(self.to_xy(lon, lat))

        index = {int(n): i for i, n in enumerate(self.node_ids)}
        self.edge_u = np.array([index[int(n)] for n in table["u"]], dtype="int64")
        self.edge_v = np.array([index[int(n)] for n in table["v"]], dtype="int64")
        self.edge_id = table["edge_id"].to_numpy("int64")
        self.edge_key = table["key"].to_numpy("int64")
        self.edge_length_m = table["length_m"].to_numpy("float64")
        self.edge_geometry = table.geometry.to_numpy()
        self.edge_speed_mps = edge_speeds_mps(table["highway"], table["maxspeed"])
        coords, owner = shapely.get_coordinates(table.geometry.to_numpy(), return_index=True)
        x, y = self.to_xy(coords[:, 0], coords[:, 1])
        self._coords = np.column_stack([x, y])
        self._coord_start = np.searchsorted(owner, np.arange(len(table) + 1))

        order = np.lexsort((np.arange(len(table)), self.edge_u))
        self._adj_start = np.searchsorted(self.edge_u[order], np.arange(len(self.node_ids) + 1))
        self._adj_edges = order
        self._paths: OrderedDict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.path_cache_size = path_cache_size(len(self.node_ids))
        log.debug(
            "driving network: %d of %d nodes, %d edges in the largest strongly connected "
            "component", len(self.node_ids), len(nodes), len(table),
        )  # fmt: skip

    @classmethod
    def from_roads_dir(cls, roads_dir: str | Path) -> DrivingNetwork:
        """Load the node and edge tables of a roads folder (``roadcover roads build``).

        Raises
        ------
        InputDataError
            If the folder was not written by ``roadcover roads build``, or has nothing
            drivable.
        """
        read_roads_meta(roads_dir)  # a clear error for a folder that is not a roads folder
        return cls(read_nodes(roads_dir), read_edges(roads_dir))

    def to_xy(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project degrees to local metres (x east, y north)."""
        x, y = self._forward.transform(np.asarray(lon), np.asarray(lat))
        return np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")

    def to_lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unproject local metres to degrees (lon, lat)."""
        lon, lat = self._inverse.transform(np.asarray(x), np.asarray(y))
        return np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64")

    def nodes_within(self, node: int, radius_m: float) -> np.ndarray:
        """Return the node indexes within ``radius_m`` (straight line) of node ``node``."""
        distance = np.hypot(*(self.node_xy - self.node_xy[node]).T)
        return np.flatnonzero(distance <= radius_m)

    def shortest_paths(self, origin: int, cutoff_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Dijkstra by edge length from node index ``origin``, up to ``cutoff_m``.

        Returns
        -------
        distance_m
            Route distance to every node (``inf`` beyond the cutoff).
        via_edge
            The edge row by which each node is reached on its shortest path (-1: none).
        """
        cached = self._paths.get((origin, cutoff_m))
        if cached is not None:
            self._paths.move_to_end((origin, cutoff_m))
            return cached
        result = shortest_path_tree(
            origin, cutoff_m, self._adj_start, self._adj_edges, self.edge_v, self.edge_length_m
        )
        self._paths[(origin, cutoff_m)] = result
        if len(self._paths) > self.path_cache_size:
            self._paths.popitem(last=False)
        return result

    def path_edges(self, via_edge: np.ndarray, origin: int, destination: int) -> np.ndarray:
        """Walk ``via_edge`` back from ``destination`` to ``origin``; edges in driving order."""
        edges, reached = walk_back(via_edge, self.edge_u, origin, destination)
        if not reached:
            raise ValueError(f"node index {destination} is not reachable from {origin}")
        return edges

    def route(self, edges: np.ndarray) -> Route:
        """Build the metric polyline of consecutive edges.

        Each edge after the first leaves out its first vertex (the previous edge's last).
        """
        xy, step, edge_end = route_vertices(self._coords, self._coord_start, edges)
        step_m = np.hypot(step[:, 0], step[:, 1])
        cum, edge_start = route_distances(step_m, edge_end)
        return Route(
            edges=edges, xy=xy, cum_m=cum, edge_start_m=edge_start, step=step, step_m=step_m
        )


def largest_strong_component(
    node_ids: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray
) -> set[int]:
    """Return the nodes of the largest strongly connected component of a directed graph.

    The graph is networkx's plain ``DiGraph`` of the nodes (in table order) and the edges' end
    nodes, so the components come in the order that of the OSMnx graph of the same tables
    gives (of two largest, the first found wins, as before).
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(node_ids.tolist())
    graph.add_edges_from(zip(edge_u.tolist(), edge_v.tolist(), strict=True))
    return max(nx.strongly_connected_components(graph), key=len, default=set())


def path_cache_size(nodes: int) -> int:
    """Shortest-path trees a network of ``nodes`` nodes caches: 4,096 within 64 MiB, at least 1."""
    return max(1, min(_CACHE_SIZE, PATH_CACHE_BYTES // (16 * max(1, nodes))))


def edge_speeds_mps(highway: Iterable[object], maxspeed: Iterable[object]) -> np.ndarray:
    """Typical driving speed (m/s) of each edge from its ``highway`` class and ``maxspeed`` tag.

    A parseable ``maxspeed`` (``50``, ``30 mph``, ``50;30`` → the first) gives 85 % of the
    limit; otherwise the class's speed in :data:`CLASS_SPEED_MPS` (links 75 % of their road).
    """
    speeds = []
    for road_class, limit in zip(highway, maxspeed, strict=True):
        posted = parse_maxspeed_mps(limit)
        if posted is not None:
            speeds.append(posted * MAXSPEED_FACTOR)
            continue
        name = str(road_class)
        factor = LINK_SPEED_FACTOR if name.endswith("_link") else 1.0
        speeds.append(CLASS_SPEED_MPS.get(name.removesuffix("_link"), DEFAULT_SPEED_MPS) * factor)
    return np.array(speeds, dtype="float64")


def parse_maxspeed_mps(value: object) -> float | None:
    """Return an OSM ``maxspeed`` value in m/s, or None when it is missing or symbolic."""
    if not isinstance(value, str) or not value.strip():
        return None
    match = _MAXSPEED.match(value.split(";")[0])
    if match is None:
        return None
    number = float(match.group(1))
    if number <= 0:
        return None
    unit = (match.group(2) or "km/h").lower()
    return number * MPH_MPS if unit == "mph" else number / 3.6
