"""NMEA logs as receivers write them (shared data), compared fix by fix with pynmea2.

The logs are in ``traces/nmea-receivers/`` of the shared data (GPSBabel, gpsd and pynmea2 test
files; see its README). pynmea2 is the independent parser: it decides which sentences are
valid (checksum, fields) and what they say; these tests only find the ``$...*hh`` spans it is
given and number lines as ``grep -n`` does (split at ``\\n``).
"""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pynmea2
import pytest

from pipeline.ingest.readers import ReaderOptions, ReadResult, read_trace_file
from tests.ingest.readers.helpers import check_result

KNOTS_TO_MPS = 1852 / 3600
Sentence = tuple[int, pynmea2.NMEASentence]  # line number, what pynmea2 read


@pytest.fixture(scope="module")
def logs(shared_data: Path) -> Path:
    folder = shared_data / "traces" / "nmea-receivers"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found; set ROADCOVER_SHARED_DATA to run this test")
    return folder


def pynmea2_sentences(path: Path) -> list[Sentence]:
    """Every sentence pynmea2 reads (checksum checked) in a log, with its line number.

    A line may hold binary data around its sentences: each ``$`` is tried up to the first
    ``*`` after it and two characters more.
    """
    found = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        text = line.decode("latin-1")
        start = text.find("$")
        while start >= 0:
            star = text.find("*", start)  # none: a sentence without a checksum
            candidate = text[start:].rstrip() if star < 0 else text[start : star + 3]
            with contextlib.suppress(pynmea2.ParseError, ValueError, AttributeError):
                found.append((number, pynmea2.parse(candidate, check=True)))
            start = text.find("$", start + 1)
    return found


def of_type(sentences: list[Sentence], kind: str) -> list[Sentence]:
    return [(n, s) for n, s in sentences if getattr(s, "sentence_type", None) == kind]


def utc(day: datetime.date, timestamp: datetime.time) -> pd.Timestamp:
    """A date and a time of day pynmea2 read (in UTC) as a UTC time."""
    return pd.Timestamp(datetime.datetime.combine(day, timestamp)).tz_convert("UTC")


def is_valid(rmc: pynmea2.NMEASentence) -> bool:
    mode = getattr(rmc, "mode_indicator", None)
    return rmc.status == "A" and mode != "N" and rmc.timestamp is not None


def gga_by_time(ggas: list[Sentence], line: int, timestamp: datetime.time) -> Sentence | None:
    """The GGA of the same time nearest to ``line`` (the earlier of two as near), as documented."""
    same = [(abs(n - line), n, s) for n, s in ggas if s.timestamp == timestamp]
    return min(same, key=lambda x: (x[0], x[1]))[1:] if same else None


def as_float(value: object) -> float:
    return float(value) if value not in (None, "") else np.nan


def expected_rmc_fixes(sentences: list[Sentence]) -> pd.DataFrame:
    """The fixes of an RMC log: valid RMCs, with altitude and hdop of their GGA (quality > 0)."""
    ggas = of_type(sentences, "GGA")
    rows = []
    for line, rmc in of_type(sentences, "RMC"):
        if not is_valid(rmc) or rmc.datestamp is None:
            continue
        gga = gga_by_time(ggas, line, rmc.timestamp)
        if gga is not None and gga[1].gps_qual == 0:
            continue
        rows.append(
            {
                "source_row": line,
                "observed_at": pd.Timestamp(rmc.datetime).tz_convert("UTC"),
                "lat": rmc.latitude,
                "lon": rmc.longitude,
                "speed_mps": as_float(rmc.spd_over_grnd) * KNOTS_TO_MPS,
                "heading_deg": as_float(rmc.true_course),
                "elevation_m": np.nan if gga is None else as_float(gga[1].altitude),
                "hdop": np.nan if gga is None else as_float(gga[1].horizontal_dil),
            }
        )
    return pd.DataFrame(rows)


