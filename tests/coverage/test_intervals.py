"""Interval unions: exact lengths, earliest and latest observation, order independence."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.coverage.intervals import covered_length_mm, union_pieces


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
