"""The roads folder: what ``roadcover roads build`` writes and how later stages load it.

``ROADS_DIR`` holds ``edges.parquet`` and ``nodes.parquet`` (contract-checked GeoParquet) and
``meta.json``. The OSMnx MultiDiGraph is rebuilt from the two tables on every load
(:func:`osmnx.graph_from_gdfs`, a few hundredths of a second for a city, see docs/benchmarks.md):
nothing read from a roads folder is unpickled, because unpickling a file runs whatever code it
names. A ``graph.pickle`` left by an older roadcover is never opened: loading says it is ignored,
and ``roadcover roads build`` into that folder deletes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.contracts import EDGES, NODES
from pipeline.errors import InputDataError
from pipeline.io import read_table, write_json, write_table
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock

if TYPE_CHECKING:
    import geopandas as gpd
    import networkx as nx

log = logging.getLogger(__name__)

EDGES_FILE = "edges.parquet"
NODES_FILE = "nodes.parquet"
META_FILE = "meta.json"
LEGACY_PICKLE_FILE = "graph.pickle"


def write_roads(
    roads_dir: Path,
    graph: nx.MultiDiGraph | None,
    edges: gpd.GeoDataFrame,
    nodes: gpd.GeoDataFrame,
    meta: dict[str, Any],
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Write the three files of a roads folder, each atomically; ``meta.json`` last.

    The folder is locked (:func:`~pipeline.locking.folder_lock`) while it is written, and its
    ``meta.json`` removed first: until the new one is written the folder is not a roads folder
    (:func:`read_roads_meta` refuses it), so a build killed half-way never leaves one extract's
    tables under another's record. ``graph`` itself is not stored: :func:`load_road_graph`
    rebuilds it from the two tables. A ``graph.pickle`` of an older roadcover is deleted.
    """
    with folder_lock(roads_dir, lock_timeout_s):
        (roads_dir / META_FILE).unlink(missing_ok=True)
        legacy = roads_dir / LEGACY_PICKLE_FILE
        if legacy.exists() or legacy.is_symlink():
            legacy.unlink()
            log.info("%s: deleted (pickled graphs are no longer written or read)", legacy)
        write_table(edges, roads_dir / EDGES_FILE, EDGES)
        write_table(nodes, roads_dir / NODES_FILE, NODES)
        write_json(meta, roads_dir / META_FILE)


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
    """Load the OSMnx road graph of a roads folder, rebuilt from its two tables.

    The graph is built from ``nodes.parquet`` and ``edges.parquet`` with
    :func:`graph_from_tables`; a ``graph.pickle`` in the folder is never opened (a warning
    says so).

    Raises
    ------
    InputDataError
        If the folder was not written by ``roadcover roads build``.
    """
    roads_dir = Path(roads_dir)
    read_roads_meta(roads_dir)  # a clear error for a folder that is not a roads folder
    legacy = roads_dir / LEGACY_PICKLE_FILE
    if legacy.exists() or legacy.is_symlink():
        log.warning(
            "%s: ignored, never unpickled (unpickling runs code); the graph is rebuilt from %s "
            "and %s. Delete the file, or rebuild the folder with `roadcover roads build`",
            legacy, EDGES_FILE, NODES_FILE,
        )  # fmt: skip
    return graph_from_tables(read_nodes(roads_dir), read_edges(roads_dir))


def graph_from_tables(nodes: gpd.GeoDataFrame, edges: gpd.GeoDataFrame) -> nx.MultiDiGraph:
    """Rebuild the OSMnx graph from the ``nodes`` and ``edges`` tables.

    Nodes keep ``x``, ``y`` and ``street_count``; edges are keyed ``(u, v, key)`` and keep
    every column of the table (``length_m`` as OSMnx's ``length``), a missing value being no
    attribute, as in the graph the roads stage built.
    """
    gdf_nodes = nodes.rename(columns={"lon": "x", "lat": "y"}).set_index("node_id")
    gdf_nodes.index.name = "osmid"
    gdf_edges = edges.rename(columns={"length_m": "length"}).set_index(["u", "v", "key"])
    import osmnx as ox  # here: importing it costs about a second, and few callers need it

    from pipeline.roads.graph import GRAPH_CRS  # the tables' CRS, by their contract

    # not edges.crs.to_string(): pyproj would then answer "EPSG:4326" with the CRS read from the
    # file for the rest of the process, changing the PROJJSON that later GeoParquet files carry
    graph_attrs = {"crs": GRAPH_CRS, "simplified": True}
    return ox.graph_from_gdfs(gdf_nodes, gdf_edges, graph_attrs=graph_attrs)
