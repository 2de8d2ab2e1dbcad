"""Fuzzing the trace readers and the per-file ingest with hypothesis.

For every format: random bytes, and small valid files (written by the trace writers or by
hand) damaged by byte flips, truncations, duplicated/deleted/swapped lines and inserted
garbage lines. A reader must either refuse the whole file with an :class:`UnreadableFileError`
naming it, or account for every row (``rows_read == len(fixes) + len(rejects)``) with the
documented dtypes, never NaN coordinates or NaT times; any other exception is a bug.
``ingest_files`` must account for every row read too. Crashes found here are kept below as
explicit regression tests.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.errors import InputDataError
from pipeline.ingest.readers import ReadResult, UnreadableFileError, read_trace_file
from pipeline.ingest.stage import ingest_files
from pipeline.simulate.trace_writers import write_trace
from tests.ingest.readers.helpers import assert_same_reading, check_result, nmea

KEY = "a-fuzz-pseudonym-key-0123456789"
NOW = pd.Timestamp("2027-01-01T00:00Z")
#: ``ROADCOVER_FUZZ_SCALE=10`` for a deeper (slower) campaign than the default of about 60 s
SCALE = float(os.environ.get("ROADCOVER_FUZZ_SCALE", "1"))
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)


def examples(count: int) -> int:
    """``count`` examples, scaled by ``ROADCOVER_FUZZ_SCALE``."""
    return max(1, round(count * SCALE))


#: format -> file name suffix (``.json`` is sniffed: GeoJSON or frames or an unknown format)
SUFFIXES = {
    "gpx": ".gpx",
    "nmea": ".nmea",
    "csv": ".csv",
    "geojson": ".geojson",
    "parquet": ".parquet",
    "framejson": ".jsonl",
    "json": ".json",
}
#: fragments that make garbage lines look like the formats, to reach deeper code paths
TOKENS = [
    "$GPRMC,", "$GPGGA,", "$GPGSA,", "$GNRMC,", "[1700000000123]", "*", "*7A", ",", ";", "\t",
    "A", "V", "N", "S", "E", "W", "000000", "235960", "310299", "6010.2", "02456.7", "-",
    "1e309", "nan", "NaN", "null", "inf", "-0", "0", "60.17", "24.94", "95", "999999999999999",
    "2024-05-01T08:00:00Z", "2024-05-01", "1700000000", "1700000000123", "99999999999999999999",
    '"', "'", "{", "}", "[", "]", ":", '"lat":', '"lon":', '"time":', '"coordinates":',
    '"type":"Feature"', '"geometry":', "<trkpt lat=\"60.1\" lon=\"24.9\">", "</trkpt>",
    "<time>", "</time>", "<ele>", "&amp;", "<![CDATA[", "POINT (24.9 60.1)", "é", "\u2028",
    "\x0b", "\r", " ",
]  # fmt: skip


# --- seed files -------------------------------------------------------------------------------


def seed_fixes() -> pd.DataFrame:
    """Six fixes in two trips, as the trace writers take them."""
    times = pd.date_range("2024-05-01T08:00:00Z", periods=6, freq="1s", unit="ms")
    return pd.DataFrame(
        {
            "trip_id": ["t1", "t1", "t1", "t2", "t2", "t2"],
            "observed_at": times,
            "lon": 24.94 + np.arange(6) * 1e-4,
            "lat": 60.17 + np.arange(6) * 1e-4,
            "elevation_m": [10.0, 10.5, 11.0, 11.0, 11.2, 11.4],
            "hdop": [0.9, 1.0, 1.1, 0.8, 0.9, 1.2],
            "speed_mps": [10.0, 10.5, 11.0, 9.0, 9.5, 10.0],
            "heading_deg": [0.0, 10.0, 20.0, 30.0, 40.0, 350.0],
        }
    )


@cache
def seeds(folder: str) -> dict[str, list[bytes]]:
    """Valid small files of every format (bytes), written once per test process."""
    out: dict[str, list[bytes]] = {}
    base = Path(folder)
    fixes = seed_fixes()
    for fmt in ("csv", "gpx", "nmea", "geojson", "parquet"):
        path = base / f"seed.{fmt}"
        write_trace(fixes, path, fmt, "cam-1", "contrib-1")
        out[fmt] = [path.read_bytes()]
    # an uncompressed, non-geo Parquet file too, so that flipped bytes land in the values
    plain = base / "plain.parquet"
    table = pa.table(
        {
            "observed_at": pa.array(fixes["observed_at"].astype("int64").to_numpy(), pa.int64()),
            "lat": fixes["lat"].to_numpy(),
            "lon": fixes["lon"].to_numpy(),
            "speed_kmh": fixes["speed_mps"].to_numpy() * 3.6,
            "device": ["cam-1"] * 6,
        }
    )
    pq.write_table(table, plain, compression="none")
    out["parquet"].append(plain.read_bytes())
    # semicolon CSV with decimal commas, epoch times and a WKT column
    out["csv"].append(
        b"geometry;time_ms;Speed (km/h);user\n"
        b"POINT (24.94 60.17);1714550400000;36,5;u1\n"
        b"POINT (24.9401 60.1701);1714550401000;37,0;u1\n"
        b'"POINT (24.9402 60.1702)";1714550402000;;u1\n'
    )
    # NMEA without prefixes and with a GGA/GSA pair, hand-made checksums
    out["nmea"].append(
        "\n".join(
            [
                nmea("GPRMC,080000.00,A,6010.2000,N,02456.4000,E,10.0,90.0,010524,,,A"),
                nmea("GPGGA,080000.00,6010.2000,N,02456.4000,E,1,08,0.9,12.0,M,18.0,M,,"),
                nmea("GPGSA,A,3,02,05,06,09,12,13,,,,,,,1.5,0.9,1.2"),
                nmea("GPRMC,080001.00,A,6010.2100,N,02456.4100,E,10.0,90.0,,,,A"),
                "[1714550401000]" + nmea("GNRMC,080002.00,A,6010.2200,S,02456.4200,W,,,,,,"),
                nmea("GPGSV,3,1,12,02,45,120,40"),
            ]
        ).encode()
    )
    frames = [
        {"timestamp": 1714550400000 + i * 1000, "device": "cam-1",
         "position": {"lat": 60.17 + i * 1e-4, "lon": 24.94, "hdop": 0.9, "alt": 12.0},
         "speed": 10.0, "heading": 90.0, "imu": {"ax": 0.1}}
        for i in range(4)
    ]  # fmt: skip
    out["framejson"] = [
        "\n".join(json.dumps(f) for f in frames).encode(),
        "\n".join(
            json.dumps({**f, "position": None, "lat": 60.1, "lng": 24.9}) for f in frames
        ).encode(),
    ]
    out["json"] = [
        json.dumps(frames).encode(),
        json.dumps({"frames": frames, "contributor_id": "u1"}).encode(),
        out["geojson"][0],
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [24.94, 60.17, 5.0]},
                        "properties": {"time": "2024-05-01T08:00:00Z", "speed_kmh": 36},
                    },
                    {
                        "type": "Feature",
                        "geometry": {
                            "type": "MultiLineString",
                            "coordinates": [[[24.9, 60.1], [24.91, 60.11]], [[24.92, 60.12]]],
                        },
                        "properties": {
                            "coordTimes": [[1714550400, 1714550401], [1714550402]],
                            "hdop": [1, 2, 3],
                        },
                    },
                ],
            }
        ).encode(),
    ]
    out["geojson"].append(out["json"][3])
    return out


# --- mutations --------------------------------------------------------------------------------


def garbage_line() -> st.SearchStrategy[bytes]:
    """A line of random bytes, random text, or format-like tokens."""
    return st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(st.sampled_from(TOKENS), max_size=16).map(lambda t: "".join(t).encode()),
    )


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after 1 to 6 random damages."""
    for _ in range(draw(st.integers(1, 6))):
        lines = data.split(b"\n")
        op = draw(
            st.sampled_from(["flip", "flip", "truncate", "dup", "delete", "swap", "insert", "cut"])
        )
        if op == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "cut" and data:  # remove a short range of bytes
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + data[at + draw(st.integers(1, 16)) :]
        elif op == "dup":
            i = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
        elif op == "delete" and len(lines) > 1:
            i = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[:i] + lines[i + 1 :])
        elif op == "swap" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        elif op == "insert":
            i = draw(st.integers(0, len(lines)))
            data = b"\n".join([*lines[:i], draw(garbage_line()), *lines[i:]])
    return data


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["2024-05-01T08:00:00Z", "1714550400", "Point", "Feature", "60.1"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)  # fmt: skip


