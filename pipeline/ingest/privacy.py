"""Contributor privacy: keyed pseudonyms, trip-end trimming and privacy zones.

Raw contributor and device identifiers never leave ingest: they are replaced by
HMAC-SHA256 pseudonyms under a secret key that is read from the environment or a key file and
never written anywhere (only its fingerprint, :func:`key_fingerprint`, is kept with a traces
dataset, to refuse a batch under another key). The same key gives the same pseudonym in every
batch, so coverage can count distinct contributors over time; without the key, pseudonyms
cannot be linked back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings, PrivacyZone
from pipeline.errors import ConfigError
from pipeline.geodesy import distances_m
from pipeline.ingest.readers import repeated

PSEUDONYM_HEX_DIGITS = 16
MIN_KEY_BYTES = 16
# what the key fingerprint is the HMAC of: a fixed text, so it identifies the key, never an id
KEY_FINGERPRINT_TEXT = b"roadcover pseudonym key fingerprint v1"


def load_pseudonym_key(settings: IngestSettings) -> bytes:
    """Return the secret pseudonym key from the environment variable or the key file.

    Raises
    ------
    ConfigError
        If neither is set, or the key is shorter than 16 bytes.
    """
    key_text = os.environ.get(settings.pseudonym_key_env)
    source = f"environment variable {settings.pseudonym_key_env}"
    if not key_text and settings.pseudonym_key_file:
        path = Path(settings.pseudonym_key_file)
        try:
            key_text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the pseudonym key file: {exc}") from None
        source = f"key file {path}"
    if not key_text:
        raise ConfigError(
            f"no pseudonym key: set the environment variable {settings.pseudonym_key_env} to a "
            "secret of at least 16 characters (e.g. `export "
            f"{settings.pseudonym_key_env}=$(openssl rand -hex 32)`), or name a key file in "
            "ingest.pseudonym_key_file; keep the same key for every batch"
        )
    key = key_text.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the pseudonym key from {source} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def key_fingerprint(key: bytes) -> str:
    """Return the fingerprint of a pseudonym key: HMAC-SHA256 of a fixed text, 64 hex digits.

    Two keys have the same fingerprint only if they are the same; the key cannot be found from
    it (as from any pseudonym).
    """
    return hmac.new(key, KEY_FINGERPRINT_TEXT, hashlib.sha256).hexdigest()


def pseudonym(key: bytes, value: str) -> str:
    """Return the keyed pseudonym (16 hex digits of HMAC-SHA256) of one identifier."""
    digest = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_DIGITS]


def pseudonymize(key: bytes, values: np.ndarray | str, count: int, prefix: str = "") -> np.ndarray:
    """Replace each identifier by the pseudonym of ``prefix + identifier``.

    ``values`` is one identifier per row, or one ``str`` for all ``count`` rows. Computed once
    per distinct value, so a file's thousands of fixes cost a few HMACs.
    """
    if isinstance(values, str):
        return repeated(pseudonym(key, prefix + values), count)
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    mapped = np.array([pseudonym(key, prefix + str(value)) for value in uniques], dtype=object)
    return mapped[codes]


# the privacy radius around a trip's end fix allows for the GPS error of that fix and of the
# fix kept: NOISE_SIGMAS standard deviations of their difference, each fix's standard deviation
# taken as UERE_M x its HDOP (HDOP_IF_UNKNOWN where the file gives none)
UERE_M = 5.0
NOISE_SIGMAS = 4.0
HDOP_IF_UNKNOWN = 3.0
# circles are drawn around each of a trip's first and last END_FIXES fixes, so that an outlier
# at an end (a jump cleaning cannot see, having no fix before it) does not move the circle
END_FIXES = 3


def end_radius_m(trim_m: float, hdop: np.ndarray, end_hdop: np.ndarray) -> np.ndarray:
    """Straight-line distance a kept fix must be from a trip's end fix (metres, per fix).

    ``trim_m`` plus ``NOISE_SIGMAS`` standard deviations of the difference of two GPS errors
    (the fix's and the end fix's), each ``UERE_M * hdop``: 4 x 5 m x sqrt(2) = 28 m at HDOP 1,
    85 m at HDOP 3. A missing HDOP counts as ``HDOP_IF_UNKNOWN``.
    """
    hdop = np.where(np.isnan(hdop), HDOP_IF_UNKNOWN, hdop)
    end_hdop = np.where(np.isnan(end_hdop), HDOP_IF_UNKNOWN, end_hdop)
    return trim_m + NOISE_SIGMAS * UERE_M * np.hypot(hdop, end_hdop)


def trip_end_mask(
    trip_codes: np.ndarray, lon: np.ndarray, lat: np.ndarray, hdop: np.ndarray, trim_m: float
) -> np.ndarray:
    """Mark the fixes of each trip that lie within a privacy circle around its start or end.

    A fix is trimmed when its straight-line distance to one of its trip's first or last
    ``END_FIXES`` fixes is less than :func:`end_radius_m`: ``trim_m`` plus an allowance for the
    GPS error of both fixes, wherever the fix is in the trip (a trip that comes back past its
    start loses those fixes too), as privacy zones draw them around a home.

    Why a circle and not a length along the trip: the length along noisy fixes grows with their
    zigzag, so trimming ``trim_m`` of it removed less road than promised (a median 163 m of 200
    on simulated drives of GPS error sigma 5-15 m), and a winding road brings a fix ``trim_m``
    along it back within ``trim_m`` of the end. The promise is about the place where a trip
    starts and ends, which is a straight-line distance; the allowance (four standard deviations
    of the difference of two errors of ``UERE_M`` x HDOP each) makes it hold for the vehicle's
    true positions, not only the logged ones. Circles around the first three fixes, not the
    first alone, keep it when the first fix is an outlier (a multipath jump that cleaning
    cannot tell from a move, having no fix before it). The circles also trim at least
    ``trim_m`` along the trip: no path between two fixes is shorter than the straight line.

    Parameters
    ----------
    trip_codes
        Trip of each fix (integer codes), fixes sorted by trip then time (a trip's fixes are
        consecutive).
    lon, lat
        Position of each fix (degrees).
    hdop
        HDOP of each fix (NaN where unknown).
    trim_m
        Metres to hide around each end; 0 trims nothing.
    """
    if trim_m <= 0 or len(trip_codes) == 0:
        return np.zeros(len(trip_codes), dtype=bool)
    starts = np.flatnonzero(np.diff(trip_codes, prepend=trip_codes[0] - 1))  # trips' first fixes
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(trip_codes)]))
    first, last = starts[run], np.r_[starts[1:] - 1, len(trip_codes) - 1][run]
    hdop = np.asarray(hdop, dtype="float64")
    near = np.zeros(len(trip_codes), dtype=bool)
    for offset in range(END_FIXES):
        for centre in (np.minimum(first + offset, last), np.maximum(last - offset, first)):
            crow_m = distances_m(lon, lat, lon[centre], lat[centre])
            near |= crow_m < end_radius_m(trim_m, hdop, hdop[centre])
    return near


def privacy_zone_names(
    lon: np.ndarray, lat: np.ndarray, zones: tuple[PrivacyZone, ...]
) -> np.ndarray:
    """Return, per fix, the name of the first privacy zone containing it, or None."""
    names = np.full(len(lon), None, dtype=object)
    for zone in zones:
        inside = distances_m(lon, lat, np.full_like(lon, zone.lon), np.full_like(lat, zone.lat))
        names[(inside <= zone.radius_m) & pd.isna(names)] = zone.name
    return names
