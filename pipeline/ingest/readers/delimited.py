"""CSV and TSV trace logs: one fix per line, with a header naming the columns.

The delimiter (comma, semicolon or tab) is the one most frequent in the header line. Columns are
found by name (see :mod:`pipeline.ingest.readers.columns`; ``ReaderOptions.csv_columns``, from
config ``ingest.csv_columns``, overrides that, and falls back to the automatic match for files
without the named column).

Rows and ``source_row``
    Every non-blank line after the header is a row; ``source_row`` is its 1-based line number
    in the file (the header is line 1, so the first data row is 2; for a record spanning lines
    inside quotes, its first line). A row with a different number of fields than the header is
    a ``malformed_row`` (extra trailing empty fields are tolerated).
Time
    ISO-8601 (``Z`` or an offset -> converted to UTC; naive times are taken as UTC), or Unix
    epoch numbers: seconds or milliseconds as set by ``ReaderOptions.csv_time_unit`` or by a
    column name such as ``timestamp_ms``, else by magnitude (> 1e11 -> milliseconds, > 1e14
    microseconds, > 1e17 nanoseconds).
Values
    Numbers may use a decimal comma (``60,17`` in a semicolon file). Speeds are m/s unless the
    column says ``speed_kmh``/``speed_kph`` or ``speed_knots``. Unparseable optional values
    (hdop, speed, heading, elevation) become NaN and are counted in
    ``ignored["unparseable_<field>"]``.
Position
    From latitude and longitude columns, or else from a column of WKT points
    (``geometry``/``geom``/``wkt``/``the_geom``/``location``/``position`` holding
    ``POINT (lon lat)``, as GIS tools export CSV); a value that is not a point is an
    ``unparseable_coordinates`` reject.
Contributor and device
    From ``contributor_id``/``device_id`` columns (or their aliases), per row; None when absent.

Encoding
    UTF-8 (with or without a byte-order mark). A line that is not UTF-8 is an
    ``invalid_encoding`` reject at its line number (the rest of the file is read); a header
    line that is not UTF-8 makes the file unreadable.

Whole-file errors: empty, binary, UTF-16 files or a header that is not UTF-8, and files
without a latitude, longitude or time column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.ingest.readers.base import (
    IDENTITIES,
    MALFORMED_ROW,
    NULL_WORDS,
    OPTIONAL_FLOATS,
    Candidates,
    ReaderOptions,
    ReadResult,
    Reject,
    UnreadableFileError,
    decode_lines,
    finish,
    read_bytes,
    to_float,
    unreadable,
)
from pipeline.ingest.readers.columns import REQUIRED, Column, describe_header, find_columns

FORMAT = "csv"
DELIMITERS = (",", ";", "\t")
WKT_COLUMNS = ("geometry", "geom", "wkt", "the_geom", "location", "position")
WKT_POINT = r"^\s*POINT\s*Z?\s*\(\s*([-+0-9.eE]+)\s+([-+0-9.eE]+)(?:\s+[-+0-9.eE]+)?\s*\)\s*$"
FIX_HINT = "re-export the trace as UTF-8 CSV with a header row"
# the null words as Arrow's CSV reader matches them (exactly): their usual spellings; any other
# spelling fails the numeric parse and goes through to_float, which ignores case
ARROW_NULL_WORDS = sorted(
    {spelling for word in NULL_WORDS for spelling in (word, word.upper(), word.capitalize())}
    | {"NaN"}
)


def read_csv(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read a CSV/TSV trace (see the module docstring for the rules)."""
    result = read_csv_files([path], [source], options)[0]
    if isinstance(result, UnreadableFileError):
        raise result
    return result


def read_csv_files(
    paths: Sequence[Path], sources: Sequence[str], options: ReaderOptions
) -> list[ReadResult | UnreadableFileError]:
    """Read CSV/TSV traces: per file, what :func:`read_csv` returns or the error it raises.

    Regular files (see :func:`_regular_lines`) with the same header line are read together:
    their records joined, parsed by Arrow and their values checked in one pass, then split back
    into files. Arrow's reader and every value check cost a fixed time per call, so a chunk of
    small files costs about what one file of their size does.
    """
    results: dict[int, ReadResult | UnreadableFileError] = {}
    same_header: dict[str, list[tuple[int, _Lines]]] = {}
    for i, (path, source) in enumerate(zip(paths, sources, strict=True)):
        try:
            data = read_bytes(path, source, options.max_decoded_bytes)
            text, undecoded = decode_lines(data, source, FIX_HINT)
        except UnreadableFileError as exc:
            results[i] = exc
            continue
        lines = None if undecoded else _regular_lines(text)
        if lines is None:
            results[i] = _read_records_or_error(text, source, options, undecoded)
        else:
            same_header.setdefault(lines.header_line, []).append((i, lines))
    for members in same_header.values():
        files = [lines for _, lines in members]
        read = _read_same_header(files, [sources[i] for i, _ in members], options)
        for (i, _), result in zip(members, read, strict=True):
            results[i] = result
    return [results[i] for i in range(len(paths))]