@st.composite
def replaced_json_value(draw: st.DrawFn, document: Any) -> bytes:
    """``document`` with one value somewhere inside replaced by random JSON."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else []
        )
        for key, child in items:
            walk(child, (*path, key))

    walk(document, ())
    path = draw(st.sampled_from(paths))
    value = draw(JSON_VALUES)
    if not path:
        return json.dumps(value).encode()
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(copy).encode()


# --- the invariants ---------------------------------------------------------------------------


def write(folder: Path, fmt: str, data: bytes) -> Path:
    path = folder / f"fuzzed{SUFFIXES[fmt]}"
    path.write_bytes(data)
    return path


def check_read(path: Path) -> ReadResult | None:
    """Read ``path``: an UnreadableFileError naming it, or a result with every row accounted."""
    try:
        result = read_trace_file(path)
    except UnreadableFileError as exc:
        assert isinstance(exc, InputDataError)
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, message
        return None
    check_result(result)
    assert set(result.fixes["source_file"]) <= {str(path)}
    assert set(result.rejects["source_file"]) <= {str(path)}
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)
    return KEY.encode()


@pytest.mark.parametrize("fmt", list(SUFFIXES))
def test_seed_files_are_valid(fmt: str, folder: Path) -> None:
    for data in seeds(str(folder))[fmt]:
        result = check_read(write(folder, fmt, data))
        assert result is not None and len(result.fixes) >= 2, fmt


@pytest.mark.parametrize("fmt", list(SUFFIXES))
@settings(FUZZ, max_examples=examples(40))
@given(data=st.binary(max_size=600))
def test_random_bytes(fmt: str, folder: Path, data: bytes) -> None:
    check_read(write(folder, fmt, data))


@pytest.mark.parametrize("fmt", list(SUFFIXES))
@settings(FUZZ, max_examples=examples(80))
@given(data=st.data())
def test_mutated_files(fmt: str, folder: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds(str(folder))[fmt]))
    check_read(write(folder, fmt, data.draw(mutated(seed))))


@settings(FUZZ, max_examples=examples(150))
@given(data=st.data())
def test_mutated_gpx_is_read_by_tags_as_by_the_tree(folder: Path, data: st.DataObject) -> None:
    """The GPX tag reader gives the ElementTree reader's points, or leaves the file to it."""
    seed = data.draw(st.sampled_from(seeds(str(folder))["gpx"]))
    assert_same_reading(data.draw(mutated(seed)))


