"""Object storage: stage folders and files at ``s3://`` and ``gs://`` URLs through fsspec.

Every stage command accepts a URL wherever it accepts a folder or an output file. The stages'
libraries (pyarrow datasets, osmium, tippecanoe, the atomic renames of :mod:`pipeline.io`) work on
local files, so a URL is *staged*:

* an **input** folder or file is downloaded into a local scratch folder first;
* an **output** folder is locked (:class:`PrefixLock`), its current objects are downloaded (the
  incremental stages read their earlier state from it; or, with ``records``, those alone, and
  the others as the stage asks for them: :meth:`Staging.fetch`), the stage writes into the
  local copy,
  and when it succeeds the copy is **published**: new and changed files are uploaded, the
  folder's commit records (a roads or matched ``meta.json``, a sharded region's
  ``shards/plan.json``, ingest ``reports/*.json``, the
  coverage ``state/CURRENT.json`` and ``summary.json``, a releases folder's ``latest.json``)
  last, and files the stage removed are deleted after them. A commit record that names files
  being overwritten in place is deleted before they are uploaded. So a reader that follows the
  commit records never sees a half-written folder, and a killed upload leaves the previous
  commit (or none) in force.

A location is a URL when it has a scheme of :data:`URL_SCHEMES`; anything else is a local path.
Credentials and endpoints come from the standard settings of s3fs/botocore (``AWS_*``
variables, ``~/.aws``, an instance role; ``AWS_ENDPOINT_URL`` for MinIO/Ceph/moto) and gcsfs
(``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server), or from the config's ``storage:``
section (``endpoint_url``).

**One writer per prefix.** Object stores have no ``flock``. A writer holds
``<prefix>/.roadcover.lock``, an object created with a conditional put (``If-None-Match: *``:
AWS S3, MinIO, Ceph, moto; GCS ``ifGenerationMatch=0``) that records its holder and an expiry;
a thread renews it every quarter of its lease. A second writer waits (config
``lock_timeout_s``) and then fails naming the holder. A lock whose lease ran out (its holder
was killed) is taken over with a put conditional on its ETag (``If-Match``), so of two writers
taking it over one wins; on ``gs://`` an expired lock is reported, not taken over. A writer
whose lock was taken over (its renewals stopped for a whole lease) publishes nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from pipeline.config import StorageSettings
from pipeline.errors import ConfigError, InputDataError, PipelineError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

URL_SCHEMES = ("s3", "s3a", "gs", "gcs")
# pipeline.locking.LOCK_FILE, the name of a local folder's lock file (that module imports
# pyarrow: not imported here, so that `roadcover storage get` starts fast)
LOCK_FILE = ".roadcover.lock"
POLL_S = 0.5
# the commit records of every stage's output folder, as glob patterns of relative paths
COMMIT_RECORDS = (
    "meta.json",
    "shards/plan.json",
    "simulation.json",
    "reports/*.json",
    "state/CURRENT.json",
    "summary.json",
    "latest.json",
    "index.html",
)
# never published: the local lock file, staging folders, temporaries of a killed write, and the
# match networks that snap caches in a sharded region's roads (pipeline.snap.shards.NETWORKS_DIR)
NOT_PUBLISHED = (
    LOCK_FILE, ".staging/*", "*/.staging/*", "*.tmp", ".*.tmp*", "*/.*.tmp*", "shard-networks/*",
)  # fmt: skip


class StorageError(PipelineError, OSError):
    """An object store refused or failed a request (credentials, bucket, endpoint)."""


class LockLostError(PipelineError, RuntimeError):
    """A writer's prefix lock expired and was taken over; its output was not published."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names object storage (``s3://``, ``gs://``) rather than a path."""
    text = str(location)
    return urlsplit(text).scheme.lower() in URL_SCHEMES and text.split("://", 1)[0].isalnum()


