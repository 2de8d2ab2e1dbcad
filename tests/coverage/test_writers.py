"""One writer per coverage folder: concurrent runs, runs killed at every write, old versions.

Real ``roadcover coverage`` processes (``python -m pipeline.cli``, importing this checkout),
started together or killed with SIGKILL; the expected folder is a clean one-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.coverage.state import STATE_TABLES, read_state
from pipeline.export.inputs import read_cells, read_edge_coverage
from pipeline.roads import build_roads, read_edges
from tests.builders import write_matched_batch

REPO = Path(__file__).resolve().parents[2]
SETTINGS = load_config().coverage  # what `roadcover coverage` uses without --config
TIMEOUT_S = 300
# Runs `roadcover ARGS...` and kills itself with SIGKILL just before its KILL_AT-th file
# rename (every output file is written to a temporary file, then renamed into place); prints
# how many renames it made when it is not killed.
KILLED_AT_RENAME = """
import os, signal, sys
kill_at, renames, rename = int(sys.argv[1]), [0], os.replace
out = os.path.abspath(sys.argv[sys.argv.index("-o") + 1])
def replace(source, destination):
    if not os.path.abspath(destination).startswith(out):  # e.g. the roads' sha256 memo
        return rename(source, destination)
    if renames[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    renames[0] += 1
    rename(source, destination)
os.replace = replace
from pipeline.cli import main
status = main(sys.argv[2:])
print(renames[0])
sys.exit(status)
"""


def roadcover_env() -> dict[str, str]:
    """The environment of a child ``roadcover``: this checkout's ``pipeline`` first."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def coverage_command(roads: Path, batches: list[Path], out: Path) -> list[str]:
    """Return the argument list of ``roadcover coverage`` after the program."""
    matched = [arg for batch in batches for arg in ("--matched", str(batch))]
    return ["coverage", "--roads", str(roads), *matched, "-o", str(out)]


def write_batch(roads: Path, folder: Path, seed: int, edge_count: int) -> Path:
    """A matched batch driving ``edge_count`` random edges, 10 edges per trip, fully."""
    edges = read_edges(roads)
    rng = np.random.default_rng(seed)
    pick = edges.iloc[rng.choice(len(edges), edge_count, replace=False)]
    when = pd.Timestamp("2026-10-01T08:00Z") + pd.to_timedelta(
        rng.integers(0, 30 * 86_400, edge_count), "s"
    )
    drives = pd.DataFrame(
        {
            "edge_id": pick["edge_id"].to_numpy(),
            "trip_id": [f"b{seed}-trip{i // 10}" for i in range(edge_count)],
            "contributor_id": f"c{seed}",
            "from_offset_m": 0.0,
            "to_offset_m": pick["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    return write_matched_batch(folder, edges, drives, roads_dir=roads)


def assert_same_coverage(folder: Path, expected: Path) -> None:
    """Assert two coverage folders hold the same state, tables and summary."""
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == json.loads((expected / "summary.json").read_text())
    state, want = read_state(folder / "state"), read_state(expected / "state")
    assert state.batches == want.batches
    for name in STATE_TABLES:
        got, wanted = getattr(state, name), getattr(want, name)
        by = list(got.columns)
        pd.testing.assert_frame_equal(
            got.sort_values(by, ignore_index=True), wanted.sort_values(by, ignore_index=True)
        )
    pd.testing.assert_frame_equal(read_edge_coverage(folder), read_edge_coverage(expected))
    pd.testing.assert_frame_equal(
        read_cells(folder),
        read_cells(expected),
    )
    assert not list(folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def tiny_roads(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "roads"
    build_roads(tiny_osm, folder)
    return folder


@pytest.mark.shared_data
def test_three_concurrent_runs_into_one_folder_apply_every_batch(
    monaco_roads: Path, tmp_path: Path
) -> None:
    batches = [write_batch(monaco_roads, tmp_path / f"m{seed}", seed, 400) for seed in range(3)]
    out = tmp_path / "coverage"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *coverage_command(monaco_roads, [b], out)],
            env=roadcover_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in batches
    ]
    errors = [run.communicate(timeout=TIMEOUT_S)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], errors
    compute_coverage(monaco_roads, batches, tmp_path / "one_run", SETTINGS)
    assert_same_coverage(out, tmp_path / "one_run")


def test_a_run_killed_before_any_write_leaves_what_a_rerun_completes(
    tiny_roads: Path, tmp_path: Path
) -> None:
    first = write_batch(tiny_roads, tmp_path / "m0", 0, 6)
    second = write_batch(tiny_roads, tmp_path / "m1", 1, 6)
    base = tmp_path / "base"
    compute_coverage(tiny_roads, [first], base, SETTINGS)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    command = [sys.executable, "-c", KILLED_AT_RENAME]
    args = coverage_command(tiny_roads, [second], clean)
    done = subprocess.run(
        [*command, "-1", *args], env=roadcover_env(), capture_output=True, text=True,
        timeout=TIMEOUT_S, check=True,
    )  # fmt: skip
    renames = int(done.stdout.split()[-1])
    assert renames >= 7  # three state tables, the pointer, edges, cells, summary
    for kill_at in range(renames):
        folder = tmp_path / f"killed{kill_at}"
        shutil.copytree(base, folder)
        killed = subprocess.run(
            [*command, str(kill_at), *coverage_command(tiny_roads, [second], folder)],
            env=roadcover_env(), capture_output=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL
        compute_coverage(tiny_roads, [second], folder, SETTINGS)
        assert_same_coverage(folder, clean)


def test_the_version_a_pointer_named_before_is_kept(tiny_roads: Path, tmp_path: Path) -> None:
    out = tmp_path / "coverage"
    pointers = []
    for seed in range(3):
        batch = write_batch(tiny_roads, tmp_path / f"m{seed}", seed, 4)
        compute_coverage(tiny_roads, [batch], out, SETTINGS)
        pointers.append(json.loads((out / "state" / "CURRENT.json").read_text()))
    assert len({pointer["version"] for pointer in pointers}) == 3
    state = out / "state"
    assert sorted(p.name for p in state.iterdir() if p.is_dir()) == ["parts", "rollup", "trips"]
    trips = sorted(p.name for p in (state / "trips").iterdir())
    assert trips == sorted(p["version"] for p in pointers)  # every update's, written once
    rollups = sorted(p.name for p in (state / "rollup").iterdir())
    assert rollups == sorted(p["version"] for p in pointers[1:])  # not older ones
    parts = {(p.parent.name, p.name) for p in (state / "parts").glob("*/*")}
    assert parts == {item for pointer in pointers[1:] for item in pointer["parts"].items()}
