"""A bad byte spoils only its row, and rejects never echo a file beyond what names the problem.

Every expected value (line numbers, columns, bytes) is counted by hand from the lines written.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import pytest

from pipeline.ingest.readers import ReadResult, UnreadableFileError, read_trace_file
from pipeline.ingest.readers import read_trace_files as read_files

from .helpers import check_result

TIME = "2024-05-01T08:{:02d}:{:02d}Z"  # 20 characters


def csv_rows(count: int, quoted: bool = False) -> list[bytes]:
    """``count`` CSV rows ``time,60.1,24.9,cam``, one second apart (the device maybe quoted)."""
    device = '"cam"' if quoted else "cam"
    return [f"{TIME.format(i // 60, i % 60)},60.1,24.9,{device}".encode() for i in range(count)]


def rejects_of(result: ReadResult) -> list[list[object]]:
    return result.rejects[["source_row", "reason", "detail"]].values.tolist()


@pytest.mark.parametrize("quoted", [False, True])
def test_one_byte_that_is_not_utf8_rejects_its_csv_row_only(tmp_path: Path, quoted: bool) -> None:
    rows = csv_rows(399, quoted)
    rows[199] = f"{TIME.format(3, 19)},60.1,24.9,cam".encode() + b"\xe9"  # line 201
    path = tmp_path / "trace.csv"
    path.write_bytes(b"\n".join([b"time,lat,lon,device_id", *rows]) + b"\n")
    result = read_trace_file(path)
    check_result(result)
    assert result.rows_read == 399
    assert result.fixes["source_row"].tolist() == [n for n in range(2, 401) if n != 201]
    # 20 (time) + 5 (",60.1") + 5 (",24.9") + 4 (",cam") = 34 characters, then the byte
    assert rejects_of(result) == [
        [201, "invalid_encoding", "not UTF-8 (byte 0xe9 at column 35); re-save the file as UTF-8"]
    ]


def nmea(body: bytes) -> bytes:
    """A sentence with its checksum: the XOR of the body's bytes, as written."""
    return b"$" + body + b"*%02X" % reduce(lambda a, b: a ^ b, body, 0)


def test_one_byte_that_is_not_ascii_rejects_its_nmea_line_only(tmp_path: Path) -> None:
    lines = [
        nmea(b"GPRMC,08%02d%02d.00,A,6010.2000,N,02456.4000,E,10.0,90.0,010524,,,A" % divmod(i, 60))
        for i in range(399)
    ]
    # "$GPRMC," 7 + "080319.00," 10 + "A," 2 + "6010.2000," 10 + "N," 2 + "02456.4000," 11
    # + "E," 2 + "10.0," 5 + "90.0," 5 + "010524," 7 = 61 characters, then the byte
    lines[199] = nmea(b"GPRMC,080319.00,A,6010.2000,N,02456.4000,E,10.0,90.0,010524,\xff,,A")
    path = tmp_path / "trace.nmea"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [n for n in range(1, 400) if n != 200]
    assert rejects_of(result) == [[200, "invalid_encoding", "not ASCII (byte 0xff at column 62)"]]


FRAME = b'{"device": "cam", "timestamp": 1700000000, "lat": 60.1, "lon": 24.9}'


def test_one_byte_that_is_not_utf8_rejects_its_json_line_only(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl"
    bad = FRAME.replace(b"cam", b"\xe9")  # after '{"device": "', 12 characters
    path.write_bytes(b"\n".join([FRAME, FRAME, bad, FRAME, FRAME]) + b"\n")
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 2, 4, 5]
    assert rejects_of(result) == [
        [3, "invalid_encoding", "not UTF-8 (byte 0xe9 at column 13); re-save the file as UTF-8"]
    ]


def test_json_document_with_a_byte_that_is_not_utf8_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    path.write_bytes(b"[\n" + FRAME + b",\n" + FRAME.replace(b"cam", b"\xe9") + b"\n]\n")
    with pytest.raises(UnreadableFileError, match=r"frames\.json: line 3 is not UTF-8; re-save"):
        read_trace_file(path)


