"""The ``latest.json`` pointer of a releases folder, and publishing a release under it.

``latest.json`` is ``{"release_id": "<id>", "path": "<releases_dir>/<id>"}``: the newest
release of a series, the default ``--previous`` of the next export. :func:`publish_release`
holds the releases folder's lock (:func:`pipeline.locking.folder_lock`) from reading the
pointer, through writing the release, to rewriting the pointer (atomically), so two exports
into one folder run one after the other: the second sees the first's release as the latest,
writes its delta against it, and the pointer always names a complete release. Releases are
never deleted, so none a pointer names can vanish. An export stopped between renaming its
release into place and moving the pointer is completed by running it again: the release it
would write is already there, byte for byte, so only the pointer is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import shapely

from pipeline.errors import ConfigError, InputDataError
from pipeline.export.feeds.stage import (
    DEFAULT_PARTITION_RES,
    MANIFEST_FILE,
    RELEASE_ID,
    default_release_id,
    verify_release,
    write_release,
)
from pipeline.io import write_json
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock

log = logging.getLogger(__name__)


def read_latest_release(latest_path: Path, releases_dir: Path) -> str | None:
    """Return the release id ``latest_path`` names, or None when there is no pointer yet.

    Raises
    ------
    InputDataError
        If the pointer is not JSON of the form ``{"release_id": ...}``, or names a release
        that is not a complete release of ``releases_dir``.
    """
    if not latest_path.exists() and not latest_path.is_symlink():
        return None
    fix = (
        f'it must be JSON like {{"release_id": "<a release folder in {releases_dir}>"}}: '
        "correct it, or delete it to export without a previous release"
    )
    try:
        pointer = json.loads(latest_path.read_bytes())
    except json.JSONDecodeError as error:
        reason: str | None = f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except OSError as error:
        reason = error.strerror or type(error).__name__
    else:
        reason = None
    if reason is not None:
        raise InputDataError(f"{latest_path}: not a readable release pointer ({reason}); {fix}")
    release_id = pointer.get("release_id") if isinstance(pointer, dict) else None
    if not isinstance(release_id, str) or not RELEASE_ID.match(release_id):
        raise InputDataError(f"{latest_path}: no valid release_id in the pointer; {fix}")
    if not (releases_dir / release_id / MANIFEST_FILE).is_file():
        raise InputDataError(
            f"{latest_path}: names release {release_id!r}, but {releases_dir / release_id} is not "
            f"a complete release (no {MANIFEST_FILE}); {fix}"
        )
    return release_id


def publish_release(
    coverage_dir: str | Path,
    roads_dir: str | Path,
    releases_dir: str | Path,
    latest_path: str | Path,
    release_id: str | None = None,
    previous: str | Path | None = None,
    aoi: str | Path | shapely.Geometry | None = None,
    formats: Iterable[str] = ("geoparquet",),
    partition_res: int = DEFAULT_PARTITION_RES,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any] | None:
    """Write a release and point ``latest_path`` at it, holding the releases folder's lock.

    Parameters
    ----------
    coverage_dir, roads_dir, releases_dir, release_id, aoi, formats, partition_res
        As :func:`pipeline.export.feeds.stage.write_release`.
    latest_path
        The pointer file, e.g. ``releases_dir/latest.json``; its parent folder is locked too
        when it is not ``releases_dir``.
    previous
        The release to write the delta against; default: the one ``latest_path`` names.
    lock_timeout_s
        How long to wait for another writer (config ``lock_timeout_s``).

    Returns
    -------
    dict or None
        The new release's manifest; None if the pointer already named this release.

    Raises
    ------
    ConfigError
        If ``release_id`` is already a release of the folder, other than the one this export
        writes (an identical one, left by an export stopped before the pointer, is adopted).
    InputDataError
        For a malformed pointer (see :func:`read_latest_release`) or bad inputs.
    LockTimeoutError
        If another writer held a lock for longer than ``lock_timeout_s``.
    """
    releases_dir, latest_path = Path(releases_dir), Path(latest_path)
    release_id = release_id or default_release_id(coverage_dir)
    with _hold_locks((releases_dir, latest_path.parent), lock_timeout_s):
        latest = read_latest_release(latest_path, releases_dir)
        if latest == release_id:
            log.info("feed: release %s is already the latest; nothing to do", release_id)
            return None
        if previous is None and latest is not None:
            previous = releases_dir / latest

        def write_into(folder: Path) -> dict[str, Any]:
            return write_release(
                coverage_dir, roads_dir, folder, release_id, previous, aoi, formats, partition_res
            )

        if (releases_dir / release_id).exists():
            manifest = _adopt_unpublished_release(releases_dir, release_id, write_into)
        else:
            manifest = write_into(releases_dir)
        write_json({"release_id": release_id, "path": str(releases_dir / release_id)}, latest_path)
    return manifest


def _adopt_unpublished_release(
    releases_dir: Path, release_id: str, write_into: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """Return the manifest of the existing release ``release_id`` if this export is that release.

    An export killed after renaming its release into place and before moving the pointer leaves
    a complete release that no pointer names. The export is written again in a scratch folder:
    releases are byte-reproducible, so the same manifest (which holds every file's sha256) and
    an intact existing release mean the export was done and only the pointer is missing.

    Raises
    ------
    ConfigError
        If the existing release is another one, or damaged.
    """
    existing = releases_dir / release_id
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{release_id}.check.", suffix=".tmp", dir=releases_dir)
    )
    try:
        manifest = write_into(scratch)
        written = (scratch / release_id / MANIFEST_FILE).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = existing / MANIFEST_FILE
    if not (found.is_file() and found.read_bytes() == written and not verify_release(existing)):
        raise ConfigError(
            f"{existing}: release {release_id!r} already exists and is not the release this "
            "export writes; releases are immutable, choose another --release-id"
        )
    log.info("feed: %s was written by an export stopped before it moved the pointer", existing)
    return manifest


@contextlib.contextmanager
def _hold_locks(folders: Iterable[Path], timeout_s: float) -> Iterator[None]:
    """Hold the lock of each folder once, taken in sorted order so that no two writers deadlock."""
    with contextlib.ExitStack() as stack:
        for folder in sorted({folder.resolve() for folder in folders}):
            stack.enter_context(folder_lock(folder, timeout_s))
        yield
