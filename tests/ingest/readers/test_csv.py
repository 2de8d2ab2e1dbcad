from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.ingest.readers import ReaderOptions, ReadResult, UnreadableFileError, read_trace_file
from pipeline.ingest.readers.delimited import _regular_lines, read_csv_files
from tests.ingest.readers.helpers import check_result, reasons


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_values_offsets_and_bad_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "device_id,timestamp,lat,lon,hdop,speed_mps,heading_deg\n"
        "cam-1,2024-05-01T08:00:00.250Z,60.17,24.94,0.9,12.5,90\n"
        "cam-1,2024-05-01T10:00:01+02:00,60.18,24.95,,13,91\n"
        "\n"
        "cam-1,yesterday,60.19,24.96,1,1,1\n"
        "cam-1,2024-05-01T08:00:03Z,,24.97,1,1,1\n"
        "cam-1,2024-05-01T08:00:04Z,north,24.98,1,1,1\n"
        "cam-1,2024-05-01T08:00:05Z,60.2,24.99\n"
        "cam-2,2024-05-01 08:00:06,95.0,0,abc,1,1\n"
        ",,0,0,1,1,1\n",
    )
    result = read_trace_file(path)
    check_result(result)
    assert result.format == "csv"
    assert result.rows_read == 8  # the blank line is not a row
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [2, 3, 9]
    assert fixes["source_file"].tolist() == [str(path)] * 3
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00.250Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),  # +02:00 converted to UTC
        pd.Timestamp("2024-05-01T08:00:06Z"),  # naive taken as UTC
    ]
    np.testing.assert_allclose(fixes["lat"], [60.17, 60.18, 95.0])  # lat=95 passed on
    np.testing.assert_allclose(fixes["lon"], [24.94, 24.95, 0.0])
    np.testing.assert_allclose(fixes["hdop"], [0.9, np.nan, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [12.5, 13.0, 1.0])
    np.testing.assert_allclose(fixes["heading_deg"], [90.0, 91.0, 1.0])
    assert fixes["elevation_m"].isna().all()
    assert fixes["device_id"].tolist() == ["cam-1", "cam-1", "cam-2"]
    assert fixes["contributor_id"].tolist() == [None, None, None]
    assert reasons(result) == {
        5: "unparseable_time",
        6: "missing_coordinates",
        7: "unparseable_coordinates",
        8: "malformed_row",
        10: "missing_time",  # (0, 0) is passed on; the time is what is missing
    }
    details = dict(zip(result.rejects["source_row"], result.rejects["detail"], strict=True))
    assert details[5] == "time='yesterday'"
    assert "north" in details[7]
    assert details[8] == "4 fields, the header has 7"
    assert result.ignored == {"unparseable_hdop": 1}


def test_quoted_line_breaks_keep_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'time,lat,lon,note\n2024-05-01T08:00:00Z,1,2,"two\nlines"\n2024-05-01T08:00:01Z,1,x,ok\n',
    )
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [2]
    assert reasons(result) == {4: "unparseable_coordinates"}


def test_csv_epoch_seconds_and_milliseconds_by_magnitude(tmp_path: Path) -> None:
    path = write(tmp_path, "ts,lat,lon\n1700000000,1,2\n1700000000123,1,2\n1700000000.5,1,2\n")
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["observed_at"].tolist() == [
        pd.Timestamp("2023-11-14T22:13:20Z"),
        pd.Timestamp("2023-11-14T22:13:20.123Z"),
        pd.Timestamp("2023-11-14T22:13:20.500Z"),
    ]


def test_csv_time_unit_option_overrides_magnitude(tmp_path: Path) -> None:
    path = write(tmp_path, "time,lat,lon\n1700000000,1,2\n")
    result = read_trace_file(path, ReaderOptions(csv_time_unit="ms"))
    assert result.fixes["observed_at"].iloc[0] == pd.Timestamp("1970-01-20T16:13:20Z")


