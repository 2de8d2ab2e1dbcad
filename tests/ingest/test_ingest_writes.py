"""The ingest stage's writes: one writer per traces folder, each file and fix counted once.

Real ``roadcover ingest`` processes run at once into one folder; real ``kill -9`` interrupts an
ingest right after each of its writes; the expected counts are those of the hand-made drives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import EXIT_ERROR
from pipeline.config import load_config
from pipeline.contracts import POINTS, REJECTS, TRIPS
from pipeline.errors import InputDataError
from pipeline.ingest import stage
from pipeline.ingest.stage import format_report, ingest_traces
from pipeline.io import read_table
from pipeline.locking import LockTimeoutError

KEY = "a-test-pseudonym-key-0123456789"
OTHER_KEY = "another-pseudonym-key-9876543210"
FIXES_PER_DRIVE = 120
PROCESS_TIMEOUT_S = 300
EARTH_M_PER_DEG = 111_320.0  # metres per degree of latitude (and of longitude at the equator)


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)


def drive_rows(device: str, start: str, north_m: float = 0.0) -> pd.DataFrame:
    """A 2-minute drive east at 10 m/s, one fix a second, with a little GPS noise."""
    rng = np.random.default_rng([ord(c) for c in device + start])
    times = pd.date_range(start, periods=FIXES_PER_DRIVE, freq="1s", tz="UTC")
    east_m = np.arange(FIXES_PER_DRIVE) * 10.0 + rng.normal(0, 1.5, FIXES_PER_DRIVE)
    lat = 60.17 + (north_m + rng.normal(0, 1.5, FIXES_PER_DRIVE)) / EARTH_M_PER_DEG
    lon = 24.94 + east_m / (EARTH_M_PER_DEG * np.cos(np.radians(60.17)))
    return pd.DataFrame({"device_id": device, "time": times, "lat": lat, "lon": lon})


def csv_text(rows: pd.DataFrame) -> str:
    lines = [
        f"{d},{t.isoformat()},{a:.7f},{o:.7f}"
        for d, t, a, o in zip(
            rows["device_id"], rows["time"], rows["lat"], rows["lon"], strict=True
        )
    ]
    return "device_id,time,lat,lon\n" + "\n".join(lines) + "\n"


def re_exported(rows: pd.DataFrame) -> str:
    """The same fixes as another app writes them: other columns order, epoch times, 6 decimals."""
    seconds = (rows["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    lines = [
        f"{o:.6f};{a:.6f};{s};{d}"
        for o, a, s, d in zip(rows["lon"], rows["lat"], seconds, rows["device_id"], strict=True)
    ]
    return "lon;lat;time;device_id\n" + "\n".join(lines) + "\n"


def write_drives(folder: Path, count: int) -> list[Path]:
    """``count`` drives of distinct devices on distinct days, one CSV file each."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"cam-{i}.csv"
        path.write_text(csv_text(drive_rows(f"cam-{i}", f"2026-10-{i + 1:02d}T08:00:00Z")))
        files.append(path)
    return files


