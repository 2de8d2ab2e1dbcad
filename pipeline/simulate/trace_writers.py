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

import csv
import functools
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from geopandas.io.arrow import _geopandas_to_arrow

from pipeline.ingest.readers.nmea import xor_checksums
from pipeline.io import GEOPARQUET_VERSION, atomic_path, wkb_points

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
PARQUET_CRS = "EPSG:4326"
KNOTS_PER_MPS = 3600.0 / 1852.0
#: Decimal places the simulator rounds fixes to, as a receiver writes them. Writers format
#: such values fastest (:func:`float_reprs`); any other values are written exactly as well.
FIX_DECIMALS = {"lon": 7, "lat": 7, "elevation_m": 1, "hdop": 1, "speed_mps": 2, "heading_deg": 1}
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


def iso_times(observed_at: pd.Series) -> list[str]:
    """Format UTC times as ISO-8601 with milliseconds and ``Z`` (``2026-05-04T08:12:33.250Z``).

    The text of ``numpy.datetime_as_string``; in years 1 to 9999 (its four-digit years) the
    digits are computed for all times at once.
    """
    unix_ms = _unix_ms(observed_at)
    days, ms_of_day = np.divmod(unix_ms, 86_400_000)
    if len(days) and not (days.min() >= _FIRST_ISO_DAY and days.max() <= _LAST_ISO_DAY):
        naive = unix_ms.astype("datetime64[ms]")
        return [text + "Z" for text in np.datetime_as_string(naive, unit="ms").tolist()]
    year, month, day = _calendar(days)
    text = np.empty((len(days), 24), dtype=np.uint8)
    _put_digits(text, 0, year, 4)
    _put_digits(text, 5, month, 2)
    _put_digits(text, 8, day, 2)
    _put_time_of_day(text, 11, ms_of_day, ":")
    for column, character in ((4, "-"), (7, "-"), (10, "T"), (23, "Z")):
        text[:, column] = ord(character)
    return _ascii_rows(text)


# the days (since 1970-01-01) of 0001-01-01 and 9999-12-31
_FIRST_ISO_DAY, _LAST_ISO_DAY = -719_162, 2_932_896


