"""Frame JSON, as dashcam networks store their per-frame metadata.

Accepted layouts: a JSON array of frame objects; JSON Lines (one frame object per line, also
for ``.json`` files whose first line is a complete object); or an object
``{"frames": [...], "device": ..., "contributor_id": ...}`` whose members other than
``frames`` apply to every frame (a lone frame object is read as one frame).

A frame::

    {"timestamp": 1700000000123 | "2024-05-01T08:00:00Z", "device": "cam-1",
     "position": {"lat": 60.1, "lon": 24.9, "hdop": 0.9, "alt": 12.0},
     "speed": 13.2, "heading": 271.0, "imu": {...}}

Position members may also sit at the top level of the frame, and ``position`` may be called
``gps`` or ``location``; ``lng``/``longitude``/``latitude``, ``altitude``/``ele``/``elevation``,
``speed_mps`` (``speed`` is m/s; ``speed_kmh`` is converted), ``heading_deg``/``course``/
``bearing``, ``time``/``ts``/``observed_at`` are accepted. Other members (``imu``, ...) are
ignored.

Rows and ``source_row``
    Each frame is a row; ``source_row`` is its 1-based ordinal in the array, or for JSON Lines
    the 1-based line number (blank lines are not rows). A line that is not valid JSON, e.g. the
    cut-off last line of a truncated file, or an element that is not an object, is a
    ``malformed_row``; a line that is not UTF-8 is an ``invalid_encoding`` reject.
Time
    ISO-8601 (naive = UTC) or epoch numbers, seconds or milliseconds by magnitude (> 1e11 ms).
Contributor and device
    ``contributor_id``/``contributor``/``user_id`` and ``device``/``device_id``/``camera_id`` of
    the frame, else of the enclosing object; None when absent.

Whole-file errors: not UTF-8, or (for a JSON array/object) not valid JSON, e.g. truncated,
or nesting deeper than :data:`~pipeline.ingest.readers.base.MAX_JSON_DEPTH` levels (in JSON
Lines, such a line is a ``malformed_row``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.ingest.readers.base import (
    KMH_TO_MPS,
    MALFORMED_ROW,
    MAX_JSON_DEPTH,
    TEXT_LINE_BREAK,
    Candidates,
    ReaderOptions,
    ReadResult,
    Reject,
    decode_lines,
    finish,
    json_nesting_depth,
    read_bytes,
    unreadable,
)

FORMAT = "framejson"
FIX_HINT = "re-export the frames as a JSON array or JSON Lines (UTF-8)"
POSITION_KEYS = ("position", "gps", "location")
KEYS: dict[str, tuple[str, ...]] = {
    "time": ("timestamp", "time", "ts", "observed_at", "gps_time", "datetime"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude", "long"),
    "hdop": ("hdop",),
    "elevation_m": ("alt", "altitude", "elevation_m", "elevation", "ele"),
    "speed_mps": ("speed_mps", "speed"),
    "heading_deg": ("heading_deg", "heading", "course", "bearing"),
    "device_id": ("device", "device_id", "camera_id", "camera"),
    "contributor_id": ("contributor_id", "contributor", "user_id", "user"),
}
KMH_KEYS = ("speed_kmh", "speed_kph")
TOO_DEEP = f"JSON nests deeper than {MAX_JSON_DEPTH} levels"


def read_frames(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read frame JSON or JSON Lines (see the module docstring for the rules)."""
    data = read_bytes(path, source, options.max_decoded_bytes)
    text, undecoded = decode_lines(data, source, FIX_HINT, TEXT_LINE_BREAK)
    frames: list[tuple[int, Any]]
    defaults: dict[str, Any] = {}
    rejects: list[Reject] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        frames, rejects = _json_lines(text)
    else:
        document, problem = _parse_document(text) if not undecoded else (None, "")
        if problem is None:
            frames, defaults = _frames_of(document, source)
        elif _first_line_is_object(text):
            frames, rejects = _json_lines(text)
        elif undecoded:  # one JSON document: it cannot be read without its bad lines
            first = undecoded[0].source_row
            raise unreadable(source, f"line {first} is not UTF-8", "re-save the file as UTF-8")
        else:
            raise unreadable(source, problem, FIX_HINT)
    rejects.extend(undecoded)
    rows: dict[str, list[Any]] = {name: [] for name in KEYS}
    numbers: list[int] = []
    for number, frame in frames:
        if not isinstance(frame, dict):
            kind = type(frame).__name__
            rejects.append(Reject(number, MALFORMED_ROW, f"not a JSON object but a {kind}"))
            continue
        numbers.append(number)
        for name, value in _frame_values(frame, defaults).items():
            rows[name].append(value)
    candidates = Candidates(np.array(numbers, dtype="int64"))
    candidates.set_coordinates(rows["lon"], rows["lat"])
    candidates.set_times(rows["time"])
    for name in ("hdop", "elevation_m", "speed_mps", "heading_deg", "device_id", "contributor_id"):
        candidates.set(name, rows[name])
    return finish(source, FORMAT, candidates, rejects)


def _parse_document(text: str) -> tuple[Any, str | None]:
    """Parse a whole JSON document; return it, or None and what is wrong with it."""
    if json_nesting_depth(text.encode()) > MAX_JSON_DEPTH:
        return None, TOO_DEEP
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"


def _first_line_is_object(text: str) -> bool:
    first = text.lstrip().partition("\n")[0]
    if json_nesting_depth(first.encode()) > MAX_JSON_DEPTH:
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _json_lines(text: str) -> tuple[list[tuple[int, Any]], list[Reject]]:
    frames: list[tuple[int, Any]] = []
    rejects: list[Reject] = []
    check_depth = json_nesting_depth(text.encode()) > MAX_JSON_DEPTH  # some line nests deep
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if check_depth and json_nesting_depth(line.encode()) > MAX_JSON_DEPTH:
            rejects.append(Reject(number, MALFORMED_ROW, TOO_DEEP))
            continue
        try:
            frames.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            detail = f"invalid JSON ({exc.msg} at column {exc.colno})"
            rejects.append(Reject(number, MALFORMED_ROW, detail))
    return frames, rejects


def _frames_of(document: Any, source: str) -> tuple[list[tuple[int, Any]], dict[str, Any]]:
    if isinstance(document, list):
        return list(enumerate(document, start=1)), {}
    if isinstance(document, dict):
        if isinstance(document.get("frames"), list):
            defaults = {k: v for k, v in document.items() if k != "frames"}
            return list(enumerate(document["frames"], start=1)), defaults
        if _frame_values(document, {})["time"] is not None:
            return [(1, document)], {}
    raise unreadable(
        source, "no list of frames (a JSON array, or an object with 'frames')", FIX_HINT
    )


def _pick(container: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = container.get(key)
        if value is not None:
            return value
    return None


def _frame_values(frame: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    position: Mapping[str, Any] = next(
        (frame[k] for k in POSITION_KEYS if isinstance(frame.get(k), dict)), {}
    )
    values: dict[str, Any] = {}
    for name, keys in KEYS.items():
        value = _pick(position, keys) if name != "device_id" else None
        if value is None:
            value = _pick(frame, keys)
        if value is None and name in ("device_id", "contributor_id"):
            value = _pick(defaults, keys)
        values[name] = value
    if values["speed_mps"] is None:
        kmh = _pick(frame, KMH_KEYS)
        if isinstance(kmh, int | float) and not isinstance(kmh, bool):
            values["speed_mps"] = kmh * KMH_TO_MPS
    for name in ("device_id", "contributor_id"):
        if isinstance(values[name], dict | list):
            values[name] = None
    return values
