"""Partitions of the coverage state, and what the road network alone decides, cached once.

Every road (both directions of a street, ``road_id``) belongs to one partition: the H3 cell, at
the partition resolution, that holds the midpoint of its canonical edge (lowest ``edge_id``).
Every finest H3 cell belongs to the partition of its parent cell at that resolution. A
partition is named by a key of lowercase letters, digits, ``-`` and ``_`` (``r5-85283473fffffff``
for an H3 parent; a shard's id fits the same pattern), so an update reads and rewrites only the
partitions its batch touches.

The partition resolution is ``coverage.partition_resolution`` in the config, or ``auto``: the
finest resolution (never finer than ``coverage.h3_resolution``) whose partitions hold on
average at least :data:`TARGET_EDGES_PER_PART` edges.

What depends on the network only is computed once per roads version (the sha256 of the roads'
edge table) and kept in ``COVERAGE_DIR/network/``, laid out so that an update reads what the
partitions it touches need and small tables of a row per partition or coarse cell, never a
table of every edge or every cell: every edge's partition, canonical edge
(:func:`~pipeline.coverage.edges.canonical_edges`) and length, a record of
:data:`EDGE_ROW` each, sorted by ``edge_id`` (``edge_index/rows.npy``, read memory-mapped:
looking up a batch's edges reads a few pages of it), with every :data:`FENCE_EVERY`-th id
(``edge_index/fence.npy``): a block of that many rows is one run of bytes holding every field
of its edges, so that an update from object storage reads the blocks of its batch's edges
alone, a byte range each (:func:`edge_rows_by_ranges`); per partition, the H3 runs of its
edges (``runs/<key>.parquet``), its finest cells' road length (``cells/<key>.parquet``), the
polygons of its cells at the partition resolution and finer (``polygons/<key>.parquet``),
its edges' canonical edges (``canonical/<key>.parquet``) and the columns of the edge coverage
table that the roads alone decide (``edges/<key>.parquet``: :data:`FIXED_EDGE_COLUMNS`, with
the geometry encoded as the edge table's GeoParquet holds it); the road length of every
partition (``part_road.parquet``), the polygons of the cells coarser than the partitions
(``coarse_polygons.parquet``), and the road and directed length of every ``highway`` class. An
update reads neither the roads' edge table nor their geometry. On a sharded roads folder the
cache is computed shard by shard (:mod:`pipeline.coverage.network_shards`), the same files
byte for byte, never holding the region's edges.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from h3ronpy import change_resolution

from pipeline.coverage.cells import cell_polygons, edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.network_cache import (
    NETWORK_DIR,
    NETWORK_FORMAT,
    NETWORK_META,
    network_current,
    network_folder,
)
from pipeline.coverage.summary import highway_lengths
from pipeline.errors import ConfigError
from pipeline.io import GEOPARQUET_VERSION, atomic_path, write_frame, write_json

if TYPE_CHECKING:
    import geopandas as gpd

AUTO = "auto"
TARGET_EDGES_PER_PART = 2_000
FIXED_EDGES_DIR = "edges"
EDGE_INDEX_DIR = "edge_index"
EDGE_ROWS_FILE = "rows.npy"
EDGE_ROW = np.dtype(
    [("edge_id", "<i8"), ("part", "<i4"), ("canonical_id", "<i8"), ("flip", "?"),
     ("length_mm", "<i8"), ("length_m", "<f8")]
)  # fmt: skip
"""A record of ``edge_index/rows.npy``: an edge's figures, packed (37 bytes; ``part``: a code)."""
EDGE_INDEX_COLUMNS: tuple[str, ...] = tuple(EDGE_ROW.names or ())
"""The fields of :data:`EDGE_ROW`, in its order."""
FENCE_FILE = "fence.npy"
FENCE_EVERY = 256
"""Every how many sorted edge ids one is kept in ``edge_index/fence.npy`` (its rows' block)."""
REQUEST_BYTES = 16_384
"""What a request of byte ranges costs, in bytes read (measured: about 1 ms of CPU each)."""
NPY_HEADER_BYTES = 512
"""The bytes of an ``.npy`` file's header (version 1.0) the edge index's reader reads first."""
CANONICAL_COLUMNS = ["edge_id", "canonical_id", "flip", "length_mm"]
RUNS_DIR = "runs"
RUN_COLUMNS = ["key", "from_mm", "to_mm", "cell"]
"""The columns of a partition's runs (``runs/<key>.parquet``), sorted by ``key``, ``from_mm``."""
CELLS_DIR = "cells"
CANONICAL_DIR = "canonical"
POLYGONS_DIR = "polygons"
COARSE_POLYGONS = "coarse_polygons.parquet"
PART_ROAD = "part_road.parquet"
HIGHWAYS_FILE = "highways.parquet"
FIXED_EDGE_COLUMNS = ["edge_id", "u", "v", "key", "osmid", "road_id", "highway", "length_m"]
"""The columns of the edge coverage table that are the roads' own, in its order."""


