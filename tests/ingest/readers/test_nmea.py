from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.readers import UnreadableFileError, read_trace_file
from pipeline.ingest.readers import nmea as nmea_reader
from tests.ingest.readers.helpers import check_result, nmea, reasons

RMC = "GPRMC,081500.00,A,6010.2000,N,02456.4000,E,10.0,90.5,010524,,,A"
GGA = "GPGGA,081500.00,6010.2000,N,02456.4000,E,1,09,0.8,15.3,M,18.0,M,,"
GSA = "GPGSA,A,3,02,05,06,09,12,,,,,,,,1.5,1.1,1.0"


def write(tmp_path: Path, lines: list[str], name: str = "cam.nmea") -> Path:
    path = tmp_path / name
    path.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    return path


def test_plain_nmea_rmc_enriched_by_gga(tmp_path: Path) -> None:
    lines = [
        nmea("GPGSV,3,1,12,02,45,120,40,05,30,200,35,06,10,300,20,09,60,050,45"),
        nmea(RMC),
        nmea(GGA),
        nmea("GPVTG,90.5,T,,M,10.0,N,18.5,K,A"),
        nmea("GNRMC,081501.50,A,6010.2100,N,02456.4100,W,,,010524,,,A"),
        nmea("GNGGA,081501.50,6010.2100,N,02456.4100,W,1,09,,16.0,M,18.0,M,,"),
        nmea(GSA),
    ]
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert result.format == "nmea"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [2, 5]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:15:00Z"),
        pd.Timestamp("2024-05-01T08:15:01.500Z"),
    ]
    np.testing.assert_allclose(fixes["lat"], [60 + 10.2 / 60, 60 + 10.21 / 60])
    np.testing.assert_allclose(fixes["lon"], [24 + 56.4 / 60, -(24 + 56.41 / 60)])
    np.testing.assert_allclose(fixes["speed_mps"], [10.0 * 1852 / 3600, np.nan])
    np.testing.assert_allclose(fixes["heading_deg"], [90.5, np.nan])
    np.testing.assert_allclose(fixes["elevation_m"], [15.3, 16.0])
    # GGA hdop first; the second GGA has none, so the GSA's HDOP (1.1) is used
    np.testing.assert_allclose(fixes["hdop"], [0.8, 1.1])
    assert fixes["device_id"].tolist() == [None, None]
    assert result.ignored == {"GPGSV": 1, "GPVTG": 1}


def test_blackvue_prefixed_lines_bad_rows_and_gga_before_rmc(tmp_path: Path) -> None:
    broken_checksum = nmea(RMC.replace("081500", "081502"))[:-2] + "00"
    lines = [
        "[1714551300000]" + nmea(GGA),  # GGA first, then its RMC
        "[1714551300000]" + nmea(RMC),
        "[1714551301000]" + nmea(RMC.replace("081500.00,A", "081501.00,V")),
        "[1714551302000]" + broken_checksum,
        "[1714551303000]" + nmea(RMC.replace("081500", "081503").replace("010524", "")),
        "[1714551304000]" + nmea("GPRMC,081504.00,A,6010.2000,N"),
        "[1714551305000]" + nmea(RMC.replace("081500", "081505").replace("6010.2000", "")),
        "[1714551306000]" + nmea(RMC.replace("081500", "0815xx")),
        "[1714551307000]" + nmea(GGA.replace("081500", "081507")),  # no RMC
        "[1714551308000]" + nmea(RMC.replace("081500", "081508")),
        "[1714551308000]" + nmea(GGA.replace("081500", "081508").replace(",1,09,", ",0,00,")),
        "[1714551309000]$GPRMC,081509.00,A,6010.2000,N,02456.4000,E,1.0,2.0,010524,,,A",
        "not nmea",
        "[1714551310000]$GPRMC,081510.00,A,60",  # truncated last line
    ]
    result = read_trace_file(write(tmp_path, lines, "blackvue.txt"))
    check_result(result)
    assert result.format == "nmea"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [2, 5, 12]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:15:00Z"),
        # no RMC date: taken from the line prefix (2024-05-01T08:15:03Z)
        pd.Timestamp("2024-05-01T08:15:03Z"),
        pd.Timestamp("2024-05-01T08:15:09Z"),  # no checksum: accepted
    ]
    assert fixes["elevation_m"].iloc[0] == 15.3
    assert reasons(result) == {
        3: "invalid_fix",
        4: "bad_checksum",
        6: "malformed_row",
        7: "missing_coordinates",
        8: "unparseable_time",
        10: "invalid_fix",  # its GGA says fix quality 0
        14: "malformed_row",
    }
    details = dict(zip(result.rejects["source_row"], result.rejects["detail"], strict=True))
    assert details[4].startswith("checksum *00, computed *")
    assert details[8] == "time='0815xx.00', date='010524'"
    assert result.ignored == {"GGA_without_RMC": 1, "not_a_sentence": 1}


def test_rmc_date_two_digit_year_and_midnight_prefix(tmp_path: Path) -> None:
    # no date, time of day just before midnight, camera clock just after: previous day
    rmc = "GPRMC,235959.00,A,6010.2000,N,02456.4000,E,0.0,0.0,,,,A"
    # two-digit years: 80-99 are 19yy (GPSBabel's nmeadate.nmea has 1998), 00-79 are 20yy
    years = ["311299", "010180", "311279", "010100"]
    lines = ["[1714608001000]" + nmea(rmc), *(nmea(RMC.replace("010524", y)) for y in years)]
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert result.fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T23:59:59Z"),
        pd.Timestamp("1999-12-31T08:15:00Z"),
        pd.Timestamp("1980-01-01T08:15:00Z"),
        pd.Timestamp("2079-12-31T08:15:00Z"),
        pd.Timestamp("2000-01-01T08:15:00Z"),
    ]


