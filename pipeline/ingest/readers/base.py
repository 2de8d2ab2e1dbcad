"""What every trace reader shares: the result types, value parsing and the final assembly.

A reader turns each input row into a *candidate* (one row of :data:`FIX_COLUMNS`) or, when the
row cannot even be split into fields, into a ``malformed_row`` reject. Candidates whose time or
coordinates cannot be parsed are then rejected with the first problem found, in this order:
``invalid_fix``, ``missing_coordinates``, ``unparseable_coordinates``, ``missing_time``,
``unparseable_time``. Values that parse but are implausible (``lat=95``, ``(0, 0)``, a time in
1970) are passed through: judging them is the job of cleaning.
"""

from __future__ import annotations

import copy
import datetime
import functools
import logging
import os
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

FIX_COLUMNS = [
    "source_file",
    "source_row",
    "observed_at",
    "lon",
    "lat",
    "hdop",
    "speed_mps",
    "heading_deg",
    "elevation_m",
    "contributor_id",
    "device_id",
]
REJECT_COLUMNS = ["source_file", "source_row", "reason", "detail"]
OPTIONAL_FLOATS = ("hdop", "speed_mps", "heading_deg", "elevation_m")
IDENTITIES = ("contributor_id", "device_id")
TIME_DTYPE = pd.DatetimeTZDtype(unit="ms", tz="UTC")

MALFORMED_ROW = "malformed_row"
BAD_CHECKSUM = "bad_checksum"
MISSING_TIME = "missing_time"
MISSING_DATE = "missing_date"
UNPARSEABLE_TIME = "unparseable_time"
MISSING_COORDINATES = "missing_coordinates"
UNPARSEABLE_COORDINATES = "unparseable_coordinates"
INVALID_FIX = "invalid_fix"
INVALID_ENCODING = "invalid_encoding"
FILE_TOO_LARGE = "file_too_large"
WHOLE_FILE_ROW = 0  # the ``source_row`` of a reject that stands for the whole file

KMH_TO_MPS = 1.0 / 3.6
KNOTS_TO_MPS = 1852.0 / 3600.0
MAX_DETAIL_VALUE = 40  # characters of a raw value quoted in a reject's detail
MAX_PROBLEM = 200  # characters of the problem in an unreadable file's message
MB = 2**20  # the "MB" of ``ingest.max_decoded_mb``
DEFAULT_MAX_FILE_ROWS = 2_000_000  # 23 days of 1 Hz fixes, 55 hours of 10 Hz
DEFAULT_MAX_DECODED_MB = 128.0
_MAX_EPOCH_MS = 1e15  # about year 33658: anything larger is not a time
_EPOCH_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_DECIMAL_COMMA = r"[+-]?\d+,\d+"
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_PLAIN = frozenset({"string", "empty", "floating", "integer", "mixed-integer-float", "decimal"})
NULL_WORDS = frozenset({"", "nan", "null", "none", "na", "n/a"})  # absent values, any case
_NULL_WORDS_ARRAY = pa.array(sorted(NULL_WORDS), type=pa.string())
_DATE_ONLY = r"\d{4}-?\d{2}-?\d{2}"
_PUNCTUATION = re.compile(r"[^0-9a-z]+")
MAX_JSON_DEPTH = 64  # JSON nesting deeper than this is refused (a GeoJSON trace nests ~6)
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))  # deleted to find the nesting
_ESCAPE = re.compile(rb"\\.", re.S)
_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


class UnreadableFileError(InputDataError):
    """A whole file cannot be read: empty, binary, corrupt, truncated or in an unknown format."""


class FileTooLargeError(UnreadableFileError):
    """A file holds more rows, or decodes to more bytes, than one file may.

    The readers raise it as soon as a limit of :class:`ReaderOptions` is passed, before
    decoding more; :func:`~pipeline.ingest.readers.read_trace_file` turns it into one
    ``file_too_large`` reject for the file.

    Parameters
    ----------
    source
        The file.
    detail
        What was found and the limit, e.g. ``"20,000,000 rows, more than ..."``.
    """

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.detail = detail

    @classmethod
    def rows(cls, source: str, rows: int, limit: int) -> FileTooLargeError:
        """Return the error for a file of ``rows`` rows, more than ``limit``."""
        return cls(
            source,
            f"{rows:,} rows, more than one file may hold (ingest.max_file_rows = {limit:,}); "
            "split the file, or raise ingest.max_file_rows",
        )

    @classmethod
    def decoded(cls, source: str, what: str, limit_bytes: int) -> FileTooLargeError:
        """Return the error for a file of ``what`` (``"text of"``) more than ``limit_bytes``."""
        return cls(
            source,
            f"{what} more than {limit_bytes / MB:g} MB, the most one file may decode to "
            "(ingest.max_decoded_mb); split the file, or raise ingest.max_decoded_mb",
        )


