"""NMEA 0183 logs as dashcams write them: RMC fixes, enriched by GGA and GSA.

Accepted lines are plain sentences (``$GPRMC,...*hh``) or sentences after a prefix such as the
BlackVue Unix time in milliseconds (``[1700000000123]$GPRMC,...``). Any talker is accepted
(``GP``, ``GN``, ``GL``, ``GA``, ``BD``, ...). Parsing is done by hand (only three sentence types
matter), on positions in the file's bytes: lines, sentences and fields are found with NumPy,
checksums computed and numbers parsed for all sentences at once, without a Python object per
line or field.

Rows and ``source_row``
    A fix is an RMC sentence; its ``source_row`` is the 1-based line number of that sentence.
    A line that is damaged (a checksum present and wrong: ``bad_checksum``; an RMC, GGA or GSA
    sentence with the wrong number of fields: ``malformed_row``) is a reject at its line number,
    whatever its type, since it cannot be trusted. A missing checksum is accepted.
Time
    RMC date (``ddmmyy``, year 20yy) + time of day, UTC. The line prefix is not the fix time
    (it is the camera's clock); it is used only for the date when the RMC has no date, taking
    the day that puts the fix closest to the prefix time. No date and no prefix:
    ``missing_time``.
Values
    Speed over ground (knots) -> ``speed_mps``; course -> ``heading_deg``. RMC status ``V`` or
    mode ``N`` is an ``invalid_fix``.
GGA
    The GGA sentence with the same UTC time next to the RMC (before or after it) gives
    ``elevation_m`` (altitude above mean sea level), ``hdop``, and fix quality (0 makes the fix
    an ``invalid_fix``). A GGA with no such RMC is not turned into a fix (it has no date, and it
    is usually the partner of a rejected RMC): it is counted in ``ignored["GGA_without_RMC"]``.
GSA
    Gives ``hdop`` to the nearest RMC (by line) when its GGA did not.
Other sentences
    Counted by type in ``ignored`` (e.g. ``{"GPGSV": 12}``; a type that is not 2 to 10 capital
    letters or digits as ``unknown_sentence``); lines without a ``$`` sentence are counted as
    ``ignored["not_a_sentence"]``.
Contributor and device
    NMEA names neither: both are None.

Decoding: the file is read as bytes (NMEA is ASCII); a sentence line holding a byte that is
not ASCII is an ``invalid_encoding`` reject at its line number (the first such byte and its
column in the detail), and the other lines are read. Files with NUL bytes, or without any
NMEA sentence, are unreadable.
"""

from __future__ import annotations

import dataclasses
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
}
_HEX = np.array([f"{value:02X}" for value in range(256)], dtype=object)
_HEX_VALUE = np.full(256, -1, dtype=np.int64)  # byte -> value of a hex digit, -1 for others
for _value, _digit in enumerate(b"0123456789ABCDEF"):
    _HEX_VALUE[_digit] = _HEX_VALUE[ord(chr(_digit).lower())] = _value
_NEXT_LINE = 0x85  # U+0085, a line break (bytes c2 85): the kind of its delimiter
_LINE_BREAK = np.zeros(256, dtype=bool)  # delimiter kinds that break lines, as str.splitlines
_LINE_BREAK[[0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, _NEXT_LINE]] = True
_MAY_END_IN_SPACE = np.zeros(256, dtype=bool)  # last bytes of what rtrim may remove
_MAY_END_IN_SPACE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_MAY_END_IN_SPACE[0x80:] = True  # the last byte of any non-ASCII character (U+0085, U+00A0, ...)
_RMC_NUMBERS = (1, 9, 3, 5, 7, 8)  # time, date, latitude, longitude, speed, course
_RMC_TEXTS = (2, 4, 6, 12)  # status, N/S, E/W, mode
_GGA_VALUES = (9, 8, 6)  # altitude, HDOP, fix quality
_NOT_DIGITS = re.compile(r"\D")
_SENTENCE_TYPE = re.compile(r"[A-Z0-9]{2,10}")  # GPGSV, PGRME, ...; others are not named
_MS_PER_DAY = 86_400_000


