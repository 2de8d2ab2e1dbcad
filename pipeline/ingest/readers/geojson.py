"""GeoJSON traces: Point features with a time each, or lines with per-vertex times.

Accepted: a FeatureCollection, or a single Feature, of

* ``Point`` features whose properties hold a time (``observed_at``, ``time``, ``timestamp``,
  ``ts``, ``datetime``, ...) and optionally ``hdop``, a speed (``speed_mps``/``speed`` in m/s,
  ``speed_kmh``), a heading (``heading_deg``, ``heading``, ``course``, ``bearing``) and an
  elevation;
* ``LineString``/``MultiLineString``/``MultiPoint`` features with per-vertex times in
  ``properties.coordTimes`` or ``properties.times`` (togeojson, Strava; a list per line for a
  MultiLineString, or one flat list), and optional per-vertex lists ``hdop``, ``speed_mps``,
  ``heading_deg`` (lists of another length are ignored, counted in
  ``ignored["property_length_mismatch"]``).

Rows and ``source_row``
    Each Point feature and each vertex is a row; ``source_row`` is its 1-based ordinal across
    the file. A feature without geometry is one ``missing_coordinates`` row. If a line's time
    list does not have one entry per vertex, every vertex of it is a ``missing_time`` reject
    (pairing them up would be a guess). Other geometry types are counted in ``ignored``.
Values
    Coordinates ``[lon, lat(, ele)]``; times ISO-8601 (naive = UTC) or epoch s/ms by magnitude.
Contributor and device
    ``contributor_id``/``device_id`` (or ``contributor``, ``user_id``, ``device``,
    ``camera_id``) in a feature's properties, else in the collection's top-level members or
    ``properties``.

Whole-file errors: not UTF-8, not JSON (e.g. truncated), or JSON that is not GeoJSON.

A document whose arrays and objects nest deeper than
:data:`~pipeline.ingest.readers.base.MAX_JSON_DEPTH` levels is unreadable (a GeoJSON trace
nests about 6). The document is parsed by msgspec (about three times faster than :mod:`json`,
to the same values); any document msgspec refuses (``NaN``, ``Infinity``, numbers out of
range, lone surrogates, malformed JSON) is parsed by :mod:`json`, which then gives the same
values or errors as always.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from pipeline.ingest.readers.base import (
    IDENTITIES,
    MAX_JSON_DEPTH,
    MISSING_COORDINATES,
    MISSING_TIME,
    OPTIONAL_FLOATS,
    UNPARSEABLE_COORDINATES,
    Candidates,
    ReaderOptions,
    ReadResult,
    decode_text,
    finish,
    identity_values,
    json_nesting_depth,
    normalize_name,
    quote,
    read_bytes,
    unreadable,
)
from pipeline.ingest.readers.columns import ALIASES

FORMAT = "geojson"
FIX_HINT = "re-export the trace as a GeoJSON FeatureCollection (UTF-8)"
VERTEX_TIMES = ("coordTimes", "times", "coordinateTimes", "timestamps")
VERTEX_LISTS = {
    "hdop": ("hdop",),
    "speed_mps": ("speed_mps", "speed"),
    "heading_deg": (
        "heading_deg",
        "heading",
        "course",
    ),
}
_LINES = {"LineString": 1, "MultiPoint": 1, "MultiLineString": 2}
_GEOMETRY_TYPES = frozenset({"Polygon", "MultiPolygon", "GeometryCollection", None})


@dataclass(frozen=True)
class _Run:
    """One value on ``count`` rows in a row (e.g. a line's id on each of its vertices)."""

    value: Any
    count: int


class _Column:
    """Raw values of one column, in file order, kept in the chunks they were added in.

    A chunk is a list of raw values, a float64 array of values that were all ``float``, or a
    :class:`_Run`. When every chunk is an array (and no value is NaN), :meth:`values` is one
    array and parsing the column has nothing left to do in Python; when every chunk is a
    run, :meth:`identities` reads each run's value once.
    """

    def __init__(self) -> None:
        self.chunks: list[list[Any] | np.ndarray | _Run] = []
        self._open_list()

    def _open_list(self) -> None:
        """Start a list chunk, to which :meth:`append` and :meth:`extend` add."""
        self._list: list[Any] = []
        self.chunks.append(self._list)
        #: add one value (the open list's own ``append``: no call in Python per row)
        self.append: Callable[[Any], None] = self._list.append

    def _add_other(self, chunk: np.ndarray | _Run) -> None:
        self.chunks.append(chunk)
        self._open_list()

    def extend(self, values: list[Any]) -> None:
        self._list.extend(values)

    def _filled_chunks(self) -> list[list[Any] | np.ndarray | _Run]:
        return [chunk for chunk in self.chunks if not isinstance(chunk, list) or chunk]

    def extend_floats(self, values: list[Any]) -> None:
        """Add values, as an array if they are all ``float``."""
        if values and set(map(type, values)) == _FLOAT:
            self._add_other(np.array(values, dtype=np.float64))
        else:
            self.extend(values)

    def add_floats(self, values: np.ndarray) -> None:
        """Add float64 values (parsed from ``float`` values)."""
        self._add_other(values)

    def repeat(self, value: Any, count: int) -> None:
        if count:
            self._add_other(_Run(value, count))

    def values(self) -> list[Any] | np.ndarray:
        """All values: a float64 array if every chunk is one, else a list of the raw values.

        A NaN (``NaN`` in the file) makes it a list too: a reject's detail quotes raw values.
        """
        chunks = self._filled_chunks()
        arrays = [chunk for chunk in chunks if isinstance(chunk, np.ndarray)]
        if arrays and len(arrays) == len(chunks):
            values = np.concatenate(arrays)
            if not np.isnan(values).any():
                return values
        return self._raw_values()

    def _raw_values(self) -> list[Any]:
        values: list[Any] = []
        for chunk in self.chunks:
            if isinstance(chunk, _Run):
                values.extend([chunk.value] * chunk.count)
            elif isinstance(chunk, np.ndarray):
                values.extend(chunk.tolist())  # the floats they were made from
            else:
                values.extend(chunk)
        return values

    def identities(self) -> np.ndarray:
        """:func:`.base.identity_values` of the values (it reads each value on its own)."""
        chunks = self._filled_chunks()
        runs = [chunk for chunk in chunks if isinstance(chunk, _Run)]
        if runs and len(runs) == len(chunks):
            ids = identity_values([run.value for run in runs], len(runs))
            return np.repeat(ids, [run.count for run in runs])
        values = self.values()
        return identity_values(values, len(values))


class _Rows:
    """Raw values of every row, in file order."""

    def __init__(self) -> None:
        self.time: list[Any] = []
        self.lon = _Column()
        self.lat = _Column()
        self.coordinate_problem: list[str | None] = []
        self.time_problem: list[str | None] = []
        self.values = {name: _Column() for name in (*OPTIONAL_FLOATS, *IDENTITIES)}

    def add(
        self,
        coordinate: Any,
        time: Any,
        values: Mapping[str, Any],
        time_problem: str | None = None,
    ) -> None:
        problem: str | None = None
        lon = lat = ele = None
        if coordinate is None or coordinate == []:
            problem = MISSING_COORDINATES
        elif not isinstance(coordinate, list) or len(coordinate) < 2:
            problem = UNPARSEABLE_COORDINATES
        else:
            lon, lat = coordinate[0], coordinate[1]
            ele = coordinate[2] if len(coordinate) > 2 else None
            if any(isinstance(v, bool | list | dict) for v in (lon, lat)):
                problem = UNPARSEABLE_COORDINATES
        self.coordinate_problem.append(
            None if problem is None else f"{problem}: coordinates={quote(coordinate)}"
        )
        self.lon.append(lon if problem is None else None)
        self.lat.append(lat if problem is None else None)
        self.time.append(time)
        self.time_problem.append(time_problem)
        for name, column in self.values.items():
            value = values.get(name)
            column.append(ele if name == "elevation_m" and ele is not None else value)

    def add_positions(
        self,
        coordinates: list[Any],
        times: list[Any],
        values: Mapping[str, Any],
        time_problem: str | None,
    ) -> bool:
        """Add many vertices at once, as :meth:`add` would one by one, if all are positions.

        ``values`` holds, per column, one value for every vertex or a list of one per
        vertex. Returns False, adding nothing, unless every coordinate is a list of two or
        three numbers (the rows then have no coordinate problem): :meth:`add` judges others.
        """
        if not _are_lists_of_two_or_three(coordinates):
            return False
        ordinates = list(chain.from_iterable(coordinates))
        kinds = set(map(type, ordinates))
        if not kinds <= _NUMBER_TYPES:
            return False
        count = len(coordinates)
        self.time.extend(times)
        self.time_problem.extend([time_problem] * count)
        self.coordinate_problem.extend([None] * count)
        all_three = len(ordinates) == 3 * count  # every vertex is [lon, lat, ele]
        if count and kinds == _FLOAT and (all_three or len(ordinates) == 2 * count):
            self._add_table(np.array(ordinates, dtype=np.float64).reshape(count, -1), values)
            return True
        if all_three:
            lons, lats, eles = ordinates[0::3], ordinates[1::3], ordinates[2::3]
        else:
            lons, lats = [c[0] for c in coordinates], [c[1] for c in coordinates]
            eles = [c[2] if len(c) > 2 else None for c in coordinates]
        self.lon.extend(lons)
        self.lat.extend(lats)
        for name, column in self.values.items():
            value = values.get(name)
            if name == "elevation_m" and all_three:
                column.extend(eles)
            elif name == "elevation_m":
                per_vertex = value if isinstance(value, list) else [value] * count
                column.extend(
                    [v if e is None else e for e, v in zip(eles, per_vertex, strict=True)]
                )
            else:
                _add_values(name, column, value, count)
        return True

    def _add_table(self, table: np.ndarray, values: Mapping[str, Any]) -> None:
        """Add vertices whose positions are the rows of ``table`` (lon, lat and maybe ele)."""
        self.lon.add_floats(table[:, 0])
        self.lat.add_floats(table[:, 1])
        for name, column in self.values.items():
            if name == "elevation_m" and table.shape[1] == 3:
                column.add_floats(table[:, 2])
            else:
                _add_values(name, column, values.get(name), len(table))


def _add_values(name: str, column: _Column, value: Any, count: int) -> None:
    """Add to a column a list of one value per vertex, or one value for all ``count``."""
    if not isinstance(value, list):
        column.repeat(value, count)
    elif name in OPTIONAL_FLOATS:
        column.extend_floats(value)
    else:
        column.extend(value)


_NUMBER_TYPES = frozenset({int, float})
_FLOAT = {float}


def _are_lists_of_two_or_three(coordinates: list[Any]) -> bool:
    """Whether every coordinate is a list of two or three values (checked at C speed, as sets)."""
    if not coordinates:
        return True
    return set(map(type, coordinates)) == {list} and set(map(len, coordinates)) <= {2, 3}


def _reject_coordinate_problems(candidates: Candidates, problems: list[str | None]) -> None:
    """Reject the rows with a coordinate problem (``"<reason>: <detail>"``) for that reason."""
    if problems.count(None) == len(problems):
        return
    rows = np.flatnonzero(pd.notna(np.array(problems, dtype=object)))
    for reason in (MISSING_COORDINATES, UNPARSEABLE_COORDINATES):
        hits = [row for row in rows if str(problems[row]).startswith(reason)]
        if not hits:
            continue
        mask = np.zeros(len(candidates), dtype=bool)
        mask[hits] = True
        details = np.full(len(candidates), None, dtype=object)
        details[hits] = [str(problems[row]).partition(": ")[2] for row in hits]
        candidates.reject(mask, reason, details)


def read_geojson(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read a GeoJSON trace (see the module docstring for the rules)."""
    data = read_bytes(path, source, options.max_decoded_bytes)
    document = _parse_json(data, decode_text(data, source, FIX_HINT), source)
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
    elif kind == "Feature":
        features = [document]
    else:
        raise unreadable(
            source, f"not a GeoJSON FeatureCollection or Feature (type={quote(kind)})", FIX_HINT
        )
    defaults: dict[str, Any] = {}
    if kind == "FeatureCollection":
        collection_properties = document.get("properties")
        if isinstance(collection_properties, dict):
            defaults = _identity(collection_properties)
        defaults.update(_identity(document))
    rows = _Rows()
    ignored: Counter[str] = Counter()
    for feature in features:
        _read_feature(feature, defaults, rows, ignored)
    candidates = Candidates(np.arange(1, len(rows.time) + 1, dtype="int64"))
    _reject_coordinate_problems(candidates, rows.coordinate_problem)
    candidates.set_coordinates(rows.lon.values(), rows.lat.values())
    if rows.time_problem.count(None) != len(rows.time_problem):
        time_problems = np.array(rows.time_problem, dtype=object)
        candidates.reject(pd.notna(time_problems), MISSING_TIME, time_problems)
    candidates.set_times(rows.time)
    for name, column in rows.values.items():
        if name in IDENTITIES:
            candidates.columns[name] = column.identities()  # as Candidates.set parses them
        else:
            candidates.set(name, column.values())
    return finish(source, FORMAT, candidates, (), ignored)


def _parse_json(data: bytes, text: str, source: str) -> Any:
    """Return ``json.loads(text)`` (``text`` is ``data`` decoded), parsed by msgspec if it can.

    Raises
    ------
    UnreadableFileError
        If ``text`` is not JSON, with :mod:`json`'s account of where and why, or nests
        deeper than :data:`~pipeline.ingest.readers.base.MAX_JSON_DEPTH`.
    """
    if json_nesting_depth(data) > MAX_JSON_DEPTH:
        raise unreadable(source, f"JSON nests deeper than {MAX_JSON_DEPTH} levels", FIX_HINT)
    try:
        return msgspec.json.decode(text)
    except msgspec.MsgspecError:
        pass  # json accepts some of these (NaN, 1e400, lone surrogates) and words the others
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise unreadable(
            source, f"not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})", FIX_HINT
        ) from None


def _identity(properties: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    keys = tuple(properties)
    for field in ("contributor_id", "device_id"):
        for key, _ in _keys_of(keys, field):
            value = properties[key]
            if isinstance(value, str | int) and not isinstance(value, bool):
                found[field] = value
                break
    return found


def _point_values(properties: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    keys = tuple(properties)
    values: dict[str, Any] = {}
    for field in ("hdop", "speed_mps", "heading_deg", "elevation_m"):
        for key, scale in _keys_of(keys, field):
            value = properties[key]
            if value is not None and not isinstance(value, list | dict | bool):
                if isinstance(scale, float) and isinstance(value, int | float):
                    value = value * scale
                values[field] = value
                break
    times = (properties[key] for key, _ in _keys_of(keys, "time"))
    return next((time for time in times if time is not None), None), values


@functools.lru_cache(maxsize=1024)  # features of a file mostly share their property names
def _keys_of(keys: tuple[str, ...], field: str) -> tuple[tuple[str, Any], ...]:
    """Return the property keys naming ``field`` and their aliases' scales, in alias order.

    As if the properties were a dict of normalized names: of keys with the same normalized
    name, the last one.
    """
    key_of = {normalize_name(str(key)): key for key in keys}
    return tuple(
        (key_of[alias], scale) for alias, scale in ALIASES[field].items() if alias in key_of
    )


def _read_feature(
    feature: Any, defaults: Mapping[str, Any], rows: _Rows, ignored: Counter[str]
) -> None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        ignored["not_a_feature"] += 1
        return
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        properties = {}
    identity = {**defaults, **_identity(properties)}
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if not isinstance(kind, str | None):  # e.g. "type": [] (not hashable)
        kind = repr(kind)
    if geometry is None:
        time, values = _point_values(properties)
        rows.add(None, time, {**identity, **values})
    elif kind == "Point":
        time, values = _point_values(properties)
        rows.add(geometry.get("coordinates"), time, {**identity, **values})
    elif kind in _LINES:
        _read_line(geometry, properties, identity, rows, ignored)
    else:
        ignored[str(kind) if kind in _GEOMETRY_TYPES else "unknown_geometry_type"] += 1


def _read_line(
    geometry: dict[str, Any],
    properties: dict[str, Any],
    identity: Mapping[str, Any],
    rows: _Rows,
    ignored: Counter[str],
) -> None:
    coordinates = geometry.get("coordinates") or []
    if not isinstance(coordinates, list):  # e.g. true: one vertex that is not a position
        coordinates = [coordinates]
    parts = coordinates if _LINES[geometry["type"]] == 2 else [coordinates]
    parts = [p if isinstance(p, list) else [p] for p in parts]
    vertices = [vertex for part in parts for vertex in part]
    count = len(vertices)
    times_raw = next((properties[k] for k in VERTEX_TIMES if k in properties), None)
    times = _flatten(times_raw, parts)
    problem = None
    if times_raw is None:
        problem = "no per-vertex times (properties.coordTimes or properties.times)"
    elif times is None or len(times) != count:
        length = len(times) if times is not None else "?"
        problem = f"{length} per-vertex times for {count} vertices"
    lists: dict[str, list[Any]] = {}
    for field, keys in VERTEX_LISTS.items():
        raw = next((properties[k] for k in keys if k in properties), None)
        if isinstance(raw, list):
            flat = _flatten(raw, parts)
            if flat is not None and len(flat) == count:
                lists[field] = flat
            else:
                ignored["property_length_mismatch"] += 1
    vertex_times = times if problem is None and times is not None else [None] * count
    if rows.add_positions(vertices, vertex_times, {**identity, **lists}, problem):
        return
    for i, vertex in enumerate(vertices):
        values = {**identity, **{field: column[i] for field, column in lists.items()}}
        rows.add(vertex, vertex_times[i], values, problem)


def _flatten(values: Any, parts: list[list[Any]]) -> list[Any] | None:
    """Flatten a per-vertex list that is either flat or nested like the line's parts."""
    if not isinstance(values, list):
        return None
    nested = bool(values) and all(isinstance(v, list) for v in values)
    if nested and len(values) == len(parts):
        return [v for part in values for v in part]
    return values
