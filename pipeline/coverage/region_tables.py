"""The edge and cell coverage of partitions, written from their state and the rollup.

An update writes the edge coverage of the partitions it touches, one file each (contract
``edge_coverage_part``: the ``edge_coverage`` columns but ``age_days``, which the reader
computes, :mod:`pipeline.coverage.edge_reader`), and no other. This module builds it without
a Python object per row or per covered piece: the roads' own columns, geometry (WKB) and
covering bbox come from the network's cache (:meth:`Network.fixed_edges
<pipeline.coverage.partitions.Network.fixed_edges>`, encoded once per roads version), the
figures of the driven edges are scattered into arrays, and the covered intervals are an Arrow
list column cut from the pieces sorted by edge. Read back, the table is the one
:func:`pipeline.coverage.tables.edge_table` computes (tests/coverage/test_partitions.py
compares them). The cells are written per partition too, at the resolutions no coarser than
the partitions' (:func:`write_cell_parts`), and the coarser ones as one small table of the
rollup (:func:`write_coarse_cells`); :mod:`pipeline.coverage.cell_reader` reads them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contracts import (
    CELL_COVERAGE_COARSE,
    CELL_COVERAGE_PART,
    CELL_FRESHNESS,
    EDGE_COVERAGE_PART,
    INTERVAL,
    UTC_MS,
)
from pipeline.coverage.partitions import parent_array
from pipeline.coverage.pointer import CELL_TABLE, COARSE_CELLS, FRESHNESS_TABLE
from pipeline.io import write_arrow, write_table

if TYPE_CHECKING:
    import geopandas as gpd

    from pipeline.coverage.partitions import Network

GEOMETRY = "geometry"
INTERVALS = pa.list_(pa.field("item", INTERVAL, nullable=False))


def write_edge_coverage(
    fixed: pa.Table, pieces: pd.DataFrame, totals: pd.DataFrame, path: Path
) -> None:
    """Write the edge coverage of some edges (contract ``edge_coverage_part``).

    Parameters
    ----------
    fixed
        The roads' fixed columns, geometry and bbox of the edges (:meth:`Network.fixed_edges
        <pipeline.coverage.partitions.Network.fixed_edges>`), one row per edge.
    pieces
        The covered pieces of these edges (``key`` = ``edge_id``, ``from_mm``, ``to_mm``,
        ``first_ms``, ``last_ms``), disjoint per edge, in any order of edges.
    totals
        :func:`pipeline.coverage.tables.edge_totals` of the driven edges among them.
    path
        Where to write (atomically).
    """
    ids = pd.Index(fixed.column("edge_id").to_numpy())
    length_m = fixed.column("length_m").to_numpy()
    at = ids.get_indexer(pieces["key"].to_numpy())
    covered_mm = np.zeros(len(ids), dtype="int64")
    np.add.at(covered_mm, at, (pieces["to_mm"] - pieces["from_mm"]).to_numpy(dtype="int64"))
    columns = {
        "covered_m": pa.array(covered_metres(covered_mm, length_m)),
        **_driven_columns(ids, totals),
        "intervals": _interval_lists(pieces, at, len(ids)),
    }
    table = fixed.drop_columns([GEOMETRY, "bbox"])
    for name, column in columns.items():
        table = table.append_column(name, column)
    table = table.append_column(GEOMETRY, fixed.column(GEOMETRY))
    table = table.append_column("bbox", fixed.column("bbox"))
    geo = (fixed.schema.metadata or {})[b"geo"]
    table = table.replace_schema_metadata({b"geo": geo}).combine_chunks()
    write_arrow(table, path, EDGE_COVERAGE_PART)


def covered_metres(covered_mm: np.ndarray, length_m: np.ndarray) -> np.ndarray:
    """Return edges' ``covered_m``: their covered mm in metres, never above their length.

    An edge's pieces end at its length rounded to the millimetre, a little past it at most.
    """
    return np.minimum(np.asarray(covered_mm) / 1000.0, length_m)


def _driven_columns(ids: pd.Index, totals: pd.DataFrame) -> dict[str, pa.Array]:
    """Return the passes, contributors, driven metres, first and last time of each edge."""
    at = ids.get_indexer(totals.index)
    figures = {}
    for name in ("passes", "contributors", "driven_mm"):
        values = np.zeros(len(ids), dtype="int64")
        values[at] = totals[name].to_numpy(dtype="int64")
        figures[name] = values
    driven = np.zeros(len(ids), dtype=bool)
    driven[at] = True
    times = {}
    for name in ("first_ms", "last_ms"):
        values = np.zeros(len(ids), dtype="int64")
        values[at] = totals[name].to_numpy(dtype="int64")
        times[name] = values
    return {
        "passes": pa.array(figures["passes"]),
        "contributors": pa.array(figures["contributors"]),
        "total_m": pa.array(figures["driven_mm"] / 1000.0),
        "first_seen": pa.array(times["first_ms"], UTC_MS, mask=~driven),
        "last_seen": pa.array(times["last_ms"], UTC_MS, mask=~driven),
    }


def _interval_lists(pieces: pd.DataFrame, at: np.ndarray, edges: int) -> pa.ListArray:
    """Return each edge's covered pieces as a list of intervals (metres, UTC times).

    An edge's intervals are in the order its pieces have in ``pieces``; an edge without
    pieces has an empty list.
    """
    order = np.argsort(at, kind="stable")
    sorted_pieces = pieces.iloc[order]
    offsets = np.zeros(edges + 1, dtype="int32")
    np.cumsum(np.bincount(at, minlength=edges), out=offsets[1:])
    intervals = pa.StructArray.from_arrays(
        [
            pa.array(sorted_pieces["from_mm"].to_numpy() / 1000.0),
            pa.array(sorted_pieces["to_mm"].to_numpy() / 1000.0),
            pa.array(sorted_pieces["first_ms"].to_numpy(dtype="int64"), UTC_MS),
            pa.array(sorted_pieces["last_ms"].to_numpy(dtype="int64"), UTC_MS),
        ],
        fields=list(INTERVAL),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), intervals, type=INTERVALS)


def write_cell_parts(
    parts_root: Path,
    generation: str,
    cells: gpd.GeoDataFrame,
    road_cover: pd.DataFrame,
    keys: set[str],
    network: Network,
) -> None:
    """Write the cells of partitions ``keys`` (``cell_coverage_part``, ``cell_freshness``).

    Each into ``parts_root/<key>/<generation>/``: the rows of ``cells`` (the table of every
    resolution, :func:`pipeline.coverage.tables.cells_table`) at the resolutions no coarser
    than the partitions', without ``age_days`` and ``fresh_*_km``, and their covered road
    (``road_cover``: covered road pieces, :mod:`pipeline.coverage.rollup`, ``cell`` finest,
    ``length_mm``, ``last_ms``, of at least the partitions' cells) summed by cell and
    ``last_ms`` at each of these resolutions.
    """
    level = network.partition_resolution
    fine = cells[cells["resolution"].to_numpy() >= level]
    fine = fine.assign(part=parent_array(fine["cell"].to_numpy(), level))
    covered = road_cover.assign(part=parent_array(road_cover["cell"].to_numpy(), level))
    stored = [c for c in CELL_COVERAGE_PART.schema.names if c != GEOMETRY] + [GEOMETRY]
    for key in sorted(keys):
        parent = int(key.rsplit("-", 1)[1], 16)  # the key of an H3 parent (part_key)
        folder = parts_root / key / generation
        rows = fine.loc[fine["part"].to_numpy() == parent, stored]
        write_table(rows, folder / CELL_TABLE, CELL_COVERAGE_PART)
        freshness = _freshness_rows(covered[covered["part"].to_numpy() == parent], network)
        write_table(freshness, folder / FRESHNESS_TABLE, CELL_FRESHNESS)


def _freshness_rows(road_cover: pd.DataFrame, network: Network) -> pa.Table:
    """Return covered mm by ``cell`` and ``last_seen`` at each resolution of a partition's cells.

    ``road_cover``: covered road pieces (finest ``cell``, ``length_mm``, ``last_ms``).
    """
    finest = road_cover["cell"].to_numpy(dtype="int64")
    levels = []
    for level in range(network.resolution, network.partition_resolution - 1, -1):
        cell = finest if level == network.resolution else parent_array(finest, level)
        frame = pd.DataFrame(
            {"cell": cell, "last_ms": road_cover["last_ms"].to_numpy(dtype="int64"),
             "length_mm": road_cover["length_mm"].to_numpy(dtype="int64")}
        )  # fmt: skip
        levels.append(frame.groupby(["cell", "last_ms"], as_index=False, sort=True).sum())
    rows = pd.concat(levels, ignore_index=True)
    return pa.table(
        {
            "cell": pa.array(rows["cell"].to_numpy(dtype="int64")),
            "last_seen": pa.array(rows["last_ms"].to_numpy(dtype="int64"), UTC_MS),
            "length_mm": pa.array(rows["length_mm"].to_numpy(dtype="int64")),
        }
    )


def write_coarse_cells(
    rollup_dir: Path, cells: gpd.GeoDataFrame, partition_resolution: int
) -> None:
    """Write the cells coarser than the partitions (contract ``cell_coverage_coarse``)."""
    coarse = cells[cells["resolution"] < partition_resolution].drop(columns="age_days")
    write_table(coarse, rollup_dir / COARSE_CELLS, CELL_COVERAGE_COARSE)
