"""GPX 1.0 and 1.1 tracks.

Two readers give the same points: plain XML (UTF-8, no entity references, CDATA or DOCTYPE;
what cameras and apps write) is read from its tags found with NumPy (:mod:`.xml_tags`), about
twice as fast as ElementTree; any other file, and any file the tag reader is unsure of, is read
incrementally with ``xml.etree.ElementTree.iterparse``. Tests check the two agree.

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
``<gpx>`` and entity declarations (which only serve XML bombs such as "billion laughs"),
looked for by expat in the document's own encoding (UTF-8, UTF-16, ...) before any parse.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.ingest.readers import xml_tags
from pipeline.ingest.readers.base import (
    MAX_DETAIL_VALUE,
    Candidates,
    ReaderOptions,
    ReadResult,
    finish,
    quote,
    read_bytes,
    to_float,
    to_float_columns,
    unreadable,
)

FORMAT = "gpx"
FIX_HINT = "re-export the file as GPX 1.1 (UTF-8)"
_POINT_FIELDS = ("lat", "lon", "time", "ele", "hdop", "speed", "course")
_NUMBER_FIELDS = ("lon", "lat", "ele", "hdop", "speed", "course")
_EXTENSION_NAMES = {"speed": "speed", "course": "course", "heading": "course", "bearing": "course"}
_PROLOG_PIECE = 1 << 16  # bytes given to expat at a time while looking for declarations
_ENCODING = re.compile(rb"""<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