def _calendar(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the year, month and day of days since 1970-01-01 (each distinct day once)."""
    distinct, of_time = np.unique(days, return_inverse=True)
    calendar = pd.DatetimeIndex(distinct.astype("datetime64[D]"))
    year, month, day = (
        np.asarray(field, dtype="int64")[of_time]
        for field in (calendar.year, calendar.month, calendar.day)
    )
    return year, month, day


def _put_time_of_day(text: np.ndarray, column: int, ms_of_day: np.ndarray, colon: str) -> None:
    """Write ``hh:mm:ss.sss`` (``colon`` between the fields, maybe empty) from ``column``."""
    seconds, millis = np.divmod(ms_of_day, 1000)
    minutes, secs = np.divmod(seconds, 60)
    hours, mins = np.divmod(minutes, 60)
    for value, separator in ((hours, colon), (mins, colon), (secs, ".")):
        _put_digits(text, column, value, 2)
        column += 2
        for character in separator:
            text[:, column] = ord(character)
            column += 1
    _put_digits(text, column, millis, 3)


def _put_digits(text: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    """Write non-negative integers as ``width`` zero-padded digits into columns of ``text``.

    ``text`` holds one ASCII text per row; the digits go to ``column`` onwards.
    """
    for position in range(column + width - 1, column - 1, -1):
        values, digit = np.divmod(values, 10)
        text[:, position] = digit + ord("0")


def _ascii_rows(text: np.ndarray, padded: bool = False) -> list[str]:
    """Decode each row of ASCII bytes (no newline among them) into a string.

    With ``padded``, NUL bytes are padding, left out of the strings.
    """
    lines = np.empty((text.shape[0], text.shape[1] + 1), dtype=np.uint8)
    lines[:, :-1] = text
    lines[:, -1] = ord("\n")
    decoded = lines.tobytes().decode("ascii")
    return (decoded.replace("\0", "") if padded else decoded).split("\n")[:-1]


def write_csv_trace(fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str) -> None:
    """Write a dashcam CSV log (the contributor is not in the file).

    The text is what ``DataFrame.to_csv`` writes for these columns (numbers as numpy prints
    them, NaN as an empty field, the device id quoted where the ``csv`` module quotes),
    formatted a whole column at a time.
    """
    fields: list[str | list[str]] = [_csv_field(device_id), ",", iso_times(fixes["observed_at"])]
    for name in CSV_COLUMNS[2:]:
        fields += [",", _csv_numbers(fixes[name].to_numpy(), FIX_DECIMALS[name])]
    with atomic_path(path) as temp:
        temp.write_text(",".join(CSV_COLUMNS) + "\n" + join_rows(*fields, "\n"), encoding="utf-8")


def join_rows(*pieces: str | list[str]) -> str:
    """Return the text of rows, each the ``pieces`` in turn: fixed texts and columns of texts.

    ``"".join(format_rows("%s…%s", …))`` of texts, without the formatting: they are only
    joined.

    Parameters
    ----------
    *pieces
        A text (the same in every row) or a list of texts (one per row, all equally long).

    Raises
    ------
    ValueError
        If the columns are not equally long.
    """
    rows = max((len(piece) for piece in pieces if not isinstance(piece, str)), default=0)
    columns = [
        itertools.repeat(piece, rows) if isinstance(piece, str) else piece for piece in pieces
    ]
    return "".join(itertools.chain.from_iterable(zip(*columns, strict=True)))


def format_rows(template: str, *columns: Iterable[Any]) -> list[str]:
    """Fill ``template`` (``%``-style) once per row with the rows' values of ``columns``.

    The same text as formatting row by row in a Python loop, without one: each row is a
    single ``template % row`` called from C.

    Parameters
    ----------
    template
        A ``%`` format with one conversion per column.
    *columns
        Equally long sequences of values (Python lists format fastest).

    Returns
    -------
    list of str
        One formatted string per row.

    Raises
    ------
    ValueError
        If the columns are not equally long.
    """
    return list(map(template.__mod__, zip(*columns, strict=True)))


def _csv_numbers(values: np.ndarray, decimals: int) -> list[str]:
    """Format numbers as ``DataFrame.to_csv`` does: numpy's ``str``, NaN as an empty field.

    For floats that is the shortest repr, as Python's ``repr`` writes it (in less than half
    the time; for doubles rounded to ``decimals`` places, see :func:`float_reprs`).
    """
    if values.dtype.kind != "f":
        return values.astype(str).tolist()
    if values.dtype == np.float64:
        text = float_reprs(values, decimals)
    else:
        text = list(map(repr, values.tolist()))
    for row in np.flatnonzero(np.isnan(values)).tolist():
        text[row] = ""
    return text


def float_reprs(values: np.ndarray, decimals: int) -> list[str]:
    """Return ``repr`` of each float, computed for the whole array when it can be.

    Floats that are the nearest doubles to decimals with at most ``decimals`` places (as
    ``np.round(x, decimals)`` gives), where doubles are finer than those places, between
    1e-4 and 1e16 in magnitude (or zero), have that decimal as their shortest repr: its digits
    are written for all values at once (:func:`_decimal_texts`). Any other array goes through
    ``repr`` value by value.

    Parameters
    ----------
    values
        Floats (``float64``).
    decimals
        Decimal places the values are rounded to (0 to 15).

    Returns
    -------
    list of str
        ``repr(float(value))`` of each value.
    """
    texts = _decimal_texts(values, decimals, shortest=True)
    return list(map(repr, values.tolist())) if texts is None else texts


def fixed_point_texts(values: np.ndarray, decimals: int) -> list[str]:
    """Return ``"%.<decimals>f" % value`` of each float, for the whole array when it can be.

    As :func:`float_reprs`, for floats rounded to ``decimals`` places (at least 1), whatever
    their magnitude: the ``%f`` text is then the decimal itself.
    """
    texts = _decimal_texts(values, decimals, shortest=False)
    return format_rows(f"%.{decimals}f", values.tolist()) if texts is None else texts


def _decimal_texts(values: np.ndarray, decimals: int, shortest: bool) -> list[str] | None:
    """Return the decimals ``values`` are the nearest doubles to, or None if they are not.

    With ``shortest``, trailing zeros of the fraction are left out (but one) and magnitudes
    must be 0 or in [1e-4, 1e16) (``repr`` writes others with an exponent); else every one
    of the ``decimals`` places is written. None also when doubles are not finer than the
    places at the largest magnitude (a shorter decimal might then give the same double).
    """
    scale = 10.0**decimals
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore", over="ignore"):
        units = np.rint(values * scale)
        exact = len(values) == 0 or (
            bool(np.isfinite(values).all())
            and float(np.spacing(magnitude.max())) < 1.0 / scale
            and (not shortest or bool(((magnitude >= 1e-4) | (values == 0.0)).all()))
            and bool((units / scale == values).all())
        )
    if not exact:
        return None
    places = max(decimals, 1)
    whole, fraction = np.divmod(np.abs(units).astype("int64"), 10**decimals)
    whole_digits = len(str(int(whole.max()))) if len(whole) else 1
    kept = np.full(len(values), places)  # fraction digits written
    if shortest:  # but trailing zeros, one digit at least
        for place in range(1, decimals):
            kept -= fraction % 10**place == 0
    # sign, whole digits (right-aligned), ".", fraction digits; NUL where unused
    text = np.zeros((len(values), whole_digits + places + 2), dtype=np.uint8)
    text[:, 0] = np.where(np.signbit(values), ord("-"), 0)
    for position in range(whole_digits, 0, -1):
        text[:, position] = np.where(whole > 0, whole % 10 + ord("0"), 0)
        whole //= 10
    text[:, whole_digits] = np.maximum(text[:, whole_digits], ord("0"))  # "0.…"
    text[:, whole_digits + 1] = ord(".")
    for place in range(places):
        digit = fraction // 10 ** (decimals - 1 - place) % 10 if decimals else 0
        text[:, whole_digits + 2 + place] = np.where(place < kept, digit + ord("0"), 0)
    return _ascii_rows(text, padded=True)


def _csv_field(value: str) -> str:
    """Quote a text field as the ``csv`` module (and so ``DataFrame.to_csv``) does in a row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value, ""])
    return buffer.getvalue()[:-2]  # drop the empty second field and the line's end


