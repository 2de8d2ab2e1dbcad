"""Trace readers: every supported upload format -> one table of fixes and one of rejects.

:func:`read_trace_file` reads GPX, NMEA 0183, CSV/TSV, GeoJSON, (Geo)Parquet and frame JSON
(format from :func:`detect_format`) and returns a :class:`ReadResult`:

* ``fixes`` (:data:`FIX_COLUMNS`): ``source_file`` (the path as given), ``source_row`` (int64,
  meaning per format below), ``observed_at`` (``datetime64[ms, UTC]``, never NaT), ``lon`` and
  ``lat`` (float64, never NaN; implausible values are passed on to cleaning), ``hdop``,
  ``speed_mps``, ``heading_deg``, ``elevation_m`` (float64, NaN when absent), and
  ``contributor_id``/``device_id`` (object: str, or None when the file does not say);
* ``rejects`` (:data:`REJECT_COLUMNS`): one row per input row that could not be turned into a
  fix, with a reason (``malformed_row``, ``invalid_encoding``, ``bad_checksum``,
  ``invalid_fix``, ``missing_coordinates``, ``unparseable_coordinates``, ``missing_time``,
  ``unparseable_time``, ``missing_date`` (NMEA GGA of a log without a date), or
  ``file_too_large`` for a whole file) and a detail saying what was found;
* ``rows_read == len(fixes) + len(rejects)``, always.

``source_row`` per format: CSV/TSV the 1-based line number (header = line 1); NMEA the line
number (lines end at a line feed) of the fix's RMC sentence (GGA in a log without RMC); GPX the
1-based ordinal of the ``<trkpt>``; GeoJSON the 1-based ordinal of the Point feature or line
vertex across the file; Parquet the 0-based row index + 1; frame JSON the 1-based ordinal of
the frame (JSON Lines: the line number). Each reader module documents its format's details.

A file that cannot be read at all (empty, binary, not in the encoding it claims, corrupt or
truncated XML/JSON/Parquet, no position or time column) raises :class:`UnreadableFileError`,
whose one-line message names the file, the problem and the fix.

Bounded by design: a file whose text is larger than ``ReaderOptions.max_decoded_bytes`` (read
no further than that), a Parquet file whose row count or stored size (from its metadata) or
decoded values are over the limits, and any file with more than
``ReaderOptions.max_file_rows`` rows is one ``file_too_large`` reject (``source_row`` 0, the
limit and the setting to raise in its detail), without fixes. A detail quotes at most
:data:`~pipeline.ingest.readers.base.MAX_DETAIL_VALUE` characters of a value from the file,
escaped, and never a whole line.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.ingest.readers.base import (
    FILE_TOO_LARGE,
    FIX_COLUMNS,
    MISSING_DATE,
    REJECT_COLUMNS,
    FileTooLargeError,
    ReaderOptions,
    ReadResult,
    UnreadableFileError,
    fix_frame,
    repeated,
    too_large_result,
)
from pipeline.ingest.readers.delimited import read_csv, read_csv_files
from pipeline.ingest.readers.detect import FORMATS, detect_format
from pipeline.ingest.readers.frames import read_frames
from pipeline.ingest.readers.geojson import read_geojson
from pipeline.ingest.readers.gpx import read_gpx
from pipeline.ingest.readers.nmea import read_nmea
from pipeline.ingest.readers.parquet import read_parquet

__all__ = [
    "FILE_TOO_LARGE",
    "FIX_COLUMNS",
    "FORMATS",
    "MISSING_DATE",
    "REJECT_COLUMNS",
    "FileTooLargeError",
    "ReadResult",
    "ReaderOptions",
    "UnreadableFileError",
    "detect_format",
    "fix_frame",
    "read_trace_file",
    "read_trace_files",
    "repeated",
]

Reader = Callable[[Path, str, ReaderOptions], ReadResult]
READERS: dict[str, Reader] = {
    "gpx": read_gpx,
    "nmea": read_nmea,
    "csv": read_csv,
    "geojson": read_geojson,
    "parquet": read_parquet,
    "framejson": read_frames,
}


def read_trace_file(
    path: Path,
    options: ReaderOptions = ReaderOptions(),  # noqa: B008
    source: str | None = None,
) -> ReadResult:
    """Read one trace file into fixes and rejects.

    Parameters
    ----------
    path
        The file; its format is found by :func:`detect_format`.
    options
        How to read CSV files whose layout is not detected automatically, and the limits.
    source
        The ``source_file`` of every row, and the name in errors (default ``str(path)``).

    Returns
    -------
    ReadResult
        Fixes, rejects, the row count and the things ignored; for a file over a limit, one
        ``file_too_large`` reject.

    Raises
    ------
    UnreadableFileError
        If the file as a whole cannot be read.
    """
    path = Path(path)
    fmt = detect_format(path)
    name = source if source is not None else str(path)
    try:
        result: ReadResult | UnreadableFileError = READERS[fmt](path, name, options)
    except FileTooLargeError as exc:
        result = exc
    checked = _within_limits(result, name, fmt, options)
    if isinstance(checked, UnreadableFileError):
        raise checked
    return checked


def _within_limits(
    result: ReadResult | UnreadableFileError, source: str, fmt: str, options: ReaderOptions
) -> ReadResult | UnreadableFileError:
    """Turn a file over a limit (an error, or too many rows read) into its one reject."""
    if isinstance(result, FileTooLargeError):
        return too_large_result(result, source, fmt)
    if isinstance(result, ReadResult) and result.rows_read > options.max_file_rows:
        error = FileTooLargeError.rows(source, result.rows_read, options.max_file_rows)
        return too_large_result(error, source, fmt)
    return result


def read_trace_files(
    paths: Sequence[Path],
    options: ReaderOptions = ReaderOptions(),  # noqa: B008
    sources: Sequence[str] | None = None,
    log_dates: Sequence[datetime.date | None] | None = None,
) -> list[ReadResult | UnreadableFileError]:
    """Read many trace files: per file, what :func:`read_trace_file` returns or raises.

    CSV files are read together (:func:`~pipeline.ingest.readers.delimited.read_csv_files`:
    files with the same header are parsed as one), the others one by one. One file that
    cannot be read does not stop the others; one over a limit is one ``file_too_large``
    reject, as in :func:`read_trace_file`. ``log_dates`` gives each file its
    :attr:`ReaderOptions.log_date` (the date of its upload), where not None.
    """
    names = list(sources) if sources is not None else [str(p) for p in paths]
    results: dict[int, ReadResult | UnreadableFileError] = {}
    formats: dict[int, str] = {}
    csv_files: list[int] = []
    for i, path in enumerate(paths):
        try:
            formats[i] = fmt = detect_format(Path(path))
            if fmt == "csv":
                csv_files.append(i)
            else:
                dated = replace(options, log_date=log_dates[i]) if log_dates else options
                results[i] = READERS[fmt](Path(path), names[i], dated)
        except UnreadableFileError as exc:
            results[i] = exc
    read = read_csv_files(
        [Path(paths[i]) for i in csv_files], [names[i] for i in csv_files], options
    )
    results.update(zip(csv_files, read, strict=True))
    return [
        _within_limits(results[i], names[i], formats.get(i, ""), options) for i in range(len(paths))
    ]