def test_semicolon_csv_with_decimal_commas_and_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Latitude;Longitude;GPS Time;Speed (km/h);Altitude;User\n"
        '60,17;24,94;2024-05-01T08:00:00Z;36;12,5;"alice"\n',
    )
    result = read_trace_file(path)
    check_result(result)
    fix = result.fixes.iloc[0]
    assert (fix["lat"], fix["lon"]) == (60.17, 24.94)
    assert fix["speed_mps"] == pytest.approx(10.0)
    assert fix["elevation_m"] == 12.5
    assert fix["contributor_id"] == "alice"


def test_tsv_with_bom_and_configured_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_bytes("\ufeffnorthing\teasting\twhen\n60.1\t24.9\t1700000000\n".encode())
    options = ReaderOptions(csv_columns={"lat": "northing", "lon": "easting", "time": "WHEN"})
    result = read_trace_file(path, options)
    check_result(result)
    assert result.fixes[["lat", "lon"]].iloc[0].tolist() == [60.1, 24.9]


def test_unknown_csv_columns_field_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "time,lat,lon\n1700000000,1,2\n")
    with pytest.raises(ConfigError, match="unknown field 'latitude'"):
        read_trace_file(path, ReaderOptions(csv_columns={"latitude": "y"}))


def test_csv_without_coordinates_counts_columns_and_gives_the_fix(tmp_path: Path) -> None:
    """The header's names are not quoted: a text file named .csv may hold anything."""
    path = write(tmp_path, "when,north,east\n1,2,3\n")
    with pytest.raises(UnreadableFileError) as error:
        read_trace_file(path)
    assert str(error.value) == (
        f"{path}: no lat/lon/time column (3 columns, none named like a trace field); "
        "name them lat, lon and time, or map them in the config (ingest.csv_columns)"
    )


def test_csv_without_time_names_only_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path, "when,Latitude,lng\n1,2,3\n")
    with pytest.raises(UnreadableFileError, match=r"no time column \(3 columns; found "):
        read_trace_file(path)
    with pytest.raises(UnreadableFileError, match=r"found lat='Latitude', lon='lng'\)"):
        read_trace_file(path)


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    result = read_trace_file(write(tmp_path, "time,lat,lon\n"))
    check_result(result)
    assert result.rows_read == 0


def test_a_large_csv_reads_every_row(tmp_path: Path) -> None:
    n = 20_000
    times = pd.date_range("2024-05-01", periods=n, freq="s").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({"timestamp": times, "lat": np.linspace(60, 61, n), "lon": 24.9})
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    result = read_trace_file(path)
    check_result(result)
    assert len(result.fixes) == n
    assert result.fixes["source_row"].iloc[-1] == n + 1


REGULAR_CSV = (
    "device_id;timestamp;lat;lon;hdop;speed_mps\r\n"
    "cam-1;2024-05-01T08:00:00Z;60,17;24,94;0.9;12.5\r\n"
    "cam-1;1714550401;60.18;24.95;;13\r\n"
    "cam-1;yesterday;60.19;24.96;1;x\r\n"
    "cam-1;2024-05-01T08:00:03Z;;24.97;1;1\r\n"
    " cam-2 ;2024-05-01T08:00:04+02:00;60.2;24.99;NaN;1"  # no final line break
)