# a track point, its numbers formatted beforehand (with their FIX_DECIMALS places)
_TRKPT = (
    '   <trkpt lat="%s" lon="%s"><ele>%s</ele><time>%s</time><hdop>%s</hdop>'
    "<extensions><speed>%s</speed><course>%s</course></extensions></trkpt>\n"
)


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
        points = format_rows(
            _TRKPT,
            *(_fixed_point_column(fixes, name) for name in ("lat", "lon", "elevation_m")),
            times,
            *(_fixed_point_column(fixes, name) for name in ("hdop", "speed_mps", "heading_deg")),
        )
        for trip_id, rows in _trips(fixes):
            parts.append(f"  <trkseg><!-- trip {escape(trip_id)} -->\n")
            parts.extend(points[rows])
            parts.append("  </trkseg>\n")
        parts.append(" </trk>\n")
    parts.append("</gpx>\n")
    with atomic_path(path) as temp:
        temp.write_text("".join(parts), encoding="utf-8")


def _fixed_point_column(fixes: pd.DataFrame, name: str) -> list[str]:
    """Format a GPX number column as ``%.<d>f`` does, ``d`` its places (:data:`FIX_DECIMALS`)."""
    values, decimals = fixes[name].to_numpy(), FIX_DECIMALS[name]
    if values.dtype == np.float64:
        return fixed_point_texts(values, decimals)
    return format_rows(f"%.{decimals}f", values.tolist())


