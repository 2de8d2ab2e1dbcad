"""Sharded roads: a region's extract cut into H3 cells, each built as its own roads folder.

A sharded roads folder (``roadcover roads build EXTRACT --shard-resolution N -o OUT``) is a
roads folder like any other at its top level (``edges.parquet``, ``nodes.parquet`` and
``meta.json`` of the whole region, edge for edge those of an unsharded build) with
``shards/<h3 cell>/`` beneath: one roads folder per H3 cell at resolution N that has roads.

How a shard is cut and built
    One streaming pass reads the road ways of the extract (the network's highway filter) with
    their node locations. Each way is sampled along its line every quarter of an H3 edge
    length; the cells of the samples are the cells it *touches*. A way is a *core* way of every
    shard within ``rings`` grid steps of a cell it touches (the buffer: at least 1 ring, more
    for a wider ``buffer_m``). Every other road way that shares a node with a core way is
    added too (the *ring* ways), so that each node of a core way has all its roads in the
    shard and OSMnx's simplification ends and joins edges there exactly as in the whole
    extract. The shard's ways, complete, and their nodes are written to
    ``shards/<cell>/extract.osm.pbf`` (pyosmium), built with :func:`build_roads`, and the edges
    of ring ways dropped: every edge left in a shard is an edge of the unsharded graph, with
    the same ``u``, ``v``, ``key`` (so the same global ``edge_id``), geometry and length.

Ownership
    Each edge is owned by exactly one shard: the cell of the midpoint of its canonical line
    (both directions of a road have one owner), or, when that cell has no shard, the cell of
    that line's first point (a node of the edge's way). ``shards/<cell>/owners.parquet`` gives
    every edge of the shard its ``owner_cell`` and ``owned`` flag; the region's tables are the
    union of the owned edges, so road km and every sum over edges count each edge once.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import osmium
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from pipeline.errors import ConfigError, InputDataError
from pipeline.io import atomic_path, file_sha256, write_json
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads.highways import HighwayFilter, highway_filter_for
from pipeline.roads.osm import check_osm_path, header_timestamp
from pipeline.roads.store import META_FILE

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
SHARD_EXTRACT_FILE = "extract.osm.pbf"
OWNERS_FILE = "owners.parquet"
PLAN_FILE = "plan.json"
CORE_WAYS_FILE = "core_ways.npy"
DEFAULT_BUFFER_M = 1000.0
MIN_BUFFER_RINGS = 1
DEFAULT_MAX_JOB_MEM_MB = 2048
BYTES_PER_SEGMENT = 2700
"""Peak bytes of ``roads build`` per way segment (measured ~2.7 KB per edge; edges <= segments)."""
AUTO_RESOLUTIONS = range(3, 12)
"""Resolutions ``auto`` chooses from (res 3: ~60 km cells; res 11: ~25 m)."""
OWNERS_SCHEMA = pa.schema(
    [("edge_id", pa.int64()), ("owner_cell", pa.int64()), ("owned", pa.bool_())]
)


@dataclass
class WayRefs:
    """The road ways of an extract as flat arrays; way ``i``'s refs: ``offsets[i]:offsets[i+1]``.

    Attributes
    ----------
    way_ids
        OSM way ids, in file order.
    offsets
        Where each way's node references start in ``node_ids`` (one more than ways).
    node_ids, lon, lat
        Every node reference, with its location (NaN where the node is not in the extract).
    """

    way_ids: np.ndarray
    offsets: np.ndarray
    node_ids: np.ndarray
    lon: np.ndarray
    lat: np.ndarray

    @property
    def way_of_ref(self) -> np.ndarray:
        """The way index of every node reference."""
        return np.repeat(np.arange(len(self.way_ids)), np.diff(self.offsets))


def read_way_refs(osm_path: Path, highway_filter: HighwayFilter) -> WayRefs:
    """Read the node references and locations of the ways ``highway_filter`` keeps.

    Raises
    ------
    InputDataError
        If the file is missing, has an unknown extension or is not a readable OSM file.
    """
    check_osm_path(osm_path)
    way_ids: list[int] = []
    sizes: list[int] = []
    node_ids: list[int] = []
    coords: list[float] = []
    processor = (
        osmium.FileProcessor(str(osm_path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.KeyFilter("highway"))
    )
    way: Any
    try:
        for way in processor:
            if not highway_filter.keeps(dict(way.tags)):
                continue
            way_ids.append(way.id)
            sizes.append(len(way.nodes))
            for node in way.nodes:
                node_ids.append(node.ref)
                location = node.location
                valid = location.valid()
                coords += (location.lon, location.lat) if valid else (math.nan, math.nan)
    except RuntimeError as exc:
        raise InputDataError(f"{osm_path}: not a readable OSM file: {exc}") from None
    xy = np.array(coords, dtype="float64").reshape(-1, 2)
    return WayRefs(
        way_ids=np.array(way_ids, dtype="int64"),
        offsets=np.r_[0, np.cumsum(np.array(sizes, dtype="int64"))],
        node_ids=np.array(node_ids, dtype="int64"),
        lon=xy[:, 0],
        lat=xy[:, 1],
    )


def way_samples(refs: WayRefs, spacing_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points along every way's line at most ``spacing_m`` apart: ``(way index, lon, lat)``.

    Each segment between two located consecutive nodes of a way is cut into equal steps no
    longer than ``spacing_m`` (haversine length); its nodes are samples too.
    """
    way = refs.way_of_ref
    same_way = way[1:] == way[:-1]
    located = np.isfinite(refs.lon)
    segment = np.flatnonzero(same_way & located[1:] & located[:-1])
    lon0, lat0 = refs.lon[segment], refs.lat[segment]
    lon1, lat1 = refs.lon[segment + 1], refs.lat[segment + 1]
    lengths = _haversine_m(lon0, lat0, lon1, lat1)
    steps = np.maximum(1, np.ceil(lengths / spacing_m).astype("int64"))
    rep = np.repeat(np.arange(len(segment)), steps)
    fraction = (np.arange(len(rep)) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[rep]
    sample_lon = lon0[rep] + fraction * (lon1[rep] - lon0[rep])
    sample_lat = lat0[rep] + fraction * (lat1[rep] - lat0[rep])
    lone = np.flatnonzero(located)  # every located node (segment ends, single nodes)
    return (
        np.r_[way[segment][rep], way[lone]],
        np.r_[sample_lon, refs.lon[lone]],
        np.r_[sample_lat, refs.lat[lone]],
    )


def _haversine_m(lon0: np.ndarray, lat0: np.ndarray, lon1: np.ndarray, lat1: np.ndarray) -> Any:
    phi0, phi1 = np.radians(lat0), np.radians(lat1)
    dphi, dlmb = phi1 - phi0, np.radians(lon1 - lon0)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi0) * np.cos(phi1) * np.sin(dlmb / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def cells_of(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """H3 cells (int64) of points at ``resolution``."""
    cells = [h3.latlng_to_cell(y, x, resolution) for x, y in zip(lon, lat, strict=True)]
    return np.array([h3.str_to_int(c) for c in cells], dtype="uint64").view("int64")


def buffer_rings(resolution: int, buffer_m: float) -> int:
    """Grid steps around a shard's cell that its buffer covers: ``buffer_m``, at least 1.

    One step is the distance between neighbouring cell centres, ``sqrt(3)`` edge lengths.
    """
    step_m = math.sqrt(3) * h3.average_hexagon_edge_length(resolution, "m")
    return max(MIN_BUFFER_RINGS, math.ceil(buffer_m / step_m))


def touched_cells(refs: WayRefs, resolution: int) -> pd.DataFrame:
    """Return unique ``(way, cell)`` pairs: the cells each way's line passes through (sampled).

    Samples are a quarter of an edge length apart, so every point of a way lies in a touched
    cell or a neighbour of one.
    """
    spacing = h3.average_hexagon_edge_length(resolution, "m") / 4
    way, lon, lat = way_samples(refs, spacing)
    pairs = pd.DataFrame({"way": way, "cell": cells_of(lon, lat, resolution)})
    return pairs.drop_duplicates(ignore_index=True)


def core_pairs(touched: pd.DataFrame, rings: int) -> pd.DataFrame:
    """Return unique ``(cell, way)`` pairs: shard ``cell`` holds ``way`` as a core way.

    Only cells that some way touches are shards.
    """
    shards = set(touched["cell"].tolist())
    disks = {
        cell: [c for c in grid_disk(cell, rings) if c in shards]
        for cell in touched["cell"].unique()
    }
    sizes = np.array([len(disks[c]) for c in touched["cell"].tolist()], dtype="int64")
    cells = np.fromiter(
        (c for cell in touched["cell"].tolist() for c in disks[cell]), "int64", int(sizes.sum())
    )
    pairs = pd.DataFrame({"cell": cells, "way": np.repeat(touched["way"].to_numpy(), sizes)})
    return pairs.drop_duplicates(ignore_index=True).sort_values(["cell", "way"], ignore_index=True)


def grid_disk(cell: int, rings: int) -> list[int]:
    """Return the cells within ``rings`` steps of ``cell`` (itself included), as int64."""
    hexes = h3.grid_disk(h3.int_to_str(int(np.int64(cell).view("uint64"))), rings)
    return [int(np.uint64(h3.str_to_int(c)).view("int64")) for c in hexes]


def shard_ways(refs: WayRefs, cores: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each shard cell: its core ways and all its ways (core and ring), as sorted indexes.

    A ring way shares a node with a core way of the shard without being one.
    """
    way_of_ref = refs.way_of_ref
    order = np.argsort(refs.node_ids, kind="stable")
    sorted_nodes, sorted_ways = refs.node_ids[order], way_of_ref[order]
    result = {}
    for _, group in cores.groupby("cell", sort=True):
        core = group["way"].to_numpy()
        nodes = np.unique(refs.node_ids[_ref_indexes(refs.offsets, core)])
        start = np.searchsorted(sorted_nodes, nodes, "left")
        stop = np.searchsorted(sorted_nodes, nodes, "right")
        touching = sorted_ways[_ranges(start, stop)]
        result[int(group["cell"].iloc[0])] = (core, np.union1d(core, touching))
    return result


def _ref_indexes(offsets: np.ndarray, ways: np.ndarray) -> np.ndarray:
    return _ranges(offsets[ways], offsets[ways + 1])


def _ranges(start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start[i], stop[i])``."""
    sizes = stop - start
    return np.repeat(start - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())


def cell_hex(cell: int) -> str:
    """Return the H3 string of an int64 cell."""
    return str(h3.int_to_str(int(np.int64(cell).view("uint64"))))


def cell_int(cell: str) -> int:
    """Return the int64 of an H3 string."""
    return int(np.uint64(h3.str_to_int(cell)).view("int64"))


def auto_resolution(refs: WayRefs, max_job_mem_mb: float, buffer_m: float) -> int | None:
    """Choose the coarsest resolution whose largest shard fits ``max_job_mem_mb``.

    A shard's peak is estimated as ``BYTES_PER_SEGMENT`` per way segment of its core ways
    (a buffered shard's edges are at most its segments). None: the whole extract fits, no
    sharding is needed.

    Raises
    ------
    ConfigError
        If even the finest resolution tried has a shard over the bound.
    """
    budget = max_job_mem_mb * 2**20 / BYTES_PER_SEGMENT
    segments_per_way = np.maximum(np.diff(refs.offsets) - 1, 0)
    if segments_per_way.sum() <= budget:
        return None
    for resolution in AUTO_RESOLUTIONS:
        cores = core_pairs(touched_cells(refs, resolution), buffer_rings(resolution, buffer_m))
        load = pd.Series(segments_per_way[cores["way"].to_numpy()]).groupby(cores["cell"]).sum()
        if load.max() <= budget:
            return resolution
    raise ConfigError(
        f"shards: no resolution up to {AUTO_RESOLUTIONS[-1]} keeps a shard under "
        f"{max_job_mem_mb:g} MB; raise roads.shard_max_job_mem_mb or shrink roads.shard_buffer_m"
    )


def cut_extract(
    osm_path: Path,
    out_dir: Path,
    resolution: int | str,
    network: str = "drive",
    highway_include: tuple[str, ...] | None = None,
    buffer_m: float = DEFAULT_BUFFER_M,
    max_job_mem_mb: float = DEFAULT_MAX_JOB_MEM_MB,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Cut an extract into shard extracts ``out_dir/shards/<cell>/extract.osm.pbf``.

    Writes ``out_dir/shards/plan.json`` (resolution, buffer, cells) and, per shard, the list of
    its core ways (``core_ways.npy``). Returns the plan.

    Parameters
    ----------
    resolution
        H3 resolution 0-15, or ``"auto"`` (:func:`auto_resolution`; 0 when nothing needs
        sharding: one shard covers the extract).

    Raises
    ------
    InputDataError
        If the extract is unreadable or has no road of the network.
    """
    highway_filter = highway_filter_for(network, highway_include)
    refs = read_way_refs(osm_path, highway_filter)
    if not len(refs.way_ids) or not np.isfinite(refs.lon).any():
        raise InputDataError(
            f"{osm_path}: no road of the chosen network in this extract; "
            "check the file or choose a wider --network"
        )
    if resolution == "auto":
        resolution = auto_resolution(refs, max_job_mem_mb, buffer_m) or 0
    resolution = check_resolution(resolution)
    rings = buffer_rings(resolution, buffer_m)
    ways = shard_ways(refs, core_pairs(touched_cells(refs, resolution), rings))
    shards_dir = out_dir / SHARDS_DIR
    with folder_lock(out_dir, lock_timeout_s):
        (out_dir / META_FILE).unlink(missing_ok=True)  # not a roads folder until merged
        shutil.rmtree(shards_dir, ignore_errors=True)  # shards of an earlier cut
    for cell, (core, _) in ways.items():
        folder = shards_dir / cell_hex(cell)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / CORE_WAYS_FILE) as temp, temp.open("wb") as handle:
            np.save(handle, refs.way_ids[core])
    _write_shard_extracts(osm_path, shards_dir, refs, {c: w for c, (_, w) in ways.items()})
    plan = {
        "resolution": resolution,
        "buffer_m": buffer_m,
        "buffer_rings": rings,
        "network": network,
        "highway_include": list(highway_include) if highway_include is not None else None,
        "source_file": str(osm_path),
        "source_sha256": file_sha256(osm_path),
        "osm_timestamp": header_timestamp(osm_path),
        "cells": [cell_hex(c) for c in sorted(ways)],
        **_way_counts(refs),
    }
    write_json(plan, shards_dir / PLAN_FILE)
    log.info("shards: %s -> %d shard(s) at resolution %d", osm_path, len(ways), resolution)
    return plan


def _way_counts(refs: WayRefs) -> dict[str, int]:
    """``ways_kept``, ``ways_clipped``, ``missing_node_refs`` as :func:`read_road_ways` counts them.

    A way is clipped when some but not all of its nodes are missing from the extract.
    """
    missing = ~np.isfinite(refs.lon)
    missing_per_way = np.bincount(refs.way_of_ref, weights=missing, minlength=len(refs.way_ids))
    sizes = np.diff(refs.offsets)
    clipped = (missing_per_way > 0) & (missing_per_way < sizes)
    return {
        "ways_kept": len(refs.way_ids),
        "ways_clipped": int(clipped.sum()),
        "missing_node_refs": int(missing.sum()),
    }


def check_resolution(resolution: int | str) -> int:
    """Return ``resolution`` as an H3 resolution 0-15.

    Raises
    ------
    ConfigError
        If it is not one.
    """
    try:
        value = int(resolution)
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= 15 or str(resolution).strip() != str(value):
        raise ConfigError(
            f"shard resolution {resolution!r}: not an H3 resolution; give an integer 0-15 or auto"
        )
    return value


def _write_shard_extracts(
    osm_path: Path, shards_dir: Path, refs: WayRefs, ways: dict[int, np.ndarray]
) -> None:
    """Write each shard's ways (complete, all tags) and their nodes in one pass over the file."""
    cells = sorted(ways)
    way_pairs = _pairs(ways, cells, lambda w: refs.way_ids[w])
    node_pairs = _pairs(ways, cells, lambda w: refs.node_ids[_ref_indexes(refs.offsets, w)])
    way_lookup, node_lookup = _Lookup(*way_pairs), _Lookup(*node_pairs)
    writers = []
    try:
        for cell in cells:
            path = shards_dir / cell_hex(cell) / SHARD_EXTRACT_FILE
            path.unlink(missing_ok=True)
            writers.append(osmium.SimpleWriter(str(path)))
        processor = osmium.FileProcessor(str(osm_path), osmium.osm.NODE | osmium.osm.WAY)
        entity: Any
        for entity in processor:
            lookup = node_lookup if entity.is_node() else way_lookup
            for index in lookup.shards_of(entity.id):
                if entity.is_node():
                    writers[index].add_node(entity)
                else:
                    writers[index].add_way(entity)
    finally:
        for writer in writers:
            writer.close()


def _pairs(
    ways: dict[int, np.ndarray], cells: list[int], ids_of: Any
) -> tuple[np.ndarray, np.ndarray]:
    ids = [np.unique(ids_of(ways[cell])) for cell in cells]
    shard = np.repeat(np.arange(len(cells)), [len(i) for i in ids])
    return np.concatenate(ids), shard


class _Lookup:
    """Which shards (indexes) an OSM id belongs to, from ``(id, shard)`` pairs."""

    def __init__(self, ids: np.ndarray, shards: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids, self.shards = ids[order], shards[order]

    def shards_of(self, osm_id: int) -> Iterable[int]:
        start = int(np.searchsorted(self.ids, osm_id, "left"))
        stop = start
        while stop < len(self.ids) and self.ids[stop] == osm_id:
            stop += 1
        return self.shards[start:stop].tolist()


def read_plan(roads_dir: str | Path) -> dict[str, Any]:
    """Return the shard plan of a sharded roads folder.

    Raises
    ------
    InputDataError
        If the folder has no plan (it was not cut with ``--shard-resolution``).
    """
    path = Path(roads_dir) / SHARDS_DIR / PLAN_FILE
    try:
        plan: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(
            f"{path}: not found; cut the extract first with "
            "`roadcover roads build EXTRACT --shard-resolution N`"
        ) from None
    return plan


def owner_cells(edges: gpd.GeoDataFrame, resolution: int, shard_cells: set[int]) -> np.ndarray:
    """Return the owner shard cell (int64) of every edge.

    The cell of the midpoint of the edge's canonical line (the line :func:`road_ids` hashes,
    the same for both directions); if that cell is no shard, the cell of the canonical line's
    first point (a node of the edge's way, so a cell the way touches, which is a shard). A
    line of one point (a loop of zero length, as Kubicka's networks have) is its own canonical
    line: rounded to the precision it would be empty.
    """
    geometry = edges.geometry.to_numpy()
    canonical = shapely.normalize(shapely.set_precision(geometry, 1e-7))
    one_point = shapely.is_empty(canonical)
    canonical[one_point] = shapely.normalize(geometry[one_point])
    middle = shapely.line_interpolate_point(canonical, 0.5, normalized=True)
    cells = cells_of(shapely.get_x(middle), shapely.get_y(middle), resolution)
    orphan = ~np.isin(cells, np.fromiter(shard_cells, "int64", len(shard_cells)))
    if orphan.any():
        first = shapely.get_point(canonical[orphan], 0)
        cells[orphan] = cells_of(shapely.get_x(first), shapely.get_y(first), resolution)
    return cells


def write_owners(shard_dir: Path, edges: gpd.GeoDataFrame, owners: np.ndarray, cell: int) -> None:
    """Write ``owners.parquet``: every edge's ``owner_cell`` and whether this shard owns it."""
    table = pa.table(
        {
            "edge_id": pa.array(edges["edge_id"].to_numpy(), pa.int64()),
            "owner_cell": pa.array(owners, pa.int64()),
            "owned": pa.array(owners == cell, pa.bool_()),
        },
        schema=OWNERS_SCHEMA,
    )
    with atomic_path(shard_dir / OWNERS_FILE) as temp:
        pq.write_table(table, temp)


def read_owners(shard_dir: str | Path) -> pd.DataFrame:
    """Return ``owners.parquet`` of a shard: ``edge_id``, ``owner_cell``, ``owned``."""
    return pq.read_table(Path(shard_dir) / OWNERS_FILE, schema=OWNERS_SCHEMA).to_pandas()


def shard_dirs(roads_dir: str | Path) -> list[Path]:
    """Return the shard folders of a sharded roads folder, in the plan's order."""
    plan = read_plan(roads_dir)
    return [Path(roads_dir) / SHARDS_DIR / cell for cell in plan["cells"]]


def is_sharded(roads_dir: str | Path) -> bool:
    """Whether a roads folder was built in shards (its ``meta.json`` lists them)."""
    path = Path(roads_dir) / "meta.json"
    try:
        return "shards" in json.loads(path.read_text())
    except FileNotFoundError:
        return False