def test_regular_and_record_by_record_parsing_agree(tmp_path: Path) -> None:
    # Lines all of the header's width go through Arrow's CSV reader; a quote anywhere sends the
    # file through the record-by-record reader. Both must give the same rows and rejects.
    quoted_csv = REGULAR_CSV.replace("cam-1;1714550401", 'cam-1;"1714550401"')
    assert _regular_lines(REGULAR_CSV) is not None
    assert _regular_lines(quoted_csv) is None
    regular = read_trace_file(write(tmp_path, REGULAR_CSV, "regular.csv"))
    quoted = read_trace_file(write(tmp_path, quoted_csv, "quoted.csv"))
    for result in (regular, quoted):
        check_result(result)
    assert regular.fixes["source_row"].tolist() == [2, 3, 6]
    assert reasons(regular) == reasons(quoted) == {4: "unparseable_time", 5: "missing_coordinates"}
    columns = ["source_row", "observed_at", "lon", "lat", "hdop", "speed_mps", "device_id"]
    pd.testing.assert_frame_equal(regular.fixes[columns], quoted.fixes[columns])
    assert regular.fixes["lat"].tolist() == [60.17, 60.18, 60.2]
    assert regular.fixes["device_id"].tolist() == ["cam-1", "cam-1", "cam-2"]
    assert regular.ignored == quoted.ignored == {"unparseable_speed_mps": 1}


def test_files_read_together_give_what_each_file_gives_alone(tmp_path: Path) -> None:
    # Regular files with one header are parsed as one; a decimal comma in one of them makes
    # every column of the group text, a short line sends its file alone to the record reader,
    # and an unreadable file is its own error.
    comma_header = "device_id,timestamp,lat,lon,hdop,speed_mps\n"
    texts = {
        "a.csv": REGULAR_CSV,  # decimal commas, bad time, missing coordinate, bad speed
        "b.csv": REGULAR_CSV.split("\r\n", 1)[0] + "\r\ncam-3;1714550500;60.3;25.0;1;2\r\n",
        "c.csv": comma_header + "cam-4,2024-05-01T09:00:00Z,60.4,25.1,1.5,3\n",
        "d.csv": comma_header + "cam-5,2024-05-01T09:00:01Z,60.5,25.2,,abc\n",
        "d2.csv": comma_header + "cam-9,2024-05-01T09:00:05Z,60.7,25.4,1,1\ncam-9,2024\n",  # short
        "d3.csv": comma_header + "cam-9,2024-05-01T09:00:06Z,60.7,25.4,1,1\n\n"  # a blank line
        "cam-9,2024-05-01T09:00:07Z,60.8,25.5,1,1\n",
        "e.csv": comma_header + 'cam-6,"2024-05-01T09:00:02Z",60.6,25.3,1,1\n',  # quoted
        "f.csv": "",  # empty
        "g.csv": "device_id,timestamp,p,q\ncam-7,2024-05-01T09:00:03Z,1,2\n",  # no lat/lon
        "h.csv": "device_id,timestamp,p,q\ncam-8,2024-05-01T09:00:04Z,3,4\n",
    }
    paths = [write(tmp_path, text, name) for name, text in texts.items()]
    together = read_csv_files(paths, [p.name for p in paths], ReaderOptions())
    for path, result in zip(paths, together, strict=True):
        alone = read_csv_files([path], [path.name], ReaderOptions())[0]
        if isinstance(alone, UnreadableFileError):
            assert isinstance(result, UnreadableFileError) and str(result) == str(alone)
            assert str(result).startswith(f"{path.name}: ")
            continue
        assert isinstance(result, ReadResult)
        check_result(result)
        pd.testing.assert_frame_equal(result.fixes, alone.fixes)
        pd.testing.assert_frame_equal(result.rejects, alone.rejects)
        assert (result.rows_read, result.ignored) == (alone.rows_read, alone.ignored)
    assert [type(r).__name__ for r in together] == ["ReadResult"] * 7 + ["UnreadableFileError"] * 3
    first = together[0]
    assert isinstance(first, ReadResult) and first.ignored == {"unparseable_speed_mps": 1}
    assert reasons(first) == {4: "unparseable_time", 5: "missing_coordinates"}
    assert [len(r.fixes) for r in together[:7] if isinstance(r, ReadResult)] == [
        3,
        1,
        1,
        1,
        1,
        2,
        1,
    ]
    short, blank = together[4], together[5]
    assert isinstance(short, ReadResult) and reasons(short) == {3: "malformed_row"}
    assert isinstance(blank, ReadResult) and blank.fixes["source_row"].tolist() == [2, 4]
