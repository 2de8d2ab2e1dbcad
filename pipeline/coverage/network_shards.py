"""The network cache of a sharded region, computed shard by shard in bounded memory.

The cache (:mod:`pipeline.coverage.partitions`) of a sharded roads folder
(:mod:`pipeline.roads.shards`) holds what the cache of its region's edge table holds, file for
file, but is computed without ever holding more than a shard's edges and small tables of a row
per shard, partition or coarse cell:

1. shard by shard, the edges the shard owns get their runs, canonical edge (computed on the
   shard's edges, buffer included: both directions of a road have one owner) and the cell of
   their road's midpoint, written to scratch files sorted by that cell (the runs and edges) or
   by cell (the shard's share of each cell's road length), with the edge figures sorted by
   ``edge_id``;
2. the partition resolution is chosen from the shards' distinct midpoint cells (``auto``: the
   distinct parents are counted shard by shard, and the count stops once it is too many);
3. group by group of partitions (those of one H3 cell at the shards' resolution, or each
   partition when partitions are coarser than shards), in the order of their keys, the rows of
   the group are read from the scratch files of the shards that have some (an edge whose
   midpoint lies across a shard's border belongs to a partition of the next shard) and the
   partitions' files written (their runs among them);
4. the edge index's records sorted by ``edge_id`` are merged from the shards' sorted arrays,
   range of ids by range, read and appended to the ``.npy`` file with file reads and writes
   (memory maps would keep the pages of every array resident), every so many ids kept for the
   fence.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.partitions import (
    AUTO,
    CANONICAL_COLUMNS,
    CANONICAL_DIR,
    CELLS_DIR,
    COARSE_POLYGONS,
    EDGE_INDEX_COLUMNS,
    EDGE_INDEX_DIR,
    EDGE_ROW,
    EDGE_ROWS_FILE,
    FENCE_EVERY,
    FIXED_EDGE_COLUMNS,
    FIXED_EDGES_DIR,
    PART_ROAD,
    POLYGONS_DIR,
    TARGET_EDGES_PER_PART,
    cell_road_mm,
    edge_records,
    midpoint_cells,
    parent_array,
    part_key,
    polygon_rows,
    write_fence,
    write_fixed_edges,
    write_network_meta,
    write_part_runs,
)
from pipeline.coverage.summary import highway_lengths
from pipeline.io import atomic_path, write_frame
from pipeline.roads.shards import read_owners
from pipeline.roads.store import read_edges, read_roads_meta

SCRATCH_ROW_GROUP = 4_096
"""Rows per row group of the scratch files: a group of partitions reads few rows beside its own."""
INDEX_SAMPLE_EVERY = 1_024
"""Every how many sorted edge ids of a shard one is kept to cut the ids into ranges."""
INDEX_RANGE_ROWS = 500_000
"""Edges per range of ids merged at a time into the edge index."""
SCRATCH_INDEX = ("edge_id", "mid", "canonical_id", "flip", "length_mm", "length_m")
INDEX_DTYPES = {name: EDGE_ROW[name] for name in EDGE_INDEX_COLUMNS}
"""The dtypes of :data:`~pipeline.coverage.partitions.EDGE_INDEX_COLUMNS`, as the cache has them."""


@dataclass(frozen=True)
class SpilledShard:
    """A shard's scratch files (``<stem>-<name>``) and what the region sums of it.

    Attributes
    ----------
    stem
        The scratch files' common path prefix.
    edges
        The edges the shard owns.
    highways
        :func:`~pipeline.coverage.summary.highway_lengths` of its owned edges.
    crs
        The CRS of their geometry (kept apart: the scratch files hold it as WKB).
    """

    stem: Path
    edges: int
    highways: pd.DataFrame
    crs: Any

    def path(self, name: str) -> Path:
        """Return the path of scratch file ``name``."""
        return self.stem.with_name(f"{self.stem.name}-{name}")

    def rows_in(self, name: str, column: str, low: int, high: int) -> pd.DataFrame:
        """Return the rows of scratch table ``name`` whose ``column`` is in ``[low, high]``."""
        filters = [(column, ">=", low), (column, "<=", high)]
        return pq.read_table(self.path(name), filters=filters).to_pandas()


def write_sharded_network(
    shards: list[Path], folder: Path, resolution: int, partition_resolution: int | str
) -> None:
    """Write the network cache of a sharded region in ``folder`` (``meta`` last).

    Parameters
    ----------
    shards
        The region's shard folders (:func:`~pipeline.roads.shards.shard_dirs`), one or more.
    folder
        The cache folder.
    resolution
        The finest H3 resolution of the coverage.
    partition_resolution
        A resolution, or ``"auto"``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=folder.parent))
    try:
        spilled = [spill_shard(path, resolution, scratch / str(n)) for n, path in enumerate(shards)]
        level = _partition_level(spilled, resolution, partition_resolution)
        group_level = min(level, int(read_roads_meta(shards[0])["shard"]["resolution"]))
        parts, groups_of = _parts_and_groups(spilled, level, group_level)
        road_dtype = "float64" if _a_cell_has_no_road(spilled) else "int64"  # as an unsharded cache
        part_road = _write_groups(spilled, groups_of, parts, (level, group_level, resolution),
                                  road_dtype, folder)  # fmt: skip
        write_frame(part_road, folder / PART_ROAD)
        coarse = [parent_array(parts, r) for r in range(level)]
        write_frame(polygon_rows(np.unique(np.concatenate([np.empty(0, "int64"), *coarse]))),
                    folder / COARSE_POLYGONS)  # fmt: skip
        _merge_edge_index(spilled, level, parts, folder / EDGE_INDEX_DIR)
        highways = pd.concat([shard.highways for shard in spilled])
        write_frame(highways.groupby(level=0, sort=True).sum().reset_index(),
                    folder / "highways.parquet")  # fmt: skip
        write_network_meta(folder, resolution, level, list(part_key(level, parts)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def spill_shard(shard: Path, resolution: int, stem: Path) -> SpilledShard:
    """Write the scratch files of the edges ``shard`` owns; return what the region sums of it."""
    edges = read_edges(shard)
    owned = read_owners(shard).set_index("edge_id")["owned"]
    mine = edges[owned.reindex(edges["edge_id"].to_numpy(), fill_value=False).to_numpy()]
    canonical = canonical_edges(edges).loc[mine["edge_id"].to_numpy()]
    needed = edges["edge_id"].isin(np.union1d(mine["edge_id"], canonical["canonical_id"]))
    runs = edge_cell_runs(edges[needed.to_numpy()], resolution)
    mid = midpoint_cells(runs).reindex(canonical["canonical_id"].to_numpy()).to_numpy("int64")
    runs = runs[runs["key"].isin(mine["edge_id"])]
    runs["mid"] = pd.Series(mid, index=canonical.index).loc[runs["key"].to_numpy()].to_numpy()
    shard_files = SpilledShard(stem, len(mine), highway_lengths(mine, canonical), edges.crs)
    order = np.argsort(runs["mid"].to_numpy(), kind="stable")
    _write_scratch(runs.iloc[order], shard_files.path("runs.parquet"))
    shares = cell_road_mm(runs, canonical).astype({"road_mm": "float64"})  # NaN: no road
    _write_scratch(shares, shard_files.path("cells.parquet"))
    rows = pd.DataFrame(mine[FIXED_EDGE_COLUMNS]).assign(
        geometry=shapely.to_wkb(mine.geometry.to_numpy()), mid=mid,
        **{name: canonical[name].to_numpy() for name in CANONICAL_COLUMNS[1:]},
    )  # fmt: skip
    _write_scratch(rows.iloc[np.argsort(mid, kind="stable")], shard_files.path("edges.parquet"))
    by_id = np.argsort(canonical.index.to_numpy(), kind="stable")
    index = {"edge_id": canonical.index.to_numpy(), "mid": mid,
             "length_m": mine["length_m"].to_numpy("float64"),
             **{name: canonical[name].to_numpy() for name in CANONICAL_COLUMNS[1:]}}  # fmt: skip
    for name in SCRATCH_INDEX:
        np.save(shard_files.path(f"{name}.npy"), np.ascontiguousarray(index[name][by_id]))
    np.save(shard_files.path("mids.npy"), np.unique(mid))
    return shard_files


def _write_scratch(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=SCRATCH_ROW_GROUP, compression="lz4")


def _partition_level(
    spilled: list[SpilledShard], resolution: int, partition_resolution: int | str
) -> int:
    """Return the partition resolution: as asked, or ``auto``'s choice.

    ``auto`` chooses as :func:`~pipeline.coverage.partitions.choose_partition_resolution` does
    from every edge's midpoint cell: the finest level with at most ``edges //
    TARGET_EDGES_PER_PART`` distinct parents, counted shard by shard (at most that many and a
    shard's are held).
    """
    if partition_resolution != AUTO:
        return int(partition_resolution)
    most = sum(shard.edges for shard in spilled) // TARGET_EDGES_PER_PART
    for level in range(resolution, 0, -1):
        seen = np.empty(0, dtype="int64")
        for shard in spilled:
            seen = np.union1d(seen, parent_array(np.load(shard.path("mids.npy")), level))
            if len(seen) > most:
                break
        else:
            return level
    return 0


def _parts_and_groups(
    spilled: list[SpilledShard], level: int, group_level: int
) -> tuple[np.ndarray, dict[int, list[SpilledShard]]]:
    """Return every partition's cell (sorted) and the shards with rows in each group's cell.

    A partition is the parent at ``level`` of a cell the roads run through; a group, the
    parent at ``group_level`` of partitions.
    """
    parts = np.empty(0, dtype="int64")
    groups_of: dict[int, list[SpilledShard]] = {}
    for shard in spilled:
        cells = pq.read_table(shard.path("cells.parquet"), columns=["cell"])["cell"].to_numpy()
        parts = np.union1d(parts, parent_array(cells, level))
        mids = np.load(shard.path("mids.npy"))
        for group in np.unique(parent_array(np.concatenate([cells, mids]), group_level)):
            groups_of.setdefault(int(group), []).append(shard)
    return parts, groups_of


def _a_cell_has_no_road(spilled: list[SpilledShard]) -> bool:
    """Whether a cell of the region has runs of no road's canonical edge (its road_mm NaN).

    A cell has none when it has none in every shard that has runs in it: the cells without
    in some shard (few: reverse edges grazing a cell) are looked up in the other shards.
    """
    candidates = np.empty(0, dtype="int64")
    for shard in spilled:
        cells, road_mm = _cell_shares_of(shard)
        candidates = np.union1d(candidates, cells[np.isnan(road_mm)])
    for shard in spilled:
        if not len(candidates):
            break
        cells, road_mm = _cell_shares_of(shard)
        candidates = np.setdiff1d(candidates, cells[~np.isnan(road_mm)])
    return bool(len(candidates))


def _cell_shares_of(shard: SpilledShard) -> tuple[np.ndarray, np.ndarray]:
    """Return the cells of a shard's scratch table and its share of their road (NaN: none)."""
    table = pq.read_table(shard.path("cells.parquet"))
    return table["cell"].to_numpy(), table["road_mm"].to_numpy()


def descendant_range(cell: int, level: int, resolution: int) -> tuple[int, int]:
    """Return the lowest and highest H3 index of the descendants at ``resolution`` of ``cell``.

    ``cell`` is at ``level``; its descendants are the cells of its digits followed by digits 0
    to 6, so every cell at ``resolution`` between the two is a descendant.
    """
    at_resolution = (int(cell) & ~(0xF << 52)) | (resolution << 52)
    digits = range(level + 1, resolution + 1)
    mask = sum(7 << (3 * (15 - digit)) for digit in digits)
    sixes = sum(6 << (3 * (15 - digit)) for digit in digits)
    return at_resolution & ~mask, (at_resolution & ~mask) | sixes


def _write_groups(
    spilled: list[SpilledShard],
    groups_of: dict[int, list[SpilledShard]],
    parts: np.ndarray,
    levels: tuple[int, int, int],
    road_dtype: str,
    folder: Path,
) -> pd.DataFrame:
    """Write the partitions' files (their runs too); return the partitions' road length.

    ``levels``: the resolutions of the partitions, their groups and the finest cells;
    ``road_dtype``: that of the cells' ``road_mm`` (float64 where a cell may have none).
    """
    level, group_level, resolution = levels
    road_rows = []
    for group, shards in sorted(groups_of.items()):
        low, high = descendant_range(group, group_level, resolution)
        runs = _rows_of(shards, "runs.parquet", "mid", low, high)
        cells = _rows_of(shards, "cells.parquet", "cell", low, high)
        edges = _rows_of(shards, "edges.parquet", "mid", low, high)
        in_group = parts[parent_array(parts, group_level) == group]
        write_part_runs(_sorted_runs(runs, level), list(part_key(level, in_group)), folder)
        road_rows += _write_part_cells(cells, road_dtype, in_group, levels, folder)
        geometry = gpd.GeoSeries.from_wkb(edges["geometry"], crs=shards[0].crs)
        _write_part_edges(gpd.GeoDataFrame(edges.assign(geometry=geometry)), in_group, level,
                          folder)  # fmt: skip
    return pd.DataFrame(road_rows, columns=["cell", "road_mm"]).astype("int64")


def _rows_of(
    shards: list[SpilledShard], name: str, column: str, low: int, high: int
) -> pd.DataFrame:
    """Return the rows of scratch table ``name`` of ``shards`` whose ``column`` is in range."""
    frames = [shard.rows_in(name, column, low, high) for shard in shards]
    return pd.concat(frames, ignore_index=True)


def _sorted_runs(runs: pd.DataFrame, level: int) -> pd.DataFrame:
    """Return the runs with their partition's key, sorted by ``part``, ``key``, ``from_mm``."""
    parents = parent_array(runs["mid"].to_numpy(), level)
    order = np.lexsort((runs["from_mm"].to_numpy(), runs["key"].to_numpy(), parents))
    runs = runs.iloc[order].drop(columns="mid").reset_index(drop=True)
    runs["part"] = _keys(level, parents[order])
    return runs


def _keys(level: int, cells: np.ndarray) -> np.ndarray:
    """Return the partition keys of parent cells (object array), formatting each distinct once."""
    distinct, inverse = np.unique(cells, return_inverse=True)
    return part_key(level, distinct)[inverse] if len(cells) else np.empty(0, dtype=object)


def _write_part_cells(
    shares: pd.DataFrame,
    road_dtype: str,
    parts: np.ndarray,
    levels: tuple[int, int, int],
    folder: Path,
) -> list[tuple[int, int]]:
    """Write the cells and polygons of ``parts``; return their (cell, road_mm) with road.

    ``shares``: the shards' shares of the cells' road; summed, as ``road_dtype``.
    """
    level, _, resolution = levels
    road_mm = shares.groupby("cell", sort=True)["road_mm"].sum(min_count=1)
    cells = road_mm.astype(np.dtype(road_dtype)).reset_index()
    of_part = parent_array(cells["cell"].to_numpy(), level)
    road = []
    for part in parts:
        rows = cells[of_part == part]
        key = part_key(level, np.array([part]))[0]
        write_frame(rows, folder / CELLS_DIR / f"{key}.parquet")
        fine = rows["cell"].to_numpy()
        ancestors = [fine, *(parent_array(fine, r) for r in range(level, resolution))]
        write_frame(polygon_rows(np.unique(np.concatenate(ancestors))),
                    folder / POLYGONS_DIR / f"{key}.parquet")  # fmt: skip
        if rows["road_mm"].notna().any():
            road.append((int(part), int(rows["road_mm"].dropna().astype("int64").sum())))
    return road


def _write_part_edges(edges: gpd.GeoDataFrame, parts: np.ndarray, level: int, folder: Path) -> None:
    """Write the fixed edge columns of ``parts`` (in ``u, v, key`` order) and canonical edges."""
    of_part = parent_array(edges["mid"].to_numpy(), level)
    for part in parts:
        rows = edges[of_part == part]
        key = part_key(level, np.array([part]))[0]
        if len(rows):
            canonical = rows[CANONICAL_COLUMNS].sort_values("edge_id")
            write_frame(canonical.reset_index(drop=True), folder / CANONICAL_DIR / f"{key}.parquet")
        fixed = rows.sort_values(["u", "v", "key"])[[*FIXED_EDGE_COLUMNS, "geometry"]]
        write_fixed_edges(fixed, folder / FIXED_EDGES_DIR / f"{key}.parquet")


def _merge_edge_index(
    spilled: list[SpilledShard], level: int, parts: np.ndarray, folder: Path
) -> None:
    """Write the edge index's records (``rows.npy``) sorted by ``edge_id``, and the fence.

    The shards' arrays, each sorted by ``edge_id``, are merged range of ids by range
    (:data:`INDEX_RANGE_ROWS` edges each), read and appended to the ``.npy`` file as records of
    :data:`~pipeline.coverage.partitions.EDGE_ROW` with file reads and writes (a memory map
    would keep what it read and wrote resident: 80 bytes an edge). ``part`` is the index of the
    edge's partition in the sorted keys (that of its cell in ``parts``: keys of one resolution
    sort as their cells). Every :data:`~pipeline.coverage.partitions.FENCE_EVERY`-th id goes to
    the fence.
    """
    bounds = _id_bounds(spilled)
    starts = [_range_starts(shard, bounds) for shard in spilled]
    total = sum(int(shard_starts[-1]) for shard_starts in starts)
    fence, written = [np.empty(0, "int64")], 0
    with atomic_path(folder / EDGE_ROWS_FILE) as temp, temp.open("wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(EDGE_ROW), "fortran_order": False,
                  "shape": (total,)}  # fmt: skip
        np.lib.format.write_array_header_1_0(out, header)  # as np.save writes it
        for at in range(len(bounds) + 1):
            chunk = {
                name: np.concatenate([np.empty(0, INDEX_DTYPES.get(name, "int64"))] + [
                    _index_rows(shard, name, int(rows[at]), int(rows[at + 1]))
                    for shard, rows in zip(spilled, starts, strict=True)
                ])
                for name in SCRATCH_INDEX
            }  # fmt: skip
            order = np.argsort(chunk["edge_id"], kind="stable")
            chunk["part"] = np.searchsorted(parts, parent_array(chunk.pop("mid"), level))
            out.write(edge_records({name: chunk[name][order] for name in chunk}).tobytes())
            fence.append(chunk["edge_id"][order][(-written) % FENCE_EVERY :: FENCE_EVERY])
            written += len(order)
    write_fence(np.concatenate(fence), folder)


def _id_bounds(spilled: list[SpilledShard]) -> list[int]:
    """Return the ids that cut the edges into ranges of about :data:`INDEX_RANGE_ROWS` edges.

    Every so many of every shard's sorted ids are sampled, and every so many samples kept.
    """
    sampled = [np.empty(0, "int64")]
    for shard in spilled:
        sampled.append(np.load(shard.path("edge_id.npy"))[::INDEX_SAMPLE_EVERY].copy())
    samples = np.sort(np.concatenate(sampled))
    bounds: list[int] = np.unique(
        samples[:: max(INDEX_RANGE_ROWS // INDEX_SAMPLE_EVERY, 1)][1:]
    ).tolist()
    return bounds


def _range_starts(shard: SpilledShard, bounds: list[int]) -> np.ndarray:
    """Return where each range of ids starts in a shard's sorted ids, and their count last."""
    ids = np.load(shard.path("edge_id.npy"))
    return np.r_[0, np.searchsorted(ids, bounds), len(ids)]


def _index_rows(shard: SpilledShard, name: str, start: int, stop: int) -> np.ndarray:
    """Return rows ``start:stop`` of a shard's scratch index array ``name`` (a file read)."""
    with shard.path(f"{name}.npy").open("rb") as file:
        np.lib.format.read_magic(file)
        _, _, dtype = np.lib.format.read_array_header_1_0(file)
        file.seek(start * dtype.itemsize, 1)
        return np.fromfile(file, dtype=dtype, count=stop - start)