Columns = list[np.ndarray] | list[np.ndarray | pa.Array]
Records = tuple[list[str], Columns, np.ndarray, list[Reject]]


@dataclass(frozen=True)
class _Lines:
    """A regular file: its text, its bytes (ending with a line break) and its layout."""

    text: str
    data: bytes
    header_line: str
    delimiter: str
    header: list[str]
    records: int
    body_start: int  # where the first record begins in ``data``


def _regular_lines(text: str) -> _Lines | None:
    """Return the layout of a file whose lines are all records of the header's width, or None.

    That is the common case: no quotes (so no quoted line breaks or delimiters), no blank lines
    and every line with as many delimiters as the header; row ``i`` is then line ``i + 2``.
    Quotes are looked for here; Arrow's parse (:func:`_parse_regular`) fails on a line of
    another width and skips blank ones, which a record count other than the line count tells.
    Any other file is read record by record (:func:`_read_records`).
    """
    if '"' in text:
        return None
    data = text.encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    first_end = data.find(b"\n")
    if first_end <= 0:
        return None
    first_line = data[:first_end].decode("utf-8")
    delimiter = max(DELIMITERS, key=first_line.count)
    header = [name.strip() for name in first_line.rstrip("\r").split(delimiter)]
    records = int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))) - 1
    if len(header) < 2 or records < 1:
        return None
    return _Lines(text, data, first_line, delimiter, header, records, first_end + 1)


def _read_same_header(
    files: list[_Lines], sources: list[str], options: ReaderOptions
) -> list[ReadResult | UnreadableFileError]:
    """Read regular files that share a header line, parsing their records as one."""
    first = files[0]
    found, wkt_column, missing = _fields(first.header, options)
    if missing:
        return [_no_columns(source, missing, first.header, found) for source in sources]
    bodies = [memoryview(f.data)[f.body_start :] for f in files]
    counts = [f.records for f in files]
    data = first.data[: first.body_start] + b"".join(bodies)
    columns = _parse_regular(data, first, found, sum(counts))
    if columns is None and len(files) > 1:  # some file has an irregular line: each file alone
        alone = zip(files, sources, strict=True)
        return [result for f, s in alone for result in _read_same_header([f], [s], options)]
    if columns is None:  # e.g. a line of another width: read the file record by record
        return [_read_records_or_error(first.text, sources[0], options)]
    candidates = Candidates(np.concatenate([np.arange(2, n + 2, dtype="int64") for n in counts]))
    unparseable = _fill(candidates, columns, first.header, found, options, wkt_column)
    bounds = np.cumsum([0, *counts]).tolist()
    results: list[ReadResult | UnreadableFileError] = []
    for source, start, stop in zip(sources, bounds[:-1], bounds[1:], strict=True):
        ignored = {name: int(bad[start:stop].sum()) for name, bad in unparseable.items()}
        results.append(finish(source, FORMAT, candidates.rows(start, stop), (), ignored))
    return results


def _parse_regular(
    data: bytes, layout: _Lines, found: dict[str, Column], records: int
) -> Columns | None:
    """Parse CSV bytes of ``layout`` (its header line first) into ``records`` rows, or None.

    None when Arrow cannot parse them, or finds another number of records (it skips blank
    lines, which the record-by-record reader then finds).

    Coordinate and other numeric columns are parsed as numbers by Arrow when every value is a
    plain number or a null word, and kept as text (parsed like any other file's) otherwise.
    """
    numeric = {found[f].name for f in ("lat", "lon", *OPTIONAL_FLOATS) if f in found}
    types = {
        f"f{i}": pa.float64() if name in numeric else pa.string()
        for i, name in enumerate(layout.header)
    }
    try:
        table = _arrow_csv(data, layout.delimiter, types)
    except pa.ArrowInvalid:  # some value is not a plain number: parse every column as text
        try:
            table = _arrow_csv(data, layout.delimiter, dict.fromkeys(types, pa.string()))
        except pa.ArrowInvalid:
            return None
    if table.num_rows != records:
        return None
    return [  # Arrow strings and float64 arrays, which the value parsers take as they are
        column.combine_chunks() if column.type == pa.string() else column.to_numpy()
        for column in table.columns
    ]


def _read_records_or_error(
    text: str, source: str, options: ReaderOptions, undecoded: Sequence[Reject] = ()
) -> ReadResult | UnreadableFileError:
    """Read one file record by record (any quoting, malformed rows set aside).

    ``undecoded`` are the rejects of the lines that were not UTF-8 (blank in ``text``).
    """
    try:
        header, columns, rows, rejects = _read_records(text, source)
    except UnreadableFileError as exc:
        return exc
    found, wkt_column, missing = _fields(header, options)
    if missing:
        return _no_columns(source, missing, header, found)
    candidates = Candidates(rows)
    unparseable = (
        _fill(candidates, columns, header, found, options, wkt_column) if len(rows) else {}
    )
    ignored = {name: int(bad.sum()) for name, bad in unparseable.items()}
    return finish(source, FORMAT, candidates, [*rejects, *undecoded], ignored)


