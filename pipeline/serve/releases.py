"""What the API serves of each region: its latest release, its release files, its tiles.

:class:`ReleaseRegistry` reads a region's ``latest.json`` on every request, cheaply: the
pointer is stat'ed and read again only when its inode, size or modification time changed (a
new export replaces it atomically by renaming). Open releases (:class:`RegionRelease`) are kept
by release id, so a new release is opened once and served without a restart, and a request
keeps the release object it started with while the pointer moves on.

Release files are served from an allow-list: ``manifest.json`` and the files the manifest
lists. Region and release ids are looked up among what exists (never joined into a path
unchecked), and files are opened without following symbolic links
(:func:`pipeline.export.server.open_regular_file`).

:class:`TileArchive` reads tiles from a region's PMTiles archive (the ``pmtiles`` package's
reader over a memory map), reopened when the archive file is replaced.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pmtiles.reader import Reader
from pmtiles.tile import Compression, deserialize_header

from pipeline.config import ServedRegion
from pipeline.errors import InputDataError, PipelineError
from pipeline.export.feeds import read_latest_release
from pipeline.export.feeds.stage import MANIFEST_FILE, RELEASE_ID

LATEST_FILE = "latest.json"
OPEN_RELEASES_KEPT = 4  # per region: the latest and a few before it, for requests in flight


class ServedRelease(Protocol):
    """What the registry needs of an open release (``pipeline.serve.queries.RegionRelease``)."""

    release_id: str


class NoReleaseError(PipelineError, LookupError):
    """A served region has no (readable) latest release yet: answered 503."""


@dataclass(frozen=True)
class _Pointer:
    stamp: tuple[int, int, int, int]
    release_id: str


def _stamp(result: os.stat_result) -> tuple[int, int, int, int]:
    return (result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns)


class ReleaseRegistry:
    """The served regions, their latest releases (opened once each) and their release files.

    Parameters
    ----------
    regions
        The regions served (``api.regions``).
    open_release
        Opens one release: ``open_release(release_dir, roads_dir)``, e.g.
        ``RegionRelease.open``.
    """

    def __init__(
        self,
        regions: Sequence[ServedRegion],
        open_release: Callable[[Path, Path], ServedRelease],
    ) -> None:
        self.regions = {region.name: region for region in regions}
        self._open_release = open_release
        self._pointers: dict[str, _Pointer] = {}
        self._open: dict[str, dict[str, ServedRelease]] = {name: {} for name in self.regions}
        self._manifests: dict[tuple[str, str], frozenset[str]] = {}
        self._locks = {name: threading.Lock() for name in self.regions}

    def latest(self, region: str) -> ServedRelease:
        """Return the open latest release of a served region (opened on first use).

        Raises
        ------
        KeyError
            If the region is not served.
        NoReleaseError
            If it has no latest.json yet, or the pointer is unreadable.
        """
        release_id = self.latest_id(region)
        with self._locks[region]:
            return self._opened(self.regions[region], release_id)

    def latest_id(self, region: str) -> str:
        """Return the id of the release the region's ``latest.json`` names (read when changed).

        Raises
        ------
        KeyError
            If the region is not served.
        NoReleaseError
            If it has no latest.json yet, or the pointer is unreadable.
        """
        served = self.regions[region]
        pointer = served.releases_dir / LATEST_FILE
        with self._locks[region]:
            try:
                stamp = _stamp(pointer.stat())
            except OSError:
                raise NoReleaseError(f"region {region!r} has no release yet") from None
            cached = self._pointers.get(region)
            if cached is None or cached.stamp != stamp:
                try:
                    release_id = read_latest_release(pointer, served.releases_dir)
                except InputDataError as error:
                    raise NoReleaseError(f"region {region!r}: {error}") from None
                if release_id is None:
                    raise NoReleaseError(f"region {region!r} has no release yet")
                cached = _Pointer(stamp, release_id)
                self._pointers[region] = cached
            return cached.release_id

    def _opened(self, served: ServedRegion, release_id: str) -> ServedRelease:
        """Return an open release, opening it on first use (called holding the region's lock)."""
        opened = self._open[served.name]
        if release_id not in opened:
            release = self._open_release(served.releases_dir / release_id, served.roads_dir)
            opened[release_id] = release
            while len(opened) > OPEN_RELEASES_KEPT:
                del opened[next(iter(opened))]  # the oldest opened; requests hold their own
        return opened[release_id]

    def release_ids(self, region: str) -> list[str]:
        """Return the complete releases of a served region (folders with a manifest), sorted."""
        folder = self.regions[region].releases_dir
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        return sorted(
            entry.name
            for entry in entries
            if RELEASE_ID.match(entry.name)
            and entry.is_dir(follow_symlinks=False)
            and _is_regular(Path(entry.path) / MANIFEST_FILE)
        )

    def release_files(self, region: str, release_id: str) -> tuple[Path, frozenset[str]]:
        """Return a release's folder and the files that may be sent from it.

        Raises
        ------
        KeyError
            If the region is not served or ``release_id`` is not one of its complete releases.
        """
        if release_id not in self.release_ids(region):
            raise KeyError(release_id)
        folder = self.regions[region].releases_dir / release_id
        key = (region, release_id)
        if key not in self._manifests:
            self._manifests[key] = _manifest_files(folder / MANIFEST_FILE)
        return folder, self._manifests[key]


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _manifest_files(manifest_path: Path) -> frozenset[str]:
    """``manifest.json`` and the paths of the files it lists (a release is immutable)."""
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_bytes())
        listed = {str(entry["path"]) for entry in manifest.get("files", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        listed = set()
    return frozenset({MANIFEST_FILE, *listed})


@dataclass(frozen=True)
class Tile:
    """One tile's bytes as stored, and their content encoding (``"gzip"`` or None)."""

    data: bytes
    encoding: str | None


class TileNotFoundError(LookupError):
    """No such tile address in the archive: a zoom outside it, or x/y outside the zoom's grid."""


_ENCODINGS = {Compression.GZIP: "gzip", Compression.BROTLI: "br", Compression.ZSTD: "zstd"}


class TileArchive:
    """Tiles of one PMTiles archive, reopened whenever the file is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._reader: tuple[Reader, dict[str, Any]] | None = None

    def tile(self, z: int, x: int, y: int) -> Tile | None:
        """Return the tile at z/x/y, or None if the archive has no tile there (an empty tile).

        Raises
        ------
        FileNotFoundError
            If the archive does not exist (or is not a regular file).
        TileNotFoundError
            If z is outside the archive's zoom range or x/y outside the zoom's grid.
        """
        reader, header = self._current()
        if not header["min_zoom"] <= z <= header["max_zoom"] or not (
            0 <= x < 1 << z and 0 <= y < 1 << z
        ):
            raise TileNotFoundError(f"{z}/{x}/{y}")
        data = reader.get(z, x, y)
        if not data:
            return None
        return Tile(bytes(data), _ENCODINGS.get(header["tile_compression"]))

    def _current(self) -> tuple[Reader, dict[str, Any]]:
        with self._lock:
            try:
                status = os.stat(self.path)
            except OSError:
                raise FileNotFoundError(self.path) from None
            if not stat.S_ISREG(status.st_mode):
                raise FileNotFoundError(self.path)
            if self._reader is None or self._stamp != _stamp(status):
                self._reader = _open_archive(self.path)
                self._stamp = _stamp(status)
            return self._reader


def _open_archive(path: Path) -> tuple[Reader, dict[str, Any]]:
    """Map the archive into memory (the map stays valid after a replacing rename)."""
    with path.open("rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def get_bytes(offset: int, length: int) -> bytes:
        return mapping[offset : offset + length]

    header: dict[str, Any] = dict(deserialize_header(get_bytes(0, 127)))
    return Reader(get_bytes), header
