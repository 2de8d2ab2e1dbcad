"""What each partition contributes to the coarse cells, against figures worked out by hand.

Two partitions (H3 resolution 5) under one resolution-4 cell, three finest cells (resolution
7): the partitions' rows are sums and distinct sets of their own finest cells, the coarse
cell's distinct contributors are not the sum of the partitions' (one contributor drove both),
and replacing the rows of the partitions an update changed gives the rows computed anew.
"""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd

from pipeline.coverage.cells import parent_cells
from pipeline.coverage.rollup import (
    OLDEST_MS,
    PART_CELL_TABLES,
    coarse_cell_trips,
    highway_rows,
    part_cell_rows,
    summary_driven,
    updated_part_cells,
    updated_road_cover,
)
from pipeline.coverage.tables import cells_table

T1, T2, T3 = 1_780_000_000_000, 1_780_000_600_000, 1_780_001_200_000
GRAND = h3.latlng_to_cell(43.6, 1.44, 4)
P1, P2 = sorted(h3.cell_to_children(GRAND, 5))[:2]
A, B = sorted(h3.cell_to_children(P1, 7))[:2]
(C,) = sorted(h3.cell_to_children(P2, 7))[:1]
p1, p2, a, b, c, grand = (int(cell, 16) for cell in (P1, P2, A, B, C, GRAND))


def rollup(b_last_ms: int, c_contributors: list[str]) -> dict[str, pd.DataFrame]:
    """The rollup's finest-cell tables of the hand case."""
    pairs = [(a, "x"), (b, "x"), (b, "y"), *[(c, who) for who in c_contributors]]
    return {
        "road_cover": pd.DataFrame(
            {
                "key": [1, 1, 2],
                "cell": [a, b, c],
                "length_mm": [100, 50, 30],
                "last_ms": [T1, b_last_ms, T1],
                "highway": ["primary", "primary", "residential"],
            }
        ),
        "cell_total": pd.DataFrame({"cell": [a, c], "total_mm": [500, 70]}),
        "cell_contributors": pd.DataFrame(pairs, columns=["cell", "contributor_id"]),
        "cell_passes": pd.DataFrame({"resolution": [4], "cell": [grand], "passes": [3]}),
    }


def as_sets(rows: dict[str, pd.DataFrame]) -> dict[str, set[tuple[object, ...]]]:
    return {name: set(rows[name].itertuples(index=False, name=None)) for name in PART_CELL_TABLES}


def test_a_partitions_rows_are_of_its_own_finest_cells() -> None:
    rows = part_cell_rows(rollup(T2, ["x"]), 5, np.array([p1, p2]))
    assert as_sets(rows) == {
        "part_covered": {
            (p1, "primary", T1, 100),
            (p1, "primary", T2, 50),
            (p2, "residential", T1, 30),
        },
        "part_total": {(p1, 500), (p2, 70)},
        "part_contributors": {(p1, "x"), (p1, "y"), (p2, "x")},
    }
    only_p2 = part_cell_rows(rollup(T2, ["x"]), 5, np.array([p2]))
    assert as_sets(only_p2) == {
        "part_covered": {(p2, "residential", T1, 30)}, "part_total": {(p2, 70)},
        "part_contributors": {(p2, "x")},
    }  # fmt: skip


def test_the_coarse_cell_counts_a_contributor_of_two_partitions_once() -> None:
    tables = {**rollup(T2, ["x"]), **part_cell_rows(rollup(T2, ["x"]), 5, np.array([p1, p2]))}
    road = pd.Series([1_000, 400], index=pd.Index([p1, p2], name="cell"), name="road_mm")
    coarse = cells_table(
        road, tables["part_covered"], coarse_cell_trips(tables), T2, 5, parent_cells,
        levels=range(4, -1, -1),
    )  # fmt: skip
    row = coarse[coarse["cell"] == grand].iloc[0]
    assert row["resolution"] == 4
    assert row["contributors"] == 2  # x and y; x drove both partitions
    assert row["passes"] == 3
    assert row["road_km"] == 1_400 / 1e6 and row["unique_km"] == 180 / 1e6
    assert row["total_km"] == 570 / 1e6
    assert row["fresh_7d_km"] == 180 / 1e6
    assert row["last_seen"] == pd.Timestamp(T2, unit="ms", tz="UTC")