# what reading the points gives: field -> values, the file's identity, ignored elements
Points = tuple[dict[str, Any], dict[str, str | None], Counter[str]]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def read_gpx(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read a GPX file (see the module docstring for the rules)."""
    data = read_bytes(path, source, options.max_decoded_bytes)
    if _declares_entities(data):
        raise unreadable(source, "XML entity declarations are not allowed in GPX", FIX_HINT)
    read = _points_by_tags(data) or _points_by_tree(data, source)
    points, identity, ignored = read
    count = len(points["lat"])
    candidates = Candidates(np.arange(1, count + 1, dtype="int64"))
    numbers = _numbers(points)
    candidates.set_coordinates(
        points["lon"], points["lat"], parsed=(numbers["lon"], numbers["lat"])
    )
    candidates.set_times(points["time"])
    for name, field in (
        ("elevation_m", "ele"),
        ("hdop", "hdop"),
        ("speed_mps", "speed"),
        ("heading_deg", "course"),
    ):
        candidates.columns[name] = numbers[field][0]  # as Candidates.set parses them
    for name, value in identity.items():
        candidates.set(name, value)
    return finish(source, FORMAT, candidates, (), ignored)


def _numbers(points: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return :func:`.base.to_float` of each numeric field of the points.

    The fields read from the tags (Arrow strings) are parsed all in one Arrow pass.
    """
    columns = [points[name] for name in _NUMBER_FIELDS]
    if not all(isinstance(column, pd.Series) for column in columns):  # read by the tree
        return {name: to_float(points[name]) for name in _NUMBER_FIELDS}
    strings = pa.concat_arrays([pa.array(column.array).cast(pa.string()) for column in columns])
    return dict(zip(_NUMBER_FIELDS, to_float_columns(strings, len(columns)), strict=True))


class _PrologReadError(Exception):
    """Raised by the expat handlers of :func:`_declares_entities` once it knows."""


def _declares_entities(data: bytes) -> bool:
    """Whether the document declares an XML entity, in whatever encoding it is written.

    Declarations can only come before the root element, so expat parses the document only
    up to the root element's start tag. A document expat cannot read that far is left to the
    parser that reads it, which words the error.
    """
    parser = xml.parsers.expat.ParserCreate()
    found = False

    def entity(*_: Any) -> None:
        nonlocal found
        found = True
        raise _PrologReadError

    def root_element(*_: Any) -> None:
        raise _PrologReadError

    parser.EntityDeclHandler = entity
    parser.StartElementHandler = root_element
    try:
        for start in range(0, len(data), _PROLOG_PIECE):
            parser.Parse(data[start : start + _PROLOG_PIECE], False)
    except _PrologReadError:
        return found
    except (xml.parsers.expat.ExpatError, ValueError, LookupError):
        return False
    return found


def _points_by_tree(data: bytes, source: str) -> Points:
    """Read the points with ElementTree (any well-formed GPX); raise for any other file."""
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
    except ValueError as exc:  # one expat cannot read, e.g. "UTF-16-BE" ("multi-byte ...")
        problem = f"XML declares an encoding expat cannot read ({exc})"
        raise unreadable(source, problem, FIX_HINT) from None
    root = events.root  # type: ignore[attr-defined]
    if _local(root.tag) != "gpx":
        root_name = _local(root.tag)
        shown = f"<{root_name}>" if len(root_name) <= MAX_DETAIL_VALUE else quote(root_name)
        raise unreadable(source, f"not a GPX file (root element {shown})", FIX_HINT)
    return dict(points), _identity(root), ignored


def _points_by_tags(data: bytes) -> Points | None:
    """Read the points of a plain GPX document from its tags, as :func:`_points_by_tree` does.

    The same rules, in arrays: a point's field is the first of its candidate elements (direct
    children named like the field, elements so named anywhere inside a direct ``<extensions>``
    child) whose text is not empty. None when the document is not plain XML
    (:mod:`.xml_tags`), has nested ``<trkpt>`` elements or is not GPX: the tree reads those.
    """
    tags = xml_tags.tokenize(data)
    if tags is None or tags.is_end[0] or not tags.named(b"gpx")[0]:
        return None
    opening, is_point = ~tags.is_end, tags.named(b"trkpt")
    starts = np.flatnonzero(opening & is_point)
    ends = starts.copy()
    closing = np.flatnonzero(tags.is_end & is_point)
    if len(closing) != int((~tags.is_empty[starts]).sum()):
        return None
    ends[~tags.is_empty[starts]] = closing
    if (ends < starts).any() or (starts[1:] < ends[:-1]).any():  # a point inside a point
        return None
    coordinates = tags.attributes(starts, (b"lat", b"lon"))
    if coordinates is None:
        return None
    fields = {"lat": coordinates[b"lat"], "lon": coordinates[b"lon"]}
    fields.update(_point_fields(tags, starts, ends))
    points = {
        name: pd.Series(pd.arrays.ArrowStringArray(values)) for name, values in fields.items()
    }
    ignored = Counter(
        {name: int((opening & tags.named(name.encode())).sum()) for name in ("rtept", "wpt")}
    )
    return points, _identity_from_tags(tags), +ignored


def _point_fields(
    tags: xml_tags.Tags, starts: np.ndarray, ends: np.ndarray
) -> dict[str, pa.StringArray]:
    """Return each point's time, ele, hdop, speed and course texts (null where it has none)."""
    names = _POINT_FIELDS[2:]
    if len(starts) == 0:
        return {name: pa.array([], type=pa.string()) for name in names}
    bounds = _text_bounds_of_alike_points(tags, starts, ends)
    if bounds is None:
        bounds = _text_bounds_by_owner(tags, starts, ends)
    return {name: tags.texts(*bounds[name]) for name in names}


TextBounds = dict[str, tuple[np.ndarray, np.ndarray]]
"""Field -> where each point's text of it starts and ends (-1 where the point has none)."""


def _text_bounds_of_alike_points(
    tags: xml_tags.Tags, starts: np.ndarray, ends: np.ndarray
) -> TextBounds | None:
    """:func:`_text_bounds_by_owner` when every point is written alike, as trace files are.

    Alike: the same tags (names, kinds, nesting) in the same order; the candidates for each
    field are then at the same places in every point, found once, in the first point. None
    when the points differ.
    """
    width = int(ends[0] - starts[0]) + 1
    if not (ends - starts + 1 == width).all():
        return None
    grid = starts[:, np.newaxis] + np.arange(width)  # each point's tags, in a row
    if not tags.alike(grid):
        return None
    first = tags.between(int(starts[0]), int(ends[0]) + 1)
    codes, _ = _field_codes(first, np.array([0]), np.array([width - 1]))
    bounds: TextBounds = {}
    for number, name in enumerate(_POINT_FIELDS[2:]):
        starts_of, ends_of = np.full(len(starts), -1), np.full(len(starts), -1)
        for place in np.flatnonzero(codes == number)[::-1]:  # the first one with text wins
            text_start, text_end = tags.text_bounds(grid[:, place])
            with_text = text_end > text_start
            starts_of[with_text], ends_of[with_text] = text_start[with_text], text_end[with_text]
        bounds[name] = (starts_of, ends_of)
    return bounds


def _field_codes(
    tags: xml_tags.Tags, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return which field each tag is a candidate for (its number, or -1) and its point.

    Candidates are the opening tags of direct children of a point named like a field, and of
    elements named like an extension field anywhere inside a direct ``<extensions>`` child.
    ``starts`` and ``ends`` are the points' opening and closing tags (points do not nest).
    """
    index = np.arange(len(tags))
    is_start = np.zeros(len(tags), dtype=np.int64)
    is_start[starts] = 1
    owner = np.maximum(np.cumsum(is_start) - 1, 0)  # the last point starting at or before
    inside = (index > starts[owner]) & (index < ends[owner])
    child_level = tags.level[starts][owner] + 1
    child = inside & (tags.level == child_level)
    extensions = child & tags.named(b"extensions")
    marks = np.where(extensions & ~tags.is_end & ~tags.is_empty, 1, 0) - (extensions & tags.is_end)
    in_extensions = inside & (np.cumsum(marks) - marks > 0)
    with_text = ~tags.is_end & ~tags.is_empty
    names = _POINT_FIELDS[2:]
    code = np.full(len(tags), -1)
    for number, name in enumerate(names):
        code[child & with_text & tags.named(name.encode())] = number
    for name, field in _EXTENSION_NAMES.items():
        code[in_extensions & with_text & tags.named(name.encode())] = names.index(field)
    return code, owner


def _text_bounds_by_owner(tags: xml_tags.Tags, starts: np.ndarray, ends: np.ndarray) -> TextBounds:
    """Each field's text bounds: its first candidate (:func:`_field_codes`) with text."""
    code, owner = _field_codes(tags, starts, ends)
    candidates = np.flatnonzero(code >= 0)
    text_start, text_end = tags.text_bounds(candidates)
    with_text = text_end > text_start
    candidates, text_start, text_end = (a[with_text] for a in (candidates, text_start, text_end))
    bounds: TextBounds = {}
    for number, name in enumerate(_POINT_FIELDS[2:]):
        chosen = _first_per_point(owner[candidates], code[candidates] == number)
        starts_of, ends_of = np.full(len(starts), -1), np.full(len(starts), -1)
        starts_of[owner[candidates[chosen]]] = text_start[chosen]
        ends_of[owner[candidates[chosen]]] = text_end[chosen]
        bounds[name] = (starts_of, ends_of)
    return bounds


def _first_per_point(owners: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the indices of the first of the ``mask`` rows of each owner.

    ``owners`` is in document order (never decreasing), so each owner's rows are together.
    """
    rows = np.flatnonzero(mask)
    own = owners[rows]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = own[1:] != own[:-1]
    return rows[first]


def _identity_from_tags(tags: xml_tags.Tags) -> dict[str, str | None]:
    """Device and contributor, by the rules of :func:`_identity`."""
    metadata = tags.first_child(0, b"metadata")
    if metadata is not None:  # GPX 1.1
        device = tags.text(tags.first_child(metadata, b"name"))
        author = tags.first_child(metadata, b"author")
        contributor = tags.text(tags.first_child(author, b"name"))
    else:  # GPX 1.0
        device = tags.text(tags.first_child(0, b"name"))
        author = tags.first_child(0, b"author")
        contributor = tags.text(author) or tags.text(tags.first_child(author, b"name"))
    return {"device_id": device, "contributor_id": contributor}


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