def _fields(
    header: list[str], options: ReaderOptions
) -> tuple[dict[str, Column], str | None, list[str]]:
    """Find the fields' columns in a header: found, the WKT point column, required ones missing."""
    found = find_columns(header, options.csv_columns)
    wkt_column = _wkt_point_column(header) if {"lat", "lon"} - set(found) else None
    missing = [f for f in REQUIRED if f not in found and not (wkt_column and f in ("lat", "lon"))]
    return found, wkt_column, missing


def _no_columns(
    source: str, missing: list[str], header: list[str], found: dict[str, Column]
) -> UnreadableFileError:
    """Return the error for a file without a latitude, longitude or time column."""
    return unreadable(
        source,
        f"no {'/'.join(missing)} column ({describe_header(found, len(header))})",
        "name them lat, lon and time, or map them in the config (ingest.csv_columns)",
    )


def _arrow_csv(data: bytes, delimiter: str, types: dict[str, pa.DataType]) -> pa.Table:
    """Read CSV bytes after their header line into the columns ``types`` names and types.

    Every line must have that many fields: Arrow raises ``ArrowInvalid`` for one that has not.
    """
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(types), use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=ARROW_NULL_WORDS,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _read_records(text: str, source: str) -> Records:
    """Read the file record by record (any quoting), setting aside malformed rows."""
    header, records, starts = _split_records(text, source)
    width = len(header)
    rejects: list[Reject] = []
    good, good_rows = records, starts
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    if (lengths != width).any():
        good, good_rows = [], []
        for record, start, length in zip(records, starts, lengths.tolist(), strict=True):
            if length > width and not any(v.strip() for v in record[width:]):
                record = record[:width]  # trailing empty fields, e.g. a trailing delimiter
            elif length != width:
                detail = f"{length} fields, the header has {width}"
                rejects.append(Reject(start, MALFORMED_ROW, detail))
                continue
            good.append(record)
            good_rows.append(start)
    columns = [np.array(c, dtype=object) for c in zip(*good, strict=True)]
    return header, columns, np.array(good_rows, dtype="int64"), rejects


def _wkt_point_column(header: list[str]) -> str | None:
    """Return the column holding WKT points (``POINT (lon lat)``), if the header has one."""
    return next((name for name in header if name.strip().lower() in WKT_COLUMNS), None)


def _wkt_point_coordinates(values: np.ndarray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Split WKT ``POINT (lon lat)`` texts into lon and lat texts (empty where not a point)."""
    parts = pd.Series(values, dtype=object).astype(str).str.extract(WKT_POINT, expand=True)
    parts = parts.fillna("")
    return parts[0].to_numpy(dtype=object), parts[1].to_numpy(dtype=object)


def _split_records(text: str, source: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Return the header, the non-blank records and the line number each record starts on."""
    first_line = next((line for line in io.StringIO(text) if line.strip()), "")
    delimiter = max(DELIMITERS, key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[list[str]] = []
    starts: list[int] = []
    try:
        if '"' not in text:  # no quoted line breaks: one record per line, read at C speed
            numbered = enumerate(list(reader), start=1)
            kept = [(n, r) for n, r in numbered if r and (len(r) > 1 or r[0].strip())]
            starts = [n for n, _ in kept]
            records = [r for _, r in kept]
        else:
            previous_end = 0
            for record in reader:
                if record and (len(record) > 1 or record[0].strip()):
                    records.append(record)
                    starts.append(previous_end + 1)
                previous_end = reader.line_num
    except csv.Error as exc:
        problem = f"not valid CSV at line {reader.line_num} ({exc})"
        raise unreadable(source, problem, FIX_HINT) from None
    if not records:
        raise unreadable(source, "no header row", FIX_HINT)
    header = [name.strip() for name in records[0]]
    return header, records[1:], starts[1:]


def _fill(
    candidates: Candidates,
    columns: Columns,
    header: list[str],
    found: dict[str, Column],
    options: ReaderOptions,
    wkt_column: str | None,
) -> dict[str, np.ndarray]:
    """Parse the columns' values into the candidates; return the rows of each unparseable field.

    Unparseable optional values (hdop, speed, ...) become NaN: the returned masks, by
    ``unparseable_<field>``, are what the readers count in ``ignored``.
    """
    unparseable: dict[str, np.ndarray] = {}
    index = {name: i for i, name in reversed(list(enumerate(header)))}

    def values(field: str) -> np.ndarray | pa.Array:
        return columns[index[found[field].name]]

    if wkt_column is not None:
        lon, lat = _wkt_point_coordinates(columns[index[wkt_column]])
        candidates.set_coordinates(lon, lat)
    else:
        candidates.set_coordinates(values("lon"), values("lat"))
    scale = found["time"].scale
    unit = options.csv_time_unit or (scale if isinstance(scale, str) else None)
    candidates.set_times(values("time"), unit)
    for field in OPTIONAL_FLOATS:
        if field not in found:
            continue
        parsed, bad = to_float(values(field))
        factor = found[field].scale
        candidates.columns[field] = parsed * (factor if isinstance(factor, float) else 1.0)
        unparseable[f"unparseable_{field}"] = bad
    for field in IDENTITIES:
        if field in found:
            candidates.set(field, values(field))
    return unparseable
