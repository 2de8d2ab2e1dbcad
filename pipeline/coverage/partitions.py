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
edge table) and kept in ``COVERAGE_DIR/network/``: the H3 runs of every edge (sorted by
partition, so the runs of a few partitions are read alone), every edge's partition, every
finest cell's road length, partition and parent cells, the polygon of each of these cells,
every edge's canonical edge
(:func:`~pipeline.coverage.edges.canonical_edges`), the road and directed length of every
``highway`` class, and, one file per partition (``edges/<key>.parquet``), the columns of the
edge coverage table that the roads alone decide (:data:`FIXED_EDGE_COLUMNS`, with the geometry
encoded as the edge table's GeoParquet holds it), so that an update reads neither the roads'
edge table nor their geometry, and reads the edge columns of the partitions it touches alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from h3ronpy import change_resolution

from pipeline.coverage.cells import cell_polygons, edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.summary import highway_lengths
from pipeline.errors import ConfigError
from pipeline.io import GEOPARQUET_VERSION, atomic_path, parquet_options, write_json

if TYPE_CHECKING:
    import geopandas as gpd

AUTO = "auto"
TARGET_EDGES_PER_PART = 2_000
NETWORK_DIR = "network"
NETWORK_META = "network.json"
RUNS_ROW_GROUP = 16_384  # rows per Parquet row group of the runs: a few partitions read alone
NETWORK_FORMAT = 4  # 4: fixed edge columns per partition, highway lengths; older: rebuilt
FIXED_EDGES_DIR = "edges"
FIXED_EDGE_COLUMNS = ["edge_id", "u", "v", "key", "osmid", "road_id", "highway", "length_m"]
"""The columns of the edge coverage table that are the roads' own, in its order."""


@dataclass(frozen=True)
class Network:
    """What the coverage of one roads version needs to know of its network, from the cache.

    Attributes
    ----------
    folder
        The cache folder (``COVERAGE_DIR/network/<edges sha256>-r<res>-p<partition res>``).
    resolution
        The finest H3 resolution of the coverage.
    partition_resolution
        The H3 resolution of the partitions.
    edge_parts
        Every edge's partition key, indexed by ``edge_id``.
    cells
        Indexed by every finest cell an edge runs through: ``part``, ``road_mm`` (length of
        the roads' canonical edges in the cell; missing where none runs through it), and
        ``p0`` .. ``p{resolution}``, the cell's parent at each resolution.
    canonical
        :func:`~pipeline.coverage.edges.canonical_edges` of the roads.
    """

    folder: Path
    resolution: int
    partition_resolution: int
    edge_parts: pd.Series
    cells: pd.DataFrame
    canonical: pd.DataFrame

    def fixed_edges(self, part: str) -> pa.Table:
        """Return the roads' :data:`FIXED_EDGE_COLUMNS`, ``geometry`` (WKB) and ``bbox``.

        Of the edges of partition ``part``, in the roads' edge order, with the GeoParquet
        ``geo`` metadata that geopandas writes for the edge coverage table's geometry.
        """
        return pq.read_table(self.folder / FIXED_EDGES_DIR / f"{part}.parquet")

    def part_keys(self) -> list[str]:
        """Return the key of every partition of the network (of an edge or a cell), sorted."""
        return sorted({*self.edge_parts.unique(), *self.cells["part"].unique()})

    def highway_lengths(self) -> pd.DataFrame:
        """Return ``road_mm`` and ``directed_mm`` of the roads by ``highway`` (the index)."""
        return pq.read_table(self.folder / "highways.parquet").to_pandas().set_index("highway")

    def polygons(self, cells: np.ndarray) -> np.ndarray:
        """Return the polygons (shapely) of cells of the network, at any of its resolutions.

        A cell that is not the network's (no edge runs through it or its children) is made
        with :func:`~pipeline.coverage.cells.cell_polygons`.
        """
        table = pq.read_table(self.folder / "cell_polygons.parquet")
        known = pd.Index(table.column("cell").to_numpy())
        at = known.get_indexer(pd.Index(cells))
        shapes = np.empty(len(at), dtype=object)
        found = at >= 0
        wkb = table.column("wkb").take(pa.array(at[found])).to_numpy(zero_copy_only=False)
        shapes[found] = shapely.from_wkb(wkb)
        shapes[~found] = cell_polygons(np.asarray(cells)[~found])
        return shapes

    def edge_lengths(self, edge_ids: np.ndarray) -> pd.Series:
        """Return the ``length_m`` of the edges of the partitions of ``edge_ids`` (by ``edge_id``).

        An id that is not an edge of the network is not in the result.
        """
        parts = self.edge_parts.reindex(pd.unique(np.asarray(edge_ids))).dropna().unique()
        tables = [
            pq.read_table(
                self.folder / FIXED_EDGES_DIR / f"{part}.parquet", columns=["edge_id", "length_m"]
            )
            for part in sorted(parts)
        ]
        table = pa.concat_tables(tables) if tables else pa.table(
            {"edge_id": pa.array([], pa.int64()), "length_m": pa.array([], pa.float64())}
        )  # fmt: skip
        return pd.Series(
            table.column("length_m").to_numpy(),
            index=pd.Index(table.column("edge_id").to_numpy(), name="edge_id"),
            name="length_m",
        )

    def runs_of(self, parts: set[str] | None = None) -> pd.DataFrame:
        """Return the H3 runs (key, from_mm, to_mm, cell) of the edges of ``parts``; None: all."""
        columns = ["key", "from_mm", "to_mm", "cell"]
        if parts is None:
            return pq.read_table(self.folder / "runs.parquet", columns=columns).to_pandas()
        wanted = pa.array(sorted(parts), pa.string())
        table = pq.read_table(
            self.folder / "runs.parquet",
            columns=columns,
            filters=pc.is_in(pc.field("part"), value_set=wanted),
        )
        return table.to_pandas()

    def parents(self, cells: np.ndarray, level: int) -> np.ndarray:
        """Return the parents (int64) at ``level`` of finest cells of the network."""
        return self.cells[f"p{level}"].to_numpy()[self.cells.index.get_indexer(pd.Index(cells))]


def part_key(resolution: int, cells: np.ndarray) -> np.ndarray:
    """Return the partition keys of H3 parent cells at ``resolution`` (object array of str)."""
    return np.array([f"r{resolution}-{int(c):x}" for c in cells], dtype=object)


def load_network(
    edges_of: Callable[[], gpd.GeoDataFrame],
    edges_sha256: str,
    coverage_dir: Path,
    resolution: int,
    partition_resolution: int | str,
) -> Network:
    """Return the network's cache in ``coverage_dir``, computing it first if it is missing.

    Call it holding the coverage folder's lock. A cache of other roads or resolutions is
    removed when this one is written.

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
    name = f"{edges_sha256[:16]}-r{resolution}-p{partition_resolution}"
    folder = coverage_dir / NETWORK_DIR / name
    if _network_format(folder) != NETWORK_FORMAT:
        _write_network(edges_of(), folder, resolution, partition_resolution)
        for other in (coverage_dir / NETWORK_DIR).iterdir():
            if other.is_dir() and other.name != name:
                shutil.rmtree(other)
    meta = json.loads((folder / NETWORK_META).read_text(encoding="utf-8"))
    edge_parts = pq.read_table(folder / "edge_parts.parquet").to_pandas(
        strings_to_categorical=True  # a few hundred keys: not a string object per edge
    )
    cells = pq.read_table(folder / "cells.parquet").to_pandas().set_index("cell")
    canonical = pq.read_table(folder / "canonical.parquet").to_pandas().set_index("edge_id")
    return Network(
        folder,
        resolution,
        int(meta["partition_resolution"]),
        pd.Series(edge_parts["part"].array, index=pd.Index(edge_parts["edge_id"])),
        cells,
        canonical,
    )


def _network_format(folder: Path) -> int | None:
    """Return the format of the cache in ``folder``; None if there is none, or not complete."""
    try:
        meta = json.loads((folder / NETWORK_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


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
    midpoint = _midpoint_cells(runs).reindex(canonical["canonical_id"].to_numpy())
    if partition_resolution == AUTO:
        level = choose_partition_resolution(midpoint.to_numpy(), resolution)
    else:
        level = int(partition_resolution)
    edge_part = part_key(level, parent_array(midpoint.to_numpy(), level))
    edge_parts = pd.DataFrame({"edge_id": canonical.index.to_numpy(), "part": edge_part})
    runs["part"] = pd.Series(edge_part, index=canonical.index).loc[runs["key"]].to_numpy()
    runs = runs.sort_values(["part", "key", "from_mm"], ignore_index=True)
    _write(edge_parts, folder / "edge_parts.parquet")
    _write(runs, folder / "runs.parquet", row_group_size=RUNS_ROW_GROUP)
    cells = _network_cells(runs, canonical, resolution, level)
    _write(cells, folder / "cells.parquet")
    _write(canonical.reset_index(), folder / "canonical.parquet")
    _write(_cell_polygons(cells), folder / "cell_polygons.parquet")
    _write(highway_lengths(edges, canonical).reset_index(), folder / "highways.parquet")
    fixed = edges[[*FIXED_EDGE_COLUMNS, "geometry"]]
    of_edge = pd.Series(edge_part, index=canonical.index).loc[fixed["edge_id"].to_numpy()]
    rows_of = pd.Series(np.arange(len(fixed))).groupby(of_edge.to_numpy()).indices
    for part in sorted({*edge_part, *cells["part"]}):  # a partition may hold cells alone
        rows = fixed.iloc[rows_of.get(part, np.empty(0, dtype="int64"))]
        with atomic_path(folder / FIXED_EDGES_DIR / f"{part}.parquet") as temp:
            rows.to_parquet(  # as write_table encodes the geometry
                temp, index=False, schema_version=GEOPARQUET_VERSION, write_covering_bbox=True,
                compression="zstd",
            )  # fmt: skip
    meta: dict[str, Any] = {
        "resolution": resolution, "partition_resolution": level, "format": NETWORK_FORMAT
    }  # fmt: skip
    write_json(meta, folder / NETWORK_META)  # last: the cache is complete


def _midpoint_cells(runs: pd.DataFrame) -> pd.Series:
    """Return the cell of each edge's midpoint (of its first run for an edge of no length)."""
    length = runs.groupby("key")["to_mm"].transform("max").to_numpy()
    middle = length // 2
    holds = (runs["from_mm"].to_numpy() <= middle) & (runs["to_mm"].to_numpy() > middle)
    first = runs.drop_duplicates("key").set_index("key")["cell"]
    middle_cells = runs[holds].drop_duplicates("key").set_index("key")["cell"]
    return middle_cells.combine_first(first).astype("int64")


def _network_cells(
    runs: pd.DataFrame, canonical: pd.DataFrame, resolution: int, part_resolution: int
) -> pd.DataFrame:
    is_canonical = canonical["canonical_id"].to_numpy() == canonical.index.to_numpy()
    road_runs = runs[runs["key"].isin(canonical.index[is_canonical])]
    road_mm = (road_runs["to_mm"] - road_runs["from_mm"]).groupby(road_runs["cell"]).sum()
    cells = np.unique(runs["cell"].to_numpy())
    frame = pd.DataFrame({"cell": cells})
    frame["road_mm"] = road_mm.reindex(cells).to_numpy()  # NaN: no canonical edge runs there
    for level in range(resolution, -1, -1):
        frame[f"p{level}"] = cells if level == resolution else parent_array(cells, level)
    frame["part"] = part_key(part_resolution, frame[f"p{part_resolution}"].to_numpy())
    return frame


def _cell_polygons(cells: pd.DataFrame) -> pd.DataFrame:
    """Return the WKB polygon of every cell of the network's and their parents (sorted)."""
    levels = [column for column in cells.columns if column[1:].isdigit()]  # p0 .. p<res>
    every = np.unique(cells[levels].to_numpy(dtype="int64").ravel())
    return pd.DataFrame({"cell": every, "wkb": shapely.to_wkb(cell_polygons(every))})


def _write(frame: pd.DataFrame, path: Path, row_group_size: int | None = None) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, row_group_size=row_group_size, **parquet_options(table.schema))
