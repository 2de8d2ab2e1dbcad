"""Sums, means and quantiles of contiguous groups, equal to the last bit to pandas' groupby.

The snap stage's per-trip quality was a pandas groupby of each task's fixes; these give the
same values from plain arrays whose groups are runs ``values[bounds[g]:bounds[g + 1]]``,
without building a DataFrame and a grouping per task. pandas (3.x) sums groups in order
with Kahan compensation, except when the groups are contiguous and no value is NaN: then
with ``numpy.add.reduceat`` (pairwise summation). Quantiles interpolate linearly.
"""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit


def group_sums(values: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each group's sum of its non-NaN values (0 if none), and how many there are.

    As pandas' ``groupby(...).sum()`` computes it for groups that are runs of rows.
    """
    values = np.asarray(values, dtype="float64")
    bounds = _bounds(bounds)
    if np.isnan(values).any():
        return _kahan_sums(values, bounds)
    counts = np.diff(bounds)
    sums = np.zeros(len(counts))
    present = counts > 0
    if present.any():
        sums[present] = np.add.reduceat(values, bounds[:-1][present])
    return sums, counts


@cached_njit
def _kahan_sums(values: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the non-NaN values of each group, in order, with Kahan compensation."""
    groups = len(bounds) - 1
    sums = np.zeros(groups)
    counts = np.zeros(groups, dtype=np.int64)
    for g in range(groups):
        total = 0.0
        compensation = 0.0
        for i in range(bounds[g], bounds[g + 1]):
            value = values[i]
            if np.isnan(value):
                continue
            counts[g] += 1
            y = value - compensation
            t = total + y
            compensation = t - total - y
            if compensation != compensation:  # an infinite value: keep the sum infinite
                compensation = 0.0
            total = t
        sums[g] = total
    return sums, counts


def group_means(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Return each group's mean of its non-NaN values (NaN if none), as pandas' ``mean``."""
    sums, counts = group_sums(values, bounds)
    means = np.full(len(sums), np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def group_quantiles(values: np.ndarray, bounds: np.ndarray, q: float) -> np.ndarray:
    """Return each group's ``q`` quantile of its non-NaN values (NaN if none).

    Linear interpolation between the two nearest ranks, computed as pandas'
    ``groupby(...).quantile(q)`` computes it.
    """
    values = np.asarray(values, dtype="float64")
    bounds = _bounds(bounds)
    groups = len(bounds) - 1
    group = np.repeat(np.arange(groups), np.diff(bounds))
    valid = ~np.isnan(values)
    group = group[valid]
    ordered = values[valid][np.lexsort((values[valid], group))]
    counts = np.bincount(group, minlength=groups)
    starts = np.cumsum(counts) - counts
    position = q * (counts - 1).astype("float64")
    low = starts + position.astype(np.int64)  # truncated, as pandas does
    frac = position % 1
    has = counts > 0
    last = np.maximum(starts + counts - 1, 0)
    below = ordered[np.where(has, low, 0)] if len(ordered) else np.zeros(groups)
    above = ordered[np.where(has, np.minimum(low + 1, last), 0)] if len(ordered) else below
    with np.errstate(invalid="ignore"):
        value = np.where(frac == 0.0, below, below + (above - below) * frac)
    return np.where(has, value, np.nan)


def _bounds(bounds: np.ndarray) -> np.ndarray:
    return np.asarray(bounds, dtype=np.int64)