def expected_gga_fixes(sentences: list[Sentence], first_day: datetime.date) -> pd.DataFrame:
    """The fixes of a GGA-only log going forward in time, its first fix on ``first_day``."""
    rows, day, previous = [], first_day, None
    for line, gga in of_type(sentences, "GGA"):
        if previous is not None and gga.timestamp < previous:
            day += datetime.timedelta(days=1)  # past midnight
        previous = gga.timestamp
        if gga.gps_qual == 0:
            continue
        rows.append(
            {
                "source_row": line,
                "observed_at": utc(day, gga.timestamp),
                "lat": gga.latitude,
                "lon": gga.longitude,
                "elevation_m": as_float(gga.altitude),
                "hdop": as_float(gga.horizontal_dil),
            }
        )
    return pd.DataFrame(rows)


def assert_same_fixes(result: ReadResult, expected: pd.DataFrame) -> None:
    check_result(result)
    got = result.fixes
    assert got["source_row"].tolist() == expected["source_row"].tolist()
    assert (got["observed_at"].dt.as_unit("ms") == expected["observed_at"].dt.as_unit("ms")).all()
    for column in expected.columns.drop(["source_row", "observed_at", "hdop"]):
        np.testing.assert_allclose(got[column], expected[column], atol=1e-9, err_msg=column)
    with_gga = expected["hdop"].notna().to_numpy()  # without: the nearest GSA's (not compared)
    np.testing.assert_allclose(got["hdop"][with_gga], expected["hdop"][with_gga], atol=1e-9)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("gpsbabel__track_nmea+ms.txt", 30),
        ("gpsbabel__track_nmeadate.nmea", 6),
        ("gpsd__ublox-8.log", 72),
        ("gpsd__unicore-um621.log", 16),
    ],
)
def test_rmc_logs_match_pynmea2_fix_by_fix(logs: Path, name: str, count: int) -> None:
    """Every valid RMC, its time (two-digit years 98/99: 1998/1999), position, speed, course,
    and the altitude/hdop of the GGA of its time wherever that GGA is (nmea+ms.txt is
    shuffled); rows are lines as grep numbers them (ublox-8.log holds 0x1D bytes)."""
    path = logs / name
    expected = expected_rmc_fixes(pynmea2_sentences(path))
    assert len(expected) == count
    assert_same_fixes(read_trace_file(path), expected)


def test_two_digit_years_98_99_are_19yy(logs: Path) -> None:
    result = read_trace_file(logs / "gpsbabel__track_nmeadate.nmea")
    years = result.fixes["observed_at"].dt.year.tolist()
    assert years == [1998, 1999, 2000, 2001, 2002, 2002]


def test_shuffled_log_pairs_gga_by_time(logs: Path) -> None:
    """nmea+ms.txt: 37 GGAs; 35 have an RMC of their time (2 have none: 093200.500 and
    093200.750 come before RMCs of other times); the rest are counted, not lost."""
    result = read_trace_file(logs / "gpsbabel__track_nmea+ms.txt")
    assert result.fixes["elevation_m"].notna().sum() == 28
    assert result.ignored["GGA_without_RMC"] == 2


def test_interleaved_binary_is_skipped_and_counted(logs: Path) -> None:
    """quectel-l76k-dual.log: NMEA and CASIC binary at once.

    pynmea2, given each ``$...*hh`` span, reads 130 valid RMC and 130 valid GGA (parsing whole
    lines it reads 10 GGA: most share their line with a binary frame before them).
    """
    path = logs / "gpsd__quectel-l76k-dual.log"
    sentences = pynmea2_sentences(path)
    expected = expected_rmc_fixes(sentences)
    assert len(expected) == 130
    assert sum(gga.gps_qual > 0 for _, gga in of_type(sentences, "GGA")) == 130
    result = read_trace_file(path)
    assert_same_fixes(result, expected)
    assert result.fixes["elevation_m"].notna().sum() == 130
    assert result.rejects.empty
    # binary bytes: those of the lines holding a byte that is not text, but their sentences
    data = path.read_bytes().split(b"\n")
    spans: dict[int, int] = {}
    for line, sentence in sentences:
        spans[line] = spans.get(line, 0) + len(str(sentence))
    text = bytes([*range(0x20, 0x7F), *b"\t\r"])
    binary_lines = [n for n, line in enumerate(data, 1) if line.translate(None, text)]
    skipped = sum(len(data[n - 1].rstrip(b"\r")) - spans.get(n, 0) for n in binary_lines)
    assert result.ignored["binary_bytes"] == skipped


