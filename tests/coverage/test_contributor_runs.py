"""A partition's ``edge_contributors`` as runs: their merge is every batch's rows merged.

The expected rows are pandas' ``groupby`` of every trip's rows, not the pipeline's grouping.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.coverage.contributor_runs import (
    RUNS_FILE,
    list_runs,
    read_rows,
    rows_of_edges,
    write_runs,
)

PAIR = ["edge_id", "contributor_id"]


def _trip_rows(rng: np.random.Generator, batch: int, trips: int) -> pd.DataFrame:
    """Rows of ``trips`` trips over 40 edges by 6 contributors (a row per edge a trip drove)."""
    rows = trips * 5
    return pd.DataFrame(
        {
            "edge_id": rng.integers(0, 40, rows).astype("int64") * 7_919 + 11,
            "contributor_id": [f"c{code}" for code in rng.integers(0, 6, rows)],
            "passes": np.ones(rows, dtype="int64"),
            "driven_mm": rng.integers(1, 50_000, rows).astype("int64"),
            "first_ms": rng.integers(0, 10**9, rows).astype("int64") + batch * 10**9,
            "last_ms": rng.integers(0, 10**9, rows).astype("int64") + batch * 10**9 + 10**9,
        }
    )


def _by_pair(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows merged by (edge, contributor) with pandas alone, sorted."""
    merged = rows.groupby(PAIR, as_index=False).agg(
        passes=("passes", "sum"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )
    return merged.sort_values(PAIR, ignore_index=True).astype({"contributor_id": str})


def _plain(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(PAIR, ignore_index=True).astype({"contributor_id": str})


def test_the_runs_of_many_updates_merge_to_every_batchs_rows(tmp_path: Path) -> None:
    """Twelve batches written run after run, merged on the way, give every row merged.

    Each generation folder holds its runs; each run is at least twice as long as the next,
    so the runs are few, and merging happened (a generation with fewer runs than before).
    """
    rng = np.random.default_rng(22)
    before, runs, every, counts = None, [], [], []
    for number in range(12):
        trips = _trip_rows(rng, number, 40 if number == 0 else int(rng.integers(1, 12)))
        every.append(trips)
        folder = tmp_path / f"g{number:02d}"
        runs = write_runs(folder, before, runs, _by_pair(trips), f"{number:016x}")
        before = folder
        counts.append(len(runs))
        lengths = [run.rows for run in runs]
        assert all(older >= 2 * newer for older, newer in itertools.pairwise(lengths))
        assert len(runs) <= math.log2(max(sum(lengths), 2)) + 1
        assert list_runs(folder) == runs
    assert any(later < earlier for earlier, later in itertools.pairwise(counts))
    expected = _by_pair(pd.concat(every, ignore_index=True))
    pd.testing.assert_frame_equal(_plain(read_rows(before)), expected, check_dtype=False)
    some = expected["edge_id"].drop_duplicates().to_numpy()[::3]
    found = _by_pair(rows_of_edges(before, list_runs(before), some[::-1]))
    wanted = expected[expected["edge_id"].isin(some)].reset_index(drop=True)
    pd.testing.assert_frame_equal(found, wanted, check_dtype=False)


def test_a_small_update_links_the_runs_before_and_writes_its_rows_alone(tmp_path: Path) -> None:
    """A batch much smaller than the runs before writes a run of its rows; theirs are links."""
    rng = np.random.default_rng(5)
    first = _by_pair(_trip_rows(rng, 0, 60))
    runs = write_runs(tmp_path / "g0", None, [], first, "0" * 16)
    small = _by_pair(_trip_rows(rng, 1, 1))
    after = write_runs(tmp_path / "g1", tmp_path / "g0", runs, small, "1" * 16)
    assert after[:-1] == runs and after[-1].rows == len(small)
    old, new = tmp_path / "g0" / runs[0].name, tmp_path / "g1" / runs[0].name
    assert old.stat().st_ino == new.stat().st_ino
    assert (tmp_path / "g1" / RUNS_FILE).is_file()
    assert len(rows_of_edges(tmp_path / "g1", after[-1:], small["edge_id"].to_numpy())) == len(
        small
    )
