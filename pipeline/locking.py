"""One writer per folder: an exclusive, advisory file lock around every in-place update.

Every folder a stage updates in place (a traces dataset, a coverage folder, a releases folder)
is locked with :func:`folder_lock` for the whole update. The lock is ``fcntl.flock`` on a file
``.roadcover.lock`` inside the folder: the kernel releases it when the holder exits, however it
exits (``kill -9`` included), so a crashed writer never leaves a stale lock behind, and the next
holder removes the temporary files its killed writes left
(:func:`~pipeline.io.remove_leftover_temporaries`). A second writer waits, saying once on the log
who holds the lock, and gives up with a :class:`LockTimeoutError` naming the folder, the holder
and the setting after ``timeout_s``.

``flock`` locks are honoured between processes on one machine and on most network file systems
that support them (NFSv4, Lustre with ``flock`` mounted, CephFS). A folder in object storage
is locked by :mod:`pipeline.storage` instead, with a lock object created by a conditional put
(docs/guarantees.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io import remove_leftover_temporaries

log = logging.getLogger(__name__)

LOCK_FILE = ".roadcover.lock"
SCRATCH_LOCK = ".scratch.lock"
DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.1


class LockError(PipelineError, OSError):
    """A folder's lock cannot be taken: its lock file is not a regular file we may open."""


class LockTimeoutError(PipelineError, TimeoutError):
    """Another writer held a folder's lock for longer than the lock timeout."""


@contextlib.contextmanager
def folder_lock(folder: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if needed) for the block.

    Parameters
    ----------
    folder
        The folder about to be updated in place.
    timeout_s
        How long to wait for another writer (config ``lock_timeout_s``); 0 fails at once.

    Raises
    ------
    LockTimeoutError
        If the lock is still held by another process after ``timeout_s`` seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:  # O_NOFOLLOW: a symlink planted in place of the lock file is refused, never followed
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise LockError(
            f"{path}: cannot open the folder's lock file ({error.strerror}); it must be a "
            "regular file: remove it if it is anything else"
        ) from None
    try:
        _acquire(descriptor, folder, timeout_s)
        _write_holder(descriptor)
        for leftover in remove_leftover_temporaries(folder):
            log.info("%s: removed %s, left by a killed write", folder, leftover.name)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _acquire(descriptor: int, folder: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _read_holder(descriptor)
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"{folder}: another roadcover process ({holder}) is updating this folder; "
                    f"gave up after {timeout_s:g} s (raise lock_timeout_s in the config to "
                    "wait longer, or check that process)"
                ) from None
            if not said:
                log.warning("%s: waiting for another writer (%s) to finish", folder, holder)
                said = True
            time.sleep(POLL_S)


def _write_holder(descriptor: int) -> None:
    """Record who holds the lock (for the message a waiting writer prints)."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv[:3]}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)


def _read_holder(descriptor: int) -> str:
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


@contextlib.contextmanager
def scratch_folder(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """Hold a temporary folder for the block, which a killed holder does not leave for good.

    The folder holds a lock file that its holder keeps locked (``flock``) for the block; the
    kernel releases the lock when the holder exits, ``kill -9`` included. Entering the block
    first removes the folders of ``prefix`` under ``parent`` whose lock nobody holds: those of
    killed holders (:func:`remove_dead_scratch`). On a normal exit the folder is removed.

    Parameters
    ----------
    prefix
        Start of the folder's name (``roadcover-cut-``): the folders it sweeps share it.
    parent
        Where to make the folder; ``TMPDIR`` (:func:`tempfile.gettempdir`) if ``None``.
    """
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    for folder in remove_dead_scratch(base, prefix):
        log.info("removed %s, the scratch folder of a killed process", folder)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    # Lock a file under another name, then rename it: a sweeper never sees the lock file unlocked.
    pending = folder / f"{SCRATCH_LOCK}.pending"
    descriptor = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        pending.rename(folder / SCRATCH_LOCK)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(descriptor)


def remove_dead_scratch(parent: Path, prefix: str) -> list[Path]:
    """Remove the :func:`scratch_folder` folders of ``prefix`` under ``parent`` nobody holds.

    A folder counts only if it holds the lock file (folders without one, or symbolic links,
    are left alone); it is removed when its lock can be taken, i.e. its holder has exited.

    Returns
    -------
    list of Path
        The folders removed.
    """
    removed = []
    for folder in sorted(parent.glob(f"{glob.escape(prefix)}*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            descriptor = os.open(folder / SCRATCH_LOCK, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # no lock file (not ours, or already gone), or not a regular file
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its holder is alive
            os.close(descriptor)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        os.close(descriptor)
        removed.append(folder)
    return removed
