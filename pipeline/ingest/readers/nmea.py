r"""NMEA 0183 logs as dashcams and receivers write them: RMC fixes, or GGA fixes without RMC.

Accepted lines are plain sentences (``$GPRMC,...*hh``) or sentences after a prefix such as the
BlackVue Unix time in milliseconds (``[1700000000123]$GPRMC,...``). Any talker is accepted
(``GP``, ``GN``, ``GL``, ``GA``, ``BD``, ...). Parsing is done by hand (only a few sentence
types matter), on positions in the file's bytes: lines, sentences and fields are found with
NumPy, checksums computed and numbers parsed for all sentences at once, without a Python
object per line or field.

Lines and ``source_row``
    Lines end at ``\n`` (or ``\r\n``) only, as ``grep -n`` and editors count them: other
    control bytes (0x0B, 0x0C, 0x1C-0x1E) are not line breaks. A fix's ``source_row`` is the
    1-based line number of its sentence. A line that is damaged (a checksum present and
    wrong: ``bad_checksum``; an RMC, GGA, GSA or ZDA sentence with the wrong number of fields:
    ``malformed_row``) is a reject at its line number, whatever its type, since it cannot be
    trusted. A missing checksum is accepted.
Binary data between sentences
    Receiver dumps interleave binary frames (u-blox UBX, CASIC, ...) with sentences. In a
    line holding a byte that is not ASCII, or a NUL, only the sentences ``$...*hh`` of
    printable ASCII whose checksum matches are read (the checksum decides, and no sentence
    without one is read there); a line holding another control byte (not tab or CR) and no
    ``$`` is binary too. The bytes skipped are counted in ``ignored["binary_bytes"]``. A
    line whose sentence (``$``, a type, a comma) comes before a byte that is not ASCII and
    has no matching checksum is an ``invalid_encoding`` reject (the byte and its column in
    the detail).
Fixes
    The RMC sentences, when the log has any (that pass the checks above). A log without
    them (a GGA-only log) has its GGA sentences as fixes.
Time of an RMC
    RMC date (``ddmmyy``) + time of day, UTC; a two-digit year ``yy`` is 19yy from 80 to 99
    and 20yy from 00 to 79. The line prefix is not the fix time (it is the camera's clock);
    it is used only for the date when the RMC has no date, taking the day that puts the fix
    closest to the prefix time. No date and no prefix: ``missing_time``.
Time of a GGA fix (no RMC in the log)
    GGA has a time of day, no date. Fixes and ZDA sentences, in file order, count days: a day
    passes where the time of day goes back by more than 12 hours (23:59 -> 00:00), and is
    taken back where it goes forward by more than 12 hours. The date comes from the ZDA
    nearest to the fix (by line); without a ZDA, the first fix is on the upload's date
    (:attr:`ReaderOptions.log_date`: a sidecar's ``date``, the config's
    ``ingest.log_dates``), else on the date in the file's name (``2024-05-01``,
    ``20240501``, ``20240501_081500``, ...). Where none is found, every GGA fix is a
    ``missing_date`` reject naming its time and position and where to give the date.
Values
    Speed over ground (knots) -> ``speed_mps``; course -> ``heading_deg`` (RMC only). RMC
    status ``V``, mode ``N`` or GGA fix quality 0 is an ``invalid_fix``.
GGA of an RMC
    Of the GGA sentences with the RMC's UTC time of day, the nearest to it in the file (the
    earlier of two as near; the log may be shuffled) gives ``elevation_m`` (altitude above
    mean sea level), ``hdop``, and fix quality. A GGA with no such RMC is not turned into a
    fix (it is usually the partner of a rejected RMC): it is counted in
    ``ignored["GGA_without_RMC"]``.
GSA
    Gives ``hdop`` to the nearest fix (by line) when its GGA did not.
Other sentences and text
    Counted by type in ``ignored`` (e.g. ``{"GPGSV": 12}``). Lines that are not blank and
    hold no sentence (comments, text), and sentences whose type is not 2 to 10 capital
    letters or digits, are counted under ``ignored["not_a_sentence"]``, the first of them
    quoted (escaped, at most 40 characters) in ``samples["not_a_sentence"]``.
Contributor and device
    NMEA names neither: both are None.

A file without any sentence, or without any fix or reject (no RMC or GGA sentence: nothing
would be accounted for), is unreadable.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.readers.base import (
    BAD_CHECKSUM,
    INVALID_ENCODING,
    INVALID_FIX,
    KNOTS_TO_MPS,
    MALFORMED_ROW,
    MISSING_COORDINATES,
    MISSING_DATE,
    MISSING_TIME,
    UNPARSEABLE_COORDINATES,
    UNPARSEABLE_TIME,
    Candidates,
    ReaderOptions,
    ReadResult,
    Reject,
    epoch_to_times,
    finish,
    ordered_slices,
    quote,
    read_bytes,
    string_buffers,
    strings_from_slices,
    to_float_columns,
    to_optional_float,
    unreadable,
)

FORMAT = "nmea"
FIX_HINT = "export the dashcam's GPS log as NMEA 0183 text"
_FIELD_COUNTS = {  # min, max number of comma-separated fields including the type
    "RMC": (10, 14),
    "GGA": (10, 16),
    "GSA": (18, 20),
    "ZDA": (5, 7),
}
_HEX = np.array([f"{value:02X}" for value in range(256)], dtype=object)
_HEX_VALUE = np.full(256, -1, dtype=np.int64)  # byte -> value of a hex digit, -1 for others
for _value, _digit in enumerate(b"0123456789ABCDEF"):
    _HEX_VALUE[_digit] = _HEX_VALUE[ord(chr(_digit).lower())] = _value
_MAY_END_IN_SPACE = np.zeros(256, dtype=bool)  # last bytes of what rtrim may remove
_MAY_END_IN_SPACE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_CONTROL = np.zeros(256, dtype=bool)  # control bytes that are not in text: binary data
_CONTROL[[*range(0x20), 0x7F]] = True
_CONTROL[[0x09, 0x0A, 0x0D]] = False
_NOT_ASCII = re.compile(rb"[\x00\x80-\xff]")
_SENTENCE_START = re.compile(rb"\$[A-Z0-9]{2,10},")
_BLANKED = b"\x7f"  # what binary bytes become in the text read (DEL, never in a sentence)
_CHECKED = re.compile(rb"\$[\x20-\x23\x25-\x29\x2b-\x7e]*\*[0-9A-Fa-f]{2}")  # $body*hh
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_]?(\d\d)[-_]?(\d\d)(?:[T_-]?\d{4,6})?(?!\d)")
_RMC_NUMBERS = (1, 9, 3, 5, 7, 8)  # time, date, latitude, longitude, speed, course
_RMC_TEXTS = (2, 4, 6, 12)  # status, N/S, E/W, mode
_GGA_NUMBERS = (1, 9, 8, 6)  # time, altitude, HDOP, fix quality
_PIVOT_YEAR = 80  # two-digit years 80-99 are 1980-1999, 00-79 are 2000-2079
_NOT_DIGITS = re.compile(r"\D")
_SENTENCE_TYPE = re.compile(r"[A-Z0-9]{2,10}")  # GPGSV, PGRME, ...; others are not named
NOT_A_SENTENCE = "not_a_sentence"
_NO_DATE = (
    "the log has no date (no RMC or ZDA sentence); give the date of its first fix in the "
    'sidecar FILE.meta.json ({{"date": "YYYY-MM-DD"}}), in ingest.log_dates, or in the file name'
)
_MS_PER_DAY = 86_400_000


def read_nmea(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read an NMEA 0183 log (see the module docstring for the rules).

    The lines, sentences and fields are found as positions in the file's bytes; only the
    fields that are used become Arrow strings (no Python object per line or field).
    """
    data = read_bytes(path, source, options.max_decoded_bytes)
    text, binary = np.frombuffer(data, dtype=np.uint8), _Binary()
    marks = _Delimiters(text) if data.isascii() else None
    if marks is None or _CONTROL[marks.kind].any():  # (control bytes are delimiters)
        text_bytes, binary = _without_binary(data)
        text = np.frombuffer(text_bytes, dtype=np.uint8)
        marks = _Delimiters(text)
    line_start, line_end, line_end_mark = _line_bounds(marks)
    dollar_mark = np.append(np.flatnonzero(marks.kind == ord("$")), len(marks.position))
    dollars = np.append(marks.position, len(text))[dollar_mark]
    first_dollar = np.searchsorted(dollars, line_start)
    dollar, dollar_mark = dollars[first_dollar], dollar_mark[first_dollar]
    is_sentence = dollar < line_end
    if not is_sentence.any() and not binary.rejects:
        problem = "binary data, not an NMEA text log" if binary.skipped else "no NMEA sentences"
        raise unreadable(source, f"{problem} ($GPRMC, $GPGGA, ...) found", FIX_HINT)
    line = binary.line_numbers(line_start)
    ignored: Counter[str] = Counter()
    if binary.skipped:
        ignored["binary_bytes"] = binary.skipped
    samples: dict[str, str] = {}
    others = strings_from_slices(text, line_start[~is_sentence], line_end[~is_sentence])
    _count_unknown(others, ignored, samples, binary.newlines is not None)
    sentences = _Sentences.split(
        marks,
        line[is_sentence],
        line_start[is_sentence],
        (dollar[is_sentence], dollar_mark[is_sentence]),
        (line_end[is_sentence], line_end_mark[is_sentence]),
    )
    sentences, rejects = _check_checksums(sentences)
    tables = _sentence_tables(sentences, rejects, ignored, samples)
    if len(tables["RMC"][0].line):
        candidates = _rmc_candidates(tables, ignored)
    else:
        candidates = _gga_candidates(tables, _log_date(path, options))
    if not len(candidates) and not binary.rejects and not rejects:
        raise unreadable(source, "no fixes (no RMC or GGA sentence) found", FIX_HINT)
    result = finish(source, FORMAT, candidates, [*binary.rejects, *rejects], ignored)
    result.samples = samples
    return result