@dataclass(frozen=True)
class ReaderOptions:
    """How to read files whose layout cannot be detected.

    Parameters
    ----------
    csv_columns
        Field name (``lat``, ``lon``, ``time``, ``hdop``, ``speed_mps``, ``heading_deg``,
        ``elevation_m``, ``device_id``, ``contributor_id``) -> the CSV column holding it,
        overriding auto-detection (config ``ingest.csv_columns``).
    csv_time_unit
        ``"s"`` or ``"ms"`` for epoch times in CSV files; None decides by magnitude.
    max_file_rows
        The most rows one file may hold (config ``ingest.max_file_rows``).
    max_decoded_mb
        The most one file may decode to, in MB (2^20 bytes): its text, or a Parquet file's
        values (config ``ingest.max_decoded_mb``).
    log_date
        The UTC date of the file's first fix, from its upload (sidecar ``date``, config
        ``ingest.log_dates``), for logs whose fixes carry no date (NMEA GGA without RMC).
    """

    csv_columns: Mapping[str, str] | None = None
    csv_time_unit: str | None = None
    max_file_rows: int = DEFAULT_MAX_FILE_ROWS
    max_decoded_mb: float = DEFAULT_MAX_DECODED_MB
    log_date: datetime.date | None = None

    @property
    def max_decoded_bytes(self) -> int:
        """:attr:`max_decoded_mb` in bytes."""
        return int(self.max_decoded_mb * MB)


@dataclass
class ReadResult:
    """Everything read from one trace file.

    Attributes
    ----------
    columns
        The parsed fixes as arrays, in file order: :data:`FIX_COLUMNS` but ``source_file``,
        with ``observed_at`` as naive UTC ``datetime64[ms]``. What the ingest stage gathers
        for a chunk of files before it builds one table; ``fixes`` is the same as a table.
    source
        The ``source_file`` of every fix and reject.
    rejects
        :data:`REJECT_COLUMNS`, one row per input row that could not be turned into a fix.
    rows_read
        Always ``len(fixes) + len(rejects)``.
    format
        ``gpx``, ``nmea``, ``csv``, ``geojson``, ``parquet`` or ``framejson``.
    ignored
        Counts of things in the file that are not rows (e.g. NMEA sentence types not used).
    samples
        For some keys of ``ignored``, the first such thing, quoted (e.g. a line of text that
        is not an NMEA sentence).
    """

    columns: dict[str, np.ndarray]
    source: str
    rejects: pd.DataFrame
    rows_read: int
    format: str
    ignored: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def fixes(self) -> pd.DataFrame:
        """:data:`FIX_COLUMNS`, one row per parsed fix, in file order (built when asked for)."""
        count = len(self.columns["source_row"])
        return fix_frame({"source_file": repeated(self.source, count), **self.columns})


def repeated(value: Any, count: int) -> np.ndarray:
    """Return an object array of ``count`` references to one ``value`` (e.g. an id per row).

    ``np.full(count, "id", dtype=object)`` goes through a NumPy string and makes a new ``str``
    per row: nine times slower, and as many copies in memory.
    """
    out = np.empty(count, dtype=object)
    out.fill(value)
    return out


