"""Interval unions: exact lengths, earliest and latest observation, order independence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.coverage.intervals import (
    PIECE_COLUMNS,
    covered_length_mm,
    reduce_over_ranges,
    union_pieces,
)

INT64 = np.iinfo("int64")


def pieces(*rows: tuple[int, int, int, int, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["key", "from_mm", "to_mm", "first_ms", "last_ms"])


def test_overlapping_pieces_merge_and_keep_first_and_last_seen() -> None:
    merged = union_pieces(pieces((1, 0, 500, 10, 10), (1, 300, 800, 20, 20), (2, 100, 200, 5, 5)))
    assert merged.to_dict("records") == [
        {"key": 1, "from_mm": 0, "to_mm": 300, "first_ms": 10, "last_ms": 10},
        {"key": 1, "from_mm": 300, "to_mm": 500, "first_ms": 10, "last_ms": 20},
        {"key": 1, "from_mm": 500, "to_mm": 800, "first_ms": 20, "last_ms": 20},
        {"key": 2, "from_mm": 100, "to_mm": 200, "first_ms": 5, "last_ms": 5},
    ]
    assert covered_length_mm(merged).to_dict() == {1: 800, 2: 100}


def test_gaps_stay_gaps_and_touching_pieces_with_equal_times_join() -> None:
    merged = union_pieces(pieces((7, 0, 100, 1, 1), (7, 100, 250, 1, 1), (7, 400, 500, 1, 1)))
    assert merged[["from_mm", "to_mm"]].values.tolist() == [[0, 250], [400, 500]]


def test_empty_input_and_zero_length_pieces() -> None:
    assert union_pieces(pieces((1, 50, 50, 1, 1))).empty
    assert list(union_pieces(pieces()).columns) == [
        "key",
        "from_mm",
        "to_mm",
        "first_ms",
        "last_ms",
    ]


piece = st.tuples(
    st.integers(0, 3), st.integers(0, 1000), st.integers(1, 400), st.integers(0, 50)
).map(lambda t: (t[0], t[1], t[1] + t[2], t[3], t[3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(piece, max_size=25), st.lists(piece, max_size=25), st.randoms())
def test_incremental_union_in_any_order_equals_one_union(
    batch_a: list[tuple[int, int, int, int, int]],
    batch_b: list[tuple[int, int, int, int, int]],
    random: object,
) -> None:
    everything = union_pieces(pieces(*batch_a, *batch_b))
    a_then_b = union_pieces(pd.concat([union_pieces(pieces(*batch_a)), pieces(*batch_b)]))
    shuffled = list(batch_a + batch_b)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert a_then_b.equals(everything)
    assert union_pieces(pieces(*shuffled)).equals(everything)
    # covered length never exceeds the sum of the pieces, and equals a brute-force count
    for key, length in covered_length_mm(everything).items():
        marks = set()
        for k, lo, hi, _, _ in batch_a + batch_b:
            if k == key:
                marks |= set(range(lo, hi))
        assert length == len(marks)


def union_by_brute_force(rows: list[tuple[int, int, int, int, int]]) -> pd.DataFrame:
    """Union of pieces one millimetre at a time: the semantics union_pieces must keep."""
    times: dict[tuple[int, int], tuple[int, int]] = {}
    for key, lo, hi, first, last in rows:
        for mm in range(lo, hi):
            old_first, old_last = times.get((key, mm), (first, last))
            times[(key, mm)] = (min(old_first, first), max(old_last, last))
    merged: list[list[int]] = []
    for (key, mm), (first, last) in sorted(times.items()):
        previous = merged[-1] if merged else None
        if previous and previous[0] == key and previous[2] == mm and previous[3:] == [first, last]:
            previous[2] = mm + 1
        else:
            merged.append([key, mm, mm + 1, first, last])
    return pd.DataFrame(merged, columns=PIECE_COLUMNS, dtype="int64")


timed_piece = st.tuples(
    st.integers(0, 3),
    st.integers(0, 300),
    st.integers(0, 120),
    st.integers(-50, 50),
    st.integers(0, 60),
).map(lambda t: (t[0], t[1], t[1] + t[2], t[3], t[3] + t[4]))


@settings(max_examples=300, deadline=None)
@given(st.lists(timed_piece, max_size=40))
def test_union_keeps_earliest_first_and_latest_last_of_covering_pieces(
    rows: list[tuple[int, int, int, int, int]],
) -> None:
    merged = union_pieces(pieces(*rows))
    expected = union_by_brute_force(rows)
    assert merged.reset_index(drop=True).equals(expected)


def test_union_of_many_pieces_sharing_cuts() -> None:
    # a long edge driven by many trips: every piece spans many elementary intervals
    rows = [(5, 10 * i, 3000 - 7 * i, 1000 - i, 2000 + (i * 37) % 101) for i in range(120)]
    assert union_pieces(pieces(*rows)).equals(union_by_brute_force(rows))


ranges = st.integers(1, 70).flatmap(
    lambda size: st.tuples(
        st.just(size),
        st.lists(
            st.tuples(st.integers(0, size - 1), st.integers(1, size), st.integers(-99, 99)).map(
                lambda t: (t[0], max(t[1], t[0] + 1), t[2])
            ),
            max_size=30,
        ),
    )
)


@settings(max_examples=300, deadline=None)
@given(ranges)
def test_reduce_over_ranges_matches_a_loop_over_each_range(
    case: tuple[int, list[tuple[int, int, int]]],
) -> None:
    size, rows = case
    begin = np.array([r[0] for r in rows], dtype="int64")
    stop = np.array([r[1] for r in rows], dtype="int64")
    values = np.array([r[2] for r in rows], dtype="int64")
    for ufunc, identity in ((np.minimum, INT64.max), (np.maximum, INT64.min)):
        expected = np.full(size, identity, dtype="int64")
        for lo, hi, value in rows:
            expected[lo:hi] = ufunc(expected[lo:hi], value)
        got = reduce_over_ranges(begin, stop, values, size, ufunc)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_reduce_over_ranges_refuses_other_reductions() -> None:
    one = np.array([0], dtype="int64")
    with pytest.raises(ValueError, match="np.minimum or np.maximum"):
        reduce_over_ranges(one, one + 1, one, 1, np.add)
