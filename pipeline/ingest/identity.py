"""Who contributed a file, and the pseudonymous ids that replace the raw identifiers.

Contributor, in order of precedence (the first that says wins):

1. a sidecar ``<file>.meta.json`` written by the upload service, ``{"contributor_id": ...,
   "device_id": ...}``: the authenticated uploader, the most trustworthy source;
2. the config's ``ingest.contributors``: the first glob pattern that matches the file path
   (for bulk imports, e.g. every file of a partner fleet);
3. the file itself (a contributor column or GPX author), which the contributor controls;
4. otherwise ``unknown``.

Device: the sidecar, then the file itself (per row, so one CSV may hold several devices), then
the file name without its extension. A sidecar that is a symbolic link is refused, never
followed.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings
from pipeline.errors import InputDataError
from pipeline.ingest.privacy import pseudonymize

SIDECAR_SUFFIX = ".meta.json"
UNKNOWN_CONTRIBUTOR = "unknown"
SIDECAR_KEYS = ("contributor_id", "device_id", "date")


def read_sidecar(path: Path) -> dict[str, str]:
    """Return the contributor, device and date a file's sidecar gives (empty when none).

    Raises
    ------
    InputDataError
        If the sidecar is not a JSON object, or is a symbolic link (never followed).
    """
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.is_symlink():
        raise InputDataError(
            f"{sidecar}: a symbolic link; links are not followed: put the sidecar file itself there"
        )
    if not sidecar.exists():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{sidecar}: not a readable JSON sidecar: {exc}") from None
    if not isinstance(data, dict):
        raise InputDataError(f"{sidecar}: expected a JSON object with contributor_id/device_id")
    return {k: str(data[k]) for k in SIDECAR_KEYS if data.get(k) is not None}


def log_date(
    path: Path, settings: IngestSettings, location: Path | None = None
) -> datetime.date | None:
    """Return the UTC date of a file's first fix as its upload gives it, or None.

    The sidecar's ``date`` (``YYYY-MM-DD``) wins, then the first of ``ingest.log_dates``
    whose glob pattern matches the file path; readers use it for logs whose fixes carry no
    date (NMEA GGA without RMC). ``path`` and ``location`` are as for
    :func:`assign_identities`.

    Raises
    ------
    InputDataError
        If the sidecar's ``date`` is not a date ``YYYY-MM-DD``.
    """
    sidecar_path = location if location is not None else path
    given = read_sidecar(sidecar_path).get("date")
    if given is not None:
        try:
            return _iso_date(given)
        except ValueError:
            raise InputDataError(
                f"{sidecar_path}{SIDECAR_SUFFIX}: date {given!r} is not a date YYYY-MM-DD; "
                "write the UTC date of the file's first fix"
            ) from None
    for pattern, date in settings.log_dates:
        if fnmatch.fnmatch(str(path), pattern) or fnmatch.fnmatch(path.name, pattern):
            return date
    return None


def _iso_date(text: str) -> datetime.date:
    """Parse ``YYYY-MM-DD`` (no other form ``date.fromisoformat`` would take)."""
    if len(text) != len("YYYY-MM-DD"):
        raise ValueError(text)
    return datetime.date.fromisoformat(text)


def assign_identities(
    fixes: Mapping[str, np.ndarray],
    path: Path,
    file_sha256: str,
    settings: IngestSettings,
    key: bytes,
    location: Path | None = None,
) -> dict[str, np.ndarray]:
    """Return a file's fix columns with pseudonymous contributor, device and ``trace_id``.

    A trace is one device's fixes in one file: ``trace_id`` is the pseudonym of the file's
    content hash and the raw device id, so re-reading the same file gives the same traces.
    ``fixes`` are the reader's columns (:attr:`~pipeline.ingest.readers.ReadResult.columns`);
    the raw id columns are replaced, not changed. ``path`` is the file as given (matched
    against ``ingest.contributors``); its sidecar is looked for beside ``location`` (default
    ``path``), where the file is opened.
    """
    sidecar = read_sidecar(location if location is not None else path)
    configured = _configured_contributor(path, settings)
    raw_device = _first_given(sidecar.get("device_id"), fixes["device_id"], path.name.split(".")[0])
    contributor = sidecar.get("contributor_id") or configured
    raw_contributor = _first_given(contributor, fixes["contributor_id"], UNKNOWN_CONTRIBUTOR)
    count = len(fixes["source_row"])
    return {
        **fixes,
        "contributor_id": pseudonymize(key, raw_contributor, count),
        "device_id": pseudonymize(key, raw_device, count),
        "trace_id": pseudonymize(key, raw_device, count, prefix=f"trace:{file_sha256}:"),
    }


def _first_given(file_wide: str | None, per_row: np.ndarray, default: str) -> str | np.ndarray:
    """Per row: ``file_wide`` if given, else the row's own value, else ``default``.

    One ``str`` when every row gets the same (the common case), else one value per row.
    """
    if file_wide is not None:
        return file_wide
    values = np.asarray(per_row, dtype=object)
    missing = pd.isna(values)
    if missing.all():
        return default
    if not missing.any() and (values == values[0]).all():
        return str(values[0])
    return np.where(missing, default, values)


def _configured_contributor(path: Path, settings: IngestSettings) -> str | None:
    for pattern, contributor in settings.contributors:
        if fnmatch.fnmatch(str(path), pattern) or fnmatch.fnmatch(path.name, pattern):
            return contributor
    return None
