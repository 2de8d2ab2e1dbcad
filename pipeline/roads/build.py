"""The roads stage: OSM extract -> OSMnx graph, edge and node tables, and ``meta.json``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import geopandas as gpd

from pipeline import __version__
from pipeline.io import file_sha256
from pipeline.locking import DEFAULT_TIMEOUT_S
from pipeline.roads.graph import build_road_graph, edge_table, node_table
from pipeline.roads.highways import highway_filter_for
from pipeline.roads.osm import RoadWays, read_road_ways
from pipeline.roads.store import write_roads

log = logging.getLogger(__name__)


def build_roads(
    osm_path: str | Path,
    roads_dir: str | Path,
    network: str = "drive",
    highway_include: tuple[str, ...] | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Build the road graph of a local OSM extract and write the roads folder.

    Parameters
    ----------
    osm_path
        A ``.osm``, ``.osm.gz``, ``.osm.bz2`` or ``.osm.pbf`` file.
    roads_dir
        Output folder (``edges.parquet``, ``nodes.parquet``, ``meta.json``).
    network
        ``drive``, ``drive_service`` or ``all`` (see :mod:`pipeline.roads.highways`).
    highway_include
        If given, keep exactly these highway classes.
    lock_timeout_s
        How long to wait for another process writing ``roads_dir``.

    Returns
    -------
    dict
        The content of ``meta.json``.

    Raises
    ------
    InputDataError
        If the extract is missing, unreadable, or has no road of the network.
    LockTimeoutError
        If another process held ``roads_dir`` for longer than ``lock_timeout_s``.
    """
    osm_path = Path(osm_path)
    started = datetime.now(UTC)
    ways = read_road_ways(osm_path, highway_filter_for(network, highway_include))
    graph = build_road_graph(ways, str(osm_path))
    edges = edge_table(graph)
    nodes = node_table(graph)
    meta = roads_meta(osm_path, network, highway_include, ways, edges, nodes)
    write_roads(Path(roads_dir), graph, edges, nodes, meta, lock_timeout_s)
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info(
        "roads: %s -> %s: %d nodes, %d edges, %.1f road km in %.1f s",
        osm_path, roads_dir, len(nodes), len(edges), meta["road_km"], seconds,
    )  # fmt: skip
    return meta


def road_length_km(edges: gpd.GeoDataFrame) -> tuple[float, float]:
    """Return ``(road_km, directed_km)``: each road once, and each drivable direction once."""
    directed_km = float(edges["length_m"].sum()) / 1000.0
    road_km = float(edges.drop_duplicates("road_id")["length_m"].sum()) / 1000.0
    return road_km, directed_km


def roads_meta(
    osm_path: Path,
    network: str,
    highway_include: tuple[str, ...] | None,
    ways: RoadWays,
    edges: gpd.GeoDataFrame,
    nodes: gpd.GeoDataFrame,
    source_sha256: str | None = None,
) -> dict[str, Any]:
    """Return the ``meta.json`` of a roads folder built from ``osm_path`` (or a shard of it).

    ``source_sha256``: the extract's sha256 when already known (a shard names its region's).
    """
    road_km, directed_km = road_length_km(edges)
    by_class = {}
    for highway, group in edges.groupby("highway", sort=True):
        class_road_km, class_directed_km = road_length_km(group)
        by_class[str(highway)] = {
            "road_km": round(class_road_km, 6),
            "directed_km": round(class_directed_km, 6),
        }
    figures = {
        "node_count": len(nodes),
        "edge_count": len(edges),
        "road_count": int(edges["road_id"].nunique()),
        "bbox": [round(float(v), 7) for v in edges.total_bounds],
        "road_km": round(road_km, 6),
        "directed_km": round(directed_km, 6),
        "by_highway": by_class,
    }
    return {**source_meta(osm_path, network, highway_include, ways, source_sha256), **figures}


def source_meta(
    osm_path: Path,
    network: str,
    highway_include: tuple[str, ...] | None,
    ways: RoadWays,
    source_sha256: str | None = None,
) -> dict[str, Any]:
    """Return the part of ``meta.json`` that is not computed from the tables: source, versions.

    :func:`roads_meta` adds the tables' figures (counts, bbox, road km, ``by_highway``).
    """
    return {
        "source_file": str(osm_path),
        "source_sha256": source_sha256 or file_sha256(osm_path),
        "osm_timestamp": ways.osm_timestamp,
        "network": network,
        "highway_include": list(highway_include) if highway_include is not None else None,
        "ways_kept": ways.ways_kept,
        "ways_clipped": ways.ways_clipped,
        "missing_node_refs": ways.missing_node_refs,
        "crs": "EPSG:4326",
        "roadcover_version": __version__,
        "osmnx_version": package_version("osmnx"),
    }
