"""Sharded roads: a region's extract cut into H3 cells, each built as its own roads folder.

A sharded roads folder (``roadcover roads build EXTRACT --shard-resolution N -o OUT``) is a
roads folder like any other at its top level (``edges.parquet``, ``nodes.parquet`` and
``meta.json`` of the whole region, edge for edge those of an unsharded build) with
``shards/<h3 cell>/`` beneath: one roads folder per H3 cell at resolution N that has roads.

How a shard is cut and built
    One streaming pass reads the road ways of the extract (the network's highway filter)
    with their node locations (:func:`read_chunks`). Each way is sampled along its line
    every quarter of an H3 edge length; the cells of the samples are the cells it
    *touches*, and every touched cell is a shard. A way is a *core* way of every shard
    whose hexagon its line passes within ``buffer_m`` metres of (those it passes through
    included): each segment of its line is measured against the hexagons of the shards near
    its samples (:func:`core_pairs`), so the buffer is ``roads.shard_buffer_m`` whatever
    the resolution. Every other road way that shares a node with a core way is added too
    (the *ring* ways), so that each node of a core way has all its roads in the shard and
    OSMnx's simplification ends and joins edges there exactly as in the whole extract. The
    shard's ways, complete, and their nodes are written to ``shards/<cell>/extract.osm.pbf``
    (pyosmium), built with :func:`build_roads`, and the edges of ring ways dropped: every
    edge left in a shard is an edge of the unsharded graph, with the same ``u``, ``v``,
    ``key`` (so the same global ``edge_id``), geometry and length.

What the cut holds in memory
    The node locations are in a file-backed index (pyosmium's ``sparse_file_array``, 16 bytes
    a node) and the ways, with their node references and locations, in chunk files of
    ``WAY_CHUNK`` ways in a scratch folder (``TMPDIR``; about 40 bytes a node reference).
    Each later step reads the chunks one at a time and keeps only ``(id, shard)`` pairs of
    integers (:class:`Pairs`): the core pairs go to a file beside each chunk, and the
    shards are written in runs of at most ``WRITERS_PER_PASS`` shards and
    ``CORE_WAYS_PER_PASS`` core ways (:meth:`CutPlan.batches`), each run finding its ring
    ways and nodes from the chunks and writing its extracts in one pass over the extract. So
    the cut's memory is bounded by those settings and the largest shard, not by the region
    (apart from 8 bytes a shard and the part of the location index the system keeps in
    memory).

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import h3.api.numpy_int as h3int
import numpy as np
import osmium
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from pipeline.errors import ConfigError, InputDataError
from pipeline.geodesy import cells_of
from pipeline.io import atomic_path, file_sha256, write_json
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock, scratch_folder
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
EARTH_RADIUS_M = 6_371_008.8
RING_GAP_EDGES = 0.5
"""Average edge lengths a grid step is counted as, at least (:func:`search_rings`)."""
ARC_POINTS = 16
"""Points per hexagon edge (great-circle arc) where distances to a cell are measured."""
BOUNDARY_TOLERANCE_M = 1.0
"""Slack on distances to a hexagon, for its arcs drawn as chords (under 1 m at resolution 3)."""
DISTANCE_CHUNK = 500_000
WAY_CHUNK = 200_000
"""Ways read into memory at a time by the cut."""
WRITERS_PER_PASS = 256
"""Shard extracts the cut writes in one pass over the extract (each an open PBF writer)."""
CORE_WAYS_PER_PASS = 2_000_000
"""Core ways (summed over its shards) the cut handles in one pass over the extract."""
WRITER_BUFFER_BYTES = 256 * 1024
LOCATION_INDEX = "sparse_file_array"
"""pyosmium's node location index for the cut: a file of (id, location), 16 bytes a node."""
WAY_REFS_ARRAYS = ("way_ids", "offsets", "node_ids", "lon", "lat")
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

    def save(self, path: Path) -> None:
        """Write the arrays to ``path`` (``.npz``, not compressed)."""
        np.savez(path, **{name: getattr(self, name) for name in WAY_REFS_ARRAYS})

    @classmethod
    def load(cls, path: Path) -> WayRefs:
        """Read arrays written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as arrays:
            return cls(**{name: arrays[name] for name in WAY_REFS_ARRAYS})


def way_chunks(
    osm_path: Path, highway_filter: HighwayFilter, index_file: Path, chunk_ways: int = WAY_CHUNK
) -> Iterator[WayRefs]:
    """Yield the road ways ``highway_filter`` keeps, ``chunk_ways`` at a time, with locations.

    Node locations are kept in a file-backed index (``LOCATION_INDEX`` at ``index_file``: 16
    bytes a node, paged by the operating system), so memory holds one chunk of ways.

    Raises
    ------
    InputDataError
        If the file is missing, has an unknown extension or is not a readable OSM file.
    """
    check_osm_path(osm_path)
    processor = (
        osmium.FileProcessor(str(osm_path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations(f"{LOCATION_INDEX},{index_file}")
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
        .with_filter(osmium.filter.KeyFilter("highway"))
    )
    chunk = _WayLists()
    way: Any
    try:
        for way in processor:
            if highway_filter.keeps(dict(way.tags)):
                chunk.add(way)
            if len(chunk.way_ids) >= chunk_ways:
                yield chunk.refs()
                chunk = _WayLists()
    except RuntimeError as exc:
        raise InputDataError(f"{osm_path}: not a readable OSM file: {exc}") from None
    if chunk.way_ids:
        yield chunk.refs()


@dataclass
class _WayLists:
    """A chunk of ways being read (Python lists), turned into :class:`WayRefs` when full."""

    way_ids: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    node_ids: list[int] = field(default_factory=list)
    coords: list[float] = field(default_factory=list)

    def add(self, way: Any) -> None:
        self.way_ids.append(way.id)
        self.sizes.append(len(way.nodes))
        for node in way.nodes:
            self.node_ids.append(node.ref)
            location = node.location
            valid = location.valid()
            self.coords += (location.lon, location.lat) if valid else (math.nan, math.nan)

    def refs(self) -> WayRefs:
        xy = np.array(self.coords, dtype="float64").reshape(-1, 2)
        return WayRefs(
            way_ids=np.array(self.way_ids, dtype="int64"),
            offsets=np.r_[0, np.cumsum(np.array(self.sizes, dtype="int64"))],
            node_ids=np.array(self.node_ids, dtype="int64"),
            lon=xy[:, 0],
            lat=xy[:, 1],
        )


@dataclass
class Segments:
    """The straight pieces of the ways' lines: two located consecutive nodes of a way each.

    A located node of a way that ends no such piece (its neighbours are missing from the
    extract, or the way has one node) is a piece of length 0. Coordinates in degrees.
    """

    way: np.ndarray
    lon0: np.ndarray
    lat0: np.ndarray
    lon1: np.ndarray
    lat1: np.ndarray

    def __len__(self) -> int:
        return len(self.way)


def way_segments(refs: WayRefs) -> Segments:
    """Return the segments of every way's line, in way order (:class:`Segments`)."""
    way = refs.way_of_ref
    located = np.isfinite(refs.lon)
    start = np.flatnonzero((way[1:] == way[:-1]) & located[1:] & located[:-1])
    ends = np.zeros(len(way), dtype=bool)
    ends[start] = ends[start + 1] = True
    lone = np.flatnonzero(located & ~ends)
    first = np.r_[start, lone]
    last = np.r_[start + 1, lone]
    order = np.argsort(first, kind="stable")
    first, last = first[order], last[order]
    return Segments(way[first], refs.lon[first], refs.lat[first], refs.lon[last], refs.lat[last])


