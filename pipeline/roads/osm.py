"""Read the road ways of a local OSM extract (.osm, .osm.gz, .osm.bz2, .osm.pbf) with pyosmium.

pyosmium (libosmium) reads every OSM file format by its extension and resolves node locations
in C++; Python only sees the ways that carry a ``highway`` tag. Clipped extracts, whose ways
reference nodes outside the file, are handled by cutting each way into the runs of consecutive
nodes that are present: a run of two or more nodes is kept, the rest is counted and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import osmium

from pipeline.errors import InputDataError
from pipeline.roads.highways import HighwayFilter

OSM_SUFFIXES = (".osm", ".osm.gz", ".osm.bz2", ".osm.pbf", ".pbf")


@dataclass
class RoadWays:
    """Road ways read from an extract, in the form OSMnx builds graphs from.

    Attributes
    ----------
    nodes
        OSM node id -> ``{"x": lon, "y": lat}`` for every node a kept way uses.
    paths
        One dict per (piece of a) way: ``osmid``, ``nodes`` and the way's useful tags.
    ways_kept
        Ways that passed the highway filter.
    ways_clipped
        Kept ways that referenced nodes missing from the extract and were cut.
    missing_node_refs
        References to nodes absent from the extract.
    osm_timestamp
        The extract's timestamp from its header, when it has one.
    """

    nodes: dict[int, dict[str, float]] = field(default_factory=dict)
    paths: list[dict[str, Any]] = field(default_factory=list)
    ways_kept: int = 0
    ways_clipped: int = 0
    missing_node_refs: int = 0
    osm_timestamp: str | None = None


def read_road_ways(osm_path: Path, highway_filter: HighwayFilter) -> RoadWays:
    """Read the ways of ``osm_path`` that ``highway_filter`` keeps.

    Raises
    ------
    InputDataError
        If the file is missing, has an unknown extension, or is not a readable OSM file.
    """
    import osmnx as ox  # here: its import (matplotlib, rasterio) costs a second, and the
    # readers of roads folders (coverage, exports) import this module for its checks

    check_osm_path(osm_path)
    useful_tags = tuple(ox.settings.useful_tags_way)
    ways = RoadWays(osm_timestamp=header_timestamp(osm_path))
    processor = (
        osmium.FileProcessor(str(osm_path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.KeyFilter("highway"))
    )
    try:
        for way in processor:
            tags = dict(way.tags)
            if highway_filter.keeps(tags):
                _add_way(ways, way, {k: tags[k] for k in useful_tags if k in tags})
    except RuntimeError as exc:
        raise InputDataError(f"{osm_path}: not a readable OSM file: {exc}") from None
    return ways


def _add_way(ways: RoadWays, way: Any, tags: dict[str, str]) -> None:
    ways.ways_kept += 1
    runs: list[list[int]] = [[]]
    for node in way.nodes:
        location = node.location
        if location.valid():
            ways.nodes[node.ref] = {"x": location.lon, "y": location.lat}
            runs[-1].append(node.ref)
        else:
            ways.missing_node_refs += 1
            if runs[-1]:
                runs.append([])
    pieces = [run for run in runs if len(run) >= 2]
    if len(runs) > 1 or (runs[0] and len(runs[0]) < len(way.nodes)):
        ways.ways_clipped += 1
    for run in pieces:
        ways.paths.append({"osmid": way.id, "nodes": run, **tags})


def check_osm_path(osm_path: Path) -> None:
    """Refuse a missing extract, or one that is not a file, in one line."""
    if not osm_path.exists():
        raise InputDataError(f"{osm_path}: OSM extract not found")
    if not osm_path.is_file():
        raise InputDataError(f"{osm_path}: is not a file; give an OSM extract")
    if not osm_path.name.lower().endswith(OSM_SUFFIXES):
        raise InputDataError(
            f"{osm_path}: unknown OSM file type; name it .osm, .osm.gz, .osm.bz2 or .osm.pbf"
        )
    if osm_path.stat().st_size == 0:
        raise InputDataError(f"{osm_path}: file is empty")


def header_timestamp(osm_path: Path) -> str | None:
    """Return the extract header's replication timestamp or timestamp (None: neither).

    Raises InputDataError, in one line, when the file is not readable as OSM.
    """
    try:
        header = osmium.io.Reader(str(osm_path), osmium.osm.NOTHING).header()
    except RuntimeError as exc:
        raise InputDataError(f"{osm_path}: not a readable OSM file: {exc}") from None
    for key in ("osmosis_replication_timestamp", "timestamp"):
        value = header.get(key)
        if value:
            return str(value)
    return None