def read_nmea(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read an NMEA 0183 log (see the module docstring for the rules).

    The lines, sentences and fields are found as positions in the file's bytes; only the
    fields that are used become Arrow strings (no Python object per line or field).
    """
    data = read_bytes(path, source, options.max_decoded_bytes)
    if b"\x00" in data:
        raise unreadable(source, "binary data, not an NMEA text log", FIX_HINT)
    text = np.frombuffer(_latin1_as_utf8(data), dtype=np.uint8)
    marks = _Delimiters(text)
    line_start, line_end, line_end_mark = _line_bounds(marks)
    dollar_mark = np.append(np.flatnonzero(marks.kind == ord("$")), len(marks.position))
    dollars = np.append(marks.position, len(text))[dollar_mark]
    first_dollar = np.searchsorted(dollars, line_start)
    dollar, dollar_mark = dollars[first_dollar], dollar_mark[first_dollar]
    is_sentence = dollar < line_end
    if not is_sentence.any():
        raise unreadable(source, "no NMEA sentences ($GPRMC, $GPGGA, ...) found", FIX_HINT)
    is_sentence, not_ascii = _refuse_non_ascii(text, line_start, line_end, is_sentence)
    ignored: Counter[str] = Counter()
    others = strings_from_slices(text, line_start[~is_sentence], line_end[~is_sentence])
    blank = pc.sum(pc.equal(pc.utf8_trim_whitespace(others), "")).as_py()
    ignored["not_a_sentence"] = len(others) - int(blank or 0)
    sentences = _Sentences.split(
        marks,
        np.flatnonzero(is_sentence) + 1,
        line_start[is_sentence],
        (dollar[is_sentence], dollar_mark[is_sentence]),
        (line_end[is_sentence], line_end_mark[is_sentence]),
    )
    sentences, rejects = _check_checksums(sentences)
    return _parse_sentences(source, sentences, [*not_ascii, *rejects], ignored)


def _refuse_non_ascii(
    text: np.ndarray, line_start: np.ndarray, line_end: np.ndarray, is_sentence: np.ndarray
) -> tuple[np.ndarray, list[Reject]]:
    """Reject the sentence lines holding a byte that is not ASCII (``invalid_encoding``).

    ``text`` is the file read as latin-1, in UTF-8: a byte ``b`` >= 0x80 of the file is the
    two bytes ``0xc0 | b >> 6``, ``0x80 | b & 0x3f``. Returns the sentence lines left.
    """
    high = np.flatnonzero(text >= 0x80)
    if not len(high):
        return is_sentence, []
    line = np.searchsorted(line_start, high, side="right") - 1
    high, line = high[high < line_end[line]], line[high < line_end[line]]  # not U+0085 breaks
    lines, first = np.unique(line, return_index=True)
    chosen = is_sentence[lines]
    lines, at = lines[chosen], high[first[chosen]]
    byte = ((text[at] & 0x03).astype(np.int64) << 6) | (text[at + 1] & 0x3F)
    rejects = [
        Reject(int(n) + 1, INVALID_ENCODING, f"not ASCII (byte 0x{b:02x} at column {c})")
        for n, b, c in zip(lines, byte, at - line_start[lines] + 1, strict=True)
    ]
    left = is_sentence.copy()
    left[lines] = False
    return left, rejects


def _latin1_as_utf8(data: bytes) -> bytes:
    """Return the text of latin-1 ``data`` as UTF-8 bytes (ASCII data is both already)."""
    return data if data.isascii() else data.decode("latin-1").encode("utf-8")


class _Delimiters:
    """The bytes that structure an NMEA text: ``$``, ``*``, ``,`` and line breaks.

    Found in one pass over the text (they are all at most ``,``), with U+0085 (a line break
    for ``str.splitlines``, the bytes ``c2 85``) added where the text is not ASCII.

    Attributes
    ----------
    position
        Where each delimiter is in the text, in order.
    kind
        Its byte (:data:`_NEXT_LINE` for U+0085).
    commas_before
        The number of commas before each delimiter, then the number of commas.
    commas
        The positions of the commas, then the length of the text.
    """

    def __init__(self, text: np.ndarray) -> None:
        position = np.flatnonzero(text <= ord(","))
        kind = text[position]
        next_line = np.flatnonzero(text[1:] == 0x85)  # U+0085 is c2 85: its c2
        next_line = next_line[text[next_line] == 0xC2]
        if len(next_line):
            position = np.concatenate([position, next_line])
            kind = np.concatenate([kind, np.full(len(next_line), _NEXT_LINE, dtype=np.uint8)])
            order = np.argsort(position, kind="stable")
            position, kind = position[order], kind[order]
        is_comma = kind == ord(",")
        self.position, self.kind = position, kind
        self.commas_before = np.concatenate([[0], np.cumsum(is_comma)])
        self.commas = np.append(position[is_comma], len(text))
        self.text = text


def _line_bounds(marks: _Delimiters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Return where each line starts and ends, as ``str.splitlines`` cuts the text.

    Lines end at ``\n``, ``\r``, ``\r\n``, ``\v``, ``\f``, ``\x1c``, ``\x1d``, ``\x1e`` and
    U+0085; a break at the very end of the text does not start another line. Also returns
    the delimiter that ends each line (the number of delimiters for the last line, if it
    has no break).
    """
    size = len(marks.text)
    position, kind = marks.position, marks.kind
    follows = np.zeros(len(position), dtype=bool)  # a delimiter right after another
    follows[1:] = position[1:] == position[:-1] + 1
    lf_of_crlf = follows & (kind == ord("\n"))
    lf_of_crlf[1:] &= kind[:-1] == ord("\r")
    breaks = np.flatnonzero(_LINE_BREAK[kind] & ~lf_of_crlf)  # "\r\n" is one, at its "\r"
    is_crlf = np.append(lf_of_crlf[1:], False)[breaks]
    sizes = np.where(is_crlf | (kind[breaks] == _NEXT_LINE), 2, 1)
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


def _parse_sentences(
    source: str, sentences: _Sentences, rejects: list[Reject], ignored: Counter[str]
) -> ReadResult:
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
    for name, count in _value_counts(types.filter(pa.array(~used))).items():
        ignored[_sentence_type(name)] += count
    candidates = _rmc_candidates(tables, ignored)
    return finish(source, FORMAT, candidates, rejects, ignored)


def _sentence_type(name: str) -> str:
    """Return the key counting an unused sentence type in ``ignored``: its name, if one."""
    if not name:
        return "empty_sentence"
    return name if _SENTENCE_TYPE.fullmatch(name) else "unknown_sentence"


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
    rmc_lines: np.ndarray, rmc_times: pa.Array, gga_lines: np.ndarray, gga_times: pa.Array
) -> np.ndarray:
    """Index of the GGA enriching each RMC (-1 for none).

    A GGA belongs to the RMC just before it, or else just after it, with the same UTC time
    field; when two GGAs claim one RMC, the first wins.
    """
    match = np.full(len(rmc_lines), -1, dtype=np.int64)
    if not len(rmc_lines) or not len(gga_lines):
        return match
    after = np.searchsorted(rmc_lines, gga_lines)
    before = after - 1
    before_ok = before >= 0
    before_ok[before_ok] = _same(rmc_times, before[before_ok], gga_times, before_ok)
    after_ok = after < len(rmc_lines)
    after_ok[after_ok] = _same(rmc_times, after[after_ok], gga_times, after_ok)
    target = np.where(before_ok, before, np.where(after_ok, after, -1))
    gga_index = np.arange(len(gga_lines))
    matched = target >= 0
    # the first GGA claiming an RMC wins: assign in reverse so that earlier ones overwrite
    match[target[matched][::-1]] = gga_index[matched][::-1]
    return match