def read_all(traces: Path, name: str, contract: object) -> pd.DataFrame:
    files = sorted((traces / name).rglob("part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=["source_file", "source_row"])
    return pd.concat([pd.DataFrame(read_table(f, contract)) for f in files], ignore_index=True)


def environment(key: str = KEY) -> dict[str, str]:
    return {**os.environ, "ROADCOVER_PSEUDONYM_KEY": key}


def roadcover_ingest(files: list[Path], traces: Path) -> subprocess.Popen[str]:
    """A real ``roadcover ingest`` process, started (not waited for)."""
    command = [sys.executable, "-m", "pipeline.cli", "ingest", *map(str, files), "-o", str(traces)]
    return subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def assert_every_row_once(traces: Path, files: list[Path]) -> None:
    """Every row of every file is in points or rejects exactly once; every file in one report."""
    points = read_all(traces, "points", POINTS)
    rejects = read_all(traces, "rejects", REJECTS)
    rows = pd.concat(
        [points[["source_file", "source_row"]], rejects[["source_file", "source_row"]]]
    )
    rows["source_file"] = rows["source_file"].map(lambda f: Path(f).name)
    assert not rows.duplicated().any()
    counts = rows.groupby("source_file").size().to_dict()
    assert counts == {f.name: FIXES_PER_DRIVE for f in files}
    assert not points.duplicated(["device_id", "observed_at"]).any()
    reports = [json.loads(p.read_text()) for p in (traces / "reports").glob("*.json")]
    registered = [Path(f["file"]).name for r in reports for f in r["files"]]
    assert sorted(registered) == sorted(f.name for f in files)


@pytest.mark.parametrize(
    "batches",
    [
        [[0, 1, 2, 3], [2, 3, 4, 5]],
        [[0, 1, 2, 3], [2, 3, 4, 5], [5, 0, 4, 1]],
    ],
    ids=["two", "three"],
)
def test_concurrent_ingests_register_each_file_once_and_count_each_fix_once(
    tmp_path: Path, batches: list[list[int]]
) -> None:
    files = write_drives(tmp_path / "uploads", 6)
    traces = tmp_path / "traces"
    processes = [roadcover_ingest([files[i] for i in batch], traces) for batch in batches]
    results = [finish(p) for p in processes]
    assert [code for code, _ in results] == [0] * len(batches), results
    assert_every_row_once(traces, files)


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from pipeline.config import load_config
from pipeline.ingest import stage

traces, target = Path(sys.argv[1]), Path(sys.argv[1]) / sys.argv[2]
real_replace = os.replace

def replace_then_die(source, destination, *args, **kwargs):
    real_replace(source, destination, *args, **kwargs)
    if Path(destination) == target or target in Path(destination).parents:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9, right after this write

os.replace = replace_then_die
stage.ingest_traces([Path(p) for p in sys.argv[3:]], traces, load_config().ingest)
"""


def killed_ingest(files: list[Path], traces: Path, after_writing: str) -> None:
    """Run ingest in a process that is killed right after its first write under a path."""
    command = [sys.executable, "-c", KILL_SCRIPT, str(traces), after_writing, *map(str, files)]
    process = subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
    )
    assert process.returncode == -9, process.stderr  # it was killed, at that write


def dataset_files(traces: Path) -> dict[str, bytes]:
    """Every file of a traces dataset but its lock, by path."""
    return {
        str(p.relative_to(traces)): p.read_bytes()
        for p in traces.rglob("*")
        if p.is_file() and p.name != ".roadcover.lock"
    }


@pytest.mark.parametrize(
    "after_writing",
    [".staging", "pseudonym_key.json", "points", "trips", "rejects", "reports"],
)
def test_an_ingest_killed_after_any_write_leaves_what_a_clean_run_gives(
    tmp_path: Path, after_writing: str
) -> None:
    """Killed while ingesting a and b, then given a, b and c: as if never killed.

    A batch counts once its report is written: killed before, it is as if it never ran (the
    rerun ingests a, b and c in one batch); killed after, the rerun adds c alone.
    """
    files = write_drives(tmp_path / "uploads", 3)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed_ingest(files[:2], killed, after_writing)
    ingest_traces(files, killed, load_config().ingest)
    if after_writing == "reports":
        ingest_traces(files[:2], clean, load_config().ingest)
    ingest_traces(files, clean, load_config().ingest)
    assert dataset_files(killed) == dataset_files(clean)
    assert_every_row_once(killed, files)


def test_the_same_fixes_uploaded_again_count_once(tmp_path: Path) -> None:
    """A re-upload with a blank line more, or re-exported by another app: nothing counts again."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    drive = drive_rows("cam-a", "2026-10-01T08:00:00Z")
    (uploads / "a.csv").write_text(csv_text(drive))
    traces = tmp_path / "traces"
    first = ingest_traces([uploads / "a.csv"], traces, load_config().ingest)
    assert first["accepted"] > 0 and first["trips"] == 1
    (uploads / "a-again.csv").write_text(csv_text(drive) + "\n")
    (uploads / "a-other-app.csv").write_text(re_exported(drive))
    for name in ("a-again.csv", "a-other-app.csv"):
        again = ingest_traces([uploads / name], traces, load_config().ingest)
        assert again["batch_id"] is not None and again["rows_read"] == FIXES_PER_DRIVE
        assert again["accepted"] == 0 and again["trips"] == 0
        assert again["rejected_by_reason"]["duplicate_of_earlier_batch"] == first["accepted"]
    assert len(read_all(traces, "points", POINTS)) == first["accepted"]
    assert len(read_all(traces, "trips", TRIPS)) == 1
    rejects = read_all(traces, "rejects", REJECTS)
    copies = rejects[rejects["reason"] == "duplicate_of_earlier_batch"]
    assert set(copies["detail"]) == {f"same fix as one of batch {first['batch_id']}"}


@pytest.mark.parametrize("north_m", [0.5, 3.0])
def test_a_copy_is_a_fix_within_a_metre(tmp_path: Path, north_m: float) -> None:
    """The same device at the same times, 0.5 m away: copies; 3 m away: other fixes."""
    drive = drive_rows("cam-a", "2026-10-01T08:00:00Z")
    (tmp_path / "a.csv").write_text(csv_text(drive))
    moved = drive.assign(lat=drive["lat"] + north_m / EARTH_M_PER_DEG)
    (tmp_path / "b.csv").write_text(csv_text(moved))
    traces = tmp_path / "traces"
    first = ingest_traces([tmp_path / "a.csv"], traces, load_config().ingest)
    second = ingest_traces([tmp_path / "b.csv"], traces, load_config().ingest)
    copies = second["rejected_by_reason"].get("duplicate_of_earlier_batch", 0)
    assert copies == (first["accepted"] if north_m < 1 else 0)


@pytest.mark.parametrize("files_per_chunk", [32, 1])
def test_two_files_of_one_batch_with_the_same_fixes_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files_per_chunk: int
) -> None:
    """Whether the two files are cleaned together or in different chunks."""
    monkeypatch.setattr(stage, "CHUNK_FILES", files_per_chunk)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    drive = drive_rows("cam-a", "2026-10-01T08:00:00Z")
    other = drive_rows("cam-b", "2026-10-01T08:00:00Z", north_m=3_000)
    (uploads / "a.csv").write_text(csv_text(drive))
    (uploads / "b.csv").write_text(csv_text(other))
    (uploads / "c-other-app.csv").write_text(re_exported(drive))
    alone = ingest_traces(
        [uploads / "a.csv", uploads / "b.csv"], tmp_path / "alone", load_config().ingest
    )
    both = ingest_traces([uploads], tmp_path / "traces", load_config().ingest)
    assert both["accepted"] == alone["accepted"] and both["trips"] == alone["trips"] == 2
    by_file = {Path(f["file"]).name: f for f in both["files"]}
    assert by_file["c-other-app.csv"]["accepted"] == 0
    assert (
        by_file["c-other-app.csv"]["rejected_by_reason"]["duplicate"]
        == by_file["a.csv"]["accepted"] + by_file["a.csv"]["rejected_by_reason"]["privacy"]
    )
    points = read_all(tmp_path / "traces", "points", POINTS)
    assert not points.duplicated(["device_id", "observed_at"]).any()


def run_cli(args: list[str], key: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(
        command, env=environment(key), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
    )


def test_a_batch_under_another_pseudonym_key_is_refused(tmp_path: Path) -> None:
    files = write_drives(tmp_path / "uploads", 2)
    traces = tmp_path / "traces"
    assert run_cli(["ingest", str(files[0]), "-o", str(traces)], KEY).returncode == 0
    before = dataset_files(traces)
    refused = run_cli(["ingest", str(files[1]), "-o", str(traces)], OTHER_KEY)
    assert refused.returncode == EXIT_ERROR
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "another pseudonym key" in message and "new traces folder" in message
    assert dataset_files(traces) == before  # nothing written
    assert OTHER_KEY not in message and KEY not in message
    assert run_cli(["ingest", str(files[1]), "-o", str(traces)], KEY).returncode == 0


def test_symbolic_links_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.csv"
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    hidden_drives = write_drives(outside / "drives", 1)
    uploads = tmp_path / "uploads"
    [drive] = write_drives(uploads, 1)
    (uploads / "passwd.csv").symlink_to(secret)
    (uploads / "more").symlink_to(outside / "drives", target_is_directory=True)
    given = tmp_path / "given.csv"
    given.symlink_to(hidden_drives[0])
    traces = tmp_path / "traces"
    report = ingest_traces([uploads, given], traces, load_config().ingest)
    assert [Path(f["file"]).name for f in report["files"]] == [drive.name]
    assert sorted(report["symlinks_not_followed"]) == sorted(
        str(p) for p in (uploads / "more", uploads / "passwd.csv", given)
    )
    assert report["rows_read"] == FIXES_PER_DRIVE
    written = b"".join(dataset_files(traces).values())
    assert b"SECRET-LINE" not in written
    assert "passwd.csv" in stage.format_report(report)
    again = ingest_traces([uploads], tmp_path / "other", load_config().ingest)
    assert "symbolic links" in stage.format_report(again)
    plain = ingest_traces([drive], tmp_path / "plain", load_config().ingest)
    assert plain["symlinks_not_followed"] == [] and "symbolic" not in stage.format_report(plain)


def test_a_sidecar_that_is_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    [drive] = write_drives(tmp_path / "uploads", 1)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"contributor_id": "someone-else"}')
    Path(f"{drive}.meta.json").symlink_to(elsewhere)
    traces = tmp_path / "traces"
    with pytest.raises(InputDataError, match="symbolic link"):
        ingest_traces([tmp_path / "uploads"], traces, load_config().ingest)
    assert not list(traces.rglob("*.parquet")) and not list(traces.rglob("*.json"))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.locking import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_an_ingest_waits_for_the_folders_lock_and_gives_up_after_the_timeout(
    tmp_path: Path,
) -> None:
    [drive] = write_drives(tmp_path / "uploads", 1)
    traces = tmp_path / "traces"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(traces)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeoutError, match="lock_timeout_s"):
            ingest_traces([drive], traces, load_config().ingest, lock_timeout_s=0.5)
        config = tmp_path / "config.yaml"
        config.write_text("regions: [{name: t, osm: t.osm}]\nlock_timeout_s: 0.5\n")
        refused = run_cli(["ingest", str(drive), "-o", str(traces), "--config", str(config)], KEY)
        assert refused.returncode == EXIT_ERROR
        waited, error = refused.stderr.strip().splitlines()  # the waiting message, the error
        assert "waiting for another writer" in waited and "Traceback" not in refused.stderr
        assert error.startswith("roadcover: error:") and "gave up after 0.5 s" in error
    finally:
        holder.kill()
        holder.wait()
    assert not (traces / "reports").exists()
    assert ingest_traces([drive], traces, load_config().ingest)["rows_read"] == FIXES_PER_DRIVE


