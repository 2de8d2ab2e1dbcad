"""The region's edge coverage table, built as Arrow columns from the rollup.

An update rewrites ``edges.parquet`` whole: it has a row per edge of the region, and every
driven edge's ``age_days`` moves with the time the table is of. This module builds it without
a Python object per row or per covered piece: the roads' own columns, geometry (WKB) and
covering bbox come from the network's cache (:meth:`Network.fixed_edges
<pipeline.coverage.partitions.Network.fixed_edges>`, encoded once per roads version), the
figures of the driven edges are scattered into arrays, and the covered intervals are an Arrow
list column cut from the pieces sorted by edge. The file written is byte for byte the one
:func:`pipeline.io.write_table` writes for :func:`pipeline.coverage.tables.edge_table`'s
GeoDataFrame (tests/coverage/test_partitions.py compares them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contracts import EDGE_COVERAGE, INTERVAL, UTC_MS
from pipeline.coverage.tables import MS_PER_DAY
from pipeline.io import write_arrow

GEOMETRY = "geometry"
INTERVALS = pa.list_(pa.field("item", INTERVAL, nullable=False))


def write_edge_coverage(
    fixed: pa.Table, pieces: pd.DataFrame, totals: pd.DataFrame, as_of_ms: int, path: Path
) -> pd.DataFrame:
    """Write the edge coverage table; return the columns the summary needs of it.

    Parameters
    ----------
    fixed
        The roads' fixed columns, geometry and bbox (:meth:`Network.fixed_edges
        <pipeline.coverage.partitions.Network.fixed_edges>`), one row per edge.
    pieces
        The covered pieces of the edges (``key`` = ``edge_id``, ``from_mm``, ``to_mm``,
        ``first_ms``, ``last_ms``), disjoint per edge, in any order of edges.
    totals
        :func:`pipeline.coverage.tables.edge_totals` of the driven edges.
    as_of_ms
        The time ``age_days`` is measured from.
    path
        Where to write (atomically, contract ``edge_coverage``).

    Returns
    -------
    pandas.DataFrame
        ``edge_id``, ``highway``, ``length_m`` and ``covered_m`` of every edge.
    """
    ids = pd.Index(fixed.column("edge_id").to_numpy())
    length_m = fixed.column("length_m").to_numpy()
    at = ids.get_indexer(pieces["key"].to_numpy())
    covered_mm = np.zeros(len(ids), dtype="int64")
    np.add.at(covered_mm, at, (pieces["to_mm"] - pieces["from_mm"]).to_numpy(dtype="int64"))
    covered_m = np.minimum(covered_mm / 1000.0, length_m)  # its pieces end at its length in mm
    driven = _driven_columns(ids, totals, as_of_ms)
    columns = {
        "covered_m": pa.array(covered_m),
        **driven,
        "intervals": _interval_lists(pieces, at, len(ids)),
    }
    table = fixed.drop_columns([GEOMETRY, "bbox"])
    for name, column in columns.items():
        table = table.append_column(name, column)
    table = table.append_column(GEOMETRY, fixed.column(GEOMETRY))
    table = table.append_column("bbox", fixed.column("bbox"))
    geo = (fixed.schema.metadata or {})[b"geo"]
    write_arrow(table.replace_schema_metadata({b"geo": geo}).combine_chunks(), path, EDGE_COVERAGE)
    return pd.DataFrame(
        {
            "edge_id": ids.to_numpy(),
            "highway": fixed.column("highway").to_pandas(),
            "length_m": length_m,
            "covered_m": covered_m,
        }
    )


def _driven_columns(ids: pd.Index, totals: pd.DataFrame, as_of_ms: int) -> dict[str, pa.Array]:
    """Return the passes, contributors, driven metres, first and last time and age of each edge."""
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
    age_days = np.full(len(ids), np.nan)
    age_days[at] = (as_of_ms - times["last_ms"][at].astype("float64")) / MS_PER_DAY
    return {
        "passes": pa.array(figures["passes"]),
        "contributors": pa.array(figures["contributors"]),
        "total_m": pa.array(figures["driven_mm"] / 1000.0),
        "first_seen": pa.array(times["first_ms"], UTC_MS, mask=~driven),
        "last_seen": pa.array(times["last_ms"], UTC_MS, mask=~driven),
        "age_days": pa.array(age_days, from_pandas=True),
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