def nmea_checksum(body: str) -> str:
    """Return the NMEA checksum (two hex digits) of a sentence body between ``$`` and ``*``."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


# one template per sentence body, filled from whole columns at once
# (the course and the altitude formatted beforehand, with one decimal)
_RMC = "GPRMC,%s,A,%s,%.2f,%s,%s,,,A"
_GGA = "GPGGA,%s,%s,1,%s,%s,M," + f"{GEOID_SEPARATION_M:.1f}" + ",M,,"  # %s: sats,HDOP
_GSA = "GPGSA,A,3,%s,%.1f,%.1f,%.1f"
# a line's end after its body: "*", the checksum and the newline, for every checksum
_CHECKSUM_ENDS = np.array([f"*{value:02X}\n" for value in range(256)], dtype=object)
# the GSA satellite list for 0..12 satellites in view: 12 PRN fields, the unused ones empty
_PRN_FIELDS = [",".join([f"{p:02d}" for p in _SATELLITES[:n]] + [""] * (12 - n)) for n in range(13)]


def write_nmea_trace(fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str) -> None:
    """Write a BlackVue-style NMEA log: ``[unix_ms]$GPRMC…``, ``$GPGGA…``, ``$GPGSA…`` per fix."""
    unix_ms = _unix_ms(fixes["observed_at"])
    times, dates = _nmea_times(unix_ms)
    positions = _nmea_positions(fixes["lat"].to_numpy(), fixes["lon"].to_numpy())
    gga_quality, gsa_lines = _nmea_hdop_texts(fixes["hdop"].to_numpy("float64"))
    rmc = format_rows(
        _RMC,
        times,
        positions,
        (fixes["speed_mps"].to_numpy("float64") * KNOTS_PER_MPS).tolist(),
        fixed_point_texts(fixes["heading_deg"].to_numpy("float64"), 1),
        dates,
    )
    gga = format_rows(
        _GGA,
        times,
        positions,
        gga_quality,
        fixed_point_texts(fixes["elevation_m"].to_numpy("float64"), 1),
    )
    # each line: "[unix_ms]$", the body, "*", the checksum and the newline
    prefixes = format_rows("[%d]$", unix_ms.tolist())
    text = join_rows(
        prefixes, rmc, _checksum_ends(rmc), prefixes, gga, _checksum_ends(gga), prefixes, gsa_lines,
    )  # fmt: skip
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="ascii")


def _checksum_ends(bodies: list[str]) -> list[str]:
    """Return each sentence body's line end: ``*``, its checksum and the newline."""
    ends: list[str] = _CHECKSUM_ENDS[xor_checksums(pa.array(bodies, pa.string()))].tolist()
    return ends


def _nmea_hdop_texts(hdop: np.ndarray) -> tuple[list[str], list[str]]:
    """Return each fix's GGA satellites and HDOP fields and its GSA line, from its HDOP.

    Both depend on the HDOP alone, so they are made once per distinct value (told apart by
    their bits) and the GSA lines come with their checksums.
    """
    distinct, of_fix = np.unique(hdop.view("int64"), return_inverse=True)
    values = distinct.view("float64")
    satellites = np.clip(np.round(13.0 - 1.6 * values), 4, 12).astype(int)
    quality = format_rows("%02d,%.1f", satellites.tolist(), values.tolist())
    gsa = format_rows(
        _GSA,
        [_PRN_FIELDS[n] for n in satellites.tolist()],
        (values * 1.4).tolist(),
        values.tolist(),
        (values * 1.1).tolist(),
    )
    gsa_lines = [body + end for body, end in zip(gsa, _checksum_ends(gsa), strict=True)]
    return (
        np.array(quality, dtype=object)[of_fix].tolist(),
        np.array(gsa_lines, dtype=object)[of_fix].tolist(),
    )


def _unix_ms(observed_at: pd.Series) -> np.ndarray:
    """Milliseconds since the Unix epoch of tz-aware times."""
    naive = observed_at.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy("datetime64[ms]").astype("int64")