@dataclass(frozen=True)
class Network:
    """What the coverage of one roads version needs to know of its network, from the cache.

    Nothing of the size of the network is read whole: the per-edge figures are looked up in
    arrays sorted by ``edge_id`` and read memory-mapped (a lookup reads a few pages), and the
    per-cell figures and polygons are read for the partitions asked about alone.

    Attributes
    ----------
    folder
        The cache folder (``COVERAGE_DIR/network/<edges sha256>-r<res>-p<partition res>``).
    resolution
        The finest H3 resolution of the coverage.
    partition_resolution
        The H3 resolution of the partitions.
    parts
        The key of every partition of the network (of an edge or a cell), sorted.
    rows
        The rows of the edges an update asks about (:func:`edge_rows_by_ranges`), instead of
        the arrays of every edge; None: the arrays in ``folder``.
    """

    folder: Path
    resolution: int
    partition_resolution: int
    parts: tuple[str, ...]
    rows: EdgeRows | None = field(default=None, compare=False)  # arrays: neither eq nor hash

    def fixed_edges(self, part: str) -> pa.Table:
        """Return the roads' :data:`FIXED_EDGE_COLUMNS`, ``geometry`` (WKB) and ``bbox``.

        Of the edges of partition ``part``, in the roads' edge order, with the GeoParquet
        ``geo`` metadata that geopandas writes for the edge coverage table's geometry.
        """
        return pq.read_table(self.folder / FIXED_EDGES_DIR / f"{part}.parquet")

    def part_keys(self) -> list[str]:
        """Return the key of every partition of the network (of an edge or a cell), sorted."""
        return list(self.parts)

    def highway_lengths(self) -> pd.DataFrame:
        """Return ``road_mm`` and ``directed_mm`` of the roads by ``highway`` (the index)."""
        return pq.read_table(self.folder / HIGHWAYS_FILE).to_pandas().set_index("highway")

    @cached_property
    def _edge_table(self) -> np.ndarray:
        """The edge index's records (:data:`EDGE_ROW`), by ``edge_id``: memory-mapped.

        Of the edges looked up alone when the network has ``rows``.
        """
        if self.rows is not None:
            return self.rows.rows
        return np.asarray(np.load(self.folder / EDGE_INDEX_DIR / EDGE_ROWS_FILE, mmap_mode="r"))

    @cached_property
    def _fence(self) -> np.ndarray:
        """Every :data:`FENCE_EVERY`-th ``edge_id`` of the edge index, memory-mapped."""
        return np.load(self.folder / EDGE_INDEX_DIR / FENCE_FILE, mmap_mode="r")

    def _edge_rows(self, edge_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the index rows of ``edge_ids`` and which of them are edges of the network.

        Raises
        ------
        LookupError
            If the network holds the rows of some edges alone and an id is not one it
            looked up (whether it is an edge of the network is then unknown).
        """
        ids = np.asarray(edge_ids, dtype="int64")
        if self.rows is None:
            return rows_by_fence(self._edge_table, self._fence, ids)
        missed = ids[~np.isin(ids, self.rows.asked)]
        if len(missed):
            raise LookupError(f"edge_id {missed[0]} was not looked up in the network cache")
        return rows_of_sorted_ids(self._edge_table["edge_id"], ids)

    def edge_parts(self, edge_ids: np.ndarray) -> np.ndarray:
        """Return the partition key of each edge of ``edge_ids`` (object array, same order).

        Raises
        ------
        KeyError
            If an id is not an edge of the network.
        """
        at, found = self._edge_rows(edge_ids)
        if not found.all():
            raise KeyError(f"edge_id {np.asarray(edge_ids)[~found][0]} is not an edge of the roads")
        codes = self._edge_table["part"][at]
        return np.asarray(self.parts, dtype=object)[codes] if len(at) else np.empty(0, object)

    def edge_part_series(self, edge_ids: np.ndarray) -> pd.Series:
        """Return the partition key of the distinct ``edge_ids``, indexed by ``edge_id``."""
        ids = pd.unique(np.asarray(edge_ids, dtype="int64"))
        return pd.Series(self.edge_parts(ids), index=pd.Index(ids, name="edge_id"), dtype=object)

    def canonical(self, edge_ids: np.ndarray) -> pd.DataFrame:
        """Return :func:`~pipeline.coverage.edges.canonical_edges` rows of edges and their roads'.

        The rows of the edges of ``edge_ids`` that the network has and of their canonical
        edges (``canonical_id``, ``flip``, ``length_mm``, indexed by ``edge_id``, sorted).
        """
        at, found = self._edge_rows(pd.unique(np.asarray(edge_ids, dtype="int64")))
        table = self._edge_table
        roads, _ = self._edge_rows(table["canonical_id"][at[found]])
        rows = np.asarray(table[np.union1d(at[found], roads)])
        return pd.DataFrame(
            {name: rows[name] for name in ("canonical_id", "flip", "length_mm")},
            index=pd.Index(rows["edge_id"], name="edge_id"),
        )

    def canonical_of(self, parts: set[str]) -> pd.DataFrame:
        """Return :func:`~pipeline.coverage.edges.canonical_edges` rows of partitions' edges.

        Of every edge of partitions ``parts`` (``canonical_id``, ``flip``, ``length_mm``,
        indexed by ``edge_id``); a road's edges are all in its partition.
        """
        tables = [
            pq.read_table(self.folder / CANONICAL_DIR / f"{key}.parquet")
            for key in sorted(parts)
            if key in self.parts
        ]
        if not tables:
            return self.canonical(np.empty(0, dtype="int64"))
        return pa.concat_tables(tables).to_pandas().set_index("edge_id")

    def edge_lengths(self, edge_ids: np.ndarray) -> pd.Series:
        """Return the ``length_m`` of the distinct ``edge_ids`` (by ``edge_id``).

        An id that is not an edge of the network is not in the result.
        """
        ids = pd.unique(np.asarray(edge_ids, dtype="int64"))
        at, found = self._edge_rows(ids)
        return pd.Series(
            np.asarray(self._edge_table["length_m"][at[found]]),
            index=pd.Index(ids[found], name="edge_id"),
            name="length_m",
        )

    def cell_parts(self, cells: np.ndarray) -> np.ndarray:
        """Return the partition key of each finest cell of ``cells`` (object array of str)."""
        level = self.partition_resolution
        return part_key(level, parent_array(np.asarray(cells, dtype="int64"), level))

    def cells_of(self, parts: set[str]) -> pd.DataFrame:
        """Return the finest cells of partitions ``parts`` with their ``road_mm``.

        Indexed by ``cell``: ``road_mm``, the length of the roads' canonical edges in the cell
        (missing where none runs through it), by partition and cell.
        """
        frames = [
            pq.read_table(self.folder / CELLS_DIR / f"{key}.parquet").to_pandas()
            for key in sorted(parts)
            if key in self.parts
        ]
        empty = pd.DataFrame({"cell": pd.Series(dtype="int64"), "road_mm": pd.Series(dtype=float)})
        return pd.concat(frames or [empty], ignore_index=True).set_index("cell")

    def part_road_mm(self) -> pd.Series:
        """Return the ``road_mm`` of the roads in every partition that has some, by its cell.

        The cell is the partition's H3 cell (at the partition resolution); the sum of the
        ``road_mm`` of its finest cells (:meth:`cells_of`).
        """
        table = pq.read_table(self.folder / PART_ROAD)
        return pd.Series(
            table.column("road_mm").to_numpy(),
            index=pd.Index(table.column("cell").to_numpy(), name="cell"),
            name="road_mm",
        )

    def polygons(self, cells: np.ndarray) -> np.ndarray:
        """Return the polygons (shapely) of cells of the network, at any of its resolutions.

        Cells no coarser than the partitions are read from their partitions' files, coarser
        ones from a table of their own. A cell that is not the network's (no edge runs
        through it or its children) is made with :func:`~pipeline.coverage.cells.cell_polygons`.
        """
        cells = np.asarray(cells, dtype="int64")
        level = self.partition_resolution
        fine = cell_resolutions(cells) >= level
        keys = set(part_key(level, parent_array(cells[fine], level))) & set(self.parts)
        tables = [pq.read_table(self.folder / POLYGONS_DIR / f"{k}.parquet") for k in sorted(keys)]
        if not fine.all():
            tables.append(pq.read_table(self.folder / COARSE_POLYGONS))
        table = pa.concat_tables(tables) if tables else None
        known = pd.Index(table.column("cell").to_numpy() if table is not None else [])
        at = known.get_indexer(pd.Index(cells))
        shapes = np.empty(len(at), dtype=object)
        found = at >= 0
        if table is not None:
            wkb = table.column("wkb").take(pa.array(at[found])).to_numpy(zero_copy_only=False)
            shapes[found] = shapely.from_wkb(wkb)
        shapes[~found] = cell_polygons(cells[~found])
        return shapes

    def runs_of(self, parts: set[str]) -> pd.DataFrame:
        """Return the H3 runs (:data:`RUN_COLUMNS`) of the edges of partitions ``parts``.

        By partition (in key order), ``key`` and ``from_mm``.
        """
        keys = [key for key in sorted(parts) if key in self.parts]
        tables = [pq.read_table(self.folder / RUNS_DIR / f"{key}.parquet") for key in keys]
        if not tables:
            return empty_runs()
        return pa.concat_tables(tables).to_pandas()

    def parents(self, cells: np.ndarray, level: int) -> np.ndarray:
        """Return the parents (int64) at ``level`` of finest cells of the network."""
        return parent_array(np.asarray(cells, dtype="int64"), level)


def cell_resolutions(cells: np.ndarray) -> np.ndarray:
    """Return the H3 resolution of int64 H3 cells (bits 52-55 of the index)."""
    return (np.asarray(cells, dtype="int64") >> 52) & 0xF


def part_key(resolution: int, cells: np.ndarray) -> np.ndarray:
    """Return the partition keys of H3 parent cells at ``resolution`` (object array of str).

    Each distinct cell's key is formatted once (a partition holds many rows' cells).
    """
    distinct, at = np.unique(np.asarray(cells, dtype="int64"), return_inverse=True)
    keys = np.array([f"r{resolution}-{int(c):x}" for c in distinct], dtype=object)
    return keys[at.reshape(-1)] if len(keys) else np.empty(0, dtype=object)


def load_network(
    edges_of: Callable[[], gpd.GeoDataFrame],
    edges_sha256: str,
    coverage_dir: Path,
    resolution: int,
    partition_resolution: int | str,
    shards: list[Path] | None = None,
) -> Network:
    """Return the network's cache in ``coverage_dir``, computing it first if it is missing.

    Call it holding the coverage folder's lock. A cache of other roads or resolutions is
    removed when this one is written, and an incomplete one or one of an older format (of
    other files) before.

    Parameters
    ----------
    edges_of
        Returns the roads' edge table (with geometry); called only when the cache is computed.
    edges_sha256
        The sha256 of the roads' edge table, which names the cache.
    coverage_dir
        The coverage folder.
    resolution
        The finest H3 resolution (``coverage.h3_resolution``).
    partition_resolution
        ``coverage.partition_resolution``: a resolution, or ``"auto"``.
    shards
        The shard folders of a sharded region (:func:`~pipeline.roads.shards.shard_dirs`):
        the cache is then computed shard by shard
        (:func:`~pipeline.coverage.network_shards.write_sharded_network`), and ``edges_of``
        is not called.

    Raises
    ------
    ConfigError
        If the partition resolution is finer than ``resolution``.
    """
    if partition_resolution != AUTO and int(partition_resolution) > resolution:
        raise ConfigError(
            f"coverage.partition_resolution is {partition_resolution}, finer than "
            f"coverage.h3_resolution {resolution}: set it to {resolution} or less, or to auto"
        )
    folder = network_folder(coverage_dir, edges_sha256, resolution, partition_resolution)
    if not network_current(coverage_dir, edges_sha256, resolution, partition_resolution):
        shutil.rmtree(folder, ignore_errors=True)  # incomplete, or of an older format
        if shards is not None:
            from pipeline.coverage.network_shards import write_sharded_network  # (imports this)

            write_sharded_network(shards, folder, resolution, partition_resolution)
        else:
            _write_network(edges_of(), folder, resolution, partition_resolution)
        for other in (coverage_dir / NETWORK_DIR).iterdir():
            if other.is_dir() and other.name != folder.name:
                shutil.rmtree(other)
    meta = json.loads((folder / NETWORK_META).read_text(encoding="utf-8"))
    return Network(
        folder, resolution, int(meta["partition_resolution"]), tuple(meta["parts"])
    )  # fmt: skip


def edge_records(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Return the records (:data:`EDGE_ROW`) of the arrays of :data:`EDGE_INDEX_COLUMNS`."""
    table = np.empty(len(columns["edge_id"]), dtype=EDGE_ROW)
    for name in EDGE_INDEX_COLUMNS:
        table[name] = columns[name]
    return table


