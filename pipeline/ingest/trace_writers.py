"""Write one device's GPS fixes in the file formats real dashcams and apps produce.

Every writer takes a frame of fixes with the columns ``trip_id``, ``observed_at``
(``datetime64[ms, UTC]``), ``lon``, ``lat``, ``elevation_m``, ``hdop``, ``speed_mps`` and
``heading_deg``, in time order, and writes it atomically. The same frame always gives the same
bytes. Formats:

``csv``
    Header ``device_id,timestamp,lat,lon,hdop,speed_mps,heading_deg``; ISO-8601 UTC times with
    milliseconds and ``Z``.
``gpx``
    GPX 1.1; one ``<trk>`` (named by the device) with one ``<trkseg>`` per trip; each
    ``<trkpt>`` has ``<ele>``, ``<time>``, ``<hdop>`` and ``<extensions>`` with ``<speed>``
    (m/s) and ``<course>`` (degrees); the contributor is the ``<metadata><author><name>``.
``nmea``
    NMEA 0183 ``$GPRMC``, ``$GPGGA`` and ``$GPGSA`` sentences per fix, each line prefixed with
    the Unix time in milliseconds in brackets, as BlackVue cameras log them.
``geojson``
    A FeatureCollection with one LineString per trip (a Point for a one-fix trip) whose
    properties carry ``coordTimes`` and per-vertex ``hdop``, ``speed_mps``, ``heading_deg``.
``parquet``
    GeoParquet 1.1 of Point fixes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from geopandas.io.arrow import _geopandas_to_arrow

from pipeline.io import atomic_path

GENERATOR = "roadcover simulate"
SIMULATED_NOTE = "simulated by roadcover"
GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
CSV_COLUMNS = ("device_id", "timestamp", "lat", "lon", "hdop", "speed_mps", "heading_deg")
FORMAT_EXTENSIONS = {
    "csv": "csv",
    "gpx": "gpx",
    "nmea": "nmea",
    "geojson": "geojson",
    "parquet": "parquet",
}
PARQUET_METADATA_KEY = b"roadcover_simulation"
KNOTS_PER_MPS = 3600.0 / 1852.0
GEOID_SEPARATION_M = 18.0
_SATELLITES = (2, 5, 6, 9, 12, 13, 15, 17, 19, 20, 24, 25)

Writer = Callable[[pd.DataFrame, Path, str, str], None]


def write_trace(
    fixes: pd.DataFrame, path: str | Path, fmt: str, device_id: str, contributor_id: str
) -> None:
    """Write ``fixes`` of one device to ``path`` in format ``fmt``, atomically.

    Parameters
    ----------
    fixes
        The device's fixes (columns in the module docstring), in time order.
    path
        Destination file.
    fmt
        One of :data:`FORMAT_EXTENSIONS`.
    device_id, contributor_id
        Raw ids, written where the format has a place for them.

    Raises
    ------
    ValueError
        If ``fmt`` is not a known format.
    """
    writers: dict[str, Writer] = {
        "csv": write_csv_trace,
        "gpx": write_gpx_trace,
        "nmea": write_nmea_trace,
        "geojson": write_geojson_trace,
        "parquet": write_parquet_trace,
    }
    if fmt not in writers:
        raise ValueError(f"unknown trace format {fmt!r}; use one of {', '.join(writers)}")
    writers[fmt](fixes, Path(path), device_id, contributor_id)


def iso_times(observed_at: pd.Series) -> np.ndarray:
    """Format UTC times as ISO-8601 with milliseconds and ``Z``."""
    naive = _unix_ms(observed_at).astype("datetime64[ms]")
    return np.char.add(np.datetime_as_string(naive, unit="ms"), "Z")


def write_csv_trace(fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str) -> None:
    """Write a dashcam CSV log (the contributor is not in the file)."""
    table = pd.DataFrame(
        {
            "device_id": device_id,
            "timestamp": iso_times(fixes["observed_at"]),
            "lat": fixes["lat"].to_numpy(),
            "lon": fixes["lon"].to_numpy(),
            "hdop": fixes["hdop"].to_numpy(),
            "speed_mps": fixes["speed_mps"].to_numpy(),
            "heading_deg": fixes["heading_deg"].to_numpy(),
        },
        columns=list(CSV_COLUMNS),
    )
    with atomic_path(path) as temp:
        table.to_csv(temp, index=False, lineterminator="\n")


def write_gpx_trace(fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str) -> None:
    """Write a GPX 1.1 track, one ``<trkseg>`` per trip."""
    times = iso_times(fixes["observed_at"])
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<gpx version="1.1" creator={quoteattr(GENERATOR)} xmlns="{GPX_NAMESPACE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{GPX_NAMESPACE} {GPX_NAMESPACE}/gpx.xsd">\n',
        " <metadata>\n",
        f"  <name>{escape(device_id)}</name>\n",
        f"  <desc>{escape(SIMULATED_NOTE)}</desc>\n",
        f"  <author><name>{escape(contributor_id)}</name></author>\n",
    ]
    if len(fixes):
        parts.append(f"  <time>{times[0]}</time>\n")
    parts.append(" </metadata>\n")
    if len(fixes):
        parts.append(f" <trk>\n  <name>{escape(device_id)}</name>\n")
        parts.append(f"  <src>{escape(GENERATOR)}</src>\n")
        for trip_id, rows in _trips(fixes):
            parts.append(f"  <trkseg><!-- trip {escape(trip_id)} -->\n")
            parts.extend(
                f'   <trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>{ele:.1f}</ele>'
                f"<time>{time}</time><hdop>{hdop:.1f}</hdop><extensions>"
                f"<speed>{speed:.2f}</speed><course>{course:.1f}</course></extensions></trkpt>\n"
                for lat, lon, ele, time, hdop, speed, course in zip(
                    fixes["lat"].to_numpy()[rows],
                    fixes["lon"].to_numpy()[rows],
                    fixes["elevation_m"].to_numpy()[rows],
                    times[rows],
                    fixes["hdop"].to_numpy()[rows],
                    fixes["speed_mps"].to_numpy()[rows],
                    fixes["heading_deg"].to_numpy()[rows],
                    strict=True,
                )
            )
            parts.append("  </trkseg>\n")
        parts.append(" </trk>\n")
    parts.append("</gpx>\n")
    with atomic_path(path) as temp:
        temp.write_text("".join(parts), encoding="utf-8")


def nmea_checksum(body: str) -> str:
    """Return the NMEA checksum (two hex digits) of a sentence body between ``$`` and ``*``."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


