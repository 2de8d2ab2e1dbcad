"""Per-group sums, means and quantiles equal pandas' groupby to the last bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.snap.group_stats import group_means, group_quantiles, group_sums

# magnitudes far apart, so that the order and compensation of the sums shows in the last bits
VALUES = st.one_of(
    st.floats(0, 1e3, allow_nan=False),
    st.floats(1e8, 1e12, allow_nan=False),
    st.sampled_from([0.1, 0.2, 0.3, 1e16, np.nan]),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Values in runs of one or more (the groups), some NaN or none at all."""
    sizes = draw(st.lists(st.integers(1, 60), min_size=1, max_size=12))
    values = np.array(draw(st.lists(VALUES, min_size=sum(sizes), max_size=sum(sizes))))
    if draw(st.booleans()):
        values = np.nan_to_num(values, nan=0.5)
    return values, np.r_[0, np.cumsum(sizes)]


def grouped(values: np.ndarray, bounds: np.ndarray) -> pd.core.groupby.SeriesGroupBy:
    """The pandas grouping the snap stage used: run codes in order of appearance."""
    return pd.Series(values).groupby(np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaN equal to NaN)."""
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(runs())
def test_sums_and_means_are_pandas_to_the_bit(data: tuple[np.ndarray, np.ndarray]) -> None:
    values, bounds = data
    assert same(group_sums(values, bounds)[0], grouped(values, bounds).sum().to_numpy())
    assert same(group_means(values, bounds), grouped(values, bounds).mean().to_numpy())


@settings(max_examples=300, deadline=None)
@given(runs(), st.sampled_from([0.0, 0.25, 0.5, 0.95, 0.99, 1.0]))
def test_quantiles_are_pandas_linear_interpolation_to_the_bit(
    data: tuple[np.ndarray, np.ndarray], q: float
) -> None:
    values, bounds = data
    expected = grouped(values, bounds).quantile(q).to_numpy()
    assert same(group_quantiles(values, bounds, q), expected)


def test_a_group_without_values_sums_to_zero_and_has_no_mean_or_quantile() -> None:
    values = np.array([1.0, 2.0, np.nan, 4.0])
    bounds = np.array([0, 2, 2, 3, 4])  # groups [1, 2], [], [nan], [4]
    sums, counts = group_sums(values, bounds)
    assert sums.tolist() == [3.0, 0.0, 0.0, 4.0] and counts.tolist() == [2, 0, 0, 1]
    assert np.array_equal(group_means(values, bounds), [1.5, np.nan, np.nan, 4.0], equal_nan=True)
    quantiles = group_quantiles(values, bounds, 0.5)
    assert np.array_equal(quantiles, [1.5, np.nan, np.nan, 4.0], equal_nan=True)
    assert group_sums(np.array([1.0, 2.0]), np.array([0, 0, 2]))[0].tolist() == [0.0, 3.0]