def check_location(location: str) -> None:
    """Refuse a ``scheme://`` location whose scheme is not object storage roadcover supports.

    Raises
    ------
    ConfigError
        For e.g. ``ftp://host/x`` or ``s3://`` without a bucket.
    """
    parts = urlsplit(location)
    if "://" not in location or not parts.scheme or not location.split("://", 1)[0].isalnum():
        return  # a path (a folder may be called "my data://x")
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ConfigError(
            f"{location}: unsupported storage scheme {parts.scheme!r}; use a local path, s3:// "
            "or gs://"
        )
    if not parts.netloc:
        raise ConfigError(f"{location}: no bucket; write {parts.scheme}://BUCKET/FOLDER")


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a URL or a path (no doubled slashes)."""
    if is_url(location):
        return "/".join([location.rstrip("/"), *(part.strip("/") for part in parts)])
    return str(Path(location, *parts))


def filesystem(location: str, settings: StorageSettings) -> tuple[AbstractFileSystem, str]:
    """Return the fsspec file system of a URL and the path in it (``bucket/key``).

    Raises
    ------
    ConfigError
        If the URL's scheme is not supported or its library (s3fs, gcsfs) is not installed.
    """
    import fsspec.core

    check_location(location)
    scheme = urlsplit(location).scheme.lower()
    options: dict[str, Any] = {}
    # the endpoint in the options (fsspec caches a file system by its options: one per endpoint)
    endpoint = settings.endpoint_url
    if endpoint is None and scheme.startswith("s3"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    try:
        fs, path = fsspec.core.url_to_fs(location, **options)
    except ImportError:
        package = "s3fs" if scheme.startswith("s3") else "gcsfs"
        raise ConfigError(
            f"{location}: {package} is not installed; pip install 'roadcover[cloud]'"
        ) from None
    return fs, path.rstrip("/")


def _matches(relative: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _sha256(path: Path) -> str:
    # as pipeline.io.file_sha256, without importing pipeline.io (NumPy, Arrow) here
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def local_files(folder: Path) -> dict[str, Path]:
    """Every regular file under ``folder`` that is published, by relative POSIX path."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and not _matches(relative, NOT_PUBLISHED):
            found[relative] = path
    return found


def remote_files(
    fs: AbstractFileSystem, prefix: str, include: Sequence[str] | None = None
) -> list[str]:
    """Return the relative paths of the objects under ``prefix`` (its lock object excluded).

    With ``include`` (glob patterns of relative paths; ``*`` matches ``/`` too), only the
    objects that match one.
    """
    try:
        found = fs.find(prefix)
    except FileNotFoundError:
        return []
    relative = [path[len(prefix) + 1 :] for path in found if path.startswith(prefix + "/")]
    return sorted(
        path
        for path in relative
        if path and path != LOCK_FILE and (include is None or _matches(path, include))
    )