def test_replacing_the_changed_partitions_rows_gives_the_rows_anew() -> None:
    before = {**rollup(T2, ["x"]), **part_cell_rows(rollup(T2, ["x"]), 5, np.array([p1, p2]))}
    after = {**rollup(T3, ["x", "z"]), **{name: before[name] for name in PART_CELL_TABLES}}
    stale = updated_part_cells(after, 5, np.array([p1]))  # z's cell (in p2) left out
    assert (p2, "z") not in as_sets(stale)["part_contributors"]
    assert (p1, "primary", T3, 50) in as_sets(stale)["part_covered"]
    both = updated_part_cells(stale, 5, np.array([p2]))
    assert as_sets(both) == as_sets(part_cell_rows(after, 5, np.array([p1, p2])))
    assert (p2, "z") in as_sets(both)["part_contributors"]
    first = {name: table for name, table in after.items() if name not in PART_CELL_TABLES}
    assert as_sets(updated_part_cells(first, 5, np.array([p1, p2]))) == as_sets(both)


def test_the_summarys_driven_rows_are_the_last_weeks_and_the_rest_by_highway() -> None:
    totals = pd.DataFrame({"highway": ["primary", "residential"], "driven_mm": [1000, 300]})
    recent = pd.DataFrame(
        {"edge_id": [7, 8, 9], "last_ms": [T3, T2, T3], "driven_mm": [200, 50, 100],
         "highway": ["primary", "primary", "residential"]}
    )  # fmt: skip
    rows = summary_driven(totals, recent)
    assert set(rows.itertuples(index=False, name=None)) == {
        ("primary", OLDEST_MS, 750),  # 1000 - 200 - 50
        ("residential", OLDEST_MS, 200),  # 300 - 100
        ("primary", T3, 200),
        ("primary", T2, 50),
        ("residential", T3, 100),
    }


def test_an_update_replaces_the_road_cover_rows_of_the_edges_partitions_it_touched() -> None:
    """Rows kept by the partition of their cell; ``part`` is their edge's partition."""
    old = pd.DataFrame(
        {"key": [1, 2, 3], "cell": [a, b, c], "length_mm": [100, 50, 30],
         "last_ms": [T1, T1, T1], "part": ["e1", "e2", "e1"], "highway": "primary"}
    )  # fmt: skip
    new = pd.DataFrame(  # e1's rows after the update: road 1 longer, road 3 unchanged
        {"key": [1, 1, 3], "cell": [a, c, c], "length_mm": [120, 10, 30],
         "last_ms": [T2, T2, T1], "part": "e1", "highway": "primary"}
    )  # fmt: skip
    in_p1 = updated_road_cover([old.iloc[:2]], {"e1"}, new, 5, np.array([p1]))
    assert set(in_p1[["key", "cell", "length_mm", "last_ms"]].itertuples(index=False)) == {
        (1, a, 120, T2), (2, b, 50, T1)  # e2's row kept; e1's of c (in p2) not in p1's
    }  # fmt: skip
    in_p2 = updated_road_cover([old.iloc[2:]], {"e1"}, new, 5, np.array([p2]))
    assert sorted(in_p2["length_mm"]) == [10, 30]  # replaced, not added to the old 30


def test_the_covered_mm_by_partition_and_highway_are_the_edges_sums() -> None:
    totals = pd.DataFrame(
        {"edge_id": [1, 2, 3, 4], "covered_mm": [5, 7, 11, 13],
         "part": ["e1", "e1", "e1", "e2"],
         "highway": ["primary", "residential", "primary", "primary"]}
    )  # fmt: skip
    assert set(highway_rows(totals).itertuples(index=False, name=None)) == {
        ("e1", "primary", 16), ("e1", "residential", 7), ("e2", "primary", 13)
    }  # fmt: skip