def fix_frame(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Build the fixes table from :data:`FIX_COLUMNS` arrays (``observed_at`` naive UTC).

    Columns beyond :data:`FIX_COLUMNS` (e.g. ``trace_id``) follow them, in their order.
    """
    names = [*FIX_COLUMNS, *(name for name in columns if name not in FIX_COLUMNS)]
    frame: dict[str, Any] = {}
    for name in names:
        values = columns[name]
        if name == "observed_at":
            frame[name] = pd.DatetimeIndex(values, copy=False).tz_localize("UTC")
        elif values.dtype == object:  # ids stay objects (pandas would make them ``str``)
            frame[name] = pd.Series(values, dtype=object, copy=False)
        else:
            frame[name] = values
    return pd.DataFrame(frame, copy=False)


@dataclass
class Reject:
    """One input row that could not be split into fields at all."""

    source_row: int
    reason: str
    detail: str


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = MAX_DETAIL_VALUE
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = _SHORT_REPR.maxtuple = 4
_SHORT_REPR.maxlevel = 3


def quote(value: Any) -> str:
    """Return ``repr(value)`` (escaped), shortened to :data:`MAX_DETAIL_VALUE` characters.

    Long strings and lists are cut before they are turned into text, so quoting a huge value
    costs no more than quoting a short one.
    """
    text = _SHORT_REPR.repr(value)
    if len(text) > MAX_DETAIL_VALUE:
        text = text[: MAX_DETAIL_VALUE - 3] + "..."
    return text


def unreadable(source: str, problem: str, fix: str) -> UnreadableFileError:
    """Build the one-line error for a file that cannot be read.

    The problem is cut to :data:`MAX_PROBLEM` characters: some come from a library's error
    message, which may quote the file.
    """
    problem = re.sub(r"\s*[\r\n]+\s*", " ", problem).strip()  # e.g. multi-line Arrow errors
    if len(problem) > MAX_PROBLEM:
        problem = problem[: MAX_PROBLEM - 3] + "..."
    return UnreadableFileError(f"{source}: {problem}; {fix}")


def read_bytes(path: Path, source: str, limit: int) -> bytes:
    """Read a whole file, refusing missing and empty files and files over ``limit`` bytes.

    At most ``limit + 1`` bytes are read, whatever the file says its size is (a device file
    such as ``/dev/zero`` says 0).

    Raises
    ------
    FileTooLargeError
        If the file holds more than ``limit`` bytes.
    UnreadableFileError
        If it cannot be read, or is empty.
    """
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size > limit:
                raise FileTooLargeError.decoded(source, "text of", limit)
            data = handle.read(limit + 1)
    except OSError as exc:
        raise unreadable(
            source, f"cannot be read ({exc.strerror or exc})", "check the path"
        ) from None
    if len(data) > limit:
        raise FileTooLargeError.decoded(source, "text of", limit)
    if not data or data.isspace():  # as `not data.strip()`, without copying the data
        raise unreadable(source, "empty file, no trace data", "upload the trace file again")
    return data


def decode_text(data: bytes, source: str, fix: str) -> str:
    """Decode UTF-8 text (with or without a byte-order mark), refusing binary data.

    Parameters
    ----------
    data
        The file's bytes.
    source
        The file, for the error message.
    fix
        What the user should do, e.g. ``"re-export the file as CSV in UTF-8"``.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise unreadable(source, "UTF-16 text is not supported", "re-save the file as UTF-8")
    if b"\x00" in data:
        raise unreadable(source, "binary data, not a text trace file", fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise unreadable(
            source,
            f"not UTF-8 text (byte 0x{bad} at offset {exc.start})",
            "re-save the file as UTF-8",
        ) from None


CSV_LINE_BREAK = re.compile("(\r\n|\r|\n)")  # where the csv module ends a line
TEXT_LINE_BREAK = re.compile(  # where ``str.splitlines`` ends a line
    "(\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])"
)
_UNDECODED = re.compile("[\udc80-\udcff]")  # a byte ``surrogateescape`` could not decode


def decode_lines(
    data: bytes, source: str, fix: str, line_break: re.Pattern[str] = CSV_LINE_BREAK
) -> tuple[str, list[Reject]]:
    """Decode UTF-8 text as :func:`decode_text`, except that a line that is not UTF-8 is a row.

    Each such line is blanked (its line break kept, so lines keep their numbers) and becomes
    an ``invalid_encoding`` reject naming its first bad byte and column, and none of its text.

    Parameters
    ----------
    data, source, fix
        As for :func:`decode_text`.
    line_break
        Where lines end (a pattern with one group), as the reader numbers them.

    Raises
    ------
    UnreadableFileError
        As :func:`decode_text`, and if the first line that is not blank (a header) is not
        UTF-8.
    """
    try:
        return decode_text(data, source, fix), []
    except UnreadableFileError:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
            raise
    pieces = line_break.split(data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"))
    rejects: list[Reject] = []
    header_seen = False
    for index in range(0, len(pieces), 2):  # lines; the breaks are between them
        bad = _UNDECODED.search(pieces[index])
        if bad is None:
            header_seen = header_seen or bool(pieces[index].strip())
            continue
        number, column = index // 2 + 1, bad.start() + 1
        problem = f"not UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at column {column})"
        if not header_seen:
            raise unreadable(source, f"line {number} is {problem}", "re-save the file as UTF-8")
        rejects.append(Reject(number, INVALID_ENCODING, f"{problem}; re-save the file as UTF-8"))
        pieces[index] = ""
    return "".join(pieces), rejects


def json_nesting_depth(data: bytes) -> int:
    """Return how deep the arrays and objects of a JSON document nest (0: a scalar).

    Brackets and braces outside strings are counted, so this is also the depth a parser
    would reach in a document that is not valid JSON.
    """
    if b"\\" in data:  # escapes: drop them, so that no escaped quote is left
        data = _ESCAPE.sub(b"", data)
    structure = np.frombuffer(data.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quotes = structure == ord('"')
    outside = (np.cumsum(quotes) % 2 == 0) & ~quotes  # brackets in strings do not count
    steps = np.where(outside, _DEPTH_STEP[structure], 0)
    return int(np.cumsum(steps).max(initial=0))


@functools.lru_cache(maxsize=4096)  # the same few names, on every feature of a GeoJSON file
def normalize_name(name: str) -> str:
    """Lower-case a column/property name and turn punctuation into ``_`` (``Speed (km/h)``)."""
    return _PUNCTUATION.sub("_", name.strip().lower()).strip("_")


RawValues: TypeAlias = Sequence[Any] | np.ndarray | pd.Series | pa.Array
"""A column of raw values as a reader found them: a list, an array, a Series or Arrow strings."""


def _scalars(raw: RawValues) -> pd.Series:
    """Raw values as a Series in which anything but a string, number or null is a string."""
    if isinstance(raw, pd.Series):
        series = raw.reset_index(drop=True)
    elif isinstance(raw, pa.Array):
        series = raw.to_pandas()
    elif isinstance(raw, np.ndarray):
        series = pd.Series(raw)
    else:
        series = pd.Series(list(raw), dtype=object)
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) not in _PLAIN:
        odd = series.map(lambda v: isinstance(v, bool | list | dict | tuple)).to_numpy(dtype=bool)
        if odd.any():
            series = series.copy()
            series[odd] = series[odd].map(repr)
    return series


def _text(series: pd.Series) -> pd.Series:
    """Values as stripped Arrow-backed strings (nulls stay null)."""
    return series.astype("string[pyarrow]").str.strip()


def _null_words(text: pd.Series) -> np.ndarray:
    missing = text.isna().to_numpy(dtype=bool)
    return missing | text.str.lower().isin(NULL_WORDS).to_numpy(dtype=bool, na_value=False)


def to_float(raw: RawValues) -> tuple[np.ndarray, np.ndarray]:
    """Parse raw values as float64, accepting a decimal comma (``60,17``).

    Returns
    -------
    values
        float64, NaN where absent or unparseable.
    bad
        True where a value is present but not a number.
    """
    if isinstance(raw, np.ndarray) and raw.dtype.kind == "f":  # parsed already, e.g. by Arrow
        return raw.astype("float64", copy=False), np.zeros(len(raw), dtype=bool)
    fast = _to_float_arrow(raw)
    if fast is None:
        fast = _numbers_to_float(raw)
    if fast is not None:
        return fast
    series = _scalars(raw)
    if series.dtype.kind in "fiu":
        values = series.to_numpy(dtype="float64", na_value=np.nan, copy=True)
        return values, np.zeros(len(values), dtype=bool)
    text = _text(series)
    missing = _null_words(text)
    values = np.full(len(text), np.nan)
    present = text[~missing]
    try:
        parsed = pc.cast(pa.array(present, type=pa.string()), pa.float64())
        values[~missing] = parsed.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        comma = present.str.fullmatch(_DECIMAL_COMMA).fillna(False).astype(bool)
        present = present.where(~comma, present.str.replace(",", ".", regex=False))
        values[~missing] = pd.to_numeric(present, errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
    return values, np.isnan(values) & ~missing


_NUMBER_TYPES = frozenset({int, float, bool})


def _string_array(raw: RawValues) -> pa.StringArray | None:
    """``raw`` as an Arrow string array when every value is a ``str`` or None, else None.

    Accepts lists, object arrays, Arrow arrays (as the CSV reader gives) and Series.
    """
    if isinstance(raw, pa.Array):
        if pa.types.is_null(raw.type):
            return raw.cast(pa.string())
        return raw if pa.types.is_string(raw.type) else None
    if isinstance(raw, pd.Series):
        backing = raw.array
        if isinstance(backing, pd.arrays.ArrowStringArray):
            return pa.array(backing)
        raw = raw.to_numpy(dtype=object) if raw.dtype == object else raw.to_numpy()
    if isinstance(raw, np.ndarray) and raw.dtype.kind != "O":
        return None
    if not isinstance(raw, list | np.ndarray):
        return None
    if isinstance(raw, list) and raw and type(raw[0]) in _NUMBER_TYPES:
        return None  # no string array starts with a number (as JSON values do)
    try:
        array = pa.array(raw)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):  # e.g. an int over 2**63
        return None
    if pa.types.is_null(array.type):  # all None
        return array.cast(pa.string())
    if not pa.types.is_string(array.type):  # only str and None (not bytes, numbers, ...)
        return None
    return array


def _cast_strings(raw: RawValues, target: pa.DataType) -> tuple[np.ndarray, pa.Array] | None:
    """Strip raw string values, find the absent ones and cast the others to ``target``, in Arrow.

    The fast path of :func:`to_float` and :func:`parse_utc_times`: the same steps as their general
    paths (strip, null words, parse) at C speed.

    Returns
    -------
    tuple or None
        The mask of absent values (null, blank or a null word) and the cast present values;
        None when the values are not all ``str`` or None, or when any of them does not cast:
        a decimal comma, a naive or date-only time, an epoch number. The caller's general
        path then reads every value, and says which ones are bad.
    """
    array = _string_array(raw)
    if array is None:
        return None
    text = pc.utf8_trim_whitespace(array)
    every_one = _cast_every_one(text, target)
    if every_one is not None:
        return every_one
    null_word = pc.is_in(pc.utf8_lower(text), value_set=_NULL_WORDS_ARRAY)  # false for nulls
    missing = pc.or_(pc.is_null(text), null_word).to_numpy(zero_copy_only=False).astype(bool)
    try:
        return missing, pc.cast(text.filter(pa.array(~missing)), target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _cast_every_one(
    text: pa.StringArray, target: pa.DataType
) -> tuple[np.ndarray, pa.Array] | None:
    """:func:`_cast_strings` of stripped strings that all cast to ``target``, none to NaN.

    Then no string is blank or a null word (of those, only ``nan`` casts, to NaN), so only the
    nulls are absent, and the null words need not be looked for. None otherwise.
    """
    try:
        parsed = pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a blank, null word or bad value
        return None  # the caller then looks for the null words, and casts the rest
    if pa.types.is_floating(target) and pc.any(pc.is_nan(parsed)).as_py():
        return None
    missing = parsed.is_null().to_numpy(zero_copy_only=False)
    return missing, parsed.drop_null()


def _to_float_arrow(
    raw: RawValues,
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`to_float` for raw values that are all ``str`` (or None) and all cast."""
    cast = _cast_strings(raw, pa.float64())
    if cast is None:
        return None
    missing, parsed = cast
    values = np.full(len(missing), np.nan)
    values[~missing] = parsed.to_numpy(zero_copy_only=False)
    return values, np.isnan(values) & ~missing


def to_float_columns(strings: pa.StringArray, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return :func:`to_float` of each of the ``width`` columns ``strings`` holds in turn.

    All columns are parsed in one Arrow pass when every value casts (as :func:`to_float`
    would parse each column); otherwise column by column, each exactly as :func:`to_float`.
    """
    count = len(strings) // width
    parsed = _to_float_arrow(strings)
    if parsed is None:
        return [to_float(strings.slice(column * count, count)) for column in range(width)]
    values, bad = parsed
    return [
        (values[column * count : (column + 1) * count], bad[column * count : (column + 1) * count])
        for column in range(width)
    ]


_BOOL_TYPES = frozenset({bool, np.bool_})


def _numbers_to_float(
    raw: RawValues,
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`to_float` for raw values that are all numbers (not bools) or None, as in JSON."""
    if not isinstance(raw, list) and not (isinstance(raw, np.ndarray) and raw.dtype == object):
        return None
    if not _BOOL_TYPES.isdisjoint(map(type, raw)):  # Arrow takes True as 1.0 after a float
        return None
    try:
        array = pa.array(raw, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        return None
    values = array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    return values, np.zeros(len(values), dtype=bool)


def string_buffers(strings: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """Return the offsets (int64, one more than the strings) and UTF-8 bytes of an array.

    String ``i`` is ``data[offsets[i]:offsets[i + 1]]``; nulls are empty.
    """
    _, offsets_buffer, data_buffer = strings.buffers()
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
    offsets = offsets[strings.offset : strings.offset + len(strings) + 1].astype(np.int64)
    if data_buffer is None:
        return offsets, np.zeros(0, dtype=np.uint8)
    return offsets, np.frombuffer(data_buffer, dtype=np.uint8)


def strings_from_slices(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray | None = None
) -> pa.StringArray:
    """Gather ``data[start:end]`` (UTF-8 bytes) for each pair as Arrow strings, in one step.

    Rows where ``valid`` is False are null. The slices must cut ``data`` at character bounds.
    Slices in the order of ``data`` (as the fields of lines are) are cut out by Arrow, with
    :func:`ordered_slices`; others are gathered with NumPy.
    """
    valid = np.ones(len(starts), dtype=bool) if valid is None else valid
    pieces = ordered_slices(data, starts[valid], ends[valid])
    if pieces is None:
        return _gathered_slices(data, starts, ends, valid)
    positions = np.zeros(len(starts), dtype=np.int64)
    positions[valid] = np.arange(0, 2 * int(valid.sum()), 2)
    return pieces.take(pa.array(positions, mask=~valid))


def ordered_slices(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray | None:
    """Return the slices ``data[start:end]`` and the gaps between them as one Arrow array.

    Slice ``i`` is element ``2 * i`` (take them with ``pyarrow.compute.take``); ``data`` is
    not copied. None unless every slice starts at or after the end of the one before, and
    ``data`` fits 32-bit offsets.
    """
    bounds = np.empty(2 * len(starts) + 1, dtype=np.int64)
    bounds[0:-1:2], bounds[1:-1:2], bounds[-1] = starts, ends, len(data)
    if len(data) >= 2**31 - 1 or (np.diff(bounds) < 0).any() or (len(starts) and starts[0] < 0):
        return None
    return pa.StringArray.from_buffers(
        len(bounds) - 1, pa.py_buffer(bounds.astype(np.int32)), pa.py_buffer(data)
    )


def _gathered_slices(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray
) -> pa.StringArray:
    """:func:`strings_from_slices` for slices in any order, gathered with NumPy."""
    lengths = np.where(valid, ends - starts, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("int32")
    positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.StringArray.from_buffers(
        len(starts),
        pa.py_buffer(offsets),
        pa.py_buffer(data[positions].tobytes()),
        pa.py_buffer(np.packbits(valid, bitorder="little")),
        int((~valid).sum()),
    )


def to_optional_float(raw: RawValues) -> np.ndarray:
    """Parse optional numeric values as float64; absent or unparseable values become NaN."""
    return to_float(raw)[0]


def epoch_to_times(values: np.ndarray, unit: str | None) -> np.ndarray:
    """Convert epoch numbers to ``datetime64[ms]`` (NaT where not finite or out of range).

    Parameters
    ----------
    values
        float64 epoch values.
    unit
        ``"s"``, ``"ms"``, ``"us"``, ``"ns"``, or None to decide per value by magnitude:
        above 1e17 nanoseconds, above 1e14 microseconds, above 1e11 milliseconds, else seconds.
    """
    if unit is None:
        magnitude = np.abs(values)
        scale = np.select(
            [magnitude > 1e17, magnitude > 1e14, magnitude > 1e11],
            [_EPOCH_MS_PER_UNIT["ns"], _EPOCH_MS_PER_UNIT["us"], _EPOCH_MS_PER_UNIT["ms"]],
            default=_EPOCH_MS_PER_UNIT["s"],
        )
    else:
        scale = np.full(len(values), _EPOCH_MS_PER_UNIT[unit])
    with np.errstate(invalid="ignore", over="ignore"):
        millis = np.floor(values * scale)
        good = np.isfinite(millis) & (np.abs(millis) < _MAX_EPOCH_MS)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ms]")
    out[good] = millis[good].astype("int64").astype("datetime64[ms]")
    return out


def parse_times(
    raw: RawValues, unit: str | None = None
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse raw times: ISO-8601 strings or epoch numbers, to UTC.

    :func:`parse_utc_times`, with the times as a ``datetime64[ms, UTC]`` Series (RangeIndex).
    """
    times, reasons, details = parse_utc_times(raw, unit)
    return pd.Series(pd.DatetimeIndex(times).tz_localize("UTC"), copy=False), reasons, details


def parse_utc_times(
    raw: RawValues, unit: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse raw times: ISO-8601 strings or epoch numbers, to naive UTC ``datetime64[ms]``.

    ISO-8601 times with ``Z`` or an offset are converted to UTC; naive ones are taken as UTC.
    A date without a time of day is not a usable fix time. Numbers (and numeric strings) are
    Unix epoch times in ``unit`` (see :func:`epoch_to_times`).

    Returns
    -------
    times
        ``datetime64[ms]`` (UTC), NaT where not usable.
    reasons
        ``missing_time``, ``unparseable_time`` or None, per value.
    details
        What was found, e.g. ``time='yesterday'``, or None.
    """
    fast = _parse_times_arrow(raw)
    if fast is not None:
        return fast
    series = _scalars(raw)
    count = len(series)
    out = np.full(count, np.datetime64("NaT"), dtype="datetime64[ms]")
    if series.dtype.kind in "fiu":
        numbers = series.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(numbers)
        out[~missing] = epoch_to_times(numbers[~missing], unit)
    else:
        text = _text(series)
        missing = _null_words(text)
        numeric = ~missing & text.str.fullmatch(_NUMBER).to_numpy(dtype=bool, na_value=False)
        if numeric.any():
            out[numeric] = epoch_to_times(to_float(text[numeric])[0], unit)
        strings = ~missing & ~numeric
        if strings.any():
            chosen = text[strings]
            parsed = pd.to_datetime(chosen, format="ISO8601", utc=True, errors="coerce")
            values = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ms]")
            date_only = chosen.str.fullmatch(_DATE_ONLY).to_numpy(dtype=bool, na_value=False)
            values[date_only] = np.datetime64("NaT")
            out[strings] = values
    bad = np.isnat(out) & ~missing
    return _time_results(out, missing, bad, series[bad])


def _parse_times_arrow(
    raw: RawValues,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`parse_utc_times` for string times that all carry a zone (``Z`` or an offset).

    Arrow parses them at C speed; returns None (use the general path) for anything else:
    values that are not all strings, naive or date-only times, epoch numbers, or any value
    Arrow cannot parse (the general path then finds which).
    """
    cast = _cast_strings(raw, pa.timestamp("ns", tz="UTC"))
    if cast is None:
        return None
    missing, parsed = cast
    nanos = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)
    out = np.full(len(missing), np.datetime64("NaT"), dtype="datetime64[ms]")
    out[~missing] = (nanos // 1_000_000).astype("datetime64[ms]")  # floor, as the general path
    return _time_results(out, missing, np.zeros(len(out), dtype=bool), [])


def _time_results(
    times: np.ndarray, missing: np.ndarray, bad: np.ndarray, bad_values: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_utc_times`'s results from its times and the missing/bad masks."""
    count = len(times)
    reasons = np.full(count, None, dtype=object)
    details = np.full(count, None, dtype=object)
    reasons[missing] = MISSING_TIME
    details[missing] = "no time"
    reasons[bad] = UNPARSEABLE_TIME
    details[bad] = [f"time={quote(v)}" for v in bad_values]
    return times, reasons, details


class Candidates:
    """Columns of candidate fixes being built by a reader, with the first problem per row."""

    def __init__(self, source_row: np.ndarray) -> None:
        self.source_row = np.asarray(source_row, dtype="int64")
        count = len(self.source_row)
        self.columns: dict[str, Any] = {
            "observed_at": np.full(count, np.datetime64("NaT"), "datetime64[ms]"),  # UTC
            "lon": np.full(count, np.nan),
            "lat": np.full(count, np.nan),
            **{name: np.full(count, np.nan) for name in OPTIONAL_FLOATS},
            **{name: np.full(count, None, dtype=object) for name in IDENTITIES},
        }
        self.reason = np.full(count, None, dtype=object)
        self.detail = np.full(count, None, dtype=object)

    def __len__(self) -> int:
        return len(self.source_row)

    def rows(self, start: int, stop: int) -> Candidates:
        """Return the candidates ``start`` to ``stop`` (their arrays are views of these)."""
        part = copy.copy(self)
        part.source_row = self.source_row[start:stop]
        part.columns = {name: values[start:stop] for name, values in self.columns.items()}
        part.reason = self.reason[start:stop]
        part.detail = self.detail[start:stop]
        return part

    def reject(self, mask: np.ndarray, reason: str, detail: np.ndarray | str) -> None:
        """Give ``reason`` to the rows in ``mask`` that have no problem yet."""
        new = np.asarray(mask, dtype=bool) & pd.isna(self.reason)
        if not new.any():
            return
        self.reason[new] = reason
        self.detail[new] = detail if isinstance(detail, str) else np.asarray(detail)[new]

    def set_reasons(self, reasons: np.ndarray, details: np.ndarray) -> None:
        """Apply per-row reasons (None = fine), e.g. from :func:`parse_utc_times`."""
        given = pd.notna(reasons)
        if not given.any():
            return
        for reason in pd.unique(reasons[given]):
            self.reject(reasons == reason, str(reason), details)

    def set_coordinates(
        self,
        lon_raw: Any,
        lat_raw: Any,
        parsed: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        """Parse raw coordinates, rejecting absent or bad ones.

        ``parsed`` is :func:`to_float` of ``lon_raw`` and of ``lat_raw``, when the caller
        has it already.
        """
        (lon_values, lon_bad), (lat_values, lat_bad) = (
            parsed if parsed is not None else (to_float(lon_raw), to_float(lat_raw))
        )
        lon_missing = np.isnan(lon_values) & ~lon_bad
        lat_missing = np.isnan(lat_values) & ~lat_bad
        raw = None
        if (lon_missing | lat_missing | lon_bad | lat_bad).any():
            lons = pd.Series(lon_raw, dtype=object)
            lats = pd.Series(lat_raw, dtype=object)
            raw = np.array(
                [f"lat={quote(a)}, lon={quote(o)}" for a, o in zip(lats, lons, strict=True)],
                dtype=object,
            )
            self.reject(lon_missing | lat_missing, MISSING_COORDINATES, raw)
            self.reject(lon_bad | lat_bad, UNPARSEABLE_COORDINATES, raw)
        self.columns["lon"] = lon_values
        self.columns["lat"] = lat_values

    def set_times(self, raw: Any, unit: str | None = None) -> None:
        """Parse raw times with :func:`parse_utc_times`, rejecting absent or unparseable ones."""
        times, reasons, details = parse_utc_times(raw, unit)
        self.columns["observed_at"] = times
        self.set_reasons(reasons, details)

    def set(self, name: str, values: Any) -> None:
        """Set a column (optional floats and identities; parsed leniently)."""
        if name in OPTIONAL_FLOATS:
            self.columns[name] = to_optional_float(values)
        elif name in IDENTITIES:
            self.columns[name] = identity_values(values, len(self))
        else:
            self.columns[name] = values


def identity_values(values: Any, count: int) -> np.ndarray:
    """Turn raw ids (or one id for all rows) into an object array of str or None."""
    if values is None or isinstance(values, str | int | float):
        text = None if values is None or values != values else str(values).strip() or None
        return repeated(text, count)
    array = _string_array(values)
    if array is not None:  # at C speed: strip, blank -> None
        text = pc.utf8_trim_whitespace(array)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
    stripped = _text(_scalars(values))
    stripped = stripped.mask(stripped == "")
    return stripped.astype(object).where(stripped.notna(), None).to_numpy(dtype=object)


def _utc_datetimes(times: Any) -> np.ndarray:
    """Return times (naive = UTC, or tz-aware) as naive UTC ``datetime64[ms]``."""
    if isinstance(times, np.ndarray) and times.dtype.kind == "M":
        return times.astype("datetime64[ms]", copy=False)
    values = times if isinstance(times, pd.Series) else pd.Series(times, copy=False)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert(None)
    return values.to_numpy(dtype="datetime64[ms]")


_NO_REJECTS = pd.DataFrame(
    {
        "source_file": pd.Series(dtype=object),
        "source_row": pd.Series(dtype="int64"),
        "reason": pd.Series(dtype=object),
        "detail": pd.Series(dtype=object),
    }
)


def finish(
    source: str,
    fmt: str,
    candidates: Candidates,
    malformed: Sequence[Reject] = (),
    ignored: Mapping[str, int] | None = None,
) -> ReadResult:
    """Split candidates into fixes and rejects and build the :class:`ReadResult`."""
    columns = candidates.columns
    ok = pd.isna(candidates.reason)
    all_ok = bool(ok.all())

    def accepted(values: Any, dtype: str) -> np.ndarray:
        array = np.asarray(values, dtype=dtype)
        return array if all_ok else array[ok]

    fixes = {
        "source_row": accepted(candidates.source_row, "int64"),
        "observed_at": accepted(_utc_datetimes(columns["observed_at"]), "datetime64[ms]"),
        **{n: accepted(columns[n], "float64") for n in ("lon", "lat", *OPTIONAL_FLOATS)},
        **{n: accepted(columns[n], "object") for n in IDENTITIES},
    }
    if all_ok and not malformed:
        rejects = _NO_REJECTS.copy()
    else:
        rejects = _rejects(source, candidates, ok, malformed)
    result = ReadResult(
        columns=fixes,
        source=source,
        rejects=rejects,
        rows_read=len(fixes["source_row"]) + len(rejects),
        format=fmt,
        ignored={k: int(v) for k, v in sorted((ignored or {}).items()) if v},
    )
    log.debug(
        "%s: %s, %d row(s), %d fix(es), %d reject(s)",
        source,
        fmt,
        result.rows_read,
        len(fixes["source_row"]),
        len(rejects),
    )
    if result.rows_read == 0:
        log.warning("%s: no trace rows found in this %s file", source, fmt)
    return result


def _rejects(
    source: str, candidates: Candidates, ok: np.ndarray, malformed: Sequence[Reject]
) -> pd.DataFrame:
    """Return the rejects: candidates with a problem and malformed rows, by ``source_row``."""
    bad = ~ok
    rows = np.concatenate(
        [candidates.source_row[bad], np.array([r.source_row for r in malformed], dtype="int64")]
    )
    rejects = pd.DataFrame(
        {
            "source_file": pd.Series([source] * len(rows), dtype=object),
            "source_row": rows.astype("int64"),
            "reason": pd.Series(
                [*candidates.reason[bad], *(r.reason for r in malformed)], dtype=object
            ),
            "detail": pd.Series(
                [*candidates.detail[bad], *(r.detail for r in malformed)], dtype=object
            ),
        },
        columns=REJECT_COLUMNS,
    )
    if (np.diff(rows) < 0).any():  # malformed rows come after the candidates
        rejects = rejects.sort_values("source_row", kind="stable", ignore_index=True)
    return rejects


def too_large_result(error: FileTooLargeError, source: str, fmt: str) -> ReadResult:
    """Return the result of a file over a limit: one ``file_too_large`` reject, no fixes."""
    whole_file = Reject(WHOLE_FILE_ROW, FILE_TOO_LARGE, error.detail)
    return finish(source, fmt, Candidates(np.zeros(0, dtype="int64")), [whole_file])