@pytest.mark.parametrize("fmt", ["geojson", "json", "framejson"])
@settings(FUZZ, max_examples=examples(80))
@given(data=st.data())
def test_json_documents_with_random_values(fmt: str, folder: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds(str(folder))[fmt]))
    if fmt == "framejson":  # one line of JSON Lines
        lines = seed.split(b"\n")
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = data.draw(replaced_json_value(json.loads(lines[i])))
        fuzzed = b"\n".join(lines)
    else:
        fuzzed = data.draw(replaced_json_value(json.loads(seed)))
    check_read(write(folder, fmt, fuzzed))


@settings(FUZZ, max_examples=examples(40))
@given(data=st.data())
def test_ingest_file_accounts_for_every_row(
    folder: Path, pseudonym_key: bytes, data: st.DataObject
) -> None:
    fmt = data.draw(st.sampled_from(list(SUFFIXES)))
    seed = data.draw(st.sampled_from(seeds(str(folder))[fmt]))
    path = write(folder, fmt, data.draw(mutated(seed)))
    settings_ = load_config().ingest
    [outcome], rows = ingest_files([path], ["0" * 64], settings_, pseudonym_key, NOW)
    if outcome.format is None:  # the whole file is one unreadable_file reject
        assert outcome.rows_read == 1 and len(rows) == 0
        assert outcome.reader_rejects["reason"].tolist() == ["unreadable_file"]
        return
    reader_rejects = outcome.reader_rejects
    assert outcome.rows_read == len(rows) + len(reader_rejects)
    accepted = rows["reason"].isna()
    assert int(accepted.sum()) + int((~accepted).sum()) + len(reader_rejects) == outcome.rows_read
    assert rows.loc[~accepted, "reason"].map(lambda r: isinstance(r, str) and r != "").all()
    assert rows.loc[accepted, "trip_id"].notna().all()
    assert not rows.loc[accepted, ["lon", "lat"]].isna().any().any()
    assert not rows.loc[accepted, "observed_at"].isna().any()
    read = read_trace_file(path)  # the same rows, each exactly once
    assert sorted(rows["source_row"]) == sorted(read.fixes["source_row"])


