"""The simulator's trace writers: field formatting checked against the standard library,
pandas and geopandas, and the bytes of every format kept."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from geopandas.io.arrow import _geopandas_to_arrow
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.simulate.trace_writers import (
    _GEOJSON_VALUES,
    CSV_COLUMNS,
    GENERATOR,
    PARQUET_METADATA_KEY,
    _geojson_collection,
    _geojson_text,
    _nmea_degrees,
    _nmea_hdop_texts,
    _nmea_positions,
    _nmea_times,
    fixed_point_texts,
    float_reprs,
    format_rows,
    iso_times,
    join_rows,
    nmea_checksum,
    write_csv_trace,
    write_parquet_trace,
    write_trace,
)

# 1900-01-01 to 2099-12-31, in Unix milliseconds
MILLIS = st.integers(-2_208_988_800_000, 4_102_444_799_999)


@given(st.lists(MILLIS, max_size=50))
def test_nmea_times_and_dates_are_those_of_strftime(unix_ms: list[int]) -> None:
    times, dates = _nmea_times(np.array(unix_ms, dtype="int64"))
    stamps = pd.to_datetime(pd.Series(unix_ms, dtype="int64"), unit="ms", utc=True)
    expected_times = [f"{t:%H%M%S}.{t.microsecond // 1000:03d}" for t in stamps]
    assert times == expected_times
    assert dates == [f"{t:%d%m%y}" for t in stamps]


@given(st.lists(st.floats(-180.0, 180.0), max_size=50))
def test_nmea_degrees_read_back_to_the_coordinate(values: list[float]) -> None:
    texts, hemispheres = _nmea_degrees(np.array(values, dtype="float64"), 3, "E", "W")
    for value, text, hemisphere in zip(values, texts, hemispheres, strict=True):
        degrees, minutes = int(text[:3]), float(text[3:])
        assert len(text) == 3 + 2 + 1 + 4 and minutes < 60.0
        sign = -1.0 if hemisphere == "W" else 1.0
        # 4 decimals of a minute: within half a ten-thousandth of a minute
        assert abs(sign * (degrees + minutes / 60.0) - value) <= 0.5e-4 / 60.0 + 1e-12


def sample_fixes() -> pd.DataFrame:
    """Two trips and a one-fix trip crossing midnight of a new year, in all four hemispheres."""
    rng = np.random.default_rng(5)
    n = 40
    start = pd.Timestamp("2026-12-31T23:59:50.250Z")
    return pd.DataFrame(
        {
            "trip_id": ["t1"] * 25 + ["t2"] * 14 + ["t3"],
            "observed_at": pd.DatetimeIndex(start + pd.to_timedelta(np.arange(n) * 1.5, "s")),
            "lon": np.round(rng.uniform(-180, 180, n), 7),
            "lat": np.round(rng.uniform(-90, 90, n), 7),
            "elevation_m": np.round(rng.normal(20, 30, n), 1),
            "hdop": np.round(rng.uniform(0.6, 5, n), 1),
            "speed_mps": np.round(rng.uniform(0, 40, n), 2),
            "heading_deg": np.mod(np.round(rng.uniform(0, 360, n), 1), 360.0),
        }
    ).astype({"observed_at": "datetime64[ms, UTC]"})


# sha256 of what the writers of 055bdd8 (row-by-row formatting, DataFrame.to_csv) wrote
REFERENCE_SHA256 = {
    "csv": "d1ae627cf8a1349e9c847c15d96d3e9f519d17f19c8f4be95e51b81d0a7559b7",
    "gpx": "a140021a61ecf18a1caf28700b24ada15bdafdb3317018d192be76534794e13a",
    "nmea": "916b5dfc1e3aac23336efc7d183e06e3655f78dc448376691f9c740a097ff613",
    "geojson": "ba048dbe36ffb8d6990fcf76412408c1d3878cb3688454ea23f0fdb825b64527",
}


@pytest.mark.parametrize("fmt", sorted(REFERENCE_SHA256))
def test_text_traces_keep_their_bytes(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"trace.{fmt}"
    write_trace(sample_fixes(), path, fmt, 'cam "7", left', "contrib-<1>")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == REFERENCE_SHA256[fmt]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=20),
    st.text(min_size=1, max_size=12),
)
@example([1.5, float("nan"), -0.0, 1e-7, 1e16], 'cam "7",\nleft')
def test_csv_trace_is_what_pandas_to_csv_writes(values: list[float], device_id: str) -> None:
    fixes = pd.DataFrame(
        {
            "observed_at": pd.to_datetime(np.arange(len(values)) * 1000, unit="ms", utc=True),
            **{name: np.array(values, dtype="float64") for name in CSV_COLUMNS[2:]},
        }
    )
    expected = pd.DataFrame(
        {
            "device_id": device_id,
            "timestamp": iso_times(fixes["observed_at"]),
            **{name: fixes[name].to_numpy() for name in CSV_COLUMNS[2:]},
        },
        columns=list(CSV_COLUMNS),
    ).to_csv(index=False, lineterminator="\n")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.csv"
        write_csv_trace(fixes, path, device_id, "contrib")
        assert path.read_bytes() == expected.encode("utf-8")


def geopandas_parquet_bytes(fixes: pd.DataFrame, path: Path) -> bytes:
    """The GeoParquet trace as written through a GeoDataFrame (shapely points)."""
    frame = gpd.GeoDataFrame(
        {
            "device_id": pd.Series(["cam-1"] * len(fixes), dtype="object"),
            "contributor_id": pd.Series(["contrib-1"] * len(fixes), dtype="object"),
            "observed_at": fixes["observed_at"].astype("datetime64[ms, UTC]").array,
            **{
                name: fixes[name].to_numpy("float64")
                for name in ("lat", "lon", "hdop", "speed_mps", "heading_deg")
            },
        },
        geometry=gpd.points_from_xy(fixes["lon"].to_numpy(), fixes["lat"].to_numpy()),
        crs="EPSG:4326",
    )
    table = _geopandas_to_arrow(frame, index=False, schema_version="1.1.0")
    label = json.dumps({"generator": GENERATOR, "simulated": True}, sort_keys=True).encode()
    table = table.replace_schema_metadata({**table.schema.metadata, PARQUET_METADATA_KEY: label})
    pq.write_table(table, path, compression="zstd")
    return path.read_bytes()


@pytest.mark.parametrize("rows", ["all", "none", "one", "nan"])
def test_parquet_trace_is_what_geopandas_writes(rows: str, tmp_path: Path) -> None:
    fixes = sample_fixes()
    fixes = {"all": fixes, "none": fixes.iloc[:0], "one": fixes.iloc[:1]}.get(
        rows, fixes.assign(lon=np.where(np.arange(len(fixes)) == 3, np.nan, fixes["lon"]))
    )
    write_parquet_trace(fixes, tmp_path / "fast.parquet", "cam-1", "contrib-1")
    expected = geopandas_parquet_bytes(fixes, tmp_path / "geopandas.parquet")
    assert (tmp_path / "fast.parquet").read_bytes() == expected


def test_nmea_lines_carry_their_checksums(tmp_path: Path) -> None:
    path = tmp_path / "trace.nmea"
    write_trace(sample_fixes(), path, "nmea", "cam-1", "contrib-1")
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 3 * len(sample_fixes())
    for line in lines:
        body, checksum = line.split("$", 1)[1].split("*")
        assert checksum == nmea_checksum(body)


def test_format_rows_fills_the_template_per_row() -> None:
    rows = format_rows("%s=%.2f;%02d\n", ["a", "b"], [1.005, -0.125], [3, 12])
    assert rows == ["a=1.00;03\n", "b=-0.12;12\n"]  # as f"{x:.2f}": the binary value rounded
    assert format_rows("%d") == []
    with pytest.raises(ValueError):
        format_rows("%s%s", ["a", "b"], ["c"])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=0, max_size=20),
    st.text(min_size=1, max_size=12),
)
@example([1.5, -0.0, 1e-7, 1e16, 3.0], 'cam "7",\nléft')
def test_geojson_text_is_what_json_dumps_writes(values: list[float], device_id: str) -> None:
    fixes = pd.DataFrame(
        {
            "trip_id": [f"t{i // 3}" for i in range(len(values) - 1)] + ["last"] * bool(values),
            "observed_at": pd.to_datetime(np.arange(len(values)) * 1500, unit="ms", utc=True),
            **{
                name: np.array(values[i:] + values[:i], dtype="float64")
                for i, name in enumerate(("lon", "lat", "elevation_m", *_GEOJSON_VALUES))
            },
        }
    )
    collection = _geojson_collection(fixes, device_id, "contrib-<1>")
    expected = json.dumps(collection, sort_keys=True, separators=(",", ":"))
    assert _geojson_text(fixes, device_id, "contrib-<1>") == expected


def test_nmea_hdop_texts_are_made_per_fix() -> None:
    hdop = np.array([1.2, 0.6, 1.2, 5.0, 0.0, -0.0, 1.2])
    quality, gsa_lines = _nmea_hdop_texts(hdop)
    satellites = [int(np.clip(np.round(13.0 - 1.6 * h), 4, 12)) for h in hdop]
    assert quality == [f"{n:02d},{h:.1f}" for n, h in zip(satellites, hdop, strict=True)]
    assert gsa_lines[4] != gsa_lines[5]  # "0.0" and "-0.0"
    for line, h in zip(gsa_lines, hdop, strict=True):
        body, end = line.split("*")
        assert body.endswith(f",{h * 1.4:.1f},{h:.1f},{h * 1.1:.1f}")
        assert end == nmea_checksum(body) + "\n"


# years 1 to 9999 and a few beyond on either side, in Unix milliseconds
ANY_MILLIS = st.integers(-62_135_596_800_000 - 10**12, 253_402_300_799_999 + 10**12)


@given(st.lists(st.one_of(MILLIS, ANY_MILLIS), max_size=30))
@example([-62_135_596_800_000, 253_402_300_799_999, -1, 0])
def test_iso_times_are_those_of_numpy(unix_ms: list[int]) -> None:
    stamps = np.array(unix_ms, dtype="int64").astype("datetime64[ms]")
    observed_at = pd.Series(stamps).dt.tz_localize("UTC")
    expected = [text + "Z" for text in np.datetime_as_string(stamps, unit="ms").tolist()]
    assert iso_times(observed_at) == expected


@given(
    st.lists(
        st.tuples(st.floats(-90.0, 90.0), st.floats(-180.0, 180.0))
        | st.tuples(st.floats(), st.floats()),
        max_size=30,
    )
)
@example([(-0.0, 0.0), (89.99999999, -179.99999999), (12.5, 999.9), (float("nan"), 1.0)])
def test_nmea_positions_are_the_degree_fields(points: list[tuple[float, float]]) -> None:
    lat = np.array([p[0] for p in points], dtype="float64")
    lon = np.array([p[1] for p in points], dtype="float64")
    with np.errstate(invalid="ignore", over="ignore"):
        lat_text, lat_hemi = _nmea_degrees(lat, 2, "N", "S")
        lon_text, lon_hemi = _nmea_degrees(lon, 3, "E", "W")
        expected = format_rows("%s,%s,%s,%s", lat_text, lat_hemi, lon_text, lon_hemi)
        assert _nmea_positions(lat, lon) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30),
    st.integers(0, 8),
    st.booleans(),
)
@example([0.0, -0.0, 1e-4, 24.9443261, -60.1, 180.0, 1e-5], 7, True)
@example([123456789.5, 0.25], 1, True)
def test_float_reprs_are_python_reprs(values: list[float], decimals: int, rounded: bool) -> None:
    array = np.array(values, dtype="float64")
    if rounded:  # as the simulator rounds its fixes: the fast path
        with np.errstate(invalid="ignore", over="ignore"):
            array = np.round(array, decimals)
    assert float_reprs(array, decimals) == list(map(repr, array.tolist()))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30),
    st.integers(1, 8),
    st.booleans(),
)
@example([0.0, -0.0, 1e-9, 24.9443261, -60.1, 180.0, 1e300], 7, True)
def test_fixed_point_texts_are_percent_f(values: list[float], decimals: int, rounded: bool) -> None:
    array = np.array(values, dtype="float64")
    if rounded:
        with np.errstate(invalid="ignore", over="ignore"):
            array = np.round(array, decimals)
    expected = [f"%.{decimals}f" % value for value in array.tolist()]
    assert fixed_point_texts(array, decimals) == expected


@given(st.lists(st.tuples(st.text(), st.text()), max_size=20), st.text())
def test_join_rows_is_the_formatted_rows_joined(rows: list[tuple[str, str]], fixed: str) -> None:
    first, second = [a for a, _ in rows], [b for _, b in rows]
    expected = "".join(format_rows("%s,%s%s\n", first, [fixed] * len(rows), second))
    assert join_rows(first, ",", fixed, second, "\n") == expected
    with pytest.raises(ValueError):
        join_rows(first, ",", [*second, "x"])
