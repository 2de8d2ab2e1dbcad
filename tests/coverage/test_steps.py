"""A batch applied in steps of partitions gives the files of applying it at once, byte for byte.

The one-step run is the update as it is with a batch below ``coverage.batch_max_mb``; the
stepped run forces steps of a segment or two (``batch_max_mb`` tiny), so that a trip's
segments, and the roads around an edge, fall in several steps. The figures at the step
borders are checked against counts made by hand from the drives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.coverage.contributor_runs import has_runs, list_runs
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.stage import compute_coverage
from pipeline.coverage.state import read_parts
from pipeline.coverage.steps import BYTES_PER_SEGMENT, SCRATCH_PREFIX, step_segments
from pipeline.io import write_frame
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
    drives = pd.concat([drives for _, drives in made], ignore_index=True)
    for folder in (apart, at_once):
        _check_contributor_rows(folder, drives)


def _check_contributor_rows(folder: Path, drives: pd.DataFrame) -> None:
    """The partitions' ``edge_contributors`` are the drives' rows by (edge, contributor).

    Their runs are merged on the way: each run at least twice as long as the next.
    """
    state = folder / "state"
    pointer = json.loads((state / "CURRENT.json").read_text())
    assert pointer["contributor_layout"] == 1
    for key, generation in pointer["parts"].items():
        lengths = [run.rows for run in list_runs(state / "parts" / key / generation)]
        assert all(older >= 2 * newer for older, newer in itertools.pairwise(lengths))
    parts = read_parts(state, pointer, set(pointer["parts"]))
    rows = pd.concat([part.edge_contributors for part in parts.values()], ignore_index=True)
    rows = rows.sort_values(["edge_id", "contributor_id"], ignore_index=True)
    expected = (
        drives.groupby(["edge_id", "contributor_id"], as_index=False)
        .agg(passes=("trip_id", "size"), driven_m=("length_m", "sum"),
             first_seen=("entered_at", "min"), last_seen=("exited_at", "max"))
        .sort_values(["edge_id", "contributor_id"], ignore_index=True)
    )  # fmt: skip
    assert rows[["edge_id", "contributor_id"]].values.tolist() == (
        expected[["edge_id", "contributor_id"]].values.tolist()
    )
    assert rows["passes"].tolist() == expected["passes"].tolist()
    assert np.allclose(rows["driven_mm"] / 1000, expected["driven_m"], atol=1e-3 * 12)
    first = expected["first_seen"].dt.as_unit("ms").astype("int64")
    last = expected["last_seen"].dt.as_unit("ms").astype("int64")
    assert rows["first_ms"].tolist() == first.tolist()
    assert rows["last_ms"].tolist() == last.tolist()


def _part_folder(folder: Path, key: str) -> Path:
    pointer = json.loads((folder / "state" / "CURRENT.json").read_text())
    return folder / "state" / "parts" / key / pointer["parts"][key]


@pytest.mark.shared_data
def test_an_update_of_new_edges_keeps_the_partitions_runs_before(
    roads: Path, network: Path, tmp_path: Path
) -> None:
    """A small batch on edges no one drove writes their rows alone; the runs before are links.

    The partition's run before (the first update's rows) is the same file (inode) in the new
    generation, and the edges' totals are the first update's and the second's.
    """
    made = _shared_edge_batches(roads, tmp_path, 1)
    folder = run(roads, network, [[made[0][0]]], tmp_path / "coverage", ONE_STEP)
    state = folder / "state"
    pointer = json.loads((state / "CURRENT.json").read_text())
    sizes = {key: list_runs(_part_folder(folder, key)) for key in pointer["parts"]}
    key = max(sizes, key=lambda name: sum(run.rows for run in sizes[name]))
    before = _part_folder(folder, key)
    table = pd.read_parquet(before / "edge_coverage.parquet")
    undriven = table.loc[table["passes"] == 0, "edge_id"].to_numpy()[:1]
    edges = read_edges(roads)
    picked = edges.set_index("edge_id").loc[undriven].reset_index()
    drives = full_drives(picked, ["new-trip"], [5], WHEN).assign(
        length_m=picked["length_m"].to_numpy()
    )
    batch = write_matched_batch(tmp_path / "m-new", edges, drives, roads_dir=roads)
    compute_coverage(roads, [batch], folder, ONE_STEP)
    after = _part_folder(folder, key)
    assert after != before
    runs = list_runs(after)
    assert runs[:-1] == sizes[key] and runs[-1].rows == 1
    for old in sizes[key]:
        assert (after / old.name).stat().st_ino == (before / old.name).stat().st_ino
    _check_totals(folder, _expected_totals(pd.concat([made[0][1], drives], ignore_index=True)))


def _as_layout_before_runs(folder: Path) -> None:
    """Rewrite a coverage folder's partitions as the layout before runs wrote them."""
    state = folder / "state"
    pointer = json.loads((state / "CURRENT.json").read_text())
    for key, part in read_parts(state, pointer, set(pointer["parts"])).items():
        generation = state / "parts" / key / pointer["parts"][key]
        write_frame(part.edge_contributors, generation / "edge_contributors.parquet")
        for name in ("edge_contributors.json", "edge_totals.parquet"):
            (generation / name).unlink()
        for path in generation.glob("edge_contributors-*.arrow"):
            path.unlink()
    del pointer["contributor_layout"]
    (state / "CURRENT.json").write_text(json.dumps(pointer))


@pytest.mark.shared_data
def test_a_state_of_the_layout_before_runs_is_migrated_once(
    roads: Path, network: Path, tmp_path: Path
) -> None:
    """Its next update writes every partition with runs: the outputs of a state of runs."""
    made = _shared_edge_batches(roads, tmp_path, 2)
    old = run(roads, network, [[made[0][0]]], tmp_path / "old", ONE_STEP)
    _as_layout_before_runs(old)
    compute_coverage(roads, [made[1][0]], old, ONE_STEP)
    new = run(roads, network, [[made[0][0]], [made[1][0]]], tmp_path / "new", ONE_STEP)
    pointer = json.loads((old / "state" / "CURRENT.json").read_text())
    assert pointer["contributor_layout"] == 1
    for key in pointer["parts"]:
        assert not (_part_folder(old, key) / "edge_contributors.parquet").exists()
        assert has_runs(_part_folder(old, key))
    pd.testing.assert_frame_equal(
        read_edge_table(old).to_pandas(), read_edge_table(new).to_pandas()
    )
    assert (old / "summary.json").read_bytes() == (new / "summary.json").read_bytes()
    drives = pd.concat([drives for _, drives in made], ignore_index=True)
    _check_contributor_rows(old, drives)