# one template per sentence body, filled from whole columns at once
_RMC = "GPRMC,%s,A,%s,%.2f,%.1f,%s,,,A"
_GGA = "GPGGA,%s,%s,1,%02d,%.1f,%.1f,M," + f"{GEOID_SEPARATION_M:.1f}" + ",M,,"
_GSA = "GPGSA,A,3,%s,%.1f,%.1f,%.1f"
_LINE = "[%d]$%s*%02X\n"
# the GSA satellite list for 0..12 satellites in view: 12 PRN fields, the unused ones empty
_PRN_FIELDS = [",".join([f"{p:02d}" for p in _SATELLITES[:n]] + [""] * (12 - n)) for n in range(13)]


def write_nmea_trace(fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str) -> None:
    """Write a BlackVue-style NMEA log: ``[unix_ms]$GPRMC…``, ``$GPGGA…``, ``$GPGSA…`` per fix."""
    unix_ms = _unix_ms(fixes["observed_at"])
    times, dates = _nmea_times(unix_ms)
    lat_text, lat_hemi = _nmea_degrees(fixes["lat"].to_numpy(), 2, "N", "S")
    lon_text, lon_hemi = _nmea_degrees(fixes["lon"].to_numpy(), 3, "E", "W")
    positions = [",".join(p) for p in zip(lat_text, lat_hemi, lon_text, lon_hemi, strict=True)]
    hdop = fixes["hdop"].to_numpy("float64")
    knots = fixes["speed_mps"].to_numpy("float64") * KNOTS_PER_MPS
    course = fixes["heading_deg"].to_numpy("float64")
    elevation = fixes["elevation_m"].to_numpy("float64")
    satellites = np.clip(np.round(13.0 - 1.6 * hdop), 4, 12).astype(int).tolist()
    hdops = hdop.tolist()
    rmc = [
        _RMC % row
        for row in zip(times, positions, knots.tolist(), course.tolist(), dates, strict=True)
    ]
    gga = [
        _GGA % row
        for row in zip(times, positions, satellites, hdops, elevation.tolist(), strict=True)
    ]
    gsa = [
        _GSA % (_PRN_FIELDS[n], pdop, h, vdop)
        for n, pdop, h, vdop in zip(
            satellites, (hdop * 1.4).tolist(), hdops, (hdop * 1.1).tolist(), strict=True
        )
    ]
    bodies = [body for sentences in zip(rmc, gga, gsa, strict=True) for body in sentences]
    stamps = np.repeat(unix_ms, 3).tolist()
    lines = zip(stamps, bodies, _xor_checksums(bodies), strict=True)
    with atomic_path(path) as temp:
        temp.write_text("".join([_LINE % line for line in lines]), encoding="ascii")


def _unix_ms(observed_at: pd.Series) -> np.ndarray:
    """Milliseconds since the Unix epoch of tz-aware times."""
    naive = observed_at.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy("datetime64[ms]").astype("int64")


