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


@cached_njit(aot=True)
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
    ``groupby(...).quantile(q)`` computes it. Each group is sorted on its own (a stable sort,
    equal values in their order), a third of the cost of one sort of all the values by group
    and value for groups of hundreds of values (a snap task's trips).
    """
    values = np.asarray(values, dtype="float64")
    bounds = _bounds(bounds)
    quantiles = np.full(len(bounds) - 1, np.nan)
    for g in range(len(bounds) - 1):
        run = values[bounds[g] : bounds[g + 1]]
        ordered = np.sort(run[~np.isnan(run)], kind="stable")
        if len(ordered):
            quantiles[g] = _interpolated(ordered, q * (len(ordered) - 1.0))
    return quantiles


def _interpolated(ordered: np.ndarray, position: float) -> float:
    """Return the value at a fractional ``position`` of sorted values, as pandas interpolates."""
    low = int(position)  # truncated, as pandas does
    frac = position % 1
    below = ordered[low]
    if frac == 0.0:
        return float(below)
    above = ordered[min(low + 1, len(ordered) - 1)]
    with np.errstate(invalid="ignore"):
        return float(below + (above - below) * frac)


def _bounds(bounds: np.ndarray) -> np.ndarray:
    return np.asarray(bounds, dtype=np.int64)
