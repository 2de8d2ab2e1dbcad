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


def trip_end_mask(trip_codes: np.ndarray, step_m: np.ndarray, trim_m: float) -> np.ndarray:
    """Mark fixes within ``trim_m`` of their trip's start or end, measured along the trip.

    Parameters
    ----------
    trip_codes
        Trip of each fix (integer codes), fixes sorted by trip then time (a trip's fixes are
        consecutive).
    step_m
        Distance from each fix to the next fix of the same trip (0 at a trip's last fix).
    trim_m
        Metres to remove at each end.
    """
    if trim_m <= 0 or len(trip_codes) == 0:
        return np.zeros(len(trip_codes), dtype=bool)
    starts = np.flatnonzero(np.diff(trip_codes, prepend=trip_codes[0] - 1))  # trips' first fixes
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(trip_codes)]))
    before = np.cumsum(step_m) - step_m  # distance along the whole array up to each fix
    travelled = before - before[starts][run]
    total = np.add.reduceat(step_m, starts)[run]
    return (travelled < trim_m) | (total - travelled < trim_m)


def privacy_zone_names(
    lon: np.ndarray, lat: np.ndarray, zones: tuple[PrivacyZone, ...]
) -> np.ndarray:
    """Return, per fix, the name of the first privacy zone containing it, or None."""
    names = np.full(len(lon), None, dtype=object)
    for zone in zones:
        inside = distances_m(lon, lat, np.full_like(lon, zone.lon), np.full_like(lat, zone.lat))
        names[(inside <= zone.radius_m) & pd.isna(names)] = zone.name
    return names