def _nmea_times(unix_ms: np.ndarray) -> tuple[list[str], list[str]]:
    """NMEA UTC times (``hhmmss.sss``) and dates (``ddmmyy``) of Unix milliseconds."""
    days, ms_of_day = np.divmod(unix_ms, 86_400_000)
    times = np.empty((len(days), 10), dtype=np.uint8)
    _put_time_of_day(times, 0, ms_of_day, "")
    year, month, day = _calendar(days)
    dates = np.empty((len(days), 6), dtype=np.uint8)
    for column, value in ((0, day), (2, month), (4, year % 100)):
        _put_digits(dates, column, value, 2)
    return _ascii_rows(times), _ascii_rows(dates)


def write_geojson_trace(
    fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str
) -> None:
    """Write a GeoJSON FeatureCollection, one LineString per trip with per-vertex properties.

    The text is ``json.dumps`` of the collection with sorted keys and compact separators;
    when every number is a finite float it is put together from whole columns formatted at
    once (:func:`_geojson_text`), the same bytes.
    """
    numbers = [fixes[name].to_numpy() for name in (*_GEOJSON_COORDINATES, *_GEOJSON_VALUES)]
    if all(column.dtype == np.float64 and np.isfinite(column).all() for column in numbers):
        text = _geojson_text(fixes, device_id, contributor_id)
    else:  # NaN, infinities or other types: as json writes them
        collection = _geojson_collection(fixes, device_id, contributor_id)
        text = json.dumps(collection, sort_keys=True, separators=(",", ":"))
    with atomic_path(path) as temp:
        temp.write_text(text + "\n")


_GEOJSON_COORDINATES = ("lon", "lat", "elevation_m")
_GEOJSON_VALUES = ("hdop", "speed_mps", "heading_deg")


def _geojson_collection(fixes: pd.DataFrame, device_id: str, contributor_id: str) -> dict[str, Any]:
    """Return a device's GeoJSON FeatureCollection as Python objects."""
    coords = fixes[list(_GEOJSON_COORDINATES)].to_numpy("float64").tolist()
    columns = {
        "coordTimes": iso_times(fixes["observed_at"]),
        **{name: fixes[name].to_numpy().tolist() for name in _GEOJSON_VALUES},
    }
    features: list[dict[str, Any]] = []
    for trip_id, rows in _trips(fixes):
        geometry: dict[str, Any] = (
            {"type": "LineString", "coordinates": coords[rows]}
            if rows.stop - rows.start > 1
            else {"type": "Point", "coordinates": coords[rows.start]}
        )
        properties: dict[str, Any] = {
            "device_id": device_id,
            "contributor_id": contributor_id,
            "trip_id": trip_id,
        }
        properties.update({name: values[rows] for name, values in columns.items()})
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {
        "type": "FeatureCollection",
        "simulated": True,
        "generator": GENERATOR,
        "features": features,
    }


def _geojson_text(fixes: pd.DataFrame, device_id: str, contributor_id: str) -> str:
    """Return ``json.dumps`` of :func:`_geojson_collection` (sorted keys, compact), faster.

    Every number must be a finite float (json writes those as ``repr`` does). Each row's
    coordinates and values are formatted once, for all rows, then joined per trip.
    """
    coordinates = format_rows(
        "[%s,%s,%s]",
        *(float_reprs(fixes[name].to_numpy(), FIX_DECIMALS[name]) for name in _GEOJSON_COORDINATES),
    )
    times = format_rows('"%s"', iso_times(fixes["observed_at"]))
    hdop, heading, speed = (
        float_reprs(fixes[name].to_numpy(), FIX_DECIMALS[name])
        for name in ("hdop", "heading_deg", "speed_mps")
    )
    contributor, device = json.dumps(contributor_id), json.dumps(device_id)
    features = []
    for trip_id, rows in _trips(fixes):
        if rows.stop - rows.start > 1:
            geometry = _GEOJSON_LINE % ",".join(coordinates[rows])
        else:
            geometry = _GEOJSON_POINT % coordinates[rows.start]
        features.append(
            _GEOJSON_FEATURE
            % (
                geometry, contributor, ",".join(times[rows]), device, ",".join(hdop[rows]),
                ",".join(heading[rows]), ",".join(speed[rows]), json.dumps(trip_id),
            )
        )  # fmt: skip
    return _GEOJSON_COLLECTION % (",".join(features), json.dumps(GENERATOR))