@dataclass
class _Binary:
    """What :func:`_without_binary` took out of a file.

    Attributes
    ----------
    newlines
        Where the file's line feeds are (None when nothing was taken out: the text's lines
        are the file's).
    rejects
        ``invalid_encoding`` rejects: lines whose sentence holds a byte that is not ASCII.
    skipped
        The number of binary bytes skipped.
    """

    newlines: np.ndarray | None = None
    rejects: list[Reject] = dataclasses.field(default_factory=list)
    skipped: int = 0

    def line_numbers(self, line_start: np.ndarray) -> np.ndarray:
        """Return the file's (1-based) line number of each line of the text, by where it starts."""
        if self.newlines is None:
            return np.arange(1, len(line_start) + 1, dtype=np.int64)
        return np.searchsorted(self.newlines, line_start) + 1


def _without_binary(data: bytes) -> tuple[bytearray, _Binary]:
    r"""Return the file's text with binary data (UBX, CASIC, ... frames) blanked out.

    A line (up to a ``\n``) holding a byte that is not ASCII, or a NUL, keeps only its
    sentences ``$...*hh`` of printable ASCII whose checksum matches, each on a line of its
    own; a line holding another control byte (but tab and CR) and no ``$`` is all binary.
    Binary bytes become :data:`_BLANKED` (not a delimiter, and blank to
    :func:`_count_unknown`), so the text has the file's length and positions in it are
    positions in the file. A line of binary whose sentence (``$``, a type and a comma before
    its first byte that is not ASCII) has no matching checksum is an ``invalid_encoding``
    reject.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(raw == ord("\n"))
    starts, ends = np.concatenate([[0], newlines + 1]), np.append(newlines, len(raw))
    lines = starts[:-1] if starts[-1] == len(raw) else starts  # a last line, if not empty
    # per line: whether it holds such bytes (each line's piece holds at least its break)
    not_ascii = np.logical_or.reduceat((raw >= 0x80) | (raw == 0), lines)
    control = np.logical_or.reduceat(_CONTROL[raw], lines) & ~not_ascii
    bounds: dict[int, tuple[int, int]] = {}  # binary line -> its start and end (without CR)
    for line in np.flatnonzero(not_ascii | control).tolist():
        start, end = int(starts[line]), int(ends[line])
        end -= end > start and data[end - 1] == ord("\r")
        if not (control[line] and b"$" in data[start:end]):  # else read, and judged, as text
            bounds[line] = (start, end)
    kept = _checked_sentences(data, [bounds[line] for line in bounds if not_ascii[line]])
    binary, out = _Binary(newlines), bytearray(data)
    for line, (start, end) in bounds.items():
        spans = kept.get(start, [])
        reject = not spans and not_ascii[line] and _not_ascii(data, start, end, line)
        if reject:
            binary.rejects.append(reject)
        else:
            binary.skipped += end - start - sum(stop - begin for begin, stop in spans)
        out[start:end] = _BLANKED * (end - start)
    for spans in kept.values():
        for begin, stop in spans:
            out[begin:stop] = data[begin:stop]
        for begin, stop in spans:  # each on a line of its own: breaks in the blanked bytes
            if begin and out[begin - 1] == _BLANKED[0]:
                out[begin - 1] = ord("\n")
            if stop < len(out) and out[stop] == _BLANKED[0]:
                out[stop] = ord("\n")
    return out, binary


def _checked_sentences(
    data: bytes, lines: list[tuple[int, int]]
) -> dict[int, list[tuple[int, int]]]:
    """Return the ``$...*hh`` spans whose checksum matches, by the start of their line."""
    found = [
        (start, *m.span()) for start, end in lines for m in _CHECKED.finditer(data, start, end)
    ]
    if not found:
        return {}
    line_start, begin, stop = np.array(found, dtype=np.int64).T
    raw = np.frombuffer(data, dtype=np.uint8)
    computed = _xor_of_slices(raw, begin + 1, stop - 3)
    given = _HEX_VALUE[raw[stop - 2]] * 16 + _HEX_VALUE[raw[stop - 1]]
    matches = computed == given
    kept: dict[int, list[tuple[int, int]]] = {}
    for start, first, last in zip(
        line_start[matches].tolist(), begin[matches].tolist(), stop[matches].tolist(), strict=True
    ):
        kept.setdefault(start, []).append((first, last))
    return kept


def _not_ascii(data: bytes, start: int, end: int, line: int) -> Reject | None:
    """Return the ``invalid_encoding`` reject of a line whose sentence holds a byte not ASCII."""
    bad = _NOT_ASCII.search(data, start, end)
    if bad is None or not _SENTENCE_START.search(data, start, bad.start()):
        return None
    byte, column = data[bad.start()], bad.start() - start + 1
    return Reject(line + 1, INVALID_ENCODING, f"not ASCII (byte 0x{byte:02x} at column {column})")


def _count_unknown(
    lines: pa.Array, ignored: Counter[str], samples: dict[str, str], blanked: bool
) -> None:
    """Count the lines that are not blank under ``not_a_sentence``; keep the first as sample.

    Bytes blanked out as binary (:data:`_BLANKED`, if ``blanked``) are blank, as whitespace is.
    """
    if blanked:
        lines = pc.utf8_trim(lines, _BLANKED.decode())
    lines = pc.utf8_trim_whitespace(lines)
    present = lines.filter(pc.not_equal(pc.binary_length(lines), 0))
    _add_unknown(present, ignored, samples)


def _add_unknown(lines: pa.Array, ignored: Counter[str], samples: dict[str, str]) -> None:
    if not len(lines):
        return
    ignored[NOT_A_SENTENCE] += len(lines)
    samples.setdefault(NOT_A_SENTENCE, quote(lines[0].as_py()))


def _log_date(path: Path, options: ReaderOptions) -> np.datetime64 | None:
    """Return the date of the log's first fix from its upload (options), else from its name."""
    if options.log_date is not None:
        return np.datetime64(options.log_date, "D")
    for found in _NAME_DATE.finditer(path.name):
        try:
            return np.datetime64(datetime.date(*map(int, found.groups())), "D")
        except ValueError:  # e.g. 20240231
            continue
    return None


