"""Unions of covered intervals along edges, vectorized, in integer millimetres.

Coverage of an edge is a set of disjoint pieces ``[from_mm, to_mm)``, each with the first and
last time it was observed. Every merge (a new batch into the state, the two directions of a
road into one) is the same operation, :func:`union_pieces`: it cuts all pieces of a key at
every breakpoint and keeps, per elementary interval, the earliest ``first_ms`` and the latest
``last_ms`` of the pieces covering it (computed by :func:`reduce_over_ranges`, without
expanding each piece into the elementary intervals it covers). Min and max are associative
and commutative, so merging batches one by one, in any order, gives exactly the result of
merging them all at once.
Integer millimetres keep lengths exact and sums order-independent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

POSITION_BITS = 35  # 2**35 mm = 34,359 km: longer than any edge
PIECE_COLUMNS = ["key", "from_mm", "to_mm", "first_ms", "last_ms"]


def to_mm(metres: np.ndarray | pd.Series) -> np.ndarray:
    """Round metres to integer millimetres."""
    return np.rint(np.asarray(metres, dtype="float64") * 1000.0).astype("int64")


def union_pieces(pieces: pd.DataFrame) -> pd.DataFrame:
    """Merge possibly overlapping pieces into disjoint ones per key.

    Parameters
    ----------
    pieces
        Columns ``key`` (int64), ``from_mm``, ``to_mm`` (int64, from < to), ``first_ms`` and
        ``last_ms`` (int64 epoch milliseconds). Empty pieces are ignored.

    Returns
    -------
    pandas.DataFrame
        Disjoint pieces sorted by key and position, adjacent pieces with the same times merged.
    """
    pieces = pieces[PIECE_COLUMNS].astype("int64")
    pieces = pieces[pieces["to_mm"] > pieces["from_mm"]]
    if pieces.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in PIECE_COLUMNS})
    codes, keys = pd.factorize(pieces["key"], sort=True)
    start = (codes.astype("int64") << POSITION_BITS) | pieces["from_mm"].to_numpy()
    end = (codes.astype("int64") << POSITION_BITS) | pieces["to_mm"].to_numpy()
    cuts = np.unique(np.concatenate([start, end]))
    first_cut, last_cut = np.searchsorted(cuts, start), np.searchsorted(cuts, end)
    size = len(cuts)
    opened = np.bincount(first_cut, minlength=size) - np.bincount(last_cut, minlength=size)
    covered = np.cumsum(opened) > 0  # a running count of the pieces open on each interval
    first_ms = reduce_over_ranges(
        first_cut, last_cut, pieces["first_ms"].to_numpy(), size, np.minimum
    )
    last_ms = reduce_over_ranges(
        first_cut, last_cut, pieces["last_ms"].to_numpy(), size, np.maximum
    )
    return _merge_adjacent(cuts, covered, first_ms, last_ms, np.asarray(keys))


def reduce_over_ranges(
    begin: np.ndarray, stop: np.ndarray, values: np.ndarray, size: int, ufunc: np.ufunc
) -> np.ndarray:
    """Reduce, at every index, the values of the ranges that contain it.

    Each range ``[begin, stop)`` (non-empty, within ``[0, size)``) is covered by two possibly
    overlapping blocks of the largest power-of-two length that fits in it; the blocks of each
    length are then pushed down to the halves they consist of, longest first. This needs
    ``O((ranges + size) * log(longest range))`` work instead of one step per (range, index).

    Parameters
    ----------
    begin, stop
        The ranges' first and past-the-end indices (int64), ``begin < stop <= size``.
    values
        One int64 value per range.
    size
        Length of the result.
    ufunc
        An idempotent, commutative reduction: ``np.minimum`` or ``np.maximum``.

    Returns
    -------
    numpy.ndarray
        int64 of length ``size``: the reduction of the values of the ranges containing each
        index; the reduction's identity (int64 max for minimum, min for maximum) where none does.
    """
    if ufunc is not np.minimum and ufunc is not np.maximum:
        raise ValueError(f"ufunc must be np.minimum or np.maximum, not {ufunc!r}")
    info = np.iinfo("int64")
    identity = info.max if ufunc is np.minimum else info.min
    level = np.frexp(stop - begin)[1].astype("int64") - 1  # floor(log2(length)), exact
    order = np.argsort(level, kind="stable")
    level, begin, stop, values = level[order], begin[order], stop[order], values[order]
    bounds = np.searchsorted(level, np.arange(level[-1] + 2 if len(level) else 1))
    result = np.full(size, identity, dtype="int64")
    for k in range(len(bounds) - 2, -1, -1):
        width, same = 1 << k, slice(bounds[k], bounds[k + 1])
        blocks = np.full(size, identity, dtype="int64")
        ufunc.at(blocks, begin[same], values[same])
        ufunc.at(blocks, stop[same] - width, values[same])
        ufunc(blocks, result, out=blocks)
        ufunc(blocks[width:], result[: max(size - width, 0)], out=blocks[width:])
        result = blocks
    return result


def covered_length_mm(pieces: pd.DataFrame) -> pd.Series:
    """Total covered millimetres per key."""
    return (pieces["to_mm"] - pieces["from_mm"]).groupby(pieces["key"]).sum()


def _ranks_within(spans: np.ndarray) -> np.ndarray:
    """For spans [2, 3] return [0, 1, 0, 1, 2]."""
    total = int(spans.sum())
    offsets = np.repeat(np.cumsum(spans) - spans, spans)
    return np.arange(total, dtype="int64") - offsets


def _merge_adjacent(
    cuts: np.ndarray,
    covered: np.ndarray,
    first_ms: np.ndarray,
    last_ms: np.ndarray,
    keys: np.ndarray,
) -> pd.DataFrame:
    mask = (1 << POSITION_BITS) - 1
    index = np.flatnonzero(covered[:-1])
    code = cuts[index] >> POSITION_BITS
    same_key = code == (cuts[index + 1] >> POSITION_BITS)
    index, code = index[same_key], code[same_key]
    changes = (
        (index[1:] != index[:-1] + 1)
        | (code[1:] != code[:-1])
        | (first_ms[index[1:]] != first_ms[index[:-1]])
        | (last_ms[index[1:]] != last_ms[index[:-1]])
    )
    begins = np.concatenate([np.ones(min(len(index), 1), dtype=bool), changes])
    starts = index[begins]
    ends = np.r_[index[np.flatnonzero(begins)[1:] - 1], index[-1:]] if len(index) else index
    return pd.DataFrame(
        {
            "key": keys[code[begins]].astype("int64"),
            "from_mm": cuts[starts] & mask,
            "to_mm": cuts[ends + 1] & mask,
            "first_ms": first_ms[starts],
            "last_ms": last_ms[starts],
        }
    )


def overlap_with_runs(pieces: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Cut pieces at the boundaries of runs that tile each key.

    Parameters
    ----------
    pieces
        ``key``, ``from_mm``, ``to_mm`` and any other columns, which are carried along.
    runs
        Disjoint runs tiling each key: ``key``, ``from_mm``, ``to_mm`` and ``cell``.

    Returns
    -------
    pandas.DataFrame
        One row per (piece, run) overlap: the piece's other columns, ``cell`` and ``length_mm``.
    """
    runs = runs.sort_values(["key", "from_mm"], ignore_index=True)
    keys = np.union1d(runs["key"].to_numpy(), pieces["key"].to_numpy())
    run_code = np.searchsorted(keys, runs["key"].to_numpy()).astype("int64") << POSITION_BITS
    piece_code = np.searchsorted(keys, pieces["key"].to_numpy()).astype("int64") << POSITION_BITS
    run_starts = run_code | runs["from_mm"].to_numpy()
    first = np.searchsorted(run_starts, piece_code | pieces["from_mm"].to_numpy(), "right") - 1
    last = np.searchsorted(run_starts, piece_code | pieces["to_mm"].to_numpy(), "left") - 1
    spans = np.maximum(last - first + 1, 0)
    run_index = np.repeat(first, spans) + _ranks_within(spans)
    piece_index = np.repeat(np.arange(len(pieces)), spans)
    out = pieces.iloc[piece_index].reset_index(drop=True)
    start = np.maximum(out["from_mm"].to_numpy(), runs["from_mm"].to_numpy()[run_index])
    stop = np.minimum(out["to_mm"].to_numpy(), runs["to_mm"].to_numpy()[run_index])
    out["cell"] = runs["cell"].to_numpy()[run_index]
    out["length_mm"] = stop - start
    return out[out["length_mm"] > 0].reset_index(drop=True)