def segment_samples(
    segments: Segments, spacing_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points along every segment at most ``spacing_m`` apart: ``(segment index, lon, lat)``.

    Each segment is cut into equal steps no longer than ``spacing_m`` (haversine length); both
    its ends are samples. Every point of a segment is within ``spacing_m / 2`` of a sample.
    """
    lengths = _haversine_m(segments.lon0, segments.lat0, segments.lon1, segments.lat1)
    steps = np.maximum(1, np.ceil(lengths / spacing_m).astype("int64"))
    rep = np.repeat(np.arange(len(segments)), steps + 1)
    fraction = np.arange(len(rep)) - np.repeat(np.cumsum(steps + 1) - steps - 1, steps + 1)
    fraction = fraction / steps[rep]
    lon = segments.lon0[rep] + fraction * (segments.lon1[rep] - segments.lon0[rep])
    lat = segments.lat0[rep] + fraction * (segments.lat1[rep] - segments.lat0[rep])
    return rep, lon, lat


def _haversine_m(lon0: np.ndarray, lat0: np.ndarray, lon1: np.ndarray, lat1: np.ndarray) -> Any:
    phi0, phi1 = np.radians(lat0), np.radians(lat1)
    dphi, dlmb = phi1 - phi0, np.radians(lon1 - lon0)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi0) * np.cos(phi1) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def sample_spacing_m(resolution: int) -> float:
    """How far apart a way's samples are at ``resolution``: a quarter of an H3 edge length."""
    return float(h3.average_hexagon_edge_length(resolution, "m")) / 4


def search_rings(resolution: int, distance_m: float) -> int:
    """Grid steps around a cell within which every cell closer than ``distance_m`` lies.

    A cell ``k + 1`` steps away is at least ``0.75 k`` average edge lengths from the centre
    cell's hexagon (measured at resolutions 3-12 over the globe); half an edge per step is
    used, a margin of 1.5.
    """
    edge_m = float(h3.average_hexagon_edge_length(resolution, "m"))
    return int(distance_m // (RING_GAP_EDGES * edge_m)) + 1


def cells_within(
    cell: int, distance_m: float, resolution: int, among: np.ndarray | None = None
) -> np.ndarray:
    """Return the cells (int64, sorted) whose hexagon is within ``distance_m`` of ``cell``'s.

    ``cell`` itself is one (if ``among`` has it). Distances are between the cells' boundaries,
    in metres, in the local frame of ``cell`` (:func:`hexagon_distance_m`). ``among``: only
    these cells (sorted int64) are considered.
    """
    rings = search_rings(resolution, distance_m)
    disk = _int64(np.asarray(h3int.grid_disk(int(_uint64(cell)), rings)))
    if among is not None:
        disk = disk[np.isin(disk, among)]
    centre = _hexagon(cell, cell)
    near = [shapely.distance(_hexagon(other, cell), centre) <= distance_m
            for other in disk.tolist()]  # fmt: skip
    return np.sort(disk[np.array(near, dtype=bool)])


def hexagon_distance_m(shapes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Distance in metres from each shape to the hexagon of the cell beside it (0 inside).

    ``shapes`` are shapely geometries in the local frame of their cell (:func:`local_xy`):
    metres east and north of the cell's centre on a sphere of the Earth's mean radius, at the
    scale of the centre's latitude (an equirectangular projection: within 0.3 % of the
    distance on the sphere over a cell and 1 km around it at resolution 5 and finer, where a
    cell's latitudes span less than 0.2 degrees). The hexagon's edges are great-circle arcs
    (as H3 draws them), each drawn with ``ARC_POINTS`` points.
    """
    unique, inverse = np.unique(cells, return_inverse=True)
    hexagons = np.array([_hexagon(c, c) for c in unique.tolist()], dtype=object)
    return np.asarray(shapely.distance(shapes, hexagons[inverse]))


def _hexagon(cell: int, frame: int) -> shapely.Polygon:
    """``cell``'s boundary as a polygon in the local frame of cell ``frame``."""
    boundary = np.radians(np.array(h3int.cell_to_boundary(int(_uint64(cell)))))
    xyz = np.column_stack(
        [np.cos(boundary[:, 0]) * np.cos(boundary[:, 1]),
         np.cos(boundary[:, 0]) * np.sin(boundary[:, 1]), np.sin(boundary[:, 0])]
    )  # fmt: skip
    step = np.arange(ARC_POINTS)[:, None] / ARC_POINTS
    points = np.concatenate(
        [(1 - step) * a + step * b for a, b in zip(xyz, np.roll(xyz, -1, axis=0), strict=True)]
    )  # points on each edge's great circle (normalised chords)
    lat = np.degrees(np.arcsin(points[:, 2] / np.linalg.norm(points, axis=1)))
    lon = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    x, y = local_xy(lon, lat, np.full(len(lon), frame, dtype="int64"))
    return shapely.Polygon(np.column_stack([x, y]))


def local_xy(lon: np.ndarray, lat: np.ndarray, frames: np.ndarray) -> tuple[Any, Any]:
    """Metres east and north of each point's frame cell's centre (equirectangular there)."""
    unique, inverse = np.unique(frames, return_inverse=True)
    centres = np.array([h3int.cell_to_latlng(int(c)) for c in _uint64(unique).tolist()])
    lat0, lon0 = centres[inverse, 0], centres[inverse, 1]
    east = (lon - lon0 + 180.0) % 360.0 - 180.0
    scale = np.radians(EARTH_RADIUS_M)
    return east * scale * np.cos(np.radians(lat0)), (lat - lat0) * scale


def _uint64(cells: Any) -> Any:
    return (
        np.asarray(cells, dtype="int64").view("uint64")
        if np.ndim(cells)
        else np.int64(cells).view("uint64")
    )


def _int64(cells: np.ndarray) -> np.ndarray:
    """H3's uint64 cells as int64."""
    return np.asarray(cells, dtype="uint64").view("int64")


def sampled_cells(refs: WayRefs, resolution: int) -> pd.DataFrame:
    """Return the unique ``(segment, cell)`` pairs of the cells each segment's samples fall in.

    Segments as :func:`way_segments` gives them; samples a quarter of an edge length apart
    (:func:`segment_samples`). The cells the ways' samples fall in are the region's shards.
    """
    segment, lon, lat = segment_samples(way_segments(refs), sample_spacing_m(resolution))
    sampled = pd.DataFrame({"segment": segment, "cell": cells_of(lon, lat, resolution)})
    return sampled.drop_duplicates(ignore_index=True)


def core_pairs(
    refs: WayRefs,
    sampled: pd.DataFrame,
    shards: np.ndarray,
    resolution: int,
    buffer_m: float,
    near: dict[int, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Return the unique ``(way, cell)`` pairs of ``refs``: shard ``cell`` holds ``way`` as core.

    A way is a core way of every shard (of ``shards``, sorted int64) whose hexagon its line
    passes within ``buffer_m`` of (``BOUNDARY_TOLERANCE_M`` more, for the drawing of the
    hexagon), those it passes through included. Each segment is measured
    (:func:`hexagon_distance_m`) against the shards within ``buffer_m`` plus half a sample
    spacing of the cells its samples fall in (``sampled``, :func:`sampled_cells`;
    :func:`cells_within`), since every point of a segment is that close to one of its
    samples. ``way`` is the way's index in ``refs``. ``near`` caches :func:`cells_within`
    per sampled cell from chunk to chunk.
    """
    near = {} if near is None else near
    reach = buffer_m + sample_spacing_m(resolution) / 2
    for cell in sampled["cell"].unique().tolist():
        if cell not in near:
            near[cell] = cells_within(cell, reach, resolution, among=shards)
    sizes = np.array([len(near[c]) for c in sampled["cell"].tolist()], dtype="int64")
    candidates = pd.DataFrame(
        {"segment": np.repeat(sampled["segment"].to_numpy(), sizes),
         "cell": np.concatenate([np.empty(0, "int64")] + [near[c] for c in sampled["cell"]])}
    ).drop_duplicates(ignore_index=True)  # fmt: skip
    segments = way_segments(refs)
    near_enough = np.zeros(len(candidates), dtype=bool)
    for start in range(0, len(candidates), DISTANCE_CHUNK):
        part = candidates.iloc[start : start + DISTANCE_CHUNK]
        distance = segment_distance_m(segments, part["segment"].to_numpy(), part["cell"].to_numpy())
        near_enough[start : start + len(part)] = distance <= buffer_m + BOUNDARY_TOLERANCE_M
    kept = candidates[near_enough]
    pairs = pd.DataFrame(
        {"way": segments.way[kept["segment"].to_numpy()], "cell": kept["cell"].to_numpy("int64")}
    )
    return pairs.drop_duplicates(ignore_index=True)


def segment_distance_m(segments: Segments, index: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Distance in metres from each segment ``index[i]`` to the hexagon of ``cells[i]``."""
    x0, y0 = local_xy(segments.lon0[index], segments.lat0[index], cells)
    x1, y1 = local_xy(segments.lon1[index], segments.lat1[index], cells)
    lines = shapely.linestrings(np.stack([x0, y0, x1, y1], axis=1).reshape(-1, 2, 2))
    return hexagon_distance_m(lines, cells)


def grid_disk(cell: int, rings: int) -> list[int]:
    """Return the cells within ``rings`` steps of ``cell`` (itself included), as int64."""
    hexes = h3.grid_disk(h3.int_to_str(int(np.int64(cell).view("uint64"))), rings)
    return [int(np.uint64(h3.str_to_int(c)).view("int64")) for c in hexes]


@dataclass
class CutPlan:
    """What the cut finds on its way: the shards, their core ways (on disk), the way counts.

    Attributes
    ----------
    chunks
        The files of the ways' chunks (:meth:`WayRefs.save`), in file order; beside each, its
        core pairs (:func:`core_file`).
    shards
        The shard cells (int64), sorted.
    core_ways
        How many core ways each shard has.
    core_segments
        How many way segments each shard's core ways have.
    counts
        ``ways_kept``, ``ways_clipped``, ``missing_node_refs`` (:func:`_way_counts`).
    """

    chunks: list[Path]
    shards: np.ndarray
    core_ways: np.ndarray
    core_segments: np.ndarray
    counts: dict[str, int]

    def core(self, first: int, stop: int) -> Pairs:
        """Return ``(way_id, shard)`` for the core ways of shards ``first`` to ``stop - 1``."""
        ids, shard = [], []
        for path in self.chunks:
            with np.load(core_file(path), allow_pickle=False) as pairs:
                keep = (pairs["shard"] >= first) & (pairs["shard"] < stop)
                ids.append(pairs["ids"][keep])
                shard.append(pairs["shard"][keep])
        return Pairs.of(ids, shard)

    def batches(self) -> list[tuple[int, int]]:
        """Split the shards into runs ``(first, stop)`` written in one pass each.

        A run has at most ``WRITERS_PER_PASS`` shards and ``CORE_WAYS_PER_PASS`` core ways
        (or one shard, however large).
        """
        runs, first, ways = [], 0, 0
        for shard, count in enumerate(self.core_ways.tolist()):
            full = shard - first == WRITERS_PER_PASS or ways + count > CORE_WAYS_PER_PASS
            if shard > first and full:
                runs.append((first, shard))
                first, ways = shard, 0
            ways += count
        return [*runs, (first, len(self.shards))]


@dataclass
class Pairs:
    """``(id, shard)`` pairs as two arrays, sorted by id then shard, each pair once."""

    ids: np.ndarray
    shard: np.ndarray

    @classmethod
    def of(cls, ids: list[np.ndarray], shard: list[np.ndarray]) -> Pairs:
        """Return the unique pairs of the concatenated arrays, sorted."""
        all_ids = np.concatenate(ids or [np.empty(0, "int64")]).astype("int64")
        all_shards = np.concatenate(shard or [np.empty(0, "int32")]).astype("int32")
        order = np.lexsort((all_shards, all_ids))
        all_ids, all_shards = all_ids[order], all_shards[order]
        first = np.r_[True, (np.diff(all_ids) != 0) | (np.diff(all_shards) != 0)]
        return cls(all_ids[first], all_shards[first])

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(position in ids, row)`` of every pair whose id is one of ``ids``."""
        start = np.searchsorted(self.ids, ids, "left")
        stop = np.searchsorted(self.ids, ids, "right")
        return np.repeat(np.arange(len(ids)), stop - start), _ranges(start, stop)


def read_chunks(
    osm_path: Path, highway_filter: HighwayFilter, scratch: Path
) -> tuple[list[Path], dict[str, int]]:
    """Stream the road ways into chunk files under ``scratch``; return them and the way counts.

    Raises
    ------
    InputDataError
        If the extract is unreadable or has no road of the network.
    """
    chunks, counts = [], {"ways_kept": 0, "ways_clipped": 0, "missing_node_refs": 0, "located": 0}
    ways = way_chunks(osm_path, highway_filter, scratch / "locations", WAY_CHUNK)
    for number, refs in enumerate(ways):
        path = scratch / f"ways-{number:05d}.npz"
        refs.save(path)
        chunks.append(path)
        for key, value in _way_counts(refs).items():
            counts[key] += value
        counts["located"] += int(np.isfinite(refs.lon).sum())
    if not counts["ways_kept"] or not counts.pop("located"):
        raise InputDataError(
            f"{osm_path}: no road of the chosen network in this extract; "
            "check the file or choose a wider --network"
        )
    return chunks, counts


def plan_cores(
    chunks: list[Path], counts: dict[str, int], resolution: int, buffer_m: float
) -> CutPlan:
    """Find the shards and every way's core shards, one chunk of ways in memory at a time.

    Two passes over the chunks: the cells of the samples (the shards; each chunk's kept in
    a file beside it), then the core pairs (:func:`core_pairs`), written beside each chunk
    (:func:`core_file`: way ids and shard indexes).
    """
    cells = []
    for path in chunks:
        sampled = sampled_cells(WayRefs.load(path), resolution)
        sampled.to_parquet(_sampled_file(path, resolution))
        cells.append(sampled["cell"].unique())
    shards = np.unique(np.concatenate(cells))
    near: dict[int, np.ndarray] = {}
    core_ways = np.zeros(len(shards), dtype="int64")
    core_segments = np.zeros(len(shards), dtype="int64")
    for path in chunks:
        refs = WayRefs.load(path)
        sampled = pd.read_parquet(_sampled_file(path, resolution))
        pairs = core_pairs(refs, sampled, shards, resolution, buffer_m, near)
        way = pairs["way"].to_numpy()
        shard = np.searchsorted(shards, pairs["cell"].to_numpy()).astype("int32")
        np.savez(core_file(path), ids=refs.way_ids[way], shard=shard)
        core_ways += np.bincount(shard, minlength=len(shards))
        segments = np.maximum(np.diff(refs.offsets) - 1, 0)[way]
        core_segments += np.bincount(shard, segments, len(shards)).astype("int64")
    return CutPlan(chunks, shards, core_ways, core_segments, counts)


def _sampled_file(chunk: Path, resolution: int) -> Path:
    return chunk.with_name(f"{chunk.stem}-cells-r{resolution}.parquet")


def core_file(chunk: Path) -> Path:
    """Return the file of a chunk's core pairs (``ids``, ``shard``) at the latest resolution."""
    return chunk.with_name(f"{chunk.stem}-core.npz")


def shard_ways(plan: CutPlan, core: Pairs) -> Pairs:
    """Return ``(way_id, shard)`` for every way of ``core``'s shards: core ways and ring ways.

    A ring way shares a node with a core way of the shard without being one. Two passes over
    the chunks: the nodes of the core ways with their shards, then the ways of those nodes.
    """
    core_nodes = shard_nodes(plan, core)
    ids, shard = [], []
    for path in plan.chunks:
        refs = WayRefs.load(path)
        ref, row = core_nodes.rows_of(refs.node_ids)
        ids.append(refs.way_ids[refs.way_of_ref[ref]])
        shard.append(core_nodes.shard[row])
    return Pairs.of(ids, shard)


def shard_nodes(plan: CutPlan, ways: Pairs) -> Pairs:
    """Return ``(node_id, shard)`` for every node of the ways of ``ways`` (one pass)."""
    ids, shard = [], []
    for path in plan.chunks:
        refs = WayRefs.load(path)
        way, row = ways.rows_of(refs.way_ids)
        ids.append(refs.node_ids[_ref_indexes(refs.offsets, way)])
        shard.append(np.repeat(ways.shard[row], np.diff(refs.offsets)[way]))
    return Pairs.of(ids, shard)


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


def auto_resolution(
    chunks: list[Path], counts: dict[str, int], max_job_mem_mb: float, buffer_m: float
) -> tuple[int | None, CutPlan | None]:
    """Choose the coarsest resolution whose largest shard fits ``max_job_mem_mb``.

    A shard's peak is estimated as ``BYTES_PER_SEGMENT`` per way segment of its core ways
    (a buffered shard's edges are at most its segments). None: the whole extract fits, no
    sharding is needed. Returns the resolution and its plan (:func:`plan_cores`).

    Raises
    ------
    ConfigError
        If even the finest resolution tried has a shard over the bound.
    """
    budget = max_job_mem_mb * 2**20 / BYTES_PER_SEGMENT
    offsets = (WayRefs.load(path).offsets for path in chunks)
    if sum(int(np.maximum(np.diff(o) - 1, 0).sum()) for o in offsets) <= budget:
        return None, None
    for resolution in AUTO_RESOLUTIONS:
        plan = plan_cores(chunks, counts, resolution, buffer_m)
        if plan.core_segments.max() <= budget:
            return resolution, plan
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

    The extract is read once with its node locations in a file-backed index, and its road
    ways kept in chunk files in a scratch folder; each step then holds one chunk of ways and
    the ``(id, shard)`` pairs it has found (:class:`Pairs`), and the extracts are written in
    passes over the extract of at most ``WRITERS_PER_PASS`` shards each.

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
    with scratch_folder("roadcover-cut-") as scratch:
        chunks, counts = read_chunks(osm_path, highway_filter, scratch)
        plan = None
        if resolution == "auto":
            chosen, plan = auto_resolution(chunks, counts, max_job_mem_mb, buffer_m)
            resolution = chosen or 0
        resolution = check_resolution(resolution)
        plan = plan or plan_cores(chunks, counts, resolution, buffer_m)
        shards_dir = out_dir / SHARDS_DIR
        with folder_lock(out_dir, lock_timeout_s):
            (out_dir / META_FILE).unlink(missing_ok=True)  # not a roads folder until merged
            shutil.rmtree(shards_dir, ignore_errors=True)  # shards of an earlier cut
        for first, stop in plan.batches():
            _write_shards(osm_path, shards_dir, plan, first, stop)
    cells = [cell_hex(c) for c in plan.shards.tolist()]
    summary = {
        "resolution": resolution,
        "buffer_m": buffer_m,
        "network": network,
        "highway_include": list(highway_include) if highway_include is not None else None,
        "source_file": str(osm_path),
        "source_sha256": file_sha256(osm_path),
        "osm_timestamp": header_timestamp(osm_path),
        "cells": cells,
        **plan.counts,
    }
    write_json(summary, shards_dir / PLAN_FILE)
    log.info("shards: %s -> %d shard(s) at resolution %d", osm_path, len(cells), resolution)
    return summary


def _write_shards(osm_path: Path, shards_dir: Path, plan: CutPlan, first: int, stop: int) -> None:
    """Write the core ways and extracts of shards ``first`` to ``stop - 1`` (one pass)."""
    core = plan.core(first, stop)
    order = np.argsort(core.shard, kind="stable")
    by_shard = core.ids[order]  # each shard's ways by id
    bounds = np.searchsorted(core.shard[order], np.arange(first, stop + 1))
    paths = []
    for index, cell in enumerate(plan.shards[first:stop].tolist()):
        folder = shards_dir / cell_hex(cell)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / CORE_WAYS_FILE) as temp, temp.open("wb") as handle:
            np.save(handle, by_shard[bounds[index] : bounds[index + 1]])
        paths.append(folder / SHARD_EXTRACT_FILE)
    ways = shard_ways(plan, core)
    _write_pass(osm_path, paths, first, ways, shard_nodes(plan, ways))


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


def _write_pass(osm_path: Path, paths: list[Path], first: int, ways: Pairs, nodes: Pairs) -> None:
    """Write the nodes and ways of shards ``first ..`` (``paths``) in one pass over the file."""
    writers = []
    try:
        for path in paths:
            path.unlink(missing_ok=True)
            writers.append(osmium.SimpleWriter(str(path), WRITER_BUFFER_BYTES))
        node_filter = osmium.filter.IdFilter(np.unique(nodes.ids))
        node_filter.enable_for(osmium.osm.NODE)
        way_filter = osmium.filter.IdFilter(np.unique(ways.ids))
        way_filter.enable_for(osmium.osm.WAY)
        processor = (
            osmium.FileProcessor(str(osm_path), osmium.osm.NODE | osmium.osm.WAY)
            .with_filter(node_filter)
            .with_filter(way_filter)
        )
        entity: Any
        for entity in processor:
            if entity.is_node():
                for shard in _shards_of(nodes, entity.id):
                    writers[shard - first].add_node(entity)
            else:
                for shard in _shards_of(ways, entity.id):
                    writers[shard - first].add_way(entity)
    finally:
        for writer in writers:
            writer.close()


def _shards_of(pairs: Pairs, osm_id: int) -> list[int]:
    """Return the shards of one id (``pairs`` sorted by id)."""
    start = int(np.searchsorted(pairs.ids, osm_id, "left"))
    stop = start
    while stop < len(pairs.ids) and pairs.ids[stop] == osm_id:
        stop += 1
    return pairs.shard[start:stop].tolist()


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
    line that rounds to nothing (a loop of length 0 at a node) is its own canonical line.
    """
    lines = edges.geometry.to_numpy()
    canonical = shapely.normalize(shapely.set_precision(lines, 1e-7))
    canonical = np.where(shapely.is_empty(canonical), lines, canonical)
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