class _Delimiters:
    """The bytes that structure an NMEA text: ``$``, ``*``, ``,`` and line breaks.

    Found in one pass over the (ASCII) text: they are all at most ``,``.

    Attributes
    ----------
    position
        Where each delimiter is in the text, in order.
    kind
        Its byte.
    commas_before
        The number of commas before each delimiter, then the number of commas.
    commas
        The positions of the commas, then the length of the text.
    """

    def __init__(self, text: np.ndarray) -> None:
        position = np.flatnonzero(text <= ord(","))
        kind = text[position]
        is_comma = kind == ord(",")
        self.position, self.kind = position, kind
        self.commas_before = np.concatenate([[0], np.cumsum(is_comma)])
        self.commas = np.append(position[is_comma], len(text))
        self.text = text


def _line_bounds(marks: _Delimiters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Return where each line starts and ends: lines end at ``\n`` or ``\r\n`` only.

    A break at the very end of the text does not start another line. Also returns the
    delimiter that ends each line (the number of delimiters for the last line, if it has no
    break).
    """
    size = len(marks.text)
    position, kind = marks.position, marks.kind
    is_lf = kind == ord("\n")
    cr_of_crlf = np.zeros(len(position), dtype=bool)  # "\r\n" is one break, at its "\r"
    cr_of_crlf[:-1] = (kind[:-1] == ord("\r")) & is_lf[1:] & (position[1:] == position[:-1] + 1)
    lf_of_crlf = np.zeros(len(position), dtype=bool)
    lf_of_crlf[1:] = cr_of_crlf[:-1]
    breaks = np.flatnonzero(cr_of_crlf | (is_lf & ~lf_of_crlf))
    sizes = np.where(cr_of_crlf[breaks], 2, 1)
    starts = np.concatenate([[0], position[breaks] + sizes])
    ends = np.append(position[breaks], size)
    end_marks = np.append(breaks, len(position))
    if starts[-1] == size:  # the text ends with a line break
        return starts[:-1], ends[:-1], end_marks[:-1]
    return starts, ends, end_marks


@dataclass
class _Sentences:
    """The sentences of a file: their line numbers, and where their parts are in its text.

    A sentence line is ``prefix$body*checksum``: the prefix runs from ``prefix_start`` to
    ``body_start - 1`` (the ``$``), the body to ``body_end``, and the checksum from
    ``body_end + 1`` to ``line_end`` where ``has_checksum`` (a ``*`` was found). The body
    holds the commas ``first_comma`` to ``comma_end`` (indices in ``marks.commas``).
    """

    marks: _Delimiters
    line: np.ndarray
    prefix_start: np.ndarray
    body_start: np.ndarray
    body_end: np.ndarray
    line_end: np.ndarray
    has_checksum: np.ndarray
    first_comma: np.ndarray
    comma_end: np.ndarray

    @property
    def text(self) -> np.ndarray:
        """The file's text (UTF-8 bytes)."""
        return self.marks.text

    @classmethod
    def split(
        cls,
        marks: _Delimiters,
        line: np.ndarray,
        line_start: np.ndarray,
        dollar: tuple[np.ndarray, np.ndarray],
        line_end: tuple[np.ndarray, np.ndarray],
    ) -> _Sentences:
        """Split sentence lines at their first ``$`` and at the last ``*`` after it.

        ``dollar`` and ``line_end`` are positions in the text and indices of delimiters.
        """
        star_mark = np.concatenate([[-1], np.flatnonzero(marks.kind == ord("*"))])
        stars = np.concatenate([[-1], marks.position[star_mark[1:]]])
        last = np.searchsorted(stars, line_end[0]) - 1
        has_checksum = stars[last] > dollar[0]
        body_end = np.where(has_checksum, stars[last], line_end[0])
        body_end_mark = np.where(has_checksum, star_mark[last], line_end[1])
        return cls(
            marks,
            line,
            line_start,
            dollar[0] + 1,
            body_end,
            line_end[0],
            has_checksum,
            marks.commas_before[dollar[1]],
            marks.commas_before[body_end_mark],
        )

    def take(self, keep: np.ndarray) -> _Sentences:
        """Return the sentences selected by ``keep`` (a boolean mask or indices)."""
        return _Sentences(
            self.marks,
            self.line[keep],
            self.prefix_start[keep],
            self.body_start[keep],
            self.body_end[keep],
            self.line_end[keep],
            self.has_checksum[keep],
            self.first_comma[keep],
            self.comma_end[keep],
        )

    def fields(self) -> _Fields:
        """Return the fields of the bodies."""
        return _Fields(
            self.text,
            self.marks.commas,
            (self.body_start, self.body_end),
            (self.first_comma, self.comma_end),
        )

    def prefixes(self) -> pa.StringArray:
        """Return the text before each sentence's ``$``."""
        return strings_from_slices(self.text, self.prefix_start, self.body_start - 1)


def _check_checksums(sentences: _Sentences) -> tuple[_Sentences, list[Reject]]:
    """Reject the sentences whose checksum is present and wrong; return the others too.

    A checksum of two hex digits is compared as a number; any other (spaces, lower case,
    wrong length) is compared as its stripped, upper-cased text, as given in the reject.
    """
    text = sentences.text
    computed = _xor_of_slices(text, sentences.body_start, sentences.body_end)
    given_start, given_end = sentences.body_end + 1, sentences.line_end
    matches = np.zeros(len(computed), dtype=bool)
    two_digits = np.flatnonzero(sentences.has_checksum & (given_end - given_start == 2))
    high = _HEX_VALUE[text[given_start[two_digits]]]
    low = _HEX_VALUE[text[given_start[two_digits] + 1]]
    matches[two_digits] = (high >= 0) & (low >= 0) & (high * 16 + low == computed[two_digits])
    doubtful = np.flatnonzero(sentences.has_checksum & ~matches)
    given = strings_from_slices(text, given_start[doubtful], given_end[doubtful])
    given_text = pc.utf8_upper(pc.utf8_trim_whitespace(given)).to_numpy(zero_copy_only=False)
    wrong = given_text != _HEX[computed[doubtful]]
    bad = doubtful[wrong]
    rejects = [
        Reject(int(line), BAD_CHECKSUM, f"checksum *{_shown(found)}, computed *{_HEX[value]}")
        for line, found, value in zip(
            sentences.line[bad], given_text[wrong], computed[bad], strict=True
        )
    ]
    if not len(bad):
        return sentences, rejects
    keep = np.ones(len(computed), dtype=bool)
    keep[bad] = False
    return sentences.take(keep), rejects


def _shown(checksum: str) -> str:
    """Return a checksum as found, or quoted (escaped, cut short) if not a short word."""
    return checksum if checksum.isalnum() and len(checksum) <= 4 else quote(checksum)


def xor_checksums(bodies: pa.Array) -> np.ndarray:
    """XOR of the bytes of each body (empty bodies give 0), vectorized over the Arrow buffer."""
    offsets, data = string_buffers(bodies)
    return _xor_of_slices(data, offsets[:-1], offsets[1:])


def _xor_of_slices(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """XOR of the bytes ``data[start:end]`` of each slice (empty slices give 0)."""
    if not len(data) or not len(starts):
        return np.zeros(len(starts), dtype=np.int64)
    data = np.append(data, np.uint8(0))
    # reduce over [start, end) of every slice: interleave the bounds, keep the even results
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    out = np.bitwise_xor.reduceat(data, bounds)[0::2].astype(np.int64)
    out[ends == starts] = 0
    return out


class _Fields:
    """The comma-separated fields of sentences, by position ("" where a sentence is shorter).

    Found from the positions of the commas in the text's bytes (splitting every body into
    a list costs Arrow many times more).

    Parameters
    ----------
    text
        UTF-8 bytes holding the bodies.
    commas
        Positions of every comma in ``text``, then ``len(text)``.
    bounds
        Where each body starts and ends in ``text``.
    comma_range
        The index (in ``commas``) of each body's first comma, and of the comma after its last.
    """

    def __init__(
        self,
        text: np.ndarray,
        commas: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray],
        comma_range: tuple[np.ndarray, np.ndarray],
    ) -> None:
        self.text, self.commas = text, commas
        self.starts, self.ends = bounds
        self.first, self.end = comma_range
        self.count = self.end - self.first + 1

    @classmethod
    def of_bodies(cls, bodies: pa.Array) -> _Fields:
        """Return the fields of Arrow strings (without nulls)."""
        offsets, data = string_buffers(bodies)
        commas = np.append(np.flatnonzero(data == ord(",")), len(data))
        starts, ends = offsets[:-1], offsets[1:]
        comma_range = (np.searchsorted(commas, starts), np.searchsorted(commas, ends))
        return cls(data, commas, (starts, ends), comma_range)

    def __getitem__(self, index: int) -> pa.StringArray:
        return self.table((index,))

    def bounds(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Where field ``index`` of each body starts and ends (at the body's end if none)."""
        last = len(self.commas) - 1
        if index == 0:
            starts = self.starts
        else:
            starts = self.commas[np.minimum(self.first + index - 1, last)] + 1
        own = self.first + index
        ends = np.where(own < self.end, self.commas[np.minimum(own, last)], self.ends)
        absent = self.count <= index
        return np.where(absent, self.ends, starts), np.where(absent, self.ends, ends)

    def table(self, indices: tuple[int, ...], rows: np.ndarray | None = None) -> pa.StringArray:
        """Return the fields ``indices`` of each body, one column after another.

        ``rows`` picks the bodies (-1 gives ""); all of them, in order, when None. The
        fields are cut out of the text by Arrow in one step (see :func:`_split`).
        """
        width = len(indices)
        in_order = sorted(indices)  # cut the fields in text order, body after body
        starts = np.empty((len(self.starts), width), dtype=np.int64)
        ends = np.empty_like(starts)
        for column, index in enumerate(in_order):
            starts[:, column], ends[:, column] = self.bounds(index)
        rows = np.arange(len(self.starts)) if rows is None else rows
        # field index of body r is piece r * width + its rank; -1 rows give negatives
        ranks = np.array([in_order.index(index) for index in indices])
        positions = (rows[np.newaxis, :] * width + ranks[:, np.newaxis]).ravel()
        valid = positions >= 0
        pieces = ordered_slices(self.text, starts.ravel(), ends.ravel())
        if pieces is None:  # not expected: fields follow each other in the text
            chosen = np.maximum(positions, 0)
            strings = strings_from_slices(
                self.text, starts.ravel()[chosen], ends.ravel()[chosen], valid
            )
        else:
            strings = pieces.take(pa.array(2 * positions, mask=~valid))
        return strings if valid.all() else strings.fill_null("")


def _split(strings: pa.Array, width: int) -> list[pa.Array]:
    """Split a table of :meth:`_Fields.table` into its ``width`` columns."""
    count = len(strings) // width
    return [strings.slice(column * count, count) for column in range(width)]


def _equals(strings: pa.Array, value: str) -> np.ndarray:
    """Mark the strings equal to ``value``."""
    return pc.equal(strings, value).to_numpy(zero_copy_only=False)


def _rtrimmed_ends(text: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the ends of the slices of ``text`` without their trailing whitespace.

    Arrow trims the few slices whose last byte may be whitespace (its definition of
    whitespace, non-ASCII included).
    """
    last = text[np.maximum(ends - 1, 0)]
    doubtful = np.flatnonzero((ends > starts) & _MAY_END_IN_SPACE[last])
    if not len(doubtful):
        return ends
    slices = strings_from_slices(text, starts[doubtful], ends[doubtful])
    lengths = pc.binary_length(pc.utf8_rtrim_whitespace(slices)).to_numpy(zero_copy_only=False)
    trimmed = ends.copy()
    trimmed[doubtful] = starts[doubtful] + lengths
    return trimmed


def _sentence_tables(
    sentences: _Sentences, rejects: list[Reject], ignored: Counter[str], samples: dict[str, str]
) -> dict[str, tuple[_Sentences, _Fields]]:
    """Sort the sentences by type: the used ones into tables, the others counted in ``ignored``.

    A used sentence with the wrong number of fields is a ``malformed_row`` reject.
    """
    text = sentences.text
    # trailing whitespace holds no comma: the bodies' commas stay the same
    body_end = _rtrimmed_ends(text, sentences.body_start, sentences.body_end)
    sentences = dataclasses.replace(sentences, body_end=body_end)
    type_end = np.minimum(sentences.marks.commas[sentences.first_comma], sentences.body_end)
    types = strings_from_slices(text, sentences.body_start, type_end)
    kinds = pc.utf8_slice_codeunits(types, 2)
    proprietary = pc.starts_with(types, "P").to_numpy(zero_copy_only=False)
    used = np.zeros(len(types), dtype=bool)
    tables: dict[str, tuple[_Sentences, _Fields]] = {}
    for kind, (low, high) in _FIELD_COUNTS.items():
        is_kind = _equals(kinds, kind) & ~proprietary
        used |= is_kind
        chosen = sentences.take(is_kind)
        fields = chosen.fields()
        wrong = (fields.count < low) | (fields.count > high)
        if wrong.any():
            names = types.filter(pa.array(is_kind)).filter(pa.array(wrong)).to_pylist()
            counts = fields.count[wrong]
            details = [
                f"{_shown_type(name)} sentence with {count} fields"
                for name, count in zip(names, counts, strict=True)
            ]
            rejects.extend(
                Reject(int(line), MALFORMED_ROW, detail)
                for line, detail in zip(chosen.line[wrong], details, strict=True)
            )
            chosen = chosen.take(~wrong)
            fields = chosen.fields()
        tables[kind] = (chosen, fields)
    unused = types.filter(pa.array(~used))
    not_names = []
    for name, count in _value_counts(unused).items():
        if _SENTENCE_TYPE.fullmatch(name):
            ignored[name] += count
        else:
            not_names.append(name)
    if not_names:
        unknown = pc.is_in(unused, value_set=pa.array(not_names, pa.string()))
        others = sentences.take(np.flatnonzero(~used)[unknown.to_numpy(zero_copy_only=False)])
        lines = strings_from_slices(text, others.prefix_start, others.line_end)
        _add_unknown(lines, ignored, samples)
    return tables


def _shown_type(name: str) -> str:
    """Return a sentence type as found if it is a name, else quoted (escaped)."""
    return name if _SENTENCE_TYPE.fullmatch(name) else quote(name)


def _value_counts(strings: pa.Array) -> dict[str, int]:
    """Count each distinct string."""
    counts = pc.value_counts(strings)
    return dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _match_gga(
    rmc_lines: np.ndarray, rmc_millis: np.ndarray, gga_lines: np.ndarray, gga_millis: np.ndarray
) -> np.ndarray:
    """Index of the GGA enriching each RMC (-1 for none).

    Of the GGAs with the RMC's time of day, the nearest to it in the file (the earlier one
    of two as near): logs need not write an RMC and its GGA next to each other.
    """
    match = np.full(len(rmc_lines), -1, dtype=np.int64)
    gga = np.flatnonzero(~np.isnan(gga_millis))
    rmc = np.flatnonzero(~np.isnan(rmc_millis))
    if not len(rmc) or not len(gga):
        return match
    # one sortable key per sentence: the time of day, then the line (lines < 2^32)
    gga_key = (gga_millis[gga].astype(np.int64) << 32) | gga_lines[gga]
    order = np.argsort(gga_key)
    gga_key, gga = gga_key[order], gga[order]
    wanted = rmc_millis[rmc].astype(np.int64)
    after = np.searchsorted(gga_key, (wanted << 32) | rmc_lines[rmc])
    best, distance = np.full(len(rmc), -1), np.full(len(rmc), np.iinfo(np.int64).max)
    for position in (after - 1, after):  # the one before first: it wins ties
        inside = (position >= 0) & (position < len(gga_key))
        at = np.clip(position, 0, len(gga_key) - 1)
        away = np.abs(gga_lines[gga[at]] - rmc_lines[rmc])
        better = inside & (gga_key[at] >> 32 == wanted) & (away < distance)
        best[better], distance[better] = gga[at][better], away[better]
    match[rmc] = best
    return match


def _rmc_candidates(
    tables: dict[str, tuple[_Sentences, _Fields]], ignored: Counter[str]
) -> Candidates:
    rmc_sentences, rmc = tables["RMC"]
    gga_sentences, gga = tables["GGA"]
    rmc_lines = rmc_sentences.line
    candidates = Candidates(rmc_lines)
    status, lat_hemi, lon_hemi, mode = _split(rmc.table(_RMC_TEXTS), len(_RMC_TEXTS))
    rmc_numbers = rmc.table(_RMC_NUMBERS)
    time, date, lat_text, lon_text = _split(rmc_numbers, len(_RMC_NUMBERS))[:4]
    parsed = to_float_columns(rmc_numbers, len(_RMC_NUMBERS))
    tod = _time_of_day(time, parsed[0])
    gga_numbers = gga.table(_GGA_NUMBERS)
    gga_time = _split(gga_numbers, len(_GGA_NUMBERS))[0]
    gga_tod, altitude, gga_hdop, quality = to_float_columns(gga_numbers, len(_GGA_NUMBERS))
    match = _match_gga(
        rmc_lines, tod.millis, gga_sentences.line, _time_of_day(gga_time, gga_tod).millis
    )
    paired = np.zeros(len(gga_sentences.line), dtype=bool)
    paired[match[match >= 0]] = True
    ignored["GGA_without_RMC"] += int((~paired).sum())
    candidates.reject(_equals(status, "V"), INVALID_FIX, "RMC status V (no valid fix)")
    candidates.reject(_equals(mode, "N"), INVALID_FIX, "RMC mode N (no valid fix)")
    no_fix = _taken(quality[0], match) == 0
    candidates.reject(no_fix, INVALID_FIX, "GGA fix quality 0 (no fix)")
    _set_coordinates(candidates, (parsed[2], lat_text, lat_hemi), (parsed[3], lon_text, lon_hemi))
    _set_rmc_times(candidates, tod, (date, *parsed[1]), rmc_sentences)
    candidates.columns["speed_mps"] = parsed[4][0] * KNOTS_TO_MPS
    candidates.columns["heading_deg"] = parsed[5][0]
    candidates.columns["elevation_m"] = _taken(altitude[0], match)
    hdop = _taken(gga_hdop[0], match)
    gsa_sentences, gsa = tables["GSA"]
    if len(gsa_sentences.line) and np.isnan(hdop).any():
        hdop = _fill_from_gsa(hdop, rmc_lines, gsa_sentences.line, to_optional_float(gsa[16]))
    candidates.columns["hdop"] = hdop
    return candidates


def _taken(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Return ``values`` at ``rows`` (NaN where a row is -1)."""
    out = np.full(len(rows), np.nan)
    out[rows >= 0] = values[rows[rows >= 0]]
    return out


def _set_coordinates(
    candidates: Candidates,
    lat: tuple[tuple[np.ndarray, np.ndarray], pa.Array, pa.Array],
    lon: tuple[tuple[np.ndarray, np.ndarray], pa.Array, pa.Array],
) -> None:
    """Set lat/lon from NMEA fields (parsed number, text, hemisphere); reject bad ones."""
    lat_degrees, lat_bad = _degrees(lat[0], lat[2], "N", "S")
    lon_degrees, lon_bad = _degrees(lon[0], lon[2], "E", "W")
    candidates.columns["lon"], candidates.columns["lat"] = lon_degrees, lat_degrees
    bad = lat_bad | lon_bad
    missing = (np.isnan(lat_degrees) | np.isnan(lon_degrees)) & ~bad
    if (bad | missing).any():
        lat_raw = pc.binary_join_element_wise(lat[1], lat[2], "")
        lon_raw = pc.binary_join_element_wise(lon[1], lon[2], "")
        raw = _details(bad | missing, "lat={}, lon={}", lat_raw, lon_raw)
        candidates.reject(missing, MISSING_COORDINATES, raw)
        candidates.reject(bad, UNPARSEABLE_COORDINATES, raw)


def _time_of_day(time: pa.Array, parsed: tuple[np.ndarray, np.ndarray]) -> _TimeOfDay:
    """Read ``hhmmss(.sss)`` fields: milliseconds since midnight, NaN where absent or bad."""
    tod, bad = parsed
    hours, rest = np.divmod(tod, 10_000.0)
    minutes, seconds = np.divmod(rest, 100.0)
    bad = bad | ~np.isnan(tod) & ((hours >= 24) | (minutes >= 60) | (seconds >= 61) | (tod < 0))
    millis = np.round((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0)
    millis[bad] = np.nan
    return _TimeOfDay(time, millis, np.isnan(tod) & ~bad, bad)


@dataclass
class _TimeOfDay:
    """Times of day read from sentences: the text, milliseconds, and absent or bad ones."""

    text: pa.Array
    millis: np.ndarray
    missing: np.ndarray
    bad: np.ndarray


def _gga_candidates(
    tables: dict[str, tuple[_Sentences, _Fields]], log_date: np.datetime64 | None
) -> Candidates:
    """Return the fixes of a log without RMC sentences: its GGA sentences, dated."""
    gga_sentences, gga = tables["GGA"]
    candidates = Candidates(gga_sentences.line)
    if not len(candidates):
        return candidates
    quality, lat_hemi, lon_hemi = _split(gga.table((6, 3, 5)), 3)
    numbers = gga.table((1, 2, 4, 8, 9))
    time, lat_text, lon_text = _split(numbers, 5)[:3]
    parsed = to_float_columns(numbers, 5)
    candidates.reject(_equals(quality, "0"), INVALID_FIX, "GGA fix quality 0 (no fix)")
    _set_coordinates(candidates, (parsed[1], lat_text, lat_hemi), (parsed[2], lon_text, lon_hemi))
    tod = _time_of_day(time, parsed[0])
    if (tod.missing | tod.bad).any():
        raw = _details(tod.missing | tod.bad, "time={}", tod.text)
        candidates.reject(tod.missing, MISSING_TIME, raw)
        candidates.reject(tod.bad, UNPARSEABLE_TIME, raw)
    days = _gga_days(gga_sentences.line, tod.millis, tables["ZDA"], log_date)
    candidates.columns["observed_at"] = _at(days, tod.millis)
    no_date = np.isnat(days) & ~np.isnan(tod.millis)
    if no_date.any():
        raw = _details(no_date, "GGA at time={}, lat={}, lon={}: " + _NO_DATE, tod.text,
                       pc.binary_join_element_wise(lat_text, lat_hemi, ""),
                       pc.binary_join_element_wise(lon_text, lon_hemi, ""))  # fmt: skip
        candidates.reject(no_date, MISSING_DATE, raw)
    candidates.columns["elevation_m"] = parsed[4][0]
    hdop = parsed[3][0]
    gsa_sentences, gsa = tables["GSA"]
    if len(gsa_sentences.line) and np.isnan(hdop).any():
        hdop = _fill_from_gsa(
            hdop, gga_sentences.line, gsa_sentences.line, to_optional_float(gsa[16])
        )
    candidates.columns["hdop"] = hdop
    return candidates


def _at(days: np.ndarray, millis: np.ndarray) -> np.ndarray:
    """Return times (``datetime64[ms]``) from dates and milliseconds since midnight.

    NaT where either is absent.
    """
    ok = ~np.isnat(days) & ~np.isnan(millis)
    out = np.full(len(days), np.datetime64("NaT"), dtype="datetime64[ms]")
    since_midnight = millis[ok].astype("int64").astype("timedelta64[ms]")
    out[ok] = days[ok].astype("datetime64[ms]") + since_midnight
    return out


def _gga_days(
    lines: np.ndarray,
    millis: np.ndarray,
    zda: tuple[_Sentences, _Fields],
    log_date: np.datetime64 | None,
) -> np.ndarray:
    """Return the date of each GGA fix of a log without RMC (NaT where none can be found).

    The fixes and ZDA sentences, in file order, count days: a day passes where the time of
    day goes back by more than 12 hours (23:59 -> 00:00), and one is taken back where it goes
    forward by more than 12 hours (a shuffled log). A ZDA's date then dates the fixes nearest
    to it (by line); without a ZDA, ``log_date`` is the date of the first fix.
    """
    zda_sentences, zda_fields = zda
    zda_millis, zda_dates = _zda_times(zda_fields)
    usable = ~np.isnan(zda_millis) & ~np.isnat(zda_dates)
    zda_lines, zda_millis, zda_dates = (
        zda_sentences.line[usable],
        zda_millis[usable],
        zda_dates[usable],
    )
    every_line = np.concatenate([lines, zda_lines])
    order = np.argsort(every_line, kind="stable")
    day = np.empty(len(order), dtype=np.int64)
    day[order] = _days_passed(np.concatenate([millis, zda_millis])[order])
    fix_day, zda_day = day[: len(lines)], day[len(lines) :]
    out = np.full(len(lines), np.datetime64("NaT"), dtype="datetime64[D]")
    if len(zda_lines):
        after = np.searchsorted(zda_lines, lines)
        before = np.maximum(after - 1, 0)
        after = np.minimum(after, len(zda_lines) - 1)
        nearest = np.where(
            np.abs(zda_lines[before] - lines) <= np.abs(zda_lines[after] - lines), before, after
        )
        first_day = zda_dates[nearest] - zda_day[nearest]
        return first_day + fix_day
    if log_date is not None:
        out[:] = log_date + fix_day
    return out


def _days_passed(millis: np.ndarray) -> np.ndarray:
    """Days passed since the first time of day, at each one (times NaN count as the last)."""
    known = np.flatnonzero(~np.isnan(millis))
    steps = np.zeros(len(known), dtype=np.int64)
    change = np.diff(millis[known])
    steps[1:] = (change < -_MS_PER_DAY / 2).astype(np.int64) - (change > _MS_PER_DAY / 2)
    days = np.zeros(len(millis), dtype=np.int64)
    if len(known):
        last_known = np.maximum(np.searchsorted(known, np.arange(len(millis)), side="right") - 1, 0)
        days = np.cumsum(steps)[last_known]
    return days


def _zda_times(fields: _Fields) -> tuple[np.ndarray, np.ndarray]:
    """Time of day (ms, NaN if bad) and date (NaT if bad) of each ZDA (time, dd, mm, yyyy)."""
    numbers = fields.table((1, 2, 3, 4))
    parsed = to_float_columns(numbers, 4)
    tod = _time_of_day(_split(numbers, 4)[0], parsed[0])
    dates = _dates(parsed[3][0], parsed[2][0], parsed[1][0]).astype("datetime64[D]")
    return tod.millis, dates


def _details(mask: np.ndarray, template: str, *columns: pa.Array) -> np.ndarray:
    """Format ``template`` with the quoted raw values of each row in ``mask`` (None elsewhere).

    Each value is quoted by :func:`.base.quote`: escaped, and cut to a few dozen characters.
    """
    out = np.full(len(mask), None, dtype=object)
    chosen = pa.array(mask)
    rows = zip(*(c.filter(chosen).to_pylist() for c in columns), strict=True)
    out[mask] = [template.format(*(quote(str(v)) for v in values)) for values in rows]
    return out


def _degrees(
    value: tuple[np.ndarray, np.ndarray], hemisphere: pa.Array, positive: str, negative: str
) -> tuple[np.ndarray, np.ndarray]:
    """Convert NMEA ``(d)ddmm.mmmm`` + hemisphere to signed degrees; also flag bad values.

    ``value`` is the number parsed by :func:`to_float` and its ``bad`` flags.
    """
    number, bad = value
    degrees = np.trunc(number / 100.0)
    minutes = number - degrees * 100.0
    signed = np.where(_equals(hemisphere, negative), -1.0, 1.0) * (degrees + minutes / 60.0)
    present = ~np.isnan(number)
    bad = bad | (present & ((minutes >= 60.0) | (number < 0)))
    known = pc.is_in(hemisphere, value_set=pa.array([positive, negative]))
    bad |= present & ~known.to_numpy(zero_copy_only=False)
    return signed, bad


def _set_rmc_times(
    candidates: Candidates,
    tod: _TimeOfDay,
    date_field: tuple[pa.Array, np.ndarray, np.ndarray],
    sentences: _Sentences,
) -> None:
    """Set the fix times from the RMC time of day and date field (text, number, bad flags).

    A two-digit year ``yy`` is 19yy from 80 to 99, else 20yy.
    """
    date, day_number, date_bad = date_field
    date_length = pc.utf8_length(pc.utf8_trim_whitespace(date)).to_numpy(zero_copy_only=False)
    date_bad = date_bad | (~np.isnan(day_number) & (date_length != 6))
    dd, rest = np.divmod(day_number, 10_000.0)
    mm, yy = np.divmod(rest, 100.0)
    days = _dates(np.where(yy >= _PIVOT_YEAR, 1900.0, 2000.0) + yy, mm, dd)
    date_bad |= ~np.isnan(day_number) & np.isnat(days)
    no_date = np.isnan(day_number) & ~date_bad
    if no_date.any():
        prefixes = sentences.take(no_date).prefixes().to_pylist()
        days = _days_from_prefixes(days, no_date, tod.millis, prefixes)
    days[date_bad] = np.datetime64("NaT")
    candidates.columns["observed_at"] = _at(days, tod.millis)  # UTC
    if (tod.missing | tod.bad | date_bad).any():
        raw = _details(tod.missing | tod.bad | date_bad, "time={}, date={}", tod.text, date)
        candidates.reject(tod.missing, MISSING_TIME, raw)
        candidates.reject(tod.bad | date_bad, UNPARSEABLE_TIME, raw)
    candidates.reject(np.isnat(days), MISSING_TIME, "RMC has no date and the line no time prefix")


def _dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Return the dates (``datetime64[ms]``) as ``pd.to_datetime`` of the parts gives them.

    NaT where the parts are NaN or not a date (31 April). Computed with NumPy's calendar when
    every given part is a whole number, the month 1 to 12 and the day 1 to 31 (as in any
    RMC date); by pandas otherwise.
    """
    given = ~np.isnan(year) | ~np.isnan(month) | ~np.isnan(day)
    parts = np.stack([year[given], month[given], day[given]])
    simple = (
        np.isfinite(parts).all()
        and (parts == np.floor(parts)).all()
        and ((parts[1] >= 1) & (parts[1] <= 12) & (parts[2] >= 1) & (parts[2] <= 31)).all()
        and ((parts[0] >= 1970) & (parts[0] <= 9999)).all()
    )
    if not simple:
        frame = pd.DataFrame({"year": year, "month": month, "day": day})
        return pd.to_datetime(frame, errors="coerce").to_numpy(dtype="datetime64[ms]")
    months = ((parts[0] - 1970) * 12 + parts[1] - 1).astype("int64").astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (parts[2] - 1).astype("int64")
    dates[dates.astype("datetime64[M]") != months] = np.datetime64("NaT")  # e.g. 31 April
    out = np.full(len(year), np.datetime64("NaT"), dtype="datetime64[ms]")
    out[given] = dates
    return out


def _days_from_prefixes(
    days: np.ndarray, no_date: np.ndarray, millis: np.ndarray, prefixes: list[str]
) -> np.ndarray:
    """Date of the fix from the line's epoch prefix: the day putting the fix nearest to it.

    ``prefixes`` are those of the fixes in ``no_date``.
    """
    digits = [_NOT_DIGITS.sub("", prefix) for prefix in prefixes]
    stamps = epoch_to_times(np.array([float(d) if d else np.nan for d in digits]), None)
    stamp_ms = stamps.astype("int64").astype("float64")
    stamp_ms[np.isnat(stamps)] = np.nan
    day_ms = np.floor(stamp_ms / _MS_PER_DAY) * _MS_PER_DAY
    offset = millis[no_date] - (stamp_ms - day_ms)
    day_ms -= np.where(offset > _MS_PER_DAY / 2, _MS_PER_DAY, 0)
    day_ms += np.where(offset < -_MS_PER_DAY / 2, _MS_PER_DAY, 0)
    filled = days.copy()
    valid = ~np.isnan(day_ms)
    chosen = np.full(len(day_ms), np.datetime64("NaT"), dtype="datetime64[ms]")
    chosen[valid] = day_ms[valid].astype("int64").astype("datetime64[ms]")
    filled[no_date] = chosen
    return filled


def _fill_from_gsa(
    hdop: np.ndarray, rmc_lines: np.ndarray, gsa_lines: np.ndarray, gsa_hdop: np.ndarray
) -> np.ndarray:
    """Give each GSA's HDOP to the RMC nearest to it by line, where the RMC has none yet."""
    after = np.clip(np.searchsorted(rmc_lines, gsa_lines), 0, len(rmc_lines) - 1)
    before = np.clip(after - 1, 0, len(rmc_lines) - 1)
    nearest = np.where(
        np.abs(rmc_lines[before] - gsa_lines) <= np.abs(rmc_lines[after] - gsa_lines),
        before,
        after,
    )
    filled = hdop.copy()
    usable = ~np.isnan(gsa_hdop)
    targets, values = nearest[usable][::-1], gsa_hdop[usable][::-1]  # the first GSA wins
    fill = np.isnan(filled[targets])
    filled[targets[fill]] = values[fill]
    return filled
