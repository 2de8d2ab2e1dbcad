"""The date of NMEA logs without one (GGA only), from the upload: sidecar, config, file name."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config, settings_from_mapping
from pipeline.contracts import POINTS, REJECTS
from pipeline.errors import ConfigError, InputDataError
from pipeline.ingest.stage import ingest_traces, ingested_files
from pipeline.io import read_table
from tests.ingest.readers.helpers import nmea

LOG = "traces/nmea-receivers/gpsbabel__track_adddate.nmea"  # 500 GGA, 23:56:00 to 00:04:19


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "a-test-pseudonym-key-0123456789")


@pytest.fixture
def upload(shared_data: Path, tmp_path: Path) -> Path:
    """The GPSBabel log without a date, as an upload named without a date."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    path = folder / "receiver.nmea"
    path.write_bytes((shared_data / LOG).read_bytes())
    return path


def accepted_times(traces: Path) -> pd.Series:
    files = sorted((traces / "points").rglob("part-*.parquet"))
    points = pd.concat([pd.DataFrame(read_table(f, POINTS)) for f in files], ignore_index=True)
    return points["observed_at"]


def test_undated_log_is_rejected_then_read_again_with_a_sidecar_date(
    upload: Path, tmp_path: Path
) -> None:
    """No date anywhere: 500 missing_date rejects, and the file is not registered as ingested,
    so once its sidecar gives the date, giving it again reads it."""
    traces, settings = tmp_path / "traces", load_config().ingest
    report = ingest_traces([upload], traces, settings)
    assert report["rows_read"] == 500 and report["rejected_by_reason"] == {"missing_date": 500}
    assert ingested_files(traces) == {}
    upload.with_name(upload.name + ".meta.json").write_text(json.dumps({"date": "2024-05-01"}))
    again = ingest_traces([upload], traces, settings)
    assert again["rows_read"] == 500 == again["accepted"] + again["rejected"]
    assert "missing_date" not in again["rejected_by_reason"] and again["accepted"] > 0
    times = accepted_times(traces)
    assert times.min() >= pd.Timestamp("2024-05-01T23:56:00Z")
    assert times.max() <= pd.Timestamp("2024-05-02T00:04:19Z")
    assert (times.dt.date == datetime.date(2024, 5, 2)).any()  # past midnight: the next day


def test_undated_log_with_void_fixes_is_read_again_with_a_date(tmp_path: Path) -> None:
    """A GGA of fix quality 0 (invalid_fix) beside the undated ones: still read again."""
    gga = "GPGGA,0815{:02d}.00,60{:07.4f},N,02456.4000,E,{},09,0.8,15.3,M,18.0,M,,"  # 37 m/s
    lines = [nmea(gga.format(s, 10.2 + 0.02 * s, 0 if s == 3 else 1)) for s in range(60)]
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    upload = uploads / "logger.nmea"
    upload.write_text("\r\n".join(lines) + "\r\n")
    traces, settings = tmp_path / "traces", load_config().ingest
    report = ingest_traces([upload], traces, settings)
    assert report["rejected_by_reason"] == {"invalid_fix": 1, "missing_date": 59}
    assert ingested_files(traces) == {}
    upload.with_name(upload.name + ".meta.json").write_text('{"date": "2024-05-01"}')
    again = ingest_traces([upload], traces, settings)
    assert again["rows_read"] == 60 and "missing_date" not in again["rejected_by_reason"]
    assert again["accepted"] > 0 and list(ingested_files(traces)) == [again["files"][0]["sha256"]]
    rejects = pd.concat(
        [pd.DataFrame(read_table(f, REJECTS)) for f in (traces / "rejects").rglob("*.parquet")]
    )
    assert "missing_date" not in set(rejects["reason"])  # the first batch was withdrawn
    assert (rejects["reason"] == "invalid_fix").sum() == 1


def test_config_dates_logs_by_pattern_and_the_sidecar_wins(upload: Path, tmp_path: Path) -> None:
    config = {
        "regions": [{"name": "t", "osm": "t.osm"}],
        "ingest": {"log_dates": [{"pattern": "*/uploads/receiver*", "date": "2023-01-01"}]},
    }
    settings = settings_from_mapping(config).ingest
    assert settings.log_dates == (("*/uploads/receiver*", datetime.date(2023, 1, 1)),)
    report = ingest_traces([upload], tmp_path / "by-config", settings)
    assert "missing_date" not in report["rejected_by_reason"]
    assert accepted_times(tmp_path / "by-config").min() >= pd.Timestamp("2023-01-01T23:56Z")
    upload.with_name(upload.name + ".meta.json").write_text('{"date": "2024-05-01"}')
    ingest_traces([upload], tmp_path / "by-sidecar", settings)
    assert accepted_times(tmp_path / "by-sidecar").min() >= pd.Timestamp("2024-05-01T23:56Z")


def test_a_bad_date_is_refused_with_the_fix(upload: Path, tmp_path: Path) -> None:
    sidecar = upload.with_name(upload.name + ".meta.json")
    sidecar.write_text('{"date": "2024-13-01"}')
    with pytest.raises(InputDataError, match=r"date '2024-13-01' is not a date YYYY-MM-DD"):
        ingest_traces([upload], tmp_path / "traces", load_config().ingest)
    bad = {"regions": [{"name": "t", "osm": "t.osm"}], "ingest": {"log_dates": []}}
    bad["ingest"]["log_dates"] = [{"pattern": "*", "date": "2024-02-30"}]
    with pytest.raises(ConfigError, match=r"ingest.log_dates' has date '2024-02-30'"):
        settings_from_mapping(bad)


def test_unknown_lines_have_a_sample_in_the_report(shared_data: Path, tmp_path: Path) -> None:
    log = shared_data / "traces/nmea-receivers/gpsd__unicore-um621.log"
    report = ingest_traces([log], tmp_path / "traces", replace(load_config().ingest))
    (entry,) = report["files"]
    assert entry["ignored"]["not_a_sentence"] == 16
    assert entry["ignored_samples"] == {"not_a_sentence": "'# Name: unicore-um621.log'"}
