"""A batch staged in parts: the stage process holds tallies, never a batch-sized table."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely

from pipeline.config import load_config
from pipeline.contracts import REJECTS, TRIPS
from pipeline.ingest import parts, stage
from pipeline.ingest.plausibility import coordinate_keys, shared_keys
from pipeline.ingest.stage import ingest_traces
from pipeline.io import read_table

KEY = "a-test-pseudonym-key-0123456789"
ROWS_PER_FILE = 150


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)


def drive_csv(device: str, day: int, rows: int = ROWS_PER_FILE, copy_of: str = "") -> str:
    """A drive east at 10 m/s, 1 Hz, with bad rows: every 10th fix repeats the time before it.

    Row 2 is unreadable (a reader's reject). ``copy_of`` names a device whose positions
    this drive repeats exactly (shared coordinates).
    """
    rng = np.random.default_rng([ord(c) for c in (copy_of or device)])
    times = pd.date_range(f"2026-10-{day:02d}T08:00:00Z", periods=rows, freq="1s")
    seconds = np.arange(rows)
    seconds[9::10] -= 1  # repeated_timestamp
    east_m = np.arange(rows) * 10.0 + rng.normal(0, 1.5, rows)
    lat = 60.17 + rng.normal(0, 1.5, rows) / 111_320
    lon = 24.94 + east_m / (111_320 * np.cos(np.radians(60.17)))
    lines = [
        f"{device},{(times[0] + pd.Timedelta(seconds=int(s))).isoformat()},{a:.7f},{o:.7f}"
        for s, a, o in zip(seconds, lat, lon, strict=True)
    ]
    return "device_id,time,lat,lon\n" + "\n".join([f"{device},not-a-time,x,y", *lines]) + "\n"


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("uploads")
    for index in range(12):
        (folder / f"cam-{index:02d}.csv").write_text(drive_csv(f"cam-{index:02d}", 1 + index))
    for device in ("cam-x", "cam-y", "cam-z"):  # three devices at the same coordinates
        day = 20 + "xyz".index(device[-1])
        (folder / f"{device}.csv").write_text(drive_csv(device, day, copy_of="cam-x"))
    (folder / "long-cam.csv").write_text(drive_csv("long-cam", 25, rows=10 * ROWS_PER_FILE))
    return folder


def settings() -> Any:
    return replace(load_config().ingest, workers=1)  # chunks in this process


def ingest(
    uploads: Path, traces: Path, monkeypatch: pytest.MonkeyPatch, files: int, bucket_bytes: int
) -> dict[str, Any]:
    with monkeypatch.context() as patch:
        patch.setattr(stage, "CHUNK_FILES", files)
        patch.setattr(parts, "KEY_BUCKET_BYTES", bucket_bytes)
        return ingest_traces([uploads], traces, settings())


def test_many_chunks_and_key_buckets_write_the_tables_of_one_chunk(
    uploads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = ingest(uploads, tmp_path / "one", monkeypatch, files=1000, bucket_bytes=2**40)
    many = ingest(uploads, tmp_path / "many", monkeypatch, files=1, bucket_bytes=2**10)
    with monkeypatch.context() as patch:
        patch.setattr(parts, "KEY_BUCKET_BYTES", 2**10)
        assert parts.key_buckets(sum(f.stat().st_size for f in uploads.iterdir())) >= 64
    assert many == one
    batch = f"part-{one['batch_id']}.parquet"
    rejects = (tmp_path / "many" / "rejects" / batch).read_bytes()
    assert rejects == (tmp_path / "one" / "rejects" / batch).read_bytes()
    # every row of the files, in the contract's order (by file, then row)
    table = pd.DataFrame(read_table(tmp_path / "many" / "rejects" / batch, REJECTS))
    fixes = 15 * ROWS_PER_FILE + 10 * ROWS_PER_FILE
    assert len(table) == one["rejected"] == fixes - one["accepted"] + 16  # + unreadable rows
    assert (table["reason"] == "repeated_timestamp").sum() == fixes // 10
    ordered = table.sort_values(["source_file", "source_row"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(table, ordered)
    assert table["source_file"].nunique() == 16
    # the same trips, lines and flags (a chunk's trips are in its own order)
    trips = [
        pd.DataFrame(read_table(tmp_path / run / "trips" / batch, TRIPS))
        .sort_values("trip_id", ignore_index=True)
        .assign(geometry=lambda t: shapely.to_wkb(t["geometry"].to_numpy()))
        for run in ("one", "many")
    ]
    pd.testing.assert_frame_equal(trips[0], trips[1])
    shared = trips[1]["flags"].map(lambda flags: "shared_coordinates" in flags)
    assert shared.sum() == 3 == one["flags"]["shared_coordinates"]


def test_what_a_chunk_returns_does_not_grow_with_its_rows(
    uploads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: dict[str, int] = {}
    ingest_chunk = stage.ingest_chunk

    def measured(task: stage.ChunkTask, **arguments: Any) -> stage.ChunkOutcome:
        outcome = ingest_chunk(task, **arguments)
        sizes[task.paths[0].name] = len(pickle.dumps(outcome))
        return outcome

    monkeypatch.setattr(stage, "ingest_chunk", measured)
    ingest(uploads, tmp_path / "traces", monkeypatch, files=1, bucket_bytes=2**20)
    # ten times the rows and rejects of a one-trip file: a few hundred bytes more (its
    # samples, counts), where its rows' lines, keys or rejects would be over 30 kB more
    assert sizes["long-cam.csv"] < sizes["cam-00.csv"] + 1_000


def spy(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, seen: list[Any]
) -> Callable[..., Any]:
    function = getattr(module, name)

    def recorded(*arguments: Any, **keywords: Any) -> Any:
        seen.append(arguments[0])
        return function(*arguments, **keywords)

    monkeypatch.setattr(module, name, recorded)
    return function


def test_the_stage_reads_back_one_files_rejects_and_one_bucket_of_keys_at_a_time(
    uploads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Any] = []
    bucket_keys: list[list[np.ndarray]] = []
    write = parts.write_in_row_groups

    def recorded_write(tables: Any, *arguments: Any, **keywords: Any) -> None:
        listed = list(tables)
        written.append([table.num_rows for table in listed])
        write(listed, *arguments, **keywords)

    monkeypatch.setattr(parts, "write_in_row_groups", recorded_write)
    spy(monkeypatch, parts, "repeated_keys", bucket_keys)
    report = ingest(uploads, tmp_path / "traces", monkeypatch, files=2, bucket_bytes=2**10)
    trips_rows, rejects_rows = written
    by_file = sorted((f["file"], f["rejected"]) for f in report["files"])
    assert rejects_rows == [rejected for _, rejected in by_file]  # one file's at a time
    assert sum(trips_rows) == report["trips"] and max(trips_rows) < report["trips"]
    keys = [sum(len(part) for part in call) for call in bucket_keys]
    assert len(keys) >= 64 and sum(keys) == report["accepted"]
    assert max(keys) < report["accepted"] / 8


def test_shared_keys_of_the_parts_are_those_of_all_the_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = []
    for chunk in range(4):
        lon = np.round(24.9 + rng.integers(0, 50, 400) * 1e-6, 7)  # many repeated positions
        frames.append(
            pd.DataFrame(
                {
                    "lon": lon,
                    "lat": 60.1,
                    "device_id": [f"dev-{chunk}-{i % 3}" for i in range(400)],
                    "trip_id": [f"trip-{chunk}-{i % 5}" for i in range(400)],
                }
            )
        )
    keys = [coordinate_keys(frame) for frame in frames]
    paths = [tmp_path / f"{chunk}.arrow" for chunk in range(4)]
    for table, path in zip(keys, paths, strict=True):
        parts.stage_keys(table, path, 8)
    found = parts.shared_keys_of_parts(paths, 8)
    expected = shared_keys(keys).astype({"device": str, "trip_id": str})
    columns = ["key", "device", "trip_id"]
    assert len(found) == len(expected) > 0
    pd.testing.assert_frame_equal(
        found.sort_values(columns, ignore_index=True)[columns],
        expected.sort_values(columns, ignore_index=True)[columns],
    )
    for path in paths:
        with pa.OSFile(str(path)) as source:
            assert pa.ipc.open_file(source).num_record_batches == 8