def download_folder(
    fs: AbstractFileSystem, prefix: str, folder: Path, include: Sequence[str] | None = None
) -> dict[str, str]:
    """Download the objects under ``prefix`` (those ``include`` matches) into ``folder``.

    Returns their sha256 by relative path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    return _download(fs, prefix, folder, remote_files(fs, prefix, include))


def _download(
    fs: AbstractFileSystem, prefix: str, folder: Path, names: Sequence[str]
) -> dict[str, str]:
    """Download the objects ``names`` under ``prefix`` into ``folder``; their sha256 by name."""
    if names:
        folder.mkdir(parents=True, exist_ok=True)
        fs.get([f"{prefix}/{name}" for name in names], [str(folder / name) for name in names])
    return {name: _sha256(folder / name) for name in names}


@dataclass
class PublishPlan:
    """What publishing a local folder to a prefix does, in order."""

    retract: list[str] = field(default_factory=list)  # commit records deleted first
    data: list[str] = field(default_factory=list)  # then these uploaded
    commits: list[str] = field(default_factory=list)  # then these, last
    removed: list[str] = field(default_factory=list)  # then these deleted


def plan_publish(
    now: dict[str, str], before: dict[str, str], commit_records: Sequence[str] = COMMIT_RECORDS
) -> PublishPlan:
    """Plan the upload of a folder whose files hash to ``now``, onto objects hashing to ``before``.

    Commit records go last. When a data file that exists already is overwritten, the changed
    commit records that exist already are deleted first (until the new ones are uploaded the
    folder is uncommitted rather than a mix of two versions).
    """
    changed = sorted(name for name, digest in now.items() if before.get(name) != digest)
    plan = PublishPlan()
    plan.commits = [name for name in changed if _matches(name, commit_records)]
    plan.data = [name for name in changed if name not in plan.commits]
    if any(name in before for name in plan.data):
        plan.retract = [name for name in plan.commits if name in before]
    plan.removed = sorted(name for name in before if name not in now)
    return plan


def publish_folder(
    folder: Path,
    fs: AbstractFileSystem,
    prefix: str,
    before: dict[str, str],
    lock: PrefixLock | None = None,
    commit_records: Sequence[str] = COMMIT_RECORDS,
    include: Sequence[str] | None = None,
    unfetched: Collection[str] = (),
    stale: Sequence[str] = (),
) -> PublishPlan:
    """Upload ``folder`` to ``prefix``: data, then commit records, then delete removed files.

    With ``include`` (glob patterns), only the files that match one are the folder's: the
    others are neither uploaded nor, in ``before``, deleted. ``unfetched``: objects of the
    prefix that were not downloaded (not in ``before``); one the stage wrote is uploaded as an
    overwrite, the others are kept but for those of ``stale``, deleted with the removed files.

    Raises
    ------
    LockLostError
        If ``lock`` was taken over before the commit records went up (they are not uploaded).
    """
    files = local_files(folder)
    if include is not None:
        files = {name: path for name, path in files.items() if _matches(name, include)}
        before = {name: digest for name, digest in before.items() if _matches(name, include)}
    before = {**before, **{name: "" for name in unfetched if name in files}}
    plan = plan_publish(
        {name: _sha256(path) for name, path in files.items()}, before, commit_records
    )
    plan.removed = sorted({*plan.removed, *(name for name in stale if name not in files)})
    if plan.retract:
        fs.rm([f"{prefix}/{name}" for name in plan.retract])
    if plan.data:
        fs.put([str(files[name]) for name in plan.data], [f"{prefix}/{name}" for name in plan.data])
    if lock is not None:
        lock.check()
    for name in plan.commits:  # one by one, in order: each PUT is atomic
        fs.put_file(str(files[name]), f"{prefix}/{name}")
    if plan.removed:
        fs.rm([f"{prefix}/{name}" for name in plan.removed])
    log.info(
        "%s: published %d file(s) and %d commit record(s), removed %d",
        prefix, len(plan.data), len(plan.commits), len(plan.removed),
    )  # fmt: skip
    return plan


class PrefixLock:
    """The lock object of a prefix: one writer at a time, with a renewed lease.

    Parameters
    ----------
    fs, prefix
        The file system and the prefix (``bucket/key``) to lock.
    lease_s
        How long the lock is valid without renewal.
    location
        The prefix's URL, for messages.
    """

    def __init__(self, fs: AbstractFileSystem, prefix: str, lease_s: float, location: str) -> None:
        self.fs, self.path, self.lease_s, self.location = (
            fs,
            f"{prefix}/{LOCK_FILE}",
            lease_s,
            location,
        )
        self._tag: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "acquired_at": now}
        return json.dumps({**holder, "expires_at": now + self.lease_s}).encode()

    def _tag_of_object(self) -> str | None:
        info = self.fs.info(self.path)
        tag = info.get("ETag") or info.get("etag") or info.get("generation")
        return str(tag) if tag is not None else None

    def _held_by(self) -> tuple[dict[str, Any], str | None]:
        try:
            holder = json.loads(self.fs.cat_file(self.path))
            return (holder if isinstance(holder, dict) else {}), self._tag_of_object()
        except FileNotFoundError:
            return {}, None
        except ValueError:
            return {}, self._tag_of_object()

    def _try_create(self) -> bool:
        try:
            self.fs.pipe_file(self.path, self._body(), mode="create")
        except (FileExistsError, OSError) as error:
            if "precondition" in str(error).lower() or isinstance(error, FileExistsError):
                return False
            raise
        self._tag = self._tag_of_object()
        return True

    def _try_take_over(self, stale_tag: str) -> bool:
        if "s3" not in self.fs.protocol:  # If-Match puts: S3's API only
            return False
        try:
            self.fs.pipe_file(self.path, self._body(), IfMatch=stale_tag)
        except (FileNotFoundError, OSError):
            return False
        self._tag = self._tag_of_object()
        return True

    def acquire(self, timeout_s: float) -> None:
        """Take the lock, waiting up to ``timeout_s`` for its holder.

        Raises
        ------
        LockTimeoutError
            If another writer holds it (or an expired lock cannot be taken over) after the wait.
        """
        from pipeline.locking import LockTimeoutError

        deadline = time.monotonic() + timeout_s
        said = False
        while not self._try_create():
            holder, tag = self._held_by()
            expired = float(holder.get("expires_at", 0)) < time.time()
            if expired and tag is not None and self._try_take_over(tag):
                log.warning("%s: took over an expired lock of %s", self.location, _who(holder))
                break
            if time.monotonic() >= deadline:
                raise LockTimeoutError(_busy_message(self.location, holder, expired, timeout_s))
            if not said:
                log.warning("%s: waiting for another writer (%s)", self.location, _who(holder))
                said = True
            time.sleep(POLL_S)
        self._renewer = threading.Thread(target=self._renew, name="roadcover-lock", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        # S3: only while the object is still this writer's (If-Match); other stores overwrite
        conditional = "s3" in self.fs.protocol and self._tag is not None
        while not self._stop.wait(self.lease_s / 4):
            try:
                if conditional:
                    self.fs.pipe_file(self.path, self._body(), IfMatch=self._tag)
                else:
                    self.fs.pipe_file(self.path, self._body())
                self._tag = self._tag_of_object()
            except (FileNotFoundError, OSError):
                log.error("%s: the lock was taken over; nothing will be published", self.location)
                self._lost.set()
                return

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock was taken over by another writer."""
        if self._lost.is_set():
            raise LockLostError(
                f"{self.location}: this writer's lock expired and another writer took it over "
                f"(no renewal for {self.lease_s:g} s); nothing was committed, run the stage again"
            )

    def release(self) -> None:
        """Stop renewing and delete the lock object (if it is still this writer's)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self._lost.is_set():
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)


def _who(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"


def _busy_message(location: str, holder: dict[str, Any], expired: bool, timeout_s: float) -> str:
    lock = join(location, LOCK_FILE)
    if expired:
        return (
            f"{location}: the lock of a writer that stopped ({_who(holder)}) expired but cannot be "
            f"taken over on this store; make sure it is not running, delete {lock} and run again"
        )
    return (
        f"{location}: another roadcover process ({_who(holder)}) is updating this prefix; gave "
        f"up after {timeout_s:g} s (raise lock_timeout_s in the config to wait longer, or check "
        f"that process; its lock is {lock})"
    )


@contextlib.contextmanager
def prefix_lock(location: str, settings: StorageSettings, timeout_s: float) -> Iterator[PrefixLock]:
    """Hold the lock of the prefix ``location`` for the block (see :class:`PrefixLock`)."""
    fs, prefix = filesystem(location, settings)
    lock = PrefixLock(fs, prefix, settings.lock_lease_s, location)
    lock.acquire(timeout_s)
    try:
        yield lock
    finally:
        lock.release()


@dataclass
class _Output:
    location: str
    local: Path
    fs: AbstractFileSystem
    remote: str
    before: dict[str, str]
    lock: PrefixLock | None
    is_file: bool
    include: Sequence[str] | None = None
    unfetched: set[str] = field(default_factory=set)  # objects not downloaded (yet)
    stale: Callable[[list[str]], list[str]] | None = None  # which of them the stage removed


class Staging:
    """Stage a command's URL inputs and outputs through a local scratch folder.

    Use it as a context manager: the outputs are published when the block succeeds, in the
    order they were registered; locks are released and the scratch folder removed however it
    ends. Local paths pass through unchanged.
    """

    def __init__(self, settings: StorageSettings | None = None, lock_timeout_s: float = 600.0):
        self.settings = settings or StorageSettings()
        self.lock_timeout_s = lock_timeout_s
        self._outputs: list[_Output] = []
        self._local_outputs: list[Path] = []  # local outputs of a command with staged inputs
        self._stack = contextlib.ExitStack()
        self._scratch: Path | None = None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            if error is None:
                for local in self._local_outputs:
                    self._name_urls(local)
                for output in self._outputs:
                    self._publish(output)
        finally:
            self._stack.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def root(self) -> Path:
        """The scratch folder: a URL ``s3://b/k`` is staged at ``root/s3/b/k``."""
        if self._scratch is None:
            base = self.settings.scratch_dir
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="roadcover-stage-", dir=base))
        return self._scratch

    def _local_copy(self, location: str) -> Path:
        parts = urlsplit(location)
        return self.root / parts.scheme / parts.netloc / parts.path.strip("/")

    def input_folder(self, location: str | Path, include: Sequence[str] | None = None) -> Path:
        """Return a local folder holding what ``location`` holds (downloaded if a URL).

        With ``include`` (glob patterns of paths in the folder; ``*`` matches ``/`` too), only
        the objects that match one are downloaded. Called again for the same URL, it adds to
        the same local folder.

        Raises
        ------
        InputDataError
            If the URL holds no object (that ``include`` matches).
        """
        if not is_url(location):
            return Path(location)
        fs, prefix = filesystem(str(location), self.settings)
        local = self._local_copy(str(location))
        if not _storage_call(str(location), download_folder, fs, prefix, local, include):
            if include is None or not _storage_call(str(location), remote_files, fs, prefix):
                raise InputDataError(f"{location}: no such folder (no object under this prefix)")
            raise InputDataError(
                f"{location}: none of {', '.join(include)} in this folder; run the stage that "
                "writes it"
            )
        return local

    def input_file(self, location: str | Path) -> Path:
        """Return a local copy of the file ``location`` (downloaded if a URL)."""
        if not is_url(location):
            return Path(location)
        fs, path = filesystem(str(location), self.settings)
        local = self._local_copy(str(location))
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            _storage_call(str(location), fs.get_file, path, str(local))
        except FileNotFoundError:
            raise InputDataError(f"{location}: no such object") from None
        return local

    def object_tag(self, location: str | Path) -> str | None:
        """Return what names the content of the object ``location``: its ETag and size.

        The store computes the ETag from the bytes (S3: their MD5, or of a multipart upload its
        parts' MD5s; GCS: changes with every write), so an object with the tag of another has
        its bytes. None for a local path, an object that does not exist or a store that gives
        no ETag.
        """
        if not is_url(location):
            return None
        fs, path = filesystem(str(location), self.settings)
        fs.invalidate_cache(path)  # what the store holds now, not a listing of earlier
        try:
            info = _storage_call(str(location), fs.info, path)
        except FileNotFoundError:
            return None
        tag = info.get("ETag") or info.get("etag")
        return f"{tag}:{info.get('size')}" if tag else None

    def input_any(self, location: str | Path) -> Path:
        """Return a local copy of a file or folder (a URL's objects, or the object itself)."""
        if not is_url(location):
            return Path(location)
        fs, path = filesystem(str(location), self.settings)
        if _storage_call(str(location), fs.isdir, path):
            return self.input_folder(location)
        return self.input_file(location)

    def output_folder(
        self,
        location: str | Path,
        keep_existing: bool = True,
        include: Sequence[str] | None = None,
        records: Sequence[str] | None = None,
    ) -> Path:
        """Return the local folder a stage writes ``location`` through; lock it if a URL.

        With ``keep_existing`` the prefix's objects are downloaded first (the folder's earlier
        state, for stages that update in place); otherwise the stage starts from an empty
        folder and the objects it does not write again are deleted when it is published.
        With ``include`` (glob patterns of paths in the folder), the stage's output is only
        the files that match one: only they are downloaded, published or deleted (a merge
        writes a region's tables and leaves its shards' folders as they are).
        With ``records`` (glob patterns), only the objects that match one are downloaded
        first; the stage asks for more with :meth:`fetch`, and tells which of the others it
        removed with :meth:`prune_with`. An object it neither fetched nor wrote stays as it is.
        """
        if not is_url(location):
            self._local_outputs.append(Path(location))
            return Path(location)
        location = str(location)
        fs, prefix = filesystem(location, self.settings)
        lock = PrefixLock(fs, prefix, self.settings.lock_lease_s, location)
        _storage_call(location, lock.acquire, self.lock_timeout_s)
        self._stack.callback(lock.release)
        local = self._local_copy(location)
        if records is not None:
            listed = set(_storage_call(location, remote_files, fs, prefix))
            wanted = sorted(name for name in listed if _matches(name, records))
            before = _storage_call(location, _download, fs, prefix, local, wanted)
            unfetched = listed - set(wanted)
            self._outputs.append(
                _Output(location, local, fs, prefix, before, lock, False, unfetched=unfetched)
            )
            return local
        if keep_existing:
            before = _storage_call(location, download_folder, fs, prefix, local, include)
        else:
            local.mkdir(parents=True, exist_ok=True)
            names = _storage_call(location, remote_files, fs, prefix, include)
            before = {name: "" for name in names}
        self._outputs.append(
            _Output(location, local, fs, prefix, before, lock, is_file=False, include=include)
        )
        return local

    def fetch(self, local: Path, names: Sequence[str] | None, required: bool = True) -> list[str]:
        """Download more objects of a folder staged with ``records`` into ``local``.

        Parameters
        ----------
        local
            The local folder :meth:`output_folder` returned (a local output: nothing to do).
        names
            Paths in the folder; with ``required`` False, glob patterns (the objects that match
            one); None: every object not downloaded yet.
        required
            Whether each of ``names`` must be an object of the folder.

        Returns
        -------
        list of str
            The objects downloaded now (never one the stage wrote meanwhile).

        Raises
        ------
        InputDataError
            If a required name is not an object of the folder (a damaged folder).
        """
        output = next((out for out in self._outputs if out.local == local), None)
        if output is None or output.is_file:
            return []
        listed = output.unfetched | set(output.before)
        if required and names is not None:
            missing = sorted(set(names) - listed)
            if missing:
                raise _damaged_folder(output.location, missing)
            wanted = sorted(set(names) & output.unfetched)
        elif names is None:
            wanted = sorted(output.unfetched)
        else:
            wanted = sorted(name for name in output.unfetched if _matches(name, names))
        wanted = [name for name in wanted if not (local / name).exists()]  # not the stage's own
        try:
            got = _storage_call(output.location, _download, output.fs, output.remote, local, wanted)
        except FileNotFoundError:  # deleted since it was listed
            output.fs.invalidate_cache(output.remote)
            now = set(_storage_call(output.location, remote_files, output.fs, output.remote))
            raise _damaged_folder(output.location, sorted(set(wanted) - now)) from None
        output.before.update(got)
        output.unfetched -= set(got)
        return wanted

    def read_ranges(self, local: Path, name: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read byte ranges ``[start, stop)`` of object ``name`` of the folder staged at ``local``.

        Of the object in storage (concurrent requests), not downloaded; of the local file if
        the folder is local or the file was downloaded.

        Raises
        ------
        InputDataError
            If ``name`` is not an object of the folder (a damaged folder).
        """
        output = next((out for out in self._outputs if out.local == local), None)
        if output is None or (local / name).exists():
            with (local / name).open("rb") as file:
                return [_read_range(file, start, stop) for start, stop in ranges]
        if name not in output.unfetched | set(output.before):
            raise _damaged_folder(output.location, [name])
        if not ranges:
            return []
        path = f"{output.remote}/{name}"
        starts, stops = [start for start, _ in ranges], [stop for _, stop in ranges]
        paths = [path] * len(ranges)
        read = functools.partial(output.fs.cat_ranges, on_error="raise")
        return list(_storage_call(output.location, read, paths, starts, stops))

    def prune_with(self, local: Path, stale: Callable[[list[str]], list[str]]) -> None:
        """Say which objects not downloaded of the folder at ``local`` to delete on publishing.

        ``stale`` is called at publishing with the objects neither downloaded nor written, and
        returns those the stage removed (that a local run would have deleted).
        """
        for output in self._outputs:
            if output.local == local:
                output.stale = stale

    def output_file(self, location: str | Path) -> Path:
        """Return the local path a stage writes the file ``location`` to (uploaded at the end)."""
        if not is_url(location):
            self._local_outputs.append(Path(location))
            return Path(location)
        fs, path = filesystem(str(location), self.settings)
        local = self._local_copy(str(location))
        local.parent.mkdir(parents=True, exist_ok=True)
        self._outputs.append(_Output(str(location), local, fs, path, {}, None, is_file=True))
        return local

    def _publish(self, output: _Output) -> None:
        self._name_urls(output.local)
        if output.is_file:
            if output.local.exists():  # one PUT: atomic
                _storage_call(output.location, output.fs.put_file, str(output.local), output.remote)
            return
        files = local_files(output.local) if output.unfetched else {}
        left = sorted(name for name in output.unfetched if name not in files)
        stale = output.stale(left) if output.stale is not None and left else []
        _storage_call(
            output.location, publish_folder, output.local, output.fs, output.remote,
            output.before, output.lock, COMMIT_RECORDS, output.include, output.unfetched, stale,
        )  # fmt: skip

    def _name_urls(self, output: Path) -> None:
        """In the JSON files of an output, name staged copies by their URLs (atomically)."""
        if self._scratch is None or not output.exists():
            return
        files = [output] if output.is_file() else list(local_files(output).values())
        staged = f"{self._scratch}{os.sep}"
        for path in files:
            if path.suffix != ".json":
                continue
            text = path.read_text(encoding="utf-8")
            if staged not in text:
                continue
            for scheme in URL_SCHEMES:
                text = text.replace(f"{staged}{scheme}{os.sep}", f"{scheme}://")
            from pipeline.io import atomic_path

            with atomic_path(path) as temporary:
                temporary.write_text(text, encoding="utf-8")


def _damaged_folder(location: str, missing: list[str]) -> InputDataError:
    """Return the error of objects a folder's records name that it does not hold."""
    return InputDataError(
        f"{location}: no object {', '.join(missing[:3])} ({len(missing)} missing), which the "
        "folder's records name: the folder is damaged; write it again into a new folder"
    )


def _storage_call(location: str, function: Any, *args: Any) -> Any:
    """Call ``function``; a refusal of the store becomes one line naming the location."""
    try:
        return function(*args)
    except (PipelineError, FileNotFoundError):
        raise
    except PermissionError as error:
        raise StorageError(
            f"{location}: access denied ({error}); check the credentials (AWS_* variables, "
            "GOOGLE_APPLICATION_CREDENTIALS) and the bucket's policy"
        ) from None
    except OSError as error:
        raise StorageError(
            f"{location}: the object store failed ({error}); check the bucket, the endpoint "
            "(storage.endpoint_url, AWS_ENDPOINT_URL) and the network"
        ) from None


def _read_range(file: BinaryIO, start: int, stop: int) -> bytes:
    """Return bytes ``[start, stop)`` of an open file."""
    file.seek(start)
    return file.read(stop - start)
