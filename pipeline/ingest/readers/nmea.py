"""NMEA 0183 logs as dashcams write them: RMC fixes, enriched by GGA and GSA.

Accepted lines are plain sentences (``$GPRMC,...*hh``) or sentences after a prefix such as the
BlackVue Unix time in milliseconds (``[1700000000123]$GPRMC,...``). Any talker is accepted
(``GP``, ``GN``, ``GL``, ``GA``, ``BD``, ...). Parsing is done by hand (only three sentence types
matter), with the checksums and the field conversions vectorized.

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
    Counted by type in ``ignored`` (e.g. ``{"GPGSV": 12}``); lines without a ``$`` sentence are
    counted as ``ignored["not_a_sentence"]``.
Contributor and device
    NMEA names neither: both are None.

Decoding: the file is read as bytes (NMEA is ASCII); a stray non-ASCII byte spoils only its
line. Files with NUL bytes, or without any NMEA sentence, are unreadable.
"""

from __future__ import annotations

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
    read_bytes,
    repeated,
    string_buffers,
    strings_from_slices,
    to_float,
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
_NOT_DIGITS = re.compile(r"\D")
_MS_PER_DAY = 86_400_000


def read_nmea(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read an NMEA 0183 log (see the module docstring for the rules)."""
    data = read_bytes(path, source)
    if b"\x00" in data:
        raise unreadable(source, "binary data, not an NMEA text log", FIX_HINT)
    lines = pa.array(data.decode("latin-1").splitlines(), type=pa.string())
    is_sentence = pc.greater_equal(pc.find_substring(lines, "$"), 0)
    if not pc.any(is_sentence).as_py():
        raise unreadable(source, "no NMEA sentences ($GPRMC, $GPGGA, ...) found", FIX_HINT)
    ignored: Counter[str] = Counter()
    blank = pc.equal(pc.utf8_trim_whitespace(lines), "")
    others = pc.sum(pc.and_(pc.invert(is_sentence), pc.invert(blank))).as_py()
    ignored["not_a_sentence"] = int(others or 0)
    prefix_rest = pc.split_pattern(lines.filter(is_sentence), "$", max_splits=1)
    rest = pc.list_element(prefix_rest, 1)
    has_checksum = pc.greater_equal(pc.find_substring(rest, "*"), 0)
    rest = pc.if_else(has_checksum, rest, pc.binary_join_element_wise(rest, "*", ""))
    body_checksum = pc.split_pattern(rest, "*", max_splits=1, reverse=True)
    sentences = _Sentences(
        line=np.flatnonzero(is_sentence.to_numpy(zero_copy_only=False)) + 1,
        prefix=pc.list_element(prefix_rest, 0),
        body=pc.list_element(body_checksum, 0),
    )
    rejects = _check_checksums(
        sentences,
        has_checksum.to_numpy(zero_copy_only=False),
        pc.list_element(body_checksum, 1),
    )
    return _parse_sentences(source, sentences, rejects, ignored)


@dataclass
class _Sentences:
    """The sentences of a file: line numbers, line prefixes and bodies (between $ and *)."""

    line: np.ndarray
    prefix: pa.Array
    body: pa.Array

    def take(self, keep: np.ndarray) -> _Sentences:
        """Return the sentences selected by the boolean ``keep``."""
        chosen = pa.array(keep)
        return _Sentences(self.line[keep], self.prefix.filter(chosen), self.body.filter(chosen))


def _check_checksums(
    sentences: _Sentences, has_checksum: np.ndarray, given: pa.Array
) -> list[Reject]:
    """Reject the sentences whose checksum is present and wrong; keep the others."""
    computed = xor_checksums(sentences.body)
    given_text = pc.utf8_upper(pc.utf8_trim_whitespace(given)).to_numpy(zero_copy_only=False)
    bad = has_checksum & (given_text != _HEX[computed])
    rejects = [
        Reject(int(line), BAD_CHECKSUM, f"checksum *{found}, computed *{_HEX[value]}")
        for line, found, value in zip(
            sentences.line[bad], given_text[bad], computed[bad], strict=True
        )
    ]
    if bad.any():
        kept = sentences.take(~bad)
        sentences.line, sentences.prefix, sentences.body = kept.line, kept.prefix, kept.body
    return rejects


def xor_checksums(bodies: pa.Array) -> np.ndarray:
    """XOR of the bytes of each body (empty bodies give 0), vectorized over the Arrow buffer."""
    offsets, data = string_buffers(bodies)
    if not len(data) or not len(bodies):
        return np.zeros(len(bodies), dtype=np.int64)
    data = np.append(data, np.uint8(0))
    # reduce over [start, end) of every body: interleave the bounds, keep the even results
    bounds = np.empty(2 * len(bodies), dtype=np.int64)
    bounds[0::2], bounds[1::2] = offsets[:-1], offsets[1:]
    out = np.bitwise_xor.reduceat(data, bounds)[0::2].astype(np.int64)
    out[offsets[1:] == offsets[:-1]] = 0
    return out


class _Fields:
    """The comma-separated fields of sentences, by position ("" where a sentence is shorter).

    Found from the positions of the commas in the bodies' bytes (splitting every body into
    a list costs Arrow many times more). ``bodies`` hold no nulls (they are what follows "$").
    """

    def __init__(self, bodies: pa.Array) -> None:
        self.offsets, self.data = string_buffers(bodies)
        # comma positions, then one past the bytes: field ends never index out of range
        self.commas = np.append(np.flatnonzero(self.data == ord(",")), len(self.data))
        self.first = np.searchsorted(self.commas, self.offsets[:-1])  # a body's first comma
        self.end = np.searchsorted(self.commas, self.offsets[1:])  # past its last comma
        self.count = self.end - self.first + 1

    def __getitem__(self, index: int) -> np.ndarray:
        last = len(self.commas) - 1
        if index == 0:
            starts = self.offsets[:-1]
        else:
            starts = self.commas[np.minimum(self.first + index - 1, last)] + 1
        own = self.first + index
        ends = np.where(own < self.end, self.commas[np.minimum(own, last)], self.offsets[1:])
        present = self.count > index
        fields = strings_from_slices(
            self.data, np.where(present, starts, 0), np.where(present, ends, 0)
        )
        return fields.to_numpy(zero_copy_only=False)


def _parse_sentences(
    source: str, sentences: _Sentences, rejects: list[Reject], ignored: Counter[str]
) -> ReadResult:
    body = pc.utf8_rtrim_whitespace(sentences.body)
    type_array = pc.extract_regex(body, r"^(?P<t>[^,]*)").field("t")
    types = type_array.to_numpy(zero_copy_only=False)
    kinds = pc.utf8_slice_codeunits(type_array, 2).to_numpy(zero_copy_only=False)
    kinds[pc.starts_with(type_array, "P").to_numpy(zero_copy_only=False)] = ""  # proprietary
    used = np.zeros(len(types), dtype=bool)
    tables: dict[str, tuple[np.ndarray, _Fields, np.ndarray]] = {}
    for kind, (low, high) in _FIELD_COUNTS.items():
        is_kind = kinds == kind
        used |= is_kind
        fields = _Fields(body.filter(pa.array(is_kind)))
        lines = sentences.line[is_kind]
        wrong = (fields.count < low) | (fields.count > high)
        rejects.extend(
            Reject(int(line), MALFORMED_ROW, f"{name} sentence with {count} fields")
            for line, name, count in zip(
                lines[wrong], types[is_kind][wrong], fields.count[wrong], strict=True
            )
        )
        prefixes = sentences.prefix.filter(pa.array(is_kind)).to_numpy(zero_copy_only=False)
        if wrong.any():
            keep = pa.array(~wrong)
            fields = _Fields(body.filter(pa.array(is_kind)).filter(keep))
            lines, prefixes = lines[~wrong], prefixes[~wrong]
        tables[kind] = (lines, fields, prefixes)
    for name, count in Counter(types[~used].tolist()).items():
        ignored[name or "empty_sentence"] += count
    candidates = _rmc_candidates(tables, ignored)
    return finish(source, FORMAT, candidates, rejects, ignored)


def _match_gga(
    rmc_lines: np.ndarray, rmc_times: np.ndarray, gga_lines: np.ndarray, gga_times: np.ndarray
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
    before_ok[before_ok] = rmc_times[before[before_ok]] == gga_times[before_ok]
    after_ok = after < len(rmc_lines)
    after_ok[after_ok] = rmc_times[after[after_ok]] == gga_times[after_ok]
    target = np.where(before_ok, before, np.where(after_ok, after, -1))
    gga_index = np.arange(len(gga_lines))
    matched = target >= 0
    # the first GGA claiming an RMC wins: assign in reverse so that earlier ones overwrite
    match[target[matched][::-1]] = gga_index[matched][::-1]
    return match


def _rmc_candidates(
    tables: dict[str, tuple[np.ndarray, _Fields, np.ndarray]], ignored: Counter[str]
) -> Candidates:
    rmc_lines, rmc, prefixes = tables["RMC"]
    gga_lines, gga, _ = tables["GGA"]
    candidates = Candidates(rmc_lines)
    gga_times = gga[1]
    match = _match_gga(rmc_lines, rmc[1], gga_lines, gga_times)
    ignored["GGA_without_RMC"] += len(gga_lines) - int((match >= 0).sum())
    if not len(rmc_lines):
        return candidates
    has_gga = match >= 0

    def from_gga(index: int) -> np.ndarray:
        out = repeated("", len(rmc_lines))
        out[has_gga] = gga[index][match[has_gga]]
        return out

    candidates.reject(rmc[2] == "V", INVALID_FIX, "RMC status V (no valid fix)")
    candidates.reject(rmc[12] == "N", INVALID_FIX, "RMC mode N (no valid fix)")
    candidates.reject(from_gga(6) == "0", INVALID_FIX, "GGA fix quality 0 (no fix)")
    lat_text, lat_hemi, lon_text, lon_hemi = rmc[3], rmc[4], rmc[5], rmc[6]
    lat, lat_bad = _degrees(lat_text, lat_hemi, "N", "S")
    lon, lon_bad = _degrees(lon_text, lon_hemi, "E", "W")
    candidates.columns["lon"], candidates.columns["lat"] = lon, lat
    bad = lat_bad | lon_bad
    missing = (np.isnan(lat) | np.isnan(lon)) & ~bad
    if (bad | missing).any():
        lat_raw = np.char.add(lat_text.astype(str), lat_hemi.astype(str))
        lon_raw = np.char.add(lon_text.astype(str), lon_hemi.astype(str))
        raw = _details(bad | missing, "lat='{}', lon='{}'", lat_raw, lon_raw)
        candidates.reject(missing, MISSING_COORDINATES, raw)
        candidates.reject(bad, UNPARSEABLE_COORDINATES, raw)
    _set_rmc_times(candidates, rmc[1], rmc[9], prefixes)
    candidates.columns["speed_mps"] = to_optional_float(rmc[7]) * KNOTS_TO_MPS
    candidates.columns["heading_deg"] = to_optional_float(rmc[8])
    candidates.columns["elevation_m"] = to_optional_float(from_gga(9))
    hdop = to_optional_float(from_gga(8))
    gsa_lines, gsa, _ = tables["GSA"]
    if len(gsa_lines) and np.isnan(hdop).any():
        hdop = _fill_from_gsa(hdop, rmc_lines, gsa_lines, to_optional_float(gsa[16]))
    candidates.columns["hdop"] = hdop
    return candidates


def _details(mask: np.ndarray, template: str, *columns: np.ndarray) -> np.ndarray:
    """Format ``template`` with the raw values of each row in ``mask`` (None elsewhere)."""
    out = np.full(len(mask), None, dtype=object)
    rows = zip(*(c[mask] for c in columns), strict=True)
    out[mask] = [template.format(*(str(v) for v in values)) for values in rows]
    return out


def _degrees(
    value: np.ndarray, hemisphere: np.ndarray, positive: str, negative: str
) -> tuple[np.ndarray, np.ndarray]:
    """Convert NMEA ``(d)ddmm.mmmm`` + hemisphere to signed degrees; also flag bad values."""
    number, bad = to_float(value)
    degrees = np.trunc(number / 100.0)
    minutes = number - degrees * 100.0
    signed = np.where(hemisphere == negative, -1.0, 1.0) * (degrees + minutes / 60.0)
    present = ~np.isnan(number)
    bad = bad | (present & ((minutes >= 60.0) | (number < 0)))
    bad |= present & ~np.isin(hemisphere, [positive, negative])
    return signed, bad


def _set_rmc_times(
    candidates: Candidates, time: np.ndarray, date: np.ndarray, prefixes: np.ndarray
) -> None:
    count = len(time)
    tod, tod_bad = to_float(time)
    hours, rest = np.divmod(tod, 10_000.0)
    minutes, seconds = np.divmod(rest, 100.0)
    tod_bad |= ~np.isnan(tod) & ((hours >= 24) | (minutes >= 60) | (seconds >= 61) | (tod < 0))
    millis = np.round((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0)
    day_number, date_bad = to_float(date)
    date_text = pd.Series(date, dtype=object).str.strip()
    date_bad |= ~np.isnan(day_number) & (date_text.str.len() != 6).to_numpy(dtype=bool)
    dd, rest = np.divmod(day_number, 10_000.0)
    mm, yy = np.divmod(rest, 100.0)
    days = pd.to_datetime(
        pd.DataFrame({"year": 2000 + yy, "month": mm, "day": dd}), errors="coerce"
    ).to_numpy(dtype="datetime64[ms]")
    date_bad |= ~np.isnan(day_number) & np.isnat(days)
    no_date = np.isnan(day_number) & ~date_bad
    if no_date.any():
        days = _days_from_prefixes(days, no_date, millis, prefixes)
    ok = ~np.isnat(days) & ~np.isnan(millis) & ~tod_bad & ~date_bad
    out = np.full(count, np.datetime64("NaT"), dtype="datetime64[ms]")
    out[ok] = days[ok] + millis[ok].astype("int64").astype("timedelta64[ms]")
    candidates.columns["observed_at"] = out  # UTC
    no_time = np.isnan(tod) & ~tod_bad
    if (no_time | tod_bad | date_bad).any():
        raw = _details(no_time | tod_bad | date_bad, "time='{}', date='{}'", time, date)
        candidates.reject(no_time, MISSING_TIME, raw)
        candidates.reject(tod_bad | date_bad, UNPARSEABLE_TIME, raw)
    candidates.reject(np.isnat(days), MISSING_TIME, "RMC has no date and the line no time prefix")


def _days_from_prefixes(
    days: np.ndarray, no_date: np.ndarray, millis: np.ndarray, prefixes: np.ndarray
) -> np.ndarray:
    """Date of the fix from the line's epoch prefix: the day putting the fix nearest to it."""
    digits = [_NOT_DIGITS.sub("", prefixes[i]) for i in np.flatnonzero(no_date)]
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