PASSWD = """\
root:x:0:0:root:/root:/bin/bash
alice:x:1000:1000:Alice Liddell,Room 42,555-0199:/home/alice:/bin/zsh
bob:$6$saltsalt$hashhashhashhash:1001:1001::/home/bob:/bin/sh
"""
SECRETS = ("Alice Liddell", "555-0199", "/home/alice", "saltsalt", "hashhash", "/bin/zsh")
EXTENSIONS = ("", ".csv", ".tsv", ".txt", ".log", ".nmea", ".json", ".jsonl", ".geojson", ".gpx")


def everything_said(results: list[ReadResult | UnreadableFileError]) -> str:
    """Every error message, reject detail, ignored key and sample of the results, as one text."""
    said = []
    for result in results:
        if isinstance(result, UnreadableFileError):
            said.append(str(result))
        else:
            said.extend(result.rejects["detail"].astype(str))
            said.extend(result.ignored)
            said.extend(result.samples.values())
    return "\n".join(said)


def read_under_every_name(folder: Path, text: str) -> str:
    """Read ``text`` as a file of every extension; return :func:`everything_said`."""
    paths = [folder / f"passwd{extension}" for extension in EXTENSIONS]
    for path in paths:
        path.write_text(text)
    return everything_said(read_files(paths, sources=[p.name for p in paths]))


def test_a_private_text_file_is_never_echoed(tmp_path: Path) -> None:
    """/etc/passwd-like text under any name: no line, and nothing of a line, is said."""
    said = read_under_every_name(tmp_path, PASSWD)
    for line in PASSWD.splitlines():
        assert line not in said
    for secret in SECRETS:
        assert secret not in said


@pytest.mark.parametrize("header", ["time,lat,lon\n", '{"timestamp": 1, "lat": 2, "lon": 3}\n'])
def test_private_lines_under_a_trace_header_are_not_echoed(tmp_path: Path, header: str) -> None:
    """Rows of a trace: a bad value is quoted (at most 40 characters), never a whole line."""
    said = read_under_every_name(tmp_path, header + PASSWD)
    for line in PASSWD.splitlines():
        assert line not in said


def test_a_bad_value_is_quoted_escaped_and_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(f"time,lat,lon\n{TIME.format(0, 0)},\x1b[31m{'9' * 500},24.9\n")
    (detail,) = read_trace_file(path).rejects["detail"]
    assert "\x1b" not in detail and "\\x1b" in detail
    lat = detail.partition("lat=")[2].partition(", lon=")[0]
    assert len(lat) <= 40 and "..." in lat


def test_nmea_junk_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "trace.nmea"
    good = nmea(b"GPRMC,080000.00,A,6010.2000,N,02456.4000,E,10.0,90.0,010524,,,A")
    junk = b"x" * 300
    lines = [
        good,
        good[:-2] + b"\x1b" + junk,  # a checksum of junk
        b"$" + junk,  # a sentence type of junk
        b"$GPRMC," + junk + b",A*00",  # a field of junk
        b"$\x1b[RMC,1",  # a malformed RMC with a control character in its type
    ]
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    result = read_trace_file(path)
    said = everything_said([result])
    assert "x" * 41 not in said and "\x1b" not in said
    # a sentence type that is not a name is a line of unknown text: counted, a sample quoted
    assert result.ignored == {"not_a_sentence": 1}
    sample = result.samples["not_a_sentence"]
    assert len(sample) <= 40 and sample.startswith("'$xxx") and "..." in sample
    assert "'\\x1b[RMC' sentence with 2 fields" in said


def test_gpx_root_element_of_junk_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "junk.gpx"
    path.write_text(f"<{'x' * 300}/>")
    with pytest.raises(UnreadableFileError) as error:
        read_trace_file(path)
    assert "x" * 41 not in str(error.value) and "not a GPX file (root element 'xxx" in str(
        error.value
    )
