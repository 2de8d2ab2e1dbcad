"""Edge and road coverage from matched segments.

A matched segment says a trip drove ``[from_offset_m, to_offset_m]`` of a directed edge. An
edge's covered length is the union of those intervals; a road's (both directions of a two-way
street, see ``road_id`` in the edges contract) is the union of its edges' intervals mapped onto
one orientation, so a road driven in one direction is fully unique-covered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pandas.api.extensions import ExtensionArray

from pipeline.coverage.grouping import aggregate_groups
from pipeline.coverage.intervals import to_mm, union_pieces


def segment_pieces(segments: pd.DataFrame) -> pd.DataFrame:
    """Turn matched segments into edge pieces (key = edge_id), times in epoch ms."""
    low = np.minimum(segments["from_offset_m"], segments["to_offset_m"])
    high = np.maximum(segments["from_offset_m"], segments["to_offset_m"])
    return pd.DataFrame(
        {
            "key": segments["edge_id"].to_numpy(dtype="int64"),
            "from_mm": to_mm(low),
            "to_mm": to_mm(high),
            "first_ms": _epoch_ms(segments["entered_at"]),
            "last_ms": _epoch_ms(segments["exited_at"]),
        }
    )


def edge_trip_rows(segments: pd.DataFrame) -> pd.DataFrame:
    """One row per (edge, trip): passes, driven millimetres, first and last time."""
    frame = pd.DataFrame(
        {
            "edge_id": segments["edge_id"].to_numpy(dtype="int64"),
            "trip_id": _text(segments["trip_id"]),
            "contributor_id": _text(segments["contributor_id"]),
            "passes": 1,
            "driven_mm": np.abs(to_mm(segments["to_offset_m"]) - to_mm(segments["from_offset_m"])),
            "first_ms": _epoch_ms(segments["entered_at"]),
            "last_ms": _epoch_ms(segments["exited_at"]),
        }
    )
    return merge_edge_trips(frame)


def merge_edge_trips(rows: pd.DataFrame) -> pd.DataFrame:
    """Combine (edge, trip) rows of several batches: sums, earliest and latest times."""
    return aggregate_groups(
        rows,
        ["edge_id", "trip_id", "contributor_id"],
        passes=("passes", "sum"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )


def merge_edge_contributors(rows: pd.DataFrame) -> pd.DataFrame:
    """Combine (edge, trip) or (edge, contributor) rows into one row per (edge, contributor).

    Passes and driven millimetres summed, earliest and latest times: every figure of
    :func:`~pipeline.coverage.tables.edge_totals` but a trip's own, and the same totals.
    """
    return aggregate_groups(
        rows,
        ["edge_id", "contributor_id"],
        passes=("passes", "sum"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )


def pair_totals(edge_contributors: pd.DataFrame) -> pd.DataFrame:
    """Return :func:`~pipeline.coverage.tables.edge_totals` of distinct (edge, contributor) rows.

    The rows of a partition's ``edge_contributors``, one per edge and contributor: the same
    figures as :func:`~pipeline.coverage.tables.edge_totals`, without counting distinct strings.
    """
    totals = aggregate_groups(
        edge_contributors.assign(contributors=np.ones(len(edge_contributors), dtype="int64")),
        ["edge_id"],
        passes=("passes", "sum"),
        contributors=("contributors", "sum"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )
    return totals.set_index("edge_id")


def canonical_edges(edges: pd.DataFrame) -> pd.DataFrame:
    """For every edge, its road's canonical edge (lowest edge_id) and whether it runs reversed.

    An edge runs reversed when it starts at another node than its road's canonical edge; the
    two directions of a loop road start at the same node, and are told apart by their second
    vertex (so ``edges`` needs its geometry when it holds a loop).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``edge_id``: ``canonical_id``, ``flip`` (runs against the canonical edge),
        ``length_mm``.
    """
    canonical = edges.groupby("road_id")["edge_id"].transform("min").to_numpy()
    lookup = edges.set_index("edge_id")
    same_start = lookup.loc[canonical, "u"].to_numpy() == edges["u"].to_numpy()
    # a loop's two directions start at the same node: there its second vertex tells them apart
    loop = edges["u"].to_numpy() == edges["v"].to_numpy()
    if loop.any():
        second = shapely.get_coordinates(shapely.get_point(edges["geometry"].to_numpy(), 1))
        of_canonical = second[pd.Index(edges["edge_id"]).get_indexer(canonical)]
        same_start[loop] = (second[loop] == of_canonical[loop]).all(axis=1)
    flip = (canonical != edges["edge_id"].to_numpy()) & ~same_start
    return pd.DataFrame(
        {"canonical_id": canonical, "flip": flip, "length_mm": to_mm(edges["length_m"])},
        index=pd.Index(edges["edge_id"].to_numpy(), name="edge_id"),
    )


def road_pieces(edge_pieces: pd.DataFrame, canonical: pd.DataFrame) -> pd.DataFrame:
    """Map directed edge pieces onto their road's canonical edge and merge them.

    The result is keyed by the canonical edge id: its covered length is the road's unique
    coverage, counted once whichever direction was driven. Pieces are clipped to the road's
    length (its canonical edge's, :func:`road_lengths_mm`): a reverse edge a millimetre
    longer cannot make a road more than fully covered.
    """
    info = canonical.loc[edge_pieces["key"].to_numpy()]
    flip = info["flip"].to_numpy()
    length = info["length_mm"].to_numpy()
    road_mm = canonical.loc[info["canonical_id"].to_numpy(), "length_mm"].to_numpy()
    start_mm = np.where(
        flip, length - edge_pieces["to_mm"].to_numpy(), edge_pieces["from_mm"].to_numpy()
    )
    end_mm = np.where(
        flip, length - edge_pieces["from_mm"].to_numpy(), edge_pieces["to_mm"].to_numpy()
    )
    mapped = edge_pieces.assign(
        key=info["canonical_id"].to_numpy(),
        from_mm=np.clip(start_mm, 0, road_mm),
        to_mm=np.clip(end_mm, 0, road_mm),
    )
    return union_pieces(mapped)


def road_lengths_mm(canonical: pd.DataFrame) -> pd.Series:
    """Return every road's length in integer millimetres, indexed by its canonical edge id.

    A road is as long as its canonical edge. Shares of road length are computed from these
    rounded lengths and the covered millimetres, never from the unrounded ``length_m``: a
    fully covered road is then exactly 100 % covered, and no road more.
    """
    is_canonical = canonical["canonical_id"].to_numpy() == canonical.index.to_numpy()
    return canonical.loc[is_canonical, "length_mm"]


def _text(column: pd.Series) -> np.ndarray | ExtensionArray:
    """Return a column's values as text for a new frame, typed as pandas types Python strings.

    That is str, or object when there are no rows; the strings of a str column are not
    copied out to Python objects.
    """
    text = column.astype(str)
    return text.to_numpy() if text.empty else text.array


def _epoch_ms(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, utc=True).dt.as_unit("ms").astype("int64").to_numpy()