@pytest.mark.parametrize(
    ("name", "count", "first_day"),
    [
        ("gpsbabel__track_backfilldate.nmea", 500, datetime.date(2019, 3, 8)),
        ("gpsbabel__track_backfilldate2.nmea", 240, datetime.date(2019, 3, 8)),
    ],
)
def test_gga_only_log_dated_by_its_zda(
    logs: Path, name: str, count: int, first_day: datetime.date
) -> None:
    """The ZDA at the end (2019-03-09, 00:04:19 and 00:00:00) dates fixes from 23:56:00: the
    fixes before midnight are of 2019-03-08."""
    path = logs / name
    expected = expected_gga_fixes(pynmea2_sentences(path), first_day)
    assert len(expected) == count
    assert_same_fixes(read_trace_file(path), expected)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("gpsbabel__track_adddate.nmea", 500),
        ("gpsbabel__track_addmultipledaysfwd.nmea", 28),
        ("pynmea2__examples_data.log", 1),
    ],
)
def test_gga_only_log_dated_by_its_upload(logs: Path, name: str, count: int) -> None:
    """No date in the log: the upload's date is the first fix's; days pass at midnight."""
    path = logs / name
    day = datetime.date(2024, 5, 1)
    expected = expected_gga_fixes(pynmea2_sentences(path), day)
    assert len(expected) == count
    assert_same_fixes(read_trace_file(path, ReaderOptions(log_date=day)), expected)


def test_gga_only_log_dated_by_its_file_name(logs: Path, tmp_path: Path) -> None:
    path = tmp_path / "drive_2019-03-08_2200.nmea"
    path.write_bytes((logs / "gpsbabel__track_addmultipledaysfwd.nmea").read_bytes())
    expected = expected_gga_fixes(pynmea2_sentences(path), datetime.date(2019, 3, 8))
    assert_same_fixes(read_trace_file(path), expected)
    assert (
        result_days(read_trace_file(path))
        == ["2019-03-08"] * 2 + ["2019-03-09"] * 24 + ["2019-03-10"] * 2
    )


def result_days(result: ReadResult) -> list[str]:
    return result.fixes["observed_at"].dt.strftime("%Y-%m-%d").tolist()


def test_gga_only_log_without_a_date_rejects_every_fix(logs: Path) -> None:
    """adddate.nmea alone: every GGA fix is a missing_date reject, at its line, saying the fix."""
    result = read_trace_file(logs / "gpsbabel__track_adddate.nmea")
    check_result(result)
    assert result.fixes.empty and result.rows_read == 500
    assert set(result.rejects["reason"]) == {"missing_date"}
    assert result.rejects["source_row"].tolist() == list(range(1, 501))
    detail = result.rejects["detail"].iloc[0]
    assert detail.startswith("GGA at time='235600.000', lat='5013.476N', lon='01710.477E': ")
    assert '"date": "YYYY-MM-DD"' in detail and "ingest.log_dates" in detail


def test_comment_lines_are_counted_under_one_key_with_a_sample(logs: Path) -> None:
    """unicore-um621.log: 14 comment lines, 2 gpsd JSON lines and "$$GYOACC is 100 Hz ..."."""
    result = read_trace_file(logs / "gpsd__unicore-um621.log")
    unknown = [k for k in result.ignored if not k.isalnum() or not k.isupper()]
    assert unknown == ["not_a_sentence"]
    assert result.ignored["not_a_sentence"] == 16
    assert result.samples == {"not_a_sentence": "'# Name: unicore-um621.log'"}