def test_rmc_without_date_or_prefix_is_missing_time(tmp_path: Path) -> None:
    lines = [nmea(RMC.replace("010524", ""))]
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert reasons(result) == {1: "missing_time"}


def test_a_long_nmea_log_reads_every_fix(tmp_path: Path) -> None:
    n = 20_000
    start = pd.Timestamp("2024-05-01T00:00:00Z")
    lines = []
    for i in range(n):
        t = start + pd.Timedelta(seconds=i)
        hms, dmy = t.strftime("%H%M%S"), t.strftime("%d%m%y")
        lines.append(nmea(f"GPRMC,{hms}.00,A,6010.2000,N,02456.4000,E,10.0,90.5,{dmy},,,A"))
        lines.append(nmea(f"GPGGA,{hms}.00,6010.2000,N,02456.4000,E,1,09,0.8,15.3,M,18.0,M,,"))
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert len(result.fixes) == n
    assert result.fixes["observed_at"].is_monotonic_increasing
    assert (result.fixes["hdop"] == 0.8).all()


@given(st.lists(st.text(alphabet=st.sampled_from("GPRMC,0123.*é "), max_size=30), max_size=12))
@settings(max_examples=200, deadline=None)
def test_fields_by_position_are_those_of_splitting_at_commas(bodies: list[str]) -> None:
    array = pa.array(bodies, type=pa.string())
    for fields in (
        nmea_reader._Fields.of_bodies(array),
        nmea_reader._Fields.of_bodies(array.slice(1)),
    ):  # also an offset array
        expected = [body.split(",") for body in bodies[len(bodies) - len(fields.count) :]]
        assert fields.count.tolist() == [len(parts) for parts in expected]
        for index in range(4):
            column = [parts[index] if index < len(parts) else "" for parts in expected]
            assert fields[index].to_pylist() == column


def test_rows_are_lines_split_at_line_feeds_only(tmp_path: Path) -> None:
    """0x0B, 0x0C, 0x1C-0x1E and a lone CR are not line breaks (``str.splitlines`` says so)."""
    path = tmp_path / "cam.nmea"
    path.write_bytes(
        b"\r\n".join(
            [
                nmea(RMC).encode(),
                b"\x1c\x1d\x1e\x0b\x0c x",  # one line: binary bytes
                nmea(RMC.replace("081500", "081501")).encode(),
                nmea(RMC.replace("081500", "081502")).encode(),
            ]
        )
        + b"\r\n"
    )
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 3, 4]
    assert result.ignored == {"binary_bytes": 7}


def test_binary_frames_between_sentences_are_skipped(tmp_path: Path) -> None:
    """A UBX frame holding "$", "*" and "\\n" bytes, before a sentence on the same line."""
    ubx = b"\xb5\x62\x01\x07\x04\x00$\n*\x00\x10\x20"  # 12 bytes, a line feed at the 8th
    second = nmea(RMC.replace("081500", "081501")).encode()
    path = tmp_path / "dump.log"
    path.write_bytes(nmea(RMC).encode() + b"\r\n" + ubx + second + b"\r\n" + nmea(GGA).encode())
    result = read_trace_file(path)
    check_result(result)
    # lines: 1 RMC, 2 "\xb5b...$", 3 "*...\x20" + RMC, 4 GGA (of the first RMC's time)
    assert result.fixes["source_row"].tolist() == [1, 3]
    assert result.fixes["elevation_m"].tolist()[0] == 15.3
    assert result.ignored == {"binary_bytes": 11}  # 12, less the line feed
    assert result.rejects.empty


def test_gga_is_paired_with_the_rmc_of_its_time_anywhere(tmp_path: Path) -> None:
    later = RMC.replace("081500", "081501")
    lines = [nmea(RMC), nmea(later), nmea(GGA.replace("081500", "081501").replace("15.3", "16.0"))]
    lines.append(nmea("GPGSV,3,1,12,02,45,120,40"))
    lines.append(nmea(GGA))  # three lines after its RMC, after the other RMC's GGA
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert result.fixes["elevation_m"].tolist() == [15.3, 16.0]
    assert "GGA_without_RMC" not in result.ignored


def test_a_log_without_fix_sentences_is_unreadable(tmp_path: Path) -> None:
    """Nothing to account for: not registered as ingested, read again once it can be."""
    lines = [nmea("GPGSV,3,1,12,02,45,120,40"), nmea("GPVTG,90.5,T,,M,10.0,N,18.5,K,A")]
    with pytest.raises(UnreadableFileError, match=r"cam\.nmea: no fixes \(no RMC or GGA"):
        read_trace_file(write(tmp_path, lines))


def test_gga_only_log_days_pass_at_midnight_and_zda_dates_them(tmp_path: Path) -> None:
    """Without RMC, GGA are the fixes; the ZDA (of 2024-05-02) dates the fixes around it."""
    times = ["235958.00", "235959.00", "000000.00", "000001.00"]
    lines = [nmea(GGA.replace("081500.00", t)) for t in times]
    lines.insert(3, nmea("GPZDA,000000.50,02,05,2024,00,00"))
    result = read_trace_file(write(tmp_path, lines))
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 2, 3, 5]
    assert result.fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T23:59:58Z"),
        pd.Timestamp("2024-05-01T23:59:59Z"),
        pd.Timestamp("2024-05-02T00:00:00Z"),
        pd.Timestamp("2024-05-02T00:00:01Z"),
    ]
    np.testing.assert_allclose(result.fixes["hdop"], 0.8)
    np.testing.assert_allclose(result.fixes["elevation_m"], 15.3)
