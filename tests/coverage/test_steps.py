"""A batch applied in steps of partitions gives the files of applying it at once, byte for byte.

The one-step run is the update as it is with a batch below ``coverage.batch_max_mb``; the
stepped run forces steps of a segment or two (``batch_max_mb`` tiny), so that a trip's
segments, and the roads around an edge, fall in several steps. The figures at the step
borders are checked against counts made by hand from the drives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.stage import compute_coverage
from pipeline.coverage.state import StatePart, empty_state
from pipeline.coverage.steps import BYTES_PER_SEGMENT, SCRATCH_PREFIX, _merge_parts, step_segments
from pipeline.roads import read_edges
from tests.builders import full_drives, write_matched_batch

ONE_STEP = dataclasses.replace(load_config().coverage, partition_resolution=8)
TINY = dataclasses.replace(ONE_STEP, batch_max_mb=1.5 * BYTES_PER_SEGMENT / 2**20)  # 1 segment
WHEN = pd.Timestamp("2026-09-01T08:00Z")


@pytest.fixture(scope="module")
def roads(monaco_roads: Path) -> Path:
    return monaco_roads


@pytest.fixture(scope="module")
def network(roads: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A coverage folder's network cache, copied into the others (computed once)."""
    folder = tmp_path_factory.mktemp("cache")
    edges = read_edges(roads)
    drives = full_drives(edges.iloc[:1], ["warm"], [0], WHEN)
    compute_coverage(roads, [write_matched_batch(folder / "m", edges, drives, roads_dir=roads)],
                     folder / "coverage", ONE_STEP)  # fmt: skip
    return folder / "coverage" / "network"


def run(roads: Path, network: Path, batches: list[list[Path]], folder: Path, settings) -> Path:
    """Apply each list of matched folders as one update into ``folder``; return it."""
    shutil.copytree(network, folder / "network")
    for matched in batches:
        compute_coverage(roads, matched, folder, settings)
    return folder


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.*"))
        if path.is_file() and not path.name.startswith(".")
    }


def current_rollup(folder: Path) -> Path:
    pointer = json.loads((folder / "state" / "CURRENT.json").read_text())
    return folder / "state" / "rollup" / pointer["rollup"]


