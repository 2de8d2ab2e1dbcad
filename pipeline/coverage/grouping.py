"""Sorted grouping on integer codes: pandas' ``groupby(sort=True)`` sums, extremes and counts.

A pandas groupby on several keys, some of them text, hashes every row's key tuple; here each
key column is factorized once (codes in sorted order of its values), the codes are packed
into one int64 per row, and one sort of those puts every group's rows together, in the order
of the sorted keys. Sums, minima and maxima are then ``reduceat`` over the sorted rows: the
same integers as pandas gives, a fraction of the time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

REDUCERS: dict[str, np.ufunc] = {"sum": np.add, "min": np.minimum, "max": np.maximum}


def key_codes(frame: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, list[pd.Index]]:
    """Factorize key columns into one int64 code per row, ordered as the sorted key tuples.

    Parameters
    ----------
    frame
        The rows; no key may be missing (null).
    by
        The key columns.

    Returns
    -------
    codes, uniques
        Row codes whose order is the lexicographic order of the rows' keys (equal keys, equal
        codes), and each column's sorted distinct values.

    Raises
    ------
    ValueError
        If a key is missing, or the key columns have too many distinct values to pack.
    """
    codes = np.zeros(len(frame), dtype="int64")
    uniques = []
    capacity = 1
    for name in by:
        column_codes, column_uniques = frame[name].factorize(sort=True)
        if len(column_codes) and column_codes.min() < 0:
            raise ValueError(f"key column {name!r} has missing values")
        capacity *= max(len(column_uniques), 1)
        if capacity >= 2**63:
            raise ValueError(f"key columns {list(by)} have too many distinct values to pack")
        codes = codes * len(column_uniques) + column_codes
        uniques.append(pd.Index(np.asarray(column_uniques)))  # typed as pandas infers keys
    return codes, uniques


def sorted_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows put in order of their codes, and where each group of equal codes starts.

    Returns
    -------
    order, starts
        ``codes[order]`` is sorted; group ``g`` is ``order[starts[g]:starts[g + 1]]``.
    """
    order = np.argsort(codes)
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[len(ordered) > 0, ordered[1:] != ordered[:-1]])
    return order, starts


def aggregate_groups(
    rows: pd.DataFrame, by: Sequence[str], **aggregations: tuple[str, str]
) -> pd.DataFrame:
    """Return ``rows.groupby(by, as_index=False, sort=True).agg(**aggregations)``.

    Parameters
    ----------
    rows
        The rows; key columns of any factorizable type, without missing values; aggregated
        columns of integers.
    by
        The key columns.
    **aggregations
        ``name=(column, how)``, ``how`` one of ``"sum"``, ``"min"``, ``"max"``.

    Returns
    -------
    pandas.DataFrame
        One row per distinct key, in sorted key order: the key columns, then the aggregations.
    """
    if rows.empty:  # pandas' own dtypes for an empty result
        return rows.groupby(list(by), as_index=False, sort=True).agg(**aggregations)
    codes, uniques = key_codes(rows, by)
    order, starts = sorted_groups(codes)
    columns: dict[str, pd.Index | np.ndarray] = dict(
        zip(by, _decoded_keys(codes[order[starts]], uniques), strict=True)
    )
    for name, (column, how) in aggregations.items():
        values = rows[column].to_numpy()[order]
        if how == "sum":  # as pandas: integer sums in int64
            values = values.astype("int64", copy=False)
        columns[name] = REDUCERS[how].reduceat(values, starts)
    return pd.DataFrame(columns)


def count_distinct(groups: np.ndarray, items: np.ndarray) -> pd.Series:
    """Return ``pd.Series(items).groupby(groups).nunique()`` for integer groups and items.

    Parameters
    ----------
    groups, items
        One group and one item (int64, any values) per row.

    Returns
    -------
    pandas.Series
        int64, the number of distinct items of each group, indexed by the sorted groups.
    """
    group_codes, group_values = pd.factorize(groups, sort=True)
    item_codes = pd.factorize(items)[0]
    width = max(int(item_codes.max(initial=-1)) + 1, 1)
    distinct_pairs = np.unique(group_codes.astype("int64") * width + item_codes)
    counts = np.bincount(distinct_pairs // width, minlength=len(group_values)).astype("int64")
    return pd.Series(counts, index=pd.Index(group_values))


def _decoded_keys(codes: np.ndarray, uniques: list[pd.Index]) -> list[pd.Index]:
    """Split packed codes back into each key column's values."""
    columns = []
    for values in reversed(uniques):
        width = max(len(values), 1)
        columns.append(values.take(codes % width))
        codes = codes // width
    return columns[::-1]