# --- regressions found by the fuzzer ----------------------------------------------------------


def test_geojson_geometry_type_that_is_not_a_string_is_ignored(folder: Path) -> None:
    """Found by fuzzing: ``"type": []`` raised ``TypeError: unhashable type: 'list'``."""
    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": [], "coordinates": [[24.9, 60.1], [24.91, 60.11]]},
                "properties": {"coordTimes": ["2024-05-01T08:00:00Z", "2024-05-01T08:00:01Z"]},
            },
            {
                "type": "Feature",
                "geometry": {"type": {"a": 1}, "coordinates": [24.9, 60.1]},
                "properties": {"time": "2024-05-01T08:00:00Z"},
            },
        ],
    }
    for fmt in ("geojson", "json"):
        result = check_read(write(folder, fmt, json.dumps(document).encode()))
        assert result is not None and result.rows_read == 0
        assert result.ignored == {"unknown_geometry_type": 2}  # no value of the file


def test_geojson_line_coordinates_that_are_not_a_list_are_one_bad_vertex(folder: Path) -> None:
    """Found by fuzzing: MultiLineString ``"coordinates": true`` raised ``TypeError``."""
    for kind in ("LineString", "MultiLineString"):
        document = {
            "type": "Feature",
            "geometry": {"type": kind, "coordinates": True},
            "properties": {"coordTimes": ["2024-05-01T08:00:00Z"]},
        }
        result = check_read(write(folder, "geojson", json.dumps(document).encode()))
        assert result is not None and result.rows_read == 1 and len(result.fixes) == 0


def test_corrupt_parquet_page_header_gives_a_one_line_error(folder: Path) -> None:
    """Found by fuzzing: Arrow's multi-line message made the error span several lines."""
    data = seeds(str(folder))["parquet"][0]
    path = write(folder, "parquet", data[:7] + b"\xff" + data[8:])
    with pytest.raises(UnreadableFileError, match="Deserializing page header failed") as info:
        read_trace_file(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")


def test_parquet_with_damaged_pandas_metadata_is_read(folder: Path) -> None:
    """Found by fuzzing: a flipped byte in pandas' metadata raised ``KeyError: numpy_type``."""
    data = seeds(str(folder))["parquet"][0]
    damaged = data.replace(b'"numpy_type"', b'" umpy_type"', 1)
    assert damaged != data
    result = check_read(write(folder, "parquet", damaged))
    assert result is not None and len(result.fixes) == 6


def test_parquet_text_that_is_not_utf8_is_unreadable(folder: Path) -> None:
    """Found by fuzzing: invalid UTF-8 in a string page failed late, in ``to_numpy``."""
    data = seeds(str(folder))["parquet"][0]
    damaged = data.replace(b"contrib-1", b"\xffontrib-1", 1)
    assert damaged != data
    with pytest.raises(UnreadableFileError, match="not a readable Parquet file"):
        read_trace_file(write(folder, "parquet", damaged))


def test_gpx_with_an_unknown_xml_encoding_is_unreadable(folder: Path) -> None:
    """Found by fuzzing: ``encoding="TF-8"`` raised ``LookupError: unknown encoding``."""
    data = seeds(str(folder))["gpx"][0].replace(b'encoding="UTF-8"', b'encoding="TF-8"', 1)
    path = write(folder, "gpx", data)
    with pytest.raises(UnreadableFileError, match="unknown encoding: TF-8"):
        read_trace_file(path)
    assert check_read(path) is None