# the JSON of a collection, a feature and its geometry, keys sorted as json.dumps sorts them
_GEOJSON_COLLECTION = '{"features":[%s],"generator":%s,"simulated":true,"type":"FeatureCollection"}'
_GEOJSON_FEATURE = (
    '{"geometry":%s,"properties":{"contributor_id":%s,"coordTimes":[%s],"device_id":%s,'
    '"hdop":[%s],"heading_deg":[%s],"speed_mps":[%s],"trip_id":%s},"type":"Feature"}'
)
_GEOJSON_LINE = '{"coordinates":[%s],"type":"LineString"}'
_GEOJSON_POINT = '{"coordinates":%s,"type":"Point"}'


def write_parquet_trace(
    fixes: pd.DataFrame, path: Path, device_id: str, contributor_id: str
) -> None:
    """Write a GeoParquet 1.1 file of Point fixes, labelled simulated in its metadata.

    The file is what geopandas writes for a GeoDataFrame of the fixes (its ``geo`` and
    ``pandas`` metadata, field metadata and all), with the points encoded straight from the
    coordinates rather than through a shapely object each (geopandas itself when some are not
    finite: it has its own ways with NaN).
    """
    lon = fixes["lon"].to_numpy("float64")
    lat = fixes["lat"].to_numpy("float64")
    attributes = _parquet_attributes(fixes, device_id, contributor_id)
    if np.isfinite(lon).all() and np.isfinite(lat).all():
        table = _points_table(attributes, lon, lat)
    else:
        frame = gpd.GeoDataFrame(attributes, geometry=gpd.points_from_xy(lon, lat), crs=PARQUET_CRS)
        table = _geopandas_to_arrow(frame, index=False, schema_version=GEOPARQUET_VERSION)
    label = json.dumps({"generator": GENERATOR, "simulated": True}, sort_keys=True).encode()
    metadata = {**(table.schema.metadata or {}), PARQUET_METADATA_KEY: label}
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def _parquet_attributes(fixes: pd.DataFrame, device_id: str, contributor_id: str) -> dict[str, Any]:
    """Return the columns of a GeoParquet trace but its geometry."""
    return {
        "device_id": pd.Series([device_id] * len(fixes), dtype="object"),
        "contributor_id": pd.Series([contributor_id] * len(fixes), dtype="object"),
        "observed_at": fixes["observed_at"].astype("datetime64[ms, UTC]").array,
        "lat": fixes["lat"].to_numpy("float64"),
        "lon": fixes["lon"].to_numpy("float64"),
        "hdop": fixes["hdop"].to_numpy("float64"),
        "speed_mps": fixes["speed_mps"].to_numpy("float64"),
        "heading_deg": fixes["heading_deg"].to_numpy("float64"),
    }


def _points_table(attributes: dict[str, Any], lon: np.ndarray, lat: np.ndarray) -> pa.Table:
    """Return the Arrow table geopandas makes of ``attributes`` and Points at ``lon, lat``.

    The coordinates must be finite. As geopandas does: the attributes with a null
    ``geometry`` column converted by pyarrow (which gives the ``pandas`` metadata), then the
    WKB column and the ``geo`` metadata.
    """
    field, template = _points_geometry_template()
    geo = json.loads(template)
    # one thread: a device's columns are too small for pyarrow's pool to pay off
    table = pa.Table.from_pandas(
        pd.DataFrame({**attributes, "geometry": None}), preserve_index=False, nthreads=1
    )
    table = table.set_column(table.num_columns - 1, field, wkb_points(lon, lat))
    column = geo["columns"]["geometry"]
    if len(lon):
        column["bbox"] = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    else:
        column["geometry_types"] = []
        del column["bbox"]
    metadata = {**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode("utf-8")}
    return table.replace_schema_metadata(metadata)