def _nmea_times(unix_ms: np.ndarray) -> tuple[list[str], list[str]]:
    """NMEA UTC times (``hhmmss.sss``) and dates (``ddmmyy``) of Unix milliseconds."""
    seconds, millis = np.divmod(unix_ms, 1000)
    days, second_of_day = np.divmod(seconds, 86_400)
    hours, rest = np.divmod(second_of_day, 3600)
    minutes, secs = np.divmod(rest, 60)
    times = [
        f"{h:02d}{m:02d}{s:02d}.{ms:03d}"
        for h, m, s, ms in zip(
            hours.tolist(), minutes.tolist(), secs.tolist(), millis.tolist(), strict=True
        )
    ]
    calendar = pd.DatetimeIndex(days.astype("datetime64[D]"))
    dates = [
        f"{d:02d}{m:02d}{y:02d}"
        for d, m, y in zip(calendar.day, calendar.month, calendar.year % 100, strict=True)
    ]
    return times, dates


def write_geojson_trace(
    fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str
) -> None:
    """Write a GeoJSON FeatureCollection, one LineString per trip with per-vertex properties."""
    times = iso_times(fixes["observed_at"])
    features: list[dict[str, Any]] = []
    for trip_id, rows in _trips(fixes):
        coords = np.column_stack(
            [
                fixes["lon"].to_numpy()[rows],
                fixes["lat"].to_numpy()[rows],
                fixes["elevation_m"].to_numpy()[rows],
            ]
        ).tolist()
        geometry: dict[str, Any] = (
            {"type": "LineString", "coordinates": coords}
            if len(coords) > 1
            else {"type": "Point", "coordinates": coords[0]}
        )
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "device_id": device_id,
                    "contributor_id": contributor_id,
                    "trip_id": trip_id,
                    "coordTimes": times[rows].tolist(),
                    "hdop": fixes["hdop"].to_numpy()[rows].tolist(),
                    "speed_mps": fixes["speed_mps"].to_numpy()[rows].tolist(),
                    "heading_deg": fixes["heading_deg"].to_numpy()[rows].tolist(),
                },
            }
        )
    collection = {
        "type": "FeatureCollection",
        "simulated": True,
        "generator": GENERATOR,
        "features": features,
    }
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(collection, sort_keys=True, separators=(",", ":")) + "\n")


def write_parquet_trace(
    fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str
) -> None:
    """Write a GeoParquet 1.1 file of Point fixes, labelled simulated in its metadata."""
    frame = gpd.GeoDataFrame(
        {
            "device_id": pd.Series([device_id] * len(fixes), dtype="object"),
            "contributor_id": pd.Series([contributor_id] * len(fixes), dtype="object"),
            "observed_at": fixes["observed_at"].astype("datetime64[ms, UTC]").array,
            "lat": fixes["lat"].to_numpy("float64"),
            "lon": fixes["lon"].to_numpy("float64"),
            "hdop": fixes["hdop"].to_numpy("float64"),
            "speed_mps": fixes["speed_mps"].to_numpy("float64"),
            "heading_deg": fixes["heading_deg"].to_numpy("float64"),
        },
        geometry=gpd.points_from_xy(fixes["lon"].to_numpy(), fixes["lat"].to_numpy()),
        crs="EPSG:4326",
    )
    table = _geopandas_to_arrow(frame, index=False, schema_version="1.1.0")
    label = json.dumps({"generator": GENERATOR, "simulated": True}, sort_keys=True).encode()
    metadata = {**(table.schema.metadata or {}), PARQUET_METADATA_KEY: label}
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def _trips(fixes: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(trip_id, row positions)`` in file order."""
    trip_ids = fixes["trip_id"].to_numpy()
    if len(trip_ids) == 0:
        return
    starts = np.flatnonzero(np.concatenate([[True], trip_ids[1:] != trip_ids[:-1]]))
    ends = np.append(starts[1:], len(trip_ids))
    for start, end in zip(starts, ends, strict=True):
        yield str(trip_ids[start]), np.arange(start, end)


def _nmea_degrees(
    values: np.ndarray, degree_digits: int, positive: str, negative: str
) -> tuple[list[str], list[str]]:
    """Format degrees as NMEA ``(d)ddmm.mmmm`` and hemisphere letters."""
    ten_thousandths = np.round(np.abs(values) * 60.0 * 10_000).astype("int64")
    degrees, rest = np.divmod(ten_thousandths, 600_000)
    minutes, fraction = np.divmod(rest, 10_000)
    template = f"%0{degree_digits}d%02d.%04d"
    text = [
        template % dmf
        for dmf in zip(degrees.tolist(), minutes.tolist(), fraction.tolist(), strict=True)
    ]
    return text, np.where(values >= 0, positive, negative).tolist()


def _xor_checksums(bodies: list[str]) -> list[int]:
    """XOR of the bytes of each sentence body, vectorized over all sentences."""
    if not bodies:
        return []
    encoded = [body.encode("ascii") for body in bodies]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])[:-1]])
    return [int(c) for c in np.bitwise_xor.reduceat(data, offsets)]
