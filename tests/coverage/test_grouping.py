"""Sorted grouping on codes equals pandas' groupby: same rows, order, values and dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.coverage.grouping import aggregate_groups, count_distinct, key_codes

# ids that sort differently as text and as numbers, and one with a non-ASCII letter
TEXT = st.sampled_from(["a", "b", "a1", "a10", "a2", "B", "ä", "trip-001", "trip-01"])
INTS = st.integers(-(2**62), 2**62)
SMALL = st.integers(-3, 3)
AGGREGATIONS = {
    "passes": ("count", "sum"),
    "driven_mm": ("mm", "sum"),
    "first_ms": ("ms", "min"),
    "last_ms": ("ms", "max"),
}


@st.composite
def rows(draw: st.DrawFn) -> pd.DataFrame:
    """Rows of an int key (few or many distinct values), two text keys and int values."""
    size = draw(st.integers(0, 40))
    keys = draw(st.sampled_from([SMALL, INTS]))
    text_type = draw(st.sampled_from([object, "str"]))
    return pd.DataFrame(
        {
            "edge_id": np.array(draw(st.lists(keys, min_size=size, max_size=size)), "int64"),
            "trip_id": pd.Series(draw(st.lists(TEXT, min_size=size, max_size=size)), dtype=object)
            .astype(text_type)
            .array,
            "contributor_id": draw(st.lists(TEXT, min_size=size, max_size=size)),
            "count": np.ones(size, dtype="int64"),
            "mm": np.array(draw(st.lists(INTS, min_size=size, max_size=size)), "int64") // 64,
            "ms": np.array(draw(st.lists(INTS, min_size=size, max_size=size)), "int64"),
        }
    )


@settings(max_examples=300, deadline=None)
@given(rows(), st.sampled_from([["edge_id", "trip_id", "contributor_id"], ["trip_id"]]))
def test_aggregates_equal_pandas_groupby(frame: pd.DataFrame, by: list[str]) -> None:
    expected = frame.groupby(by, as_index=False, sort=True).agg(**AGGREGATIONS)
    got = aggregate_groups(frame, by, **AGGREGATIONS)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    pd.testing.assert_frame_equal(got, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(SMALL | INTS, SMALL | INTS), max_size=40))
def test_count_distinct_equals_pandas_nunique(pairs: list[tuple[int, int]]) -> None:
    groups = np.array([g for g, _ in pairs], dtype="int64")
    items = np.array([i for _, i in pairs], dtype="int64")
    expected = pd.Series(items).groupby(groups).nunique()
    pd.testing.assert_series_equal(count_distinct(groups, items), expected, check_names=False)


def test_key_codes_order_rows_as_their_sorted_keys() -> None:
    frame = pd.DataFrame({"a": [2, 1, 2, 1], "b": ["x", "y", "w", "y"]})
    codes, uniques = key_codes(frame, ["a", "b"])
    assert list(uniques[0]) == [1, 2]
    assert list(uniques[1]) == ["w", "x", "y"]
    assert list(np.argsort(codes, kind="stable")) == [1, 3, 2, 0]
    assert codes[1] == codes[3]


def test_a_missing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        key_codes(pd.DataFrame({"a": ["x", None]}), ["a"])
