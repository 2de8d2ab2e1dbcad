"""Readers are bounded by design: bombs are refused, in bounded memory and time.

Each bomb is made in ``tmp_path`` and read by ``read_trace_file`` in a child process whose
address space is capped (so that a reader without bounds fails fast instead of exhausting the
machine); the child reports what it read and its peak resident memory.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ingest.readers import FileTooLargeError, ReaderOptions, read_trace_file

from .helpers import check_result

ADDRESS_SPACE_CAP = 3 << 30  # bytes the child may map: a reader without bounds fails fast
PEAK_RSS_BOUND_MB = 1024  # importing the readers alone takes about 170 MB
CHILD_TIMEOUT_S = 120
TIME_UTC = pa.timestamp("ms", tz="UTC")
EPOCH_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TEXT = pa.string()
LONG_ROWS_PER_GROUP = 20

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from pipeline.ingest.readers import ReaderOptions, UnreadableFileError, read_trace_file
    out = {{}}
    try:
        result = read_trace_file(Path(sys.argv[1]), ReaderOptions(**json.loads(sys.argv[2])))
        out["rows_read"] = result.rows_read
        out["fixes"] = len(result.fixes)
        out["rejects"] = result.rejects[["source_row", "reason", "detail"]].values.tolist()
    except UnreadableFileError as exc:
        out["unreadable"] = str(exc)
    except BaseException as exc:
        out["crash"] = type(exc).__name__ + ": " + str(exc)[:200]
    from pipeline.process_tree import own_peak_rss_mb  # VmHWM: ru_maxrss counts the parent's
    out["peak_rss_mb"] = own_peak_rss_mb()
    print(json.dumps(out))
    """
)


def read_in_child(path: Path, **options: Any) -> dict[str, Any]:
    """Read ``path`` in a child process; return what it read and its peak RSS (MB)."""
    script = _CHILD.format(cap=ADDRESS_SPACE_CAP)
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "crash" not in report, report["crash"]
    return report


def assert_bounded(report: dict[str, Any]) -> None:
    assert report["peak_rss_mb"] < PEAK_RSS_BOUND_MB, report


def write_rows_parquet(path: Path, row_groups: int, rows_per_group: int) -> None:
    """Write a Parquet trace of the same fix over and over (it compresses to almost nothing)."""
    table = pa.table(
        {
            "observed_at": pa.array(np.full(rows_per_group, EPOCH_MS), pa.int64()).cast(TIME_UTC),
            "lat": np.full(rows_per_group, 60.1),
            "lon": np.full(rows_per_group, 24.9),
        }
    )
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for _ in range(row_groups):
            writer.write_table(table)


def write_long_values_parquet(
    path: Path, rows: int, value_mb: int, text: pa.DataType = TEXT
) -> None:
    """Write a Parquet trace whose ``device_id`` is one ``value_mb`` MB text on every row.

    The column is plain text (as other tools write it), dictionary-encoded by the writer in
    each row group of :data:`LONG_ROWS_PER_GROUP` rows: a few KB per MB of value.
    """
    value = "x" * (value_mb << 20)
    schema = pa.schema(
        [
            ("observed_at", TIME_UTC),
            ("lat", pa.float64()),
            ("lon", pa.float64()),
            ("device_id", text),
        ]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, rows, LONG_ROWS_PER_GROUP):
            count = min(LONG_ROWS_PER_GROUP, rows - start)
            seconds = start + np.arange(count)
            group = {
                "observed_at": pa.array(EPOCH_MS + 1000 * seconds, pa.int64()).cast(TIME_UTC),
                "lat": np.full(count, 60.1),
                "lon": np.full(count, 24.9),
                "device_id": pa.array([value] * count, text),
            }
            writer.write_table(pa.table(group, schema=schema))


def only_reject(report: dict[str, Any]) -> tuple[int, str, str]:
    assert report["fixes"] == 0 and report["rows_read"] == 1, report
    (row, reason, detail), *_ = report["rejects"]
    return row, reason, detail


