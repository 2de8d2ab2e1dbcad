"""Finding the fields of a fix among the columns of a table (CSV, Parquet) or JSON properties.

Names are compared after :func:`~pipeline.ingest.readers.base.normalize_name` (case and
punctuation ignored: ``Speed (km/h)`` is ``speed_km_h``). For each field the first alias present
wins, in the order listed in :data:`ALIASES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.ingest.readers.base import KMH_TO_MPS, KNOTS_TO_MPS, normalize_name, quote

REQUIRED = ("lat", "lon", "time")

#: field -> aliases (normalized) -> scale to the field's unit (speeds) or epoch unit (times)
ALIASES: dict[str, dict[str, float | str | None]] = {
    "lat": dict.fromkeys(["lat", "latitude", "lat_deg", "latitude_deg", "gps_lat", "y"]),
    "lon": dict.fromkeys(
        ["lon", "lng", "long", "longitude", "lon_deg", "longitude_deg", "gps_lon", "gps_lng", "x"]
    ),
    "time": {
        **dict.fromkeys(
            [
                "observed_at",
                "time",
                "timestamp",
                "ts",
                "datetime",
                "date_time",
                "gps_time",
                "gps_timestamp",
                "time_utc",
                "utc_time",
                "timestamp_utc",
                "utc",
                "epoch",
                "unix_time",
            ]
        ),
        **dict.fromkeys(["timestamp_ms", "time_ms", "ts_ms", "epoch_ms", "unix_time_ms"], "ms"),
        **dict.fromkeys(["timestamp_s", "time_s", "epoch_s", "unix_time_s"], "s"),
    },
    "hdop": dict.fromkeys(["hdop", "gps_hdop"]),
    "speed_mps": {
        **dict.fromkeys(["speed_mps", "speed_ms", "speed_m_s", "speed"], 1.0),
        **dict.fromkeys(["speed_kmh", "speed_kph", "speed_km_h"], KMH_TO_MPS),
        **dict.fromkeys(["speed_knots", "speed_kn", "speed_kt"], KNOTS_TO_MPS),
    },
    "heading_deg": dict.fromkeys(
        ["heading_deg", "heading", "course", "course_deg", "bearing", "bearing_deg", "track"]
    ),
    "elevation_m": dict.fromkeys(
        ["elevation_m", "ele", "elevation", "ele_m", "alt", "altitude", "altitude_m", "alt_m"]
    ),
    "device_id": dict.fromkeys(["device_id", "device", "deviceid", "camera_id", "camera"]),
    "contributor_id": dict.fromkeys(["contributor_id", "contributor", "user_id", "userid", "user"]),
}
FIELDS = tuple(ALIASES)


@dataclass(frozen=True)
class Column:
    """Where a field was found: the column's real name and its scale or epoch unit."""

    name: str
    scale: float | str | None = None


def find_columns(
    names: Iterable[str], overrides: Mapping[str, str] | None = None
) -> dict[str, Column]:
    """Match fields to column names.

    Parameters
    ----------
    names
        The table's column names, in order.
    overrides
        Field -> column name, taking precedence over the aliases (exact name first, then
        case-insensitive). A named column that does not exist is simply not found.

    Returns
    -------
    dict
        Field -> :class:`Column`, for the fields found.

    Raises
    ------
    ConfigError
        If ``overrides`` names an unknown field.
    """
    names = list(names)
    by_normal: dict[str, str] = {}
    for name in names:
        by_normal.setdefault(normalize_name(str(name)), name)
    found: dict[str, Column] = {}
    for field, column in (overrides or {}).items():
        if field not in ALIASES:
            raise ConfigError(
                f"ingest.csv_columns: unknown field {field!r}; use one of {', '.join(FIELDS)}"
            )
        if column in names:
            found[field] = Column(column, 1.0 if field == "speed_mps" else None)
        elif normalize_name(column) in by_normal:
            found[field] = Column(
                by_normal[normalize_name(column)], 1.0 if field == "speed_mps" else None
            )
    taken = {c.name for c in found.values()}
    for field, aliases in ALIASES.items():
        if field in found:
            continue
        for alias, scale in aliases.items():
            match = by_normal.get(alias)
            if match is not None and match not in taken:
                found[field] = Column(match, scale)
                taken.add(match)
                break
    return found


def describe_header(found: Mapping[str, Column], count: int) -> str:
    """Say what a header of ``count`` columns holds, naming only the columns of ``found``.

    The other names are not quoted: the header of a file that is no trace (any text file
    named ``.csv``) may be anything, e.g. the first line of a private file.
    """
    columns = f"{count} column{'s' if count != 1 else ''}"
    if not found:
        return f"{columns}, none named like a trace field"
    named = ", ".join(f"{field}={quote(column.name)}" for field, column in found.items())
    return f"{columns}; found {named}"
