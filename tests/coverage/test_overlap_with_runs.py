"""Cutting covered pieces at the H3 runs of their edges, against rows worked out by hand."""

from __future__ import annotations

import pandas as pd

from pipeline.coverage.intervals import overlap_with_runs

# edge 1 is 3 m long in three cells (A, B, C), edge 2 half a metre in one (D); given in a
# scrambled order and with an index of their own, as a caller may have them
RUNS = pd.DataFrame(
    {
        "key": [2, 1, 1, 1],
        "from_mm": [0, 2000, 0, 1000],
        "to_mm": [500, 3000, 1000, 2000],
        "cell": [40, 30, 10, 20],
    },
    index=[7, 5, 3, 1],
)


def test_pieces_are_cut_at_every_run_boundary_they_cross() -> None:
    pieces = pd.DataFrame(
        {
            "key": [1, 1, 2, 2],
            "from_mm": [500, 1000, 0, 200],
            "to_mm": [2001, 2000, 500, 200],  # the last one is empty
            "trip": ["t1", "t3", "t2", "t4"],
        }
    )
    expected = pd.DataFrame(
        {
            "key": [1, 1, 1, 1, 2],
            "from_mm": [500, 500, 500, 1000, 0],
            "to_mm": [2001, 2001, 2001, 2000, 500],
            "trip": ["t1", "t1", "t1", "t3", "t2"],
            "cell": [10, 20, 30, 20, 40],
            "length_mm": [500, 1000, 1, 1000, 500],  # 1 mm into cell C counts too
        }
    )
    pd.testing.assert_frame_equal(overlap_with_runs(pieces, RUNS), expected)


def test_no_pieces_give_no_rows() -> None:
    pieces = pd.DataFrame({"key": [], "from_mm": [], "to_mm": []}, dtype="int64")
    out = overlap_with_runs(pieces, RUNS)
    assert out.empty and list(out.columns) == ["key", "from_mm", "to_mm", "cell", "length_mm"]