def _same(left: pa.Array, rows: np.ndarray, right: pa.Array, mask: np.ndarray) -> np.ndarray:
    """Compare ``left`` at ``rows`` with ``right`` where ``mask``, string by string."""
    equal = pc.equal(left.take(pa.array(rows)), right.filter(pa.array(mask)))
    return equal.to_numpy(zero_copy_only=False)


def _rmc_candidates(
    tables: dict[str, tuple[_Sentences, _Fields]], ignored: Counter[str]
) -> Candidates:
    rmc_sentences, rmc = tables["RMC"]
    gga_sentences, gga = tables["GGA"]
    rmc_lines = rmc_sentences.line
    candidates = Candidates(rmc_lines)
    match = _match_gga(rmc_lines, rmc[1], gga_sentences.line, gga[1])
    ignored["GGA_without_RMC"] += len(gga_sentences.line) - int((match >= 0).sum())
    if not len(rmc_lines):
        return candidates
    status, lat_hemi, lon_hemi, mode = _split(rmc.table(_RMC_TEXTS), len(_RMC_TEXTS))
    from_gga = gga.table(_GGA_VALUES, match)  # "" where the RMC has no GGA
    quality = _split(from_gga, len(_GGA_VALUES))[2]
    numbers = pa.concat_arrays([rmc.table(_RMC_NUMBERS), from_gga.slice(0, 2 * len(match))])
    time, date, lat_text, lon_text = _split(numbers, 8)[:4]
    parsed = to_float_columns(numbers, 8)
    candidates.reject(_equals(status, "V"), INVALID_FIX, "RMC status V (no valid fix)")
    candidates.reject(_equals(mode, "N"), INVALID_FIX, "RMC mode N (no valid fix)")
    candidates.reject(_equals(quality, "0"), INVALID_FIX, "GGA fix quality 0 (no fix)")
    lat, lat_bad = _degrees(parsed[2], lat_hemi, "N", "S")
    lon, lon_bad = _degrees(parsed[3], lon_hemi, "E", "W")
    candidates.columns["lon"], candidates.columns["lat"] = lon, lat
    bad = lat_bad | lon_bad
    missing = (np.isnan(lat) | np.isnan(lon)) & ~bad
    if (bad | missing).any():
        lat_raw = pc.binary_join_element_wise(lat_text, lat_hemi, "")
        lon_raw = pc.binary_join_element_wise(lon_text, lon_hemi, "")
        raw = _details(bad | missing, "lat={}, lon={}", lat_raw, lon_raw)
        candidates.reject(missing, MISSING_COORDINATES, raw)
        candidates.reject(bad, UNPARSEABLE_COORDINATES, raw)
    _set_rmc_times(candidates, (time, *parsed[0]), (date, *parsed[1]), rmc_sentences)
    candidates.columns["speed_mps"] = parsed[4][0] * KNOTS_TO_MPS
    candidates.columns["heading_deg"] = parsed[5][0]
    candidates.columns["elevation_m"] = parsed[6][0]
    hdop = parsed[7][0]
    gsa_sentences, gsa = tables["GSA"]
    if len(gsa_sentences.line) and np.isnan(hdop).any():
        hdop = _fill_from_gsa(hdop, rmc_lines, gsa_sentences.line, to_optional_float(gsa[16]))
    candidates.columns["hdop"] = hdop
    return candidates


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
    time_field: tuple[pa.Array, np.ndarray, np.ndarray],
    date_field: tuple[pa.Array, np.ndarray, np.ndarray],
    sentences: _Sentences,
) -> None:
    """Set the fix times from the RMC time and date fields: text, number and bad flags each."""
    time, tod, tod_bad = time_field
    date, day_number, date_bad = date_field
    count = len(time)
    hours, rest = np.divmod(tod, 10_000.0)
    minutes, seconds = np.divmod(rest, 100.0)
    tod_bad = tod_bad | ~np.isnan(tod) & (
        (hours >= 24) | (minutes >= 60) | (seconds >= 61) | (tod < 0)
    )
    millis = np.round((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0)
    date_length = pc.utf8_length(pc.utf8_trim_whitespace(date)).to_numpy(zero_copy_only=False)
    date_bad = date_bad | (~np.isnan(day_number) & (date_length != 6))
    dd, rest = np.divmod(day_number, 10_000.0)
    mm, yy = np.divmod(rest, 100.0)
    days = _dates(2000 + yy, mm, dd)
    date_bad |= ~np.isnan(day_number) & np.isnat(days)
    no_date = np.isnan(day_number) & ~date_bad
    if no_date.any():
        prefixes = sentences.take(no_date).prefixes().to_pylist()
        days = _days_from_prefixes(days, no_date, millis, prefixes)
    ok = ~np.isnat(days) & ~np.isnan(millis) & ~tod_bad & ~date_bad
    out = np.full(count, np.datetime64("NaT"), dtype="datetime64[ms]")
    out[ok] = days[ok] + millis[ok].astype("int64").astype("timedelta64[ms]")
    candidates.columns["observed_at"] = out  # UTC
    no_time = np.isnan(tod) & ~tod_bad
    if (no_time | tod_bad | date_bad).any():
        raw = _details(no_time | tod_bad | date_bad, "time={}, date={}", time, date)
        candidates.reject(no_time, MISSING_TIME, raw)
        candidates.reject(tod_bad | date_bad, UNPARSEABLE_TIME, raw)
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
