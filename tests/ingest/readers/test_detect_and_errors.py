from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.readers import (
    FORMATS,
    UnreadableFileError,
    detect_format,
    read_trace_file,
)
from pipeline.simulate.trace_writers import write_trace
from tests.ingest.readers.helpers import check_result, nmea


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.json", json.dumps({"features": [], "type": "FeatureCollection"}), "geojson"),
        ("b.json", json.dumps({"type": "Feature", "geometry": None}), "geojson"),
        ("c.json", json.dumps([{"timestamp": 1, "position": {"lat": 1, "lon": 2}}]), "framejson"),
        ("d.json", '{"timestamp": 1, "lat": 1, "lon": 2}\n{"timestamp": 2}\n', "framejson"),
        ("e.txt", "[1714550400000]" + nmea("GPGGA,081500.00,,,,,0,00,,,M,,M,,") + "\n", "nmea"),
        ("f.log", "boot ok\n" + nmea("GNRMC,081500.00,V,,,,,,,010524,,,N") + "\n", "nmea"),
        ("g", "lat,lon,time\n1,2,3\n", "csv"),
        ("h.dat", '<?xml version="1.0"?>\n<gpx version="1.1"></gpx>', "gpx"),
        ("i.nmea.txt", nmea("GPRMC,081500.00,A,6010.2,N,02456.4,E,,,010524,,,A"), "nmea"),
        ("j.GPX", "anything", "gpx"),
        ("k.ndjson", "{}", "framejson"),
        ("l.tsv", "x", "csv"),
        # a receiver dump: binary frames (here 100 bytes, no line break) before a sentence
        ("m.log", "\xb5b\x01\x07" * 25 + nmea("GNGGA,081500.00,,,,,0,00,,,M,,M,,"), "nmea"),
    ],
)
def test_detect_format_by_extension_and_sniffing(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert detect_format(path) == expected


def test_detect_parquet_by_magic(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    pd.DataFrame({"lat": [1.0]}).to_parquet(path)
    assert detect_format(path) == "parquet"


def test_unknown_format_lists_supported_formats(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("dear diary, today I drove to the shop\n")
    with pytest.raises(UnreadableFileError) as error:
        detect_format(path)
    assert str(path) in str(error.value)
    assert "GPX (.gpx)" in str(error.value) and "frame JSON" in str(error.value)


@pytest.mark.parametrize("name", ["empty.csv", "empty.gpx", "empty.json", "empty.txt", "e.nmea"])
def test_empty_files_are_unreadable(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"  \n")
    with pytest.raises(UnreadableFileError, match=rf"{name}: empty file"):
        read_trace_file(path)


@pytest.mark.parametrize("name", ["garbage.csv", "garbage.nmea", "garbage.jsonl", "garbage.bin"])
def test_binary_garbage_is_unreadable(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UnreadableFileError, match=rf"{name}: "):
        read_trace_file(path)


def test_binary_garbage_gpx_and_parquet_are_unreadable(tmp_path: Path) -> None:
    junk = np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("junk.gpx", "junk.parquet"):
        path = tmp_path / name
        path.write_bytes(junk)
        with pytest.raises(UnreadableFileError, match=rf"{name}: "):
            read_trace_file(path)


def test_latin1_csv_row_is_rejected_and_a_latin1_header_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("time,lat,lon,user\n1,2,3,Jos\u00e9\n".encode("latin-1"))
    result = read_trace_file(path)
    assert result.rejects[["source_row", "reason", "detail"]].values.tolist() == [
        [2, "invalid_encoding", "not UTF-8 (byte 0xe9 at column 10); re-save the file as UTF-8"]
    ]
    path.write_bytes("time,lat,lon,s\u00e9\n1,2,3,a\n".encode("latin-1"))
    with pytest.raises(
        UnreadableFileError, match=r"latin\.csv: line 1 is not UTF-8 \(byte 0xe9 at column 15\)"
    ):
        read_trace_file(path)


def test_utf16_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("time,lat,lon\n1,2,3\n", encoding="utf-16")
    with pytest.raises(UnreadableFileError, match="UTF-16"):
        read_trace_file(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match="cannot be read"):
        read_trace_file(tmp_path / "gone.csv")


def test_unreadable_file_error_is_an_input_data_error() -> None:
    from pipeline.errors import InputDataError, PipelineError

    assert issubclass(UnreadableFileError, InputDataError)
    assert issubclass(UnreadableFileError, PipelineError)
    assert issubclass(UnreadableFileError, ValueError)


@pytest.mark.parametrize("fmt", ["csv", "gpx", "nmea", "geojson", "parquet"])
def test_reads_back_what_the_fleet_simulator_writes(tmp_path: Path, fmt: str) -> None:
    n = 50
    fixes = pd.DataFrame(
        {
            "trip_id": ["t1"] * 30 + ["t2"] * 20,
            "observed_at": pd.date_range(
                "2024-05-01T08:00:00.120Z", periods=n, freq="1100ms"
            ).as_unit("ms"),
            "lon": np.linspace(24.9, 25.0, n),
            "lat": np.linspace(60.1, 60.2, n),
            "elevation_m": np.linspace(0, 10, n),
            "hdop": np.linspace(0.5, 2.0, n).round(1),
            "speed_mps": np.linspace(0, 30, n).round(2),
            "heading_deg": np.linspace(0, 359, n).round(1),
        }
    )
    path = tmp_path / f"dev-0001.{fmt}"
    write_trace(fixes, path, fmt, "dev-0001", "contrib-1")
    result = read_trace_file(path)
    check_result(result)
    assert result.format == fmt and fmt in FORMATS
    assert len(result.fixes) == n and not len(result.rejects)
    got = result.fixes
    assert (got["observed_at"] == fixes["observed_at"]).all()
    np.testing.assert_allclose(got["lat"], fixes["lat"], atol=1e-6)
    np.testing.assert_allclose(got["lon"], fixes["lon"], atol=1e-6)
    np.testing.assert_allclose(got["hdop"], fixes["hdop"])
    np.testing.assert_allclose(got["speed_mps"], fixes["speed_mps"], atol=0.01)
    np.testing.assert_allclose(got["heading_deg"], fixes["heading_deg"], atol=0.05)
    assert set(got["device_id"]) == ({None} if fmt == "nmea" else {"dev-0001"})