def write_fence(fence: np.ndarray, folder: Path) -> None:
    """Write ``edge_index/fence.npy``: every :data:`FENCE_EVERY`-th sorted ``edge_id``."""
    with atomic_path(folder / FENCE_FILE) as temp, temp.open("wb") as file:
        np.save(file, np.ascontiguousarray(fence, dtype="int64"), allow_pickle=False)


def rows_by_fence(
    table: np.ndarray, fence: np.ndarray, edge_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the rows of ``edge_ids`` in the edge index and which of them are edges.

    Each id is searched for by bisection in the block of :data:`FENCE_EVERY` rows that may
    hold it, all ids at once: a few ``edge_id`` of a block each (of a memory map: their pages).

    Parameters
    ----------
    table
        The edge index's records (:data:`EDGE_ROW`), sorted by ``edge_id``.
    fence
        Every :data:`FENCE_EVERY`-th ``edge_id`` of ``table``.
    edge_ids
        The ids to look up (int64, any order).
    """
    ids = np.asarray(edge_ids, dtype="int64")
    if not len(table):
        return np.zeros(len(ids), dtype="int64"), np.zeros(len(ids), dtype=bool)
    known = table["edge_id"]
    block = np.searchsorted(fence, ids, side="right") - 1
    low = np.maximum(block, 0) * FENCE_EVERY
    high = np.minimum(low + FENCE_EVERY, len(table))
    while (open_ := low < high).any():  # the first row of the block not below the id
        middle = (low + high) // 2
        below = known[np.minimum(middle, len(table) - 1)] < ids
        low = np.where(open_ & below, middle + 1, low)
        high = np.where(open_ & ~below, middle, high)
    at = np.minimum(low, len(table) - 1)
    return at, known[at] == ids


def blocks_of_ids(fence: np.ndarray, edge_ids: np.ndarray) -> np.ndarray:
    """Return the blocks of the edge index (sorted, distinct) that may hold ``edge_ids``.

    An id below the first of the fence is in none.
    """
    blocks = np.searchsorted(fence, np.asarray(edge_ids, dtype="int64"), side="right") - 1
    return np.unique(blocks[blocks >= 0])


def rows_of_sorted_ids(known: np.ndarray, edge_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return where ``edge_ids`` are in ``known`` (sorted ids) and whether they are there."""
    ids = np.asarray(edge_ids, dtype="int64")
    if not len(known):
        return np.zeros(len(ids), dtype="int64"), np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return at, known[at] == ids


@dataclass(frozen=True)
class EdgeRows:
    """The edge index's rows of some edges (:func:`edge_rows_by_ranges`).

    Attributes
    ----------
    rows
        The records (:data:`EDGE_ROW`) of the ids that are edges, sorted by ``edge_id``.
    asked
        Every id looked up, an edge of the network or not (sorted, distinct).
    """

    rows: np.ndarray
    asked: np.ndarray


ReadRanges = Callable[[str, list[tuple[int, int]]], list[bytes]]
"""Read byte ranges ``[start, stop)`` of a file of the network cache (a path in its folder)."""


@dataclass
class _BlockReader:
    """Reads blocks of ``edge_index/rows.npy`` by byte ranges, each block once.

    Attributes
    ----------
    read
        Reads byte ranges of the cache's files.
    fence
        Every :data:`FENCE_EVERY`-th ``edge_id`` of the file.
    data_start
        Where the file's records start (after its header).
    edges
        The number of records.
    request_bytes
        What a request costs, in bytes read.
    held
        The records of the blocks read so far, sorted by ``edge_id``.
    blocks
        The blocks read so far (sorted).
    """

    read: ReadRanges
    fence: np.ndarray
    data_start: int
    edges: int
    request_bytes: int
    held: np.ndarray = field(default_factory=lambda: np.empty(0, EDGE_ROW))
    blocks: np.ndarray = field(default_factory=lambda: np.empty(0, "int64"))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Return the records of the ``ids`` that are edges, reading the blocks not held yet."""
        missing = np.setdiff1d(blocks_of_ids(self.fence, ids), self.blocks)
        if len(missing):
            self._read_blocks(missing)
        at, found = rows_of_sorted_ids(self.held["edge_id"], ids)
        return self.held[at[found]]

    def _read_blocks(self, blocks: np.ndarray) -> None:
        """Read ``blocks``, a byte range each run of near ones, or the whole file if cheaper."""
        size = EDGE_ROW.itemsize
        spans = coalesced_spans(blocks, FENCE_EVERY * size, self.request_bytes)
        spans = [(low * FENCE_EVERY, min(high * FENCE_EVERY, self.edges)) for low, high in spans]
        span_bytes = sum(high - low for low, high in spans) * size
        if self.edges * size <= span_bytes + len(spans) * self.request_bytes:
            spans, self.held = [(0, self.edges)], self.held[:0]  # one request of every record
        ranges = [(self.data_start + low * size, self.data_start + high * size)
                  for low, high in spans]  # fmt: skip
        chunks = self.read(f"{EDGE_INDEX_DIR}/{EDGE_ROWS_FILE}", ranges)
        held = np.concatenate([self.held, *(np.frombuffer(c, dtype=EDGE_ROW) for c in chunks)])
        self.held = held[np.argsort(held["edge_id"], kind="stable")]
        covered = [np.arange(low // FENCE_EVERY, -(-high // FENCE_EVERY)) for low, high in spans]
        self.blocks = np.union1d(self.blocks, np.concatenate(covered))


def coalesced_spans(
    blocks: np.ndarray, block_bytes: int, request_bytes: int
) -> list[tuple[int, int]]:
    """Return runs ``[first, stop)`` of ``blocks`` (sorted, distinct) to read a request each.

    Blocks are joined into one run when the blocks between them cost fewer bytes than a
    request.
    """
    if not len(blocks):
        return []
    gaps = np.diff(blocks) - 1
    breaks = np.flatnonzero(gaps * block_bytes >= max(request_bytes, 1))
    firsts = np.r_[blocks[0], blocks[breaks + 1]]
    lasts = np.r_[blocks[breaks], blocks[-1]]
    return [(int(first), int(last) + 1) for first, last in zip(firsts, lasts, strict=True)]


def edge_rows_by_ranges(
    read: ReadRanges, fence: np.ndarray, edge_ids: np.ndarray, request_bytes: int = REQUEST_BYTES
) -> EdgeRows:
    """Look up edges and their canonical edges in the edge index by byte ranges of its file.

    Reads the header of ``edge_index/rows.npy``, then the blocks of :data:`FENCE_EVERY`
    records that may hold the ids, a byte range each run of blocks (near ones joined), then
    the blocks of their canonical edges not read yet: a block of 9 KiB an edge at most,
    whatever the size of the network. When the ranges would cost more than the file's bytes
    (a request costing ``request_bytes``), the file is read whole instead, in one request.

    Parameters
    ----------
    read
        Reads byte ranges of the cache's files.
    fence
        ``edge_index/fence.npy``.
    edge_ids
        The ids to look up.
    request_bytes
        What a request costs, in bytes read.
    """
    data_start, edges = _rows_file_header(read)
    blocks = _BlockReader(read, fence, data_start, edges, request_bytes)
    asked = np.unique(np.asarray(edge_ids, dtype="int64"))
    found = blocks.rows_of(asked)
    roads = np.setdiff1d(found["canonical_id"], asked)
    both = np.concatenate([found, blocks.rows_of(roads)])
    return EdgeRows(both[np.argsort(both["edge_id"], kind="stable")], np.union1d(asked, roads))


def _rows_file_header(read: ReadRanges) -> tuple[int, int]:
    """Return where the records of ``edge_index/rows.npy`` start, and how many there are.

    Raises
    ------
    ValueError
        If the file does not hold a one-dimensional array of :data:`EDGE_ROW`.
    """
    (head,) = read(f"{EDGE_INDEX_DIR}/{EDGE_ROWS_FILE}", [(0, NPY_HEADER_BYTES)])
    file = io.BytesIO(head)
    np.lib.format.read_magic(file)
    shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    if dtype != EDGE_ROW or len(shape) != 1:
        raise ValueError(
            f"the edge index of the network cache holds {dtype} of shape {shape}, "
            f"not a row of {EDGE_ROW} an edge: remove the cache folder to compute it again"
        )
    return file.tell(), int(shape[0])


def choose_partition_resolution(midpoint_cells: np.ndarray, resolution: int) -> int:
    """Return the finest resolution with TARGET_EDGES_PER_PART edges a partition or more.

    Never finer than ``resolution``; 0 when no resolution has so many.

    Parameters
    ----------
    midpoint_cells
        The finest cell of every edge's road midpoint, one per edge.
    resolution
        Their resolution.
    """
    for level in range(resolution, 0, -1):
        parts = len(np.unique(parent_array(midpoint_cells, level)))
        if len(midpoint_cells) >= TARGET_EDGES_PER_PART * parts:
            return level
    return 0


def parent_array(cells: np.ndarray, level: int) -> np.ndarray:
    """Parents (int64) of int64 H3 cells at a coarser ``level``, vectorized (h3ronpy)."""
    if not len(cells):
        return np.empty(0, dtype="int64")
    parents = change_resolution(pa.array(np.asarray(cells).astype("uint64")), level)
    return np.asarray(pa.array(parents).to_numpy(zero_copy_only=False)).astype("int64")


def _write_network(
    edges: gpd.GeoDataFrame, folder: Path, resolution: int, partition_resolution: int | str
) -> None:
    runs = edge_cell_runs(edges, resolution)
    canonical = canonical_edges(edges)
    midpoint = midpoint_cells(runs).reindex(canonical["canonical_id"].to_numpy())
    if partition_resolution == AUTO:
        level = choose_partition_resolution(midpoint.to_numpy(), resolution)
    else:
        level = int(partition_resolution)
    edge_part = part_key(level, parent_array(midpoint.to_numpy(), level))
    runs["part"] = pd.Series(edge_part, index=canonical.index).loc[runs["key"]].to_numpy()
    runs = runs.sort_values(["part", "key", "from_mm"], ignore_index=True)
    cells = _network_cells(runs, canonical, resolution, level)
    parts = sorted({*edge_part, *cells["part"]})  # a partition may hold cells alone
    write_part_runs(runs, parts, folder)
    _write_edge_index(canonical, edges["length_m"], edge_part, parts, folder / EDGE_INDEX_DIR)
    _write_cells(cells, resolution, level, folder)
    write_frame(highway_lengths(edges, canonical).reset_index(), folder / HIGHWAYS_FILE)
    fixed = edges[[*FIXED_EDGE_COLUMNS, "geometry"]]
    of_edge = pd.Series(edge_part, index=canonical.index).loc[fixed["edge_id"].to_numpy()]
    rows_of = pd.Series(np.arange(len(fixed))).groupby(of_edge.to_numpy()).indices
    for part in parts:
        rows = fixed.iloc[rows_of.get(part, np.empty(0, dtype="int64"))]
        write_fixed_edges(rows, folder / FIXED_EDGES_DIR / f"{part}.parquet")
    write_network_meta(folder, resolution, level, parts)  # last: the cache is complete


def write_fixed_edges(rows: gpd.GeoDataFrame, path: Path) -> None:
    """Write a partition's :data:`FIXED_EDGE_COLUMNS` and ``geometry`` as GeoParquet."""
    with atomic_path(path) as temp:
        rows.to_parquet(  # as write_table encodes the geometry
            temp, index=False, schema_version=GEOPARQUET_VERSION, write_covering_bbox=True,
            compression="zstd",
        )  # fmt: skip


def empty_runs() -> pd.DataFrame:
    """Return a table of runs (:data:`RUN_COLUMNS`) without rows."""
    return pd.DataFrame({name: np.empty(0, dtype="int64") for name in RUN_COLUMNS})


def write_part_runs(runs: pd.DataFrame, parts: list[str], folder: Path) -> None:
    """Write the runs of each partition of ``parts`` (none for some) to ``runs/<key>.parquet``.

    ``runs``: :data:`RUN_COLUMNS` and the edges' ``part``, sorted by ``part``, ``key``,
    ``from_mm``.
    """
    rows_of = pd.Series(np.arange(len(runs))).groupby(runs["part"].to_numpy()).indices
    for key in parts:
        rows = runs.iloc[rows_of.get(key, np.empty(0, dtype="int64"))]
        write_frame(rows[RUN_COLUMNS].reset_index(drop=True), folder / RUNS_DIR / f"{key}.parquet")


def write_network_meta(folder: Path, resolution: int, level: int, parts: list[str]) -> None:
    """Write the cache's ``network.json``: written last, it says the cache is complete."""
    meta: dict[str, Any] = {
        "resolution": resolution, "partition_resolution": level, "format": NETWORK_FORMAT,
        "parts": parts,
    }  # fmt: skip
    write_json(meta, folder / NETWORK_META)


def _write_edge_index(
    canonical: pd.DataFrame,
    length_m: pd.Series,
    edge_part: np.ndarray,
    parts: list[str],
    folder: Path,
) -> None:
    """Write every edge's record (:data:`EDGE_ROW`), sorted by ``edge_id``, and the fence.

    ``canonical`` (:func:`~pipeline.coverage.edges.canonical_edges`), ``length_m`` and
    ``edge_part`` are in the roads' edge order; ``part`` is stored as the index of the key in
    ``parts``.
    """
    order = np.argsort(canonical.index.to_numpy(), kind="stable")
    code = pd.Index(parts).get_indexer(pd.Index(edge_part)).astype("int32")
    columns = {
        "edge_id": canonical.index.to_numpy(dtype="int64"),
        "part": code,
        "canonical_id": canonical["canonical_id"].to_numpy(dtype="int64"),
        "flip": canonical["flip"].to_numpy(dtype=bool),
        "length_mm": canonical["length_mm"].to_numpy(dtype="int64"),
        "length_m": length_m.to_numpy(dtype="float64"),
    }
    table = edge_records({name: values[order] for name, values in columns.items()})
    with atomic_path(folder / EDGE_ROWS_FILE) as temp, temp.open("wb") as file:
        np.save(file, table, allow_pickle=False)
    write_fence(table["edge_id"][::FENCE_EVERY], folder)
    frame = pd.DataFrame({name: columns[name][order] for name in CANONICAL_COLUMNS})
    keys = np.asarray(parts, dtype=object)[columns["part"][order]]
    for part, rows in frame.groupby(keys, sort=True).indices.items():
        write_frame(
            frame.iloc[rows].reset_index(drop=True),
            folder.parent / CANONICAL_DIR / f"{part}.parquet",
        )


def _write_cells(cells: pd.DataFrame, resolution: int, level: int, folder: Path) -> None:
    """Write each partition's cells and polygons, the partitions' road and coarser polygons.

    ``cells``: :func:`_network_cells`; ``level``: the partition resolution.
    """
    for key, rows in cells.groupby("part", sort=True):
        write_frame(rows[["cell", "road_mm"]], folder / CELLS_DIR / f"{key}.parquet")
        fine = rows[[f"p{r}" for r in range(level, resolution + 1)]].to_numpy(dtype="int64")
        write_frame(polygon_rows(np.unique(fine.ravel())), folder / POLYGONS_DIR / f"{key}.parquet")
    coarse = cells[[f"p{r}" for r in range(level)]].to_numpy(dtype="int64")
    write_frame(polygon_rows(np.unique(coarse.ravel())), folder / COARSE_POLYGONS)
    road = cells[cells["road_mm"].notna()]
    road_mm = road["road_mm"].astype("int64").groupby(road[f"p{level}"].to_numpy()).sum()
    frame = pd.DataFrame({"cell": road_mm.index.to_numpy(dtype="int64"), "road_mm": road_mm})
    write_frame(frame.reset_index(drop=True), folder / PART_ROAD)


def midpoint_cells(runs: pd.DataFrame) -> pd.Series:
    """Return the cell of each edge's midpoint (of its first run for an edge of no length)."""
    length = runs.groupby("key")["to_mm"].transform("max").to_numpy()
    middle = length // 2
    holds = (runs["from_mm"].to_numpy() <= middle) & (runs["to_mm"].to_numpy() > middle)
    first = runs.drop_duplicates("key").set_index("key")["cell"]
    middle_cells = runs[holds].drop_duplicates("key").set_index("key")["cell"]
    return middle_cells.combine_first(first).astype("int64")


def cell_road_mm(runs: pd.DataFrame, canonical: pd.DataFrame) -> pd.DataFrame:
    """Return the cells of ``runs`` (sorted) with the ``road_mm`` of the roads' runs in them.

    ``canonical``: :func:`~pipeline.coverage.edges.canonical_edges` rows of the runs' edges;
    a road's runs are its canonical edge's. ``road_mm`` is NaN where no road runs (float64
    then, else int64).
    """
    is_canonical = canonical["canonical_id"].to_numpy() == canonical.index.to_numpy()
    road_runs = runs[runs["key"].isin(canonical.index[is_canonical])]
    road_mm = (road_runs["to_mm"] - road_runs["from_mm"]).groupby(road_runs["cell"]).sum()
    cells = np.unique(runs["cell"].to_numpy())
    return pd.DataFrame({"cell": cells, "road_mm": road_mm.reindex(cells).to_numpy()})


def _network_cells(
    runs: pd.DataFrame, canonical: pd.DataFrame, resolution: int, part_resolution: int
) -> pd.DataFrame:
    frame = cell_road_mm(runs, canonical)
    cells = frame["cell"].to_numpy()
    for level in range(resolution, -1, -1):
        frame[f"p{level}"] = cells if level == resolution else parent_array(cells, level)
    frame["part"] = part_key(part_resolution, frame[f"p{part_resolution}"].to_numpy())
    return frame


def polygon_rows(cells: np.ndarray) -> pd.DataFrame:
    """Return the WKB polygon of each of ``cells`` (sorted, distinct int64 H3 cells)."""
    return pd.DataFrame({"cell": cells, "wkb": shapely.to_wkb(cell_polygons(cells))})
