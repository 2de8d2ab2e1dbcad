"""GPX 1.0 and 1.1 tracks, read incrementally (``xml.etree.ElementTree.iterparse``).

Namespaces are ignored (GPX 1.0, 1.1 or none all read alike), and so are extension prefixes.

Rows and ``source_row``
    Each ``<trkpt>`` is a row; ``source_row`` is its 1-based ordinal in the file. Route points
    (``<rtept>``) and waypoints (``<wpt>``) are planned or marked places, not driven fixes: they
    are counted in ``ignored`` (``rtept``, ``wpt``) and not read.
Values
    ``lat``/``lon`` attributes, ``<time>`` (ISO-8601, to UTC; naive times taken as UTC),
    ``<ele>`` -> ``elevation_m``, ``<hdop>``; speed (m/s, the GPX convention) and course from a
    ``<speed>``/``<course>`` child (GPX 1.0) or any element so named inside ``<extensions>``
    (``gpxtpx:TrackPointExtension``, OsmAnd, plain), ``heading``/``bearing`` also accepted.
Contributor and device
    ``contributor_id`` is ``<metadata><author><name>`` (GPX 1.1) or ``<author>`` (GPX 1.0);
    ``device_id`` is the file's name, ``<metadata><name>`` (1.1) or ``<gpx><name>`` (1.0), which
    is where cameras and the fleet simulator put the device. ``<trk><src>`` is not used: GPX
    defines it as the kind of source (e.g. a receiver model or a generator), not one device.

Whole-file errors: XML that is not well-formed anywhere in the file (e.g. truncated, or not
encoded as declared) makes the whole file unreadable, points before the error included, since a
half-written file cannot be told from a complete one; so do a root element other than
``<gpx>`` and entity declarations (which only serve XML bombs).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.ingest.readers.base import (
    Candidates,
    ReaderOptions,
    ReadResult,
    finish,
    read_bytes,
    unreadable,
)

FORMAT = "gpx"
FIX_HINT = "re-export the file as GPX 1.1 (UTF-8)"
_POINT_FIELDS = ("lat", "lon", "time", "ele", "hdop", "speed", "course")
_EXTENSION_NAMES = {"speed": "speed", "course": "course", "heading": "course", "bearing": "course"}
_ENCODING = re.compile(rb"""<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def read_gpx(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read a GPX file (see the module docstring for the rules)."""
    data = read_bytes(path, source)
    if b"<!ENTITY" in data:
        raise unreadable(source, "XML entity declarations are not allowed in GPX", FIX_HINT)
    points: dict[str, list[str | None]] = {name: [] for name in _POINT_FIELDS}
    ignored: Counter[str] = Counter()
    try:
        events = ET.iterparse(io.BytesIO(data), events=("end",))
        for _, elem in events:
            tag = elem.tag.rpartition("}")[2]
            if tag == "trkpt":
                _read_point(elem, points)
                elem.clear()
            elif tag in ("rtept", "wpt"):
                ignored[tag] += 1
                elem.clear()
            elif tag == "trkseg":
                elem.clear()
    except ET.ParseError as exc:
        raise unreadable(source, _parse_problem(exc, data), FIX_HINT) from None
    except LookupError as exc:  # an XML declaration naming an encoding Python does not know
        raise unreadable(source, f"XML declares an {exc}", FIX_HINT) from None
    root = events.root  # type: ignore[attr-defined]
    if _local(root.tag) != "gpx":
        raise unreadable(source, f"not a GPX file (root element <{_local(root.tag)}>)", FIX_HINT)
    identity = _identity(root)
    count = len(points["lat"])
    candidates = Candidates(np.arange(1, count + 1, dtype="int64"))
    candidates.set_coordinates(points["lon"], points["lat"])
    candidates.set_times(points["time"])
    candidates.set("elevation_m", points["ele"])
    candidates.set("hdop", points["hdop"])
    candidates.set("speed_mps", points["speed"])
    candidates.set("heading_deg", points["course"])
    for name, value in identity.items():
        candidates.set(name, value)
    return finish(source, FORMAT, candidates, (), ignored)


def _read_point(elem: ET.Element, points: dict[str, list[str | None]]) -> None:
    values: dict[str, str | None] = {"lat": elem.get("lat"), "lon": elem.get("lon")}
    for child in elem:
        name = _local(child.tag)
        if name == "extensions":
            for sub in child.iter():
                key = _EXTENSION_NAMES.get(_local(sub.tag))
                if key is not None and values.get(key) is None and sub.text:
                    values[key] = sub.text
        elif name in ("time", "ele", "hdop", "speed", "course") and values.get(name) is None:
            values[name] = child.text
    for name in _POINT_FIELDS:
        points[name].append(values.get(name))


def _child(elem: ET.Element | None, name: str) -> ET.Element | None:
    if elem is None:
        return None
    return next((child for child in elem if _local(child.tag) == name), None)


def _text(elem: ET.Element | None) -> str | None:
    return ((elem.text or "").strip() or None) if elem is not None else None


def _identity(root: ET.Element) -> dict[str, str | None]:
    """Device and contributor from GPX 1.1 ``<metadata>`` or GPX 1.0 top-level elements."""
    metadata = _child(root, "metadata")
    if metadata is not None:  # GPX 1.1
        device = _text(_child(metadata, "name"))
        contributor = _text(_child(_child(metadata, "author"), "name"))
    else:  # GPX 1.0
        device = _text(_child(root, "name"))
        author = _child(root, "author")
        contributor = _text(author) or _text(_child(author, "name"))
    return {"device_id": device, "contributor_id": contributor}


def _parse_problem(exc: ET.ParseError, data: bytes) -> str:
    line, column = exc.position
    declared = _ENCODING.search(data[:200])
    encoding = declared.group(1).decode().lower() if declared else "utf-8"
    if encoding in ("utf-8", "utf8"):
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as bad:
            byte = data[bad.start : bad.start + 1].hex()
            return (
                f"not UTF-8 as its XML declaration says (byte 0x{byte} at offset {bad.start}, "
                f"line {line})"
            )
    if not data.rstrip().endswith(b">") or "no element found" in str(exc):
        return f"truncated or not well-formed XML at line {line}, column {column} ({exc.msg})"
    return f"not well-formed XML at line {line}, column {column} ({exc.msg})"