def test_files_ingested_before_name_their_batch(tmp_path: Path) -> None:
    """The same files again (a rerun of the workflow's rule) give that batch back, unchanged."""
    files = write_drives(tmp_path / "uploads", 3)
    traces = tmp_path / "traces"
    first = ingest_traces(files[:2], traces, load_config().ingest)
    second = ingest_traces(files[2:], traces, load_config().ingest)
    dataset = dataset_files(traces)
    again = ingest_traces(list(reversed(files[:2])), traces, load_config().ingest)
    assert again["batch_id"] == first["batch_id"] and again["ingested_before"]
    assert again["accepted"] == first["accepted"] and again["rows_read"] == first["rows_read"]
    assert sorted(again["files_skipped"]) == sorted(map(str, files[:2]))
    assert "batch " + first["batch_id"] + ", ingested before" in format_report(again)
    mixed = ingest_traces(files[1:], traces, load_config().ingest)
    assert mixed["batch_id"] is None
    assert mixed["earlier_batches"] == sorted([first["batch_id"], second["batch_id"]])
    assert dataset_files(traces) == dataset  # nothing written
    report = tmp_path / "report.json"
    report.write_text(json.dumps(mixed))
    snap = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "snap", "--roads", str(tmp_path),
         "--traces", str(traces), "--batch-report", str(report), "-o", str(tmp_path / "m")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert snap.returncode == 1
    earlier = ", ".join(sorted([first["batch_id"], second["batch_id"]]))
    last_line = snap.stderr.strip().splitlines()[-1]
    assert last_line.endswith(f"earlier batches: {earlier}); match those with --batch ID")


def test_a_file_refused_whole_is_read_once_the_limit_allows_it(tmp_path: Path) -> None:
    """Over max_file_rows a file is one file_too_large reject; raised, the file is read."""
    (upload,) = write_drives(tmp_path / "uploads", 1)
    traces = tmp_path / "traces"
    small = replace(load_config().ingest, max_file_rows=FIXES_PER_DRIVE - 1)
    refused = ingest_traces([upload], traces, small)
    assert refused["accepted"] == 0 and refused["rejected_by_reason"] == {"file_too_large": 1}
    read = ingest_traces([upload], traces, load_config().ingest)
    assert read["batch_id"] == refused["batch_id"] and not read.get("ingested_before")
    assert read["rows_read"] == FIXES_PER_DRIVE and read["accepted"] > 0
    assert len(read_all(traces, "points", POINTS)) == read["accepted"]
    again = ingest_traces([upload], traces, load_config().ingest)
    assert again["ingested_before"] and again["accepted"] == read["accepted"]