def test_parquet_of_20_million_rows_is_refused_from_its_metadata(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_rows_parquet(path, row_groups=20, rows_per_group=1_000_000)
    assert path.stat().st_size < 1_000_000  # a small upload
    report = read_in_child(path)
    row, reason, detail = only_reject(report)
    assert (row, reason) == (0, "file_too_large")
    assert "20,000,000 rows" in detail and "ingest.max_file_rows = 2,000,000" in detail
    assert_bounded(report)


@pytest.mark.parametrize("text", [pa.string(), pa.large_string(), pa.large_binary()])
def test_parquet_of_long_repeated_values_is_refused_before_decoding(
    tmp_path: Path, text: pa.DataType
) -> None:
    """A 200 KB file whose one 1 MB device id on 600 rows decodes to 600 MB."""
    path = tmp_path / "long.parquet"
    write_long_values_parquet(path, rows=600, value_mb=1, text=text)
    assert path.stat().st_size < 300_000
    report = read_in_child(path)
    row, reason, detail = only_reject(report)
    assert (row, reason) == (0, "file_too_large")
    assert "more than 128 MB" in detail and "ingest.max_decoded_mb" in detail
    assert_bounded(report)


def test_parquet_within_the_limits_is_read_whole(tmp_path: Path) -> None:
    """Batches of 65,536 rows and decoded dictionaries give back every row as written."""
    path = tmp_path / "ok.parquet"
    write_long_values_parquet(path, rows=150_000, value_mb=0)  # device_id ""
    result = read_trace_file(path)
    check_result(result)
    assert result.rows_read == len(result.fixes) == 150_000
    assert result.fixes["source_row"].tolist() == list(range(1, 150_001))
    assert result.fixes["observed_at"].iloc[-1].value // 1_000_000 == EPOCH_MS + 149_999_000
    assert result.fixes["device_id"].isna().all()  # "" is no id


def test_parquet_large_text_within_the_limits_is_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "large.parquet"
    table = pa.table(
        {
            "observed_at": pa.array([EPOCH_MS, EPOCH_MS + 1000], pa.int64()).cast(TIME_UTC),
            "lat": [60.1, 60.2],
            "lon": [24.9, 25.0],
            "device_id": pa.array(["cam-1", "cam-2"], pa.large_string()),
        }
    )
    pq.write_table(table, path)
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["device_id"].tolist() == ["cam-1", "cam-2"]


@pytest.mark.parametrize(("limit", "refused"), [(5, False), (4, True)])
def test_parquet_row_limit_is_the_setting(tmp_path: Path, limit: int, refused: bool) -> None:
    path = tmp_path / "five.parquet"
    write_rows_parquet(path, row_groups=1, rows_per_group=5)
    result = read_trace_file(path, ReaderOptions(max_file_rows=limit))
    assert (result.rejects["reason"].tolist() == ["file_too_large"]) is refused
    assert len(result.fixes) == (0 if refused else 5)


def test_parquet_decoded_limit_is_the_setting(tmp_path: Path) -> None:
    """2 MB of one repeated device id: refused at 1 MB, read at 3 MB."""
    path = tmp_path / "two.parquet"
    write_long_values_parquet(path, rows=2, value_mb=1)
    refused = read_trace_file(path, ReaderOptions(max_decoded_mb=1))
    assert refused.rejects["reason"].tolist() == ["file_too_large"]
    assert "more than 1 MB" in refused.rejects["detail"][0]
    assert len(read_trace_file(path, ReaderOptions(max_decoded_mb=3)).fixes) == 2


CSV_HEADER = "time,lat,lon\n"
CSV_ROW = "2024-05-01T08:00:{:02d}Z,60.1,24.9\n"


@pytest.mark.parametrize(("limit", "refused"), [(4, False), (3, True)])
def test_text_row_limit_is_the_setting(tmp_path: Path, limit: int, refused: bool) -> None:
    path = tmp_path / "four.csv"
    path.write_text(CSV_HEADER + "".join(CSV_ROW.format(s) for s in range(4)))
    result = read_trace_file(path, ReaderOptions(max_file_rows=limit))
    check_result(result)
    if refused:
        assert result.rejects.values.tolist() == [
            [
                str(path),
                0,
                "file_too_large",
                "4 rows, more than one file may hold (ingest.max_file_rows = 3); "
                "split the file, or raise ingest.max_file_rows",
            ]
        ]
    else:
        assert len(result.fixes) == 4 and result.rejects.empty


def test_text_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    """1 MiB + 1 byte of CSV with a limit of 1 MB: refused; 1 MiB exactly is read."""
    row = CSV_ROW.format(0)
    rows = ((1 << 20) - len(CSV_HEADER)) // len(row)
    text = CSV_HEADER + row * rows
    path = tmp_path / "big.csv"
    path.write_text(text + " " * ((1 << 20) - len(text)))  # exactly 1 MiB
    assert len(read_trace_file(path, ReaderOptions(max_decoded_mb=1)).fixes) == rows
    path.write_text(text + " " * ((1 << 20) - len(text) + 1))
    result = read_trace_file(path, ReaderOptions(max_decoded_mb=1))
    assert result.rejects["reason"].tolist() == ["file_too_large"]
    assert "text of more than 1 MB" in result.rejects["detail"][0]


def test_endless_device_file_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    """``/dev/zero`` says it is empty, and never ends: read up to the limit, then refused."""
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    report = read_in_child(link)
    assert only_reject(report)[1] == "file_too_large"
    assert_bounded(report)


@pytest.mark.parametrize("name", ["zeros.csv.gz", "zeros.csv", "zeros.gpx", "zeros.nmea"])
def test_gzip_bomb_is_never_decompressed(tmp_path: Path, name: str) -> None:
    """No reader decompresses: 1 MB of gzip holding 1 GB of zeros is refused as it is."""
    path = tmp_path / name
    with gzip.open(path, "wb", compresslevel=9) as bomb:
        zeros = bytes(1 << 20)
        for _ in range(1024):
            bomb.write(zeros)
    assert path.stat().st_size < 1_100_000
    report = read_in_child(path)
    assert "unknown trace format" in report["unreadable"] or "not" in report["unreadable"]
    assert_bounded(report)


def billion_laughs(declared: str, encoding: str) -> bytes:
    """A GPX document whose one entity reference expands to 10^9 ``lol``s."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    text = "\n".join(
        [
            f'<?xml version="1.0" encoding="{declared}"?>',
            "<!DOCTYPE gpx [",
            *entities,
            "]>",
            '<gpx version="1.1"><trk><trkseg><trkpt lat="60.1" lon="24.9">'
            "<time>2024-05-01T08:00:00Z</time><name>&lol9;</name></trkpt></trkseg></trk></gpx>",
        ]
    )
    return text.encode(encoding)


@pytest.mark.parametrize(
    ("declared", "encoding"),
    [("UTF-8", "utf-8"), ("UTF-16", "utf-16"), ("UTF-16", "utf-16-be"), ("UTF-16", "utf-16-le")],
)
def test_billion_laughs_gpx_is_refused_in_any_encoding(
    tmp_path: Path, declared: str, encoding: str
) -> None:
    path = tmp_path / "laughs.gpx"
    path.write_bytes(billion_laughs(declared, encoding))
    report = read_in_child(path)
    assert "XML entity declarations are not allowed in GPX" in report["unreadable"]
    assert_bounded(report)


@pytest.mark.parametrize("name", ["deep.geojson", "deep.json"])
def test_deeply_nested_json_is_unreadable_not_a_crash(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text('{"type": "FeatureCollection", "features": ' + "[" * 100_000 + "]" * 100_000)
    report = read_in_child(path)
    assert "nests deeper than 64 levels" in report["unreadable"]
    assert_bounded(report)


def test_deeply_nested_json_line_is_one_malformed_row(tmp_path: Path) -> None:
    frame = '{"timestamp": 1700000000, "lat": 60.1, "lon": 24.9}\n'
    path = tmp_path / "deep.jsonl"
    path.write_text(frame + '{"imu": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + frame)
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 3]
    assert result.rejects[["source_row", "reason"]].values.tolist() == [[2, "malformed_row"]]
    assert "nests deeper than 64 levels" in result.rejects["detail"][0]


def test_too_large_error_is_an_unreadable_file_error_with_its_detail() -> None:
    error = FileTooLargeError.rows("a.csv", 10, 5)
    assert str(error) == f"a.csv: {error.detail}"


def test_ingest_takes_the_limits_from_the_config_and_stays_bounded(tmp_path: Path) -> None:
    """``roadcover ingest``: each bomb is one reject, in a process that stays under 1 GB."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    write_rows_parquet(uploads / "rows.parquet", row_groups=20, rows_per_group=1_000_000)
    write_long_values_parquet(uploads / "long.parquet", rows=3, value_mb=1)  # 3 MB decoded
    (uploads / "laughs.gpx").write_bytes(billion_laughs("UTF-16", "utf-16"))
    (uploads / "four.csv").write_text(CSV_HEADER + "".join(CSV_ROW.format(s) for s in range(4)))
    config = tmp_path / "config.yaml"
    config.write_text(
        "regions: [{name: x, osm: x.osm}]\ningest: {max_file_rows: 3, max_decoded_mb: 2}\n"
    )
    measured = textwrap.dedent(
        """
        import resource, subprocess, sys
        done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(done.returncode, peak_mb, done.stderr.replace(chr(10), " ")[-300:])
        """
    )
    cli = [sys.executable, "-m", "pipeline.cli", "ingest", str(uploads)]
    options = ["-o", str(tmp_path / "traces"), "--config", str(config), "--workers", "1"]
    done = subprocess.run(
        [sys.executable, "-c", measured, *cli, *options],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        env={**os.environ, "ROADCOVER_PSEUDONYM_KEY": "a-test-pseudonym-key-0123456789"},
        check=True,
    )
    code, peak_mb, stderr = done.stdout.split(" ", 2)
    assert code == "0", stderr
    assert float(peak_mb) < PEAK_RSS_BOUND_MB
    rejects = pq.read_table(tmp_path / "traces" / "rejects").to_pandas()
    by_file = {
        Path(f).name: (r, d) for f, r, d in rejects[["source_file", "reason", "detail"]].values
    }
    assert by_file["rows.parquet"] == (
        "file_too_large",
        "20,000,000 rows, more than one file may hold (ingest.max_file_rows = 3); "
        "split the file, or raise ingest.max_file_rows",
    )
    assert by_file["four.csv"][0] == "file_too_large" and "4 rows" in by_file["four.csv"][1]
    assert by_file["long.parquet"] == (
        "file_too_large",
        "values decoding to more than 2 MB, the most one file may decode to "
        "(ingest.max_decoded_mb); split the file, or raise ingest.max_decoded_mb",
    )
    assert by_file["laughs.gpx"][0] == "unreadable_file"
    assert len(rejects) == 4