@functools.cache
def _points_geometry_template() -> tuple[pa.Field, bytes]:
    """Return the geometry field and ``geo`` metadata geopandas writes for Points."""
    frame = gpd.GeoDataFrame(geometry=gpd.points_from_xy([0.0], [0.0]), crs=PARQUET_CRS)
    table = _geopandas_to_arrow(frame, index=False, schema_version=GEOPARQUET_VERSION)
    return table.schema.field("geometry"), table.schema.metadata[b"geo"]


def _trips(fixes: pd.DataFrame) -> Iterator[tuple[str, slice]]:
    """Yield ``(trip_id, rows)`` in file order, ``rows`` the slice of the trip's rows."""
    trip_ids = fixes["trip_id"].to_numpy()
    if len(trip_ids) == 0:
        return
    starts = np.flatnonzero(np.concatenate([[True], trip_ids[1:] != trip_ids[:-1]]))
    ends = np.append(starts[1:], len(trip_ids))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield str(trip_ids[start]), slice(start, end)


def _nmea_degrees(
    values: np.ndarray, degree_digits: int, positive: str, negative: str
) -> tuple[list[str], list[str]]:
    """Format degrees as NMEA ``(d)ddmm.mmmm`` and hemisphere letters."""
    degrees, minutes, fraction = _nmea_degree_parts(values)
    text = format_rows(
        f"%0{degree_digits}d%02d.%04d", degrees.tolist(), minutes.tolist(), fraction.tolist()
    )
    return text, np.where(values >= 0, positive, negative).tolist()


def _nmea_degree_parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole degrees, whole minutes and ten-thousandths of a minute of ``abs(values)``."""
    ten_thousandths = np.round(np.abs(values) * 60.0 * 10_000).astype("int64")
    degrees, rest = np.divmod(ten_thousandths, 600_000)
    minutes, fraction = np.divmod(rest, 10_000)
    return degrees, minutes, fraction


def _nmea_positions(lat: np.ndarray, lon: np.ndarray) -> list[str]:
    """Return each fix's position fields, ``ddmm.mmmm,N,dddmm.mmmm,E``.

    As :func:`_nmea_degrees` formats them; when every field has its fixed width (finite
    coordinates below 100° of latitude and 1000° of longitude), written as digits of whole
    columns into rows of bytes.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # the fallback warns, as before
        lat_parts, lon_parts = _nmea_degree_parts(lat), _nmea_degree_parts(lon)
    fixed_width = len(lat) == 0 or (
        min(lat_parts[0].min(), lon_parts[0].min()) >= 0
        and lat_parts[0].max() < 100
        and lon_parts[0].max() < 1000
    )
    if not fixed_width:
        lat_text, lat_hemi = _nmea_degrees(lat, 2, "N", "S")
        lon_text, lon_hemi = _nmea_degrees(lon, 3, "E", "W")
        return format_rows("%s,%s,%s,%s", lat_text, lat_hemi, lon_text, lon_hemi)
    text = np.empty((len(lat), 24), dtype=np.uint8)  # ddmm.mmmm,N,dddmm.mmmm,E
    for column, parts, values, width, letters in (
        (0, lat_parts, lat, 2, "NS"),
        (12, lon_parts, lon, 3, "EW"),
    ):
        degrees, minutes, fraction = parts
        _put_digits(text, column, degrees, width)
        _put_digits(text, column + width, minutes, 2)
        text[:, column + width + 2] = ord(".")
        _put_digits(text, column + width + 3, fraction, 4)
        text[:, column + width + 7] = ord(",")
        text[:, column + width + 8] = np.where(values >= 0, ord(letters[0]), ord(letters[1]))
    text[:, 11] = ord(",")
    return _ascii_rows(text)