@pytest.fixture(scope="module")
def batches(roads: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two batches of trips of 8 random edges each over Monaco; the second repeats trips."""
    edges = read_edges(roads)
    rng = np.random.default_rng(7)
    folders = []
    for number in range(2):
        picked = edges.iloc[rng.choice(len(edges), 96, replace=True)]
        trips = [f"b{number}-trip{i // 8}-{i // 8 % 3}" for i in range(len(picked))]
        drives = full_drives(picked, trips, list(range(len(picked))), WHEN)
        if number:  # two trips of the first batch again: skipped, counted once
            drives = pd.concat([pd.read_parquet(folders[0] / "drives.parquet")[:16], drives])
        folder = tmp_path_factory.mktemp(f"batch{number}")
        write_matched_batch(folder, edges, drives, roads_dir=roads)
        drives.to_parquet(folder / "drives.parquet")
        folders.append(folder)
    return folders


@pytest.mark.shared_data
def test_a_batch_in_steps_writes_the_files_of_one_step(
    roads: Path, network: Path, batches: list[Path], tmp_path: Path
) -> None:
    updates = [[batches[0]], [batches[1]]]
    one = run(roads, network, updates, tmp_path / "one", ONE_STEP)
    stepped = run(roads, network, updates, tmp_path / "stepped", TINY)
    assert file_hashes(stepped) == file_hashes(one)
    # 12 trips a batch (of 8 edges, on roads of several partitions); two of the first repeated
    rollup = current_rollup(stepped)
    trips = pq.read_table(rollup / "trips.parquet")
    assert trips.num_rows == 24 and len(set(trips["trip_id"].to_pylist())) == 24
    passes = pd.read_parquet(rollup / "cell_passes.parquet")
    coarsest = passes.query("resolution == 0")  # Monaco: one cell at resolution 0
    assert coarsest["passes"].tolist() == [24]


@pytest.mark.shared_data
def test_rows_at_a_step_border_are_neither_dropped_nor_doubled(
    roads: Path, network: Path, tmp_path: Path
) -> None:
    """Trip A drives edges of two partitions; trips A and B the same edge, in one batch."""
    edges = read_edges(roads)
    runs = sorted((network / next(network.iterdir()).name / "runs").glob("*.parquet"))
    parts = pd.concat([pd.read_parquet(path).assign(part=path.stem) for path in runs])
    part_of = parts.groupby("key")["part"].first()
    first, second = sorted(part_of.unique())[:2]
    a = int(part_of[part_of == first].index[0])
    b = int(part_of[part_of == second].index[0])
    picked = edges.set_index("edge_id").loc[[a, b, b]].reset_index()
    drives = full_drives(picked, ["trip-a", "trip-a", "trip-b"], [0, 1, 2], WHEN)
    batch = write_matched_batch(tmp_path / "m", edges, drives, roads_dir=roads)
    one = run(roads, network, [[batch]], tmp_path / "one", ONE_STEP)
    stepped = run(roads, network, [[batch]], tmp_path / "stepped", TINY)
    assert file_hashes(stepped) == file_hashes(one)
    assert step_segments(TINY.batch_max_mb) == 1
    generation = json.loads((stepped / "state" / "CURRENT.json").read_text())["version"]
    edge_trips = pd.read_parquet(stepped / "state" / "trips" / generation / "edge_trips.parquet")
    assert sorted(zip(edge_trips["edge_id"], edge_trips["trip_id"], strict=True)) == sorted(
        [(a, "trip-a"), (b, "trip-a"), (b, "trip-b")]
    )
    table = read_edge_table(stepped).to_pandas().set_index("edge_id")
    assert table.loc[b, "passes"] == 2 and table.loc[a, "passes"] == 1
    summary = json.loads((stepped / "summary.json").read_text())
    length_km = edges.set_index("edge_id").loc[[a, b, b], "length_m"].sum() / 1000
    assert summary["total_km"] == pytest.approx(length_km, abs=1e-5)
    rollup = current_rollup(stepped)
    assert sorted(pd.read_parquet(rollup / "trips.parquet")["trip_id"]) == ["trip-a", "trip-b"]
    passes = pd.read_parquet(rollup / "cell_passes.parquet").query("resolution == 0")
    assert passes["passes"].tolist() == [2]


@pytest.mark.shared_data
def test_the_scratch_of_a_killed_update_is_removed_by_the_next(
    roads: Path, network: Path, batches: list[Path], tmp_path: Path
) -> None:
    folder = run(roads, network, [[batches[0]]], tmp_path / "coverage", TINY)
    killed = folder / "state" / f"{SCRATCH_PREFIX}dead"  # as a SIGKILLed update leaves it
    (killed / "segments").mkdir(parents=True)
    (killed / "segments" / "000000-0.arrow").write_bytes(b"spilled")
    compute_coverage(roads, [batches[1]], folder, TINY)
    assert sorted(p.name for p in (folder / "state").iterdir() if p.name.startswith(".b")) == []


PAIRS = ["edge_id", "contributor_id", "passes", "driven_mm", "first_ms", "last_ms"]


def test_a_partitions_contributors_merged_edge_by_edge_are_every_rows_merge() -> None:
    """Only the batch's edges' rows are merged; the others are kept, in edge order."""
    old = pd.DataFrame(
        [
            (1, "a", 1, 10, 5, 9),
            (1, "b", 2, 20, 6, 9),
            (2, "a", 3, 30, 7, 9),
            (3, "c", 4, 40, 8, 9),
        ],
        columns=PAIRS,
    )
    new = pd.DataFrame([(1, "a", 1, 5, 1, 30), (3, "d", 1, 5, 20, 30)], columns=PAIRS)
    no_pieces = empty_state().edge_pieces
    merged = _merge_parts(StatePart(no_pieces, old), StatePart(no_pieces, new))
    assert list(merged.edge_contributors.itertuples(index=False, name=None)) == [
        (1, "a", 2, 15, 1, 30),  # a's passes and mm summed, first and last times of both
        (1, "b", 2, 20, 6, 9),
        (2, "a", 3, 30, 7, 9),
        (3, "c", 4, 40, 8, 9),
        (3, "d", 1, 5, 20, 30),
    ]


def _shared_edge_batches(roads: Path, folder: Path, count: int) -> list[tuple[Path, pd.DataFrame]]:
    """``count`` batches of 20 trips of 3 edges each, over 25 Monaco edges they all share.

    Trip ``b<n>-t<i>-<k>`` is contributor ``c-<k>`` (of 4), in every batch: an edge's
    contributors in one batch are often some of those of another.
    """
    edges = read_edges(roads)
    rng = np.random.default_rng(22)
    pool = edges.iloc[rng.choice(len(edges), 25, replace=False)]
    made = []
    for number in range(count):
        picked = pool.iloc[rng.choice(len(pool), 60, replace=True)]
        trips = [f"b{number}-t{i // 3}-{i // 3 % 4}" for i in range(len(picked))]
        minutes = rng.integers(0, 10_000, len(picked)).tolist()
        drives = full_drives(picked, trips, minutes, WHEN).assign(
            length_m=picked["length_m"].to_numpy()
        )
        batch = write_matched_batch(folder / f"m{number}", edges, drives, roads_dir=roads)
        made.append((batch, drives))
    return made


def _expected_totals(drives: pd.DataFrame) -> pd.DataFrame:
    """Per edge, from every drive's row (pandas groupby, not the pipeline's grouping)."""
    return drives.groupby("edge_id").agg(
        passes=("trip_id", "size"),
        contributors=("contributor_id", "nunique"),
        total_m=("length_m", "sum"),
        first_seen=("entered_at", "min"),
        last_seen=("exited_at", "max"),
    )


def _check_totals(folder: Path, expected: pd.DataFrame) -> None:
    """The edge coverage of ``folder``'s driven edges is ``expected``'s."""
    table = read_edge_table(folder).to_pandas().set_index("edge_id")
    driven = table[table["passes"] > 0].sort_index()
    assert driven.index.tolist() == expected.index.tolist()
    assert driven["passes"].tolist() == expected["passes"].tolist()
    assert driven["contributors"].tolist() == expected["contributors"].tolist()
    assert np.allclose(driven["total_m"], expected["total_m"], atol=1e-3 * 12)
    assert (driven["first_seen"] == expected["first_seen"]).all()
    assert (driven["last_seen"] == expected["last_seen"]).all()


@pytest.mark.shared_data
def test_an_update_in_batches_keeps_the_edge_totals_of_every_batch(
    roads: Path, network: Path, tmp_path: Path
) -> None:
    """Three updates give the totals counted from all the drives' rows, as one update does."""
    made = _shared_edge_batches(roads, tmp_path, 3)
    folders = [batch for batch, _ in made]
    expected = _expected_totals(pd.concat([drives for _, drives in made], ignore_index=True))
    apart = run(roads, network, [[batch] for batch in folders], tmp_path / "apart", ONE_STEP)
    at_once = run(roads, network, [folders], tmp_path / "at-once", ONE_STEP)
    _check_totals(apart, expected)
    _check_totals(at_once, expected)
    by_three = read_edge_table(apart).to_pandas().drop(columns="age_days")
    by_one = read_edge_table(at_once).to_pandas().drop(columns="age_days")
    pd.testing.assert_frame_equal(by_three, by_one)
