"""A loopback HTTP server for the web viewer: its own files only, with HTTP Range support.

The pmtiles JavaScript library reads an archive with Range requests, which Python's
:mod:`http.server` ignores. :class:`SiteRequestHandler` answers ``GET`` and ``HEAD`` for an
allow-list of files (the site's, see :func:`serve_directory`) and nothing else:

- a request path is percent-decoded as UTF-8; one that is not valid UTF-8, holds a NUL or
  another control character or a backslash, or has a ``.`` or ``..`` segment (``%2e%2e``
  included) gets **400**; a path that is not in the allow-list (a folder, a file the viewer did
  not write) gets **404**: there is no directory listing, ``/`` is ``index.html``;
- files are opened without following any symbolic link (every folder of the path and the file
  itself, ``O_NOFOLLOW``), and must be regular files: a link planted in the site is a **404**,
  whatever it points to;
- ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` get **206** with ``Content-Range`` (an end
  past the file is cut to it, RFC 9110 section 14.1.2); a malformed or unsatisfiable single range
  (``bytes=5-1``, a start at or past the end, ``bytes=-0``, junk) gets **416** with
  ``Content-Range: bytes */<size>``; positions of any number of digits are compared, never
  converted beyond 18 digits. A request for **several ranges** gets **200** and the whole file
  (RFC 9110 lets a server ignore ``Range``; the viewer never asks for several), and so does a
  range in another unit than ``bytes``;
- malformed request lines and headers get http.server's 400/414/431, other methods 501; no
  request makes the server log a traceback (a dropped connection is logged at debug level).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import mimetypes
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"
REQUEST_TIMEOUT_S = 30
SIGNAL_CHECK_S = 0.5  # how often a serving main thread wakes for signal handlers
MAX_POSITION_DIGITS = 18  # 10**18 bytes is far past any file; longer numbers are "beyond the end"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".pmtiles": "application/vnd.pmtiles",
}
_BYTE_RANGE = re.compile(r"(\d+)-(\d*)|-(\d+)")
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\]")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ServeError(PipelineError, OSError):
    """The web map server cannot listen on the address and port asked for."""


class BadRequestPathError(ValueError):
    """A request target that is not a clean path: answered with 400."""


class UnsatisfiableRangeError(ValueError):
    """A malformed or unsatisfiable byte range: answered with 416."""


class SiteServer(ThreadingHTTPServer):
    """A threading HTTP server over one folder and the allow-list of files it may send."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, files: frozenset[str]) -> None:
        self.root = root
        self.files = files
        super().__init__(address, SiteRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request in one line instead of printing a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("%s: connection dropped (%s)", client_address, error)
        else:
            log.warning("%s: request failed: %r", client_address, error)


class SiteRequestHandler(BaseHTTPRequestHandler):
    """Answer GET and HEAD for the server's allow-listed files, with single byte ranges."""

    server: SiteServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "roadcover"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # errors about malformed request lines get a status line

    def do_GET(self) -> None:
        """Send a file, or the asked range of it."""
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        """Send the headers a GET would get."""
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        try:
            relative = request_file(self.path)
        except BadRequestPathError as error:
            self.send_error(HTTPStatus.BAD_REQUEST, str(error))
            return
        handle = self._open(relative)
        if handle is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            try:
                byte_range = parse_range(self.headers.get("Range"), size)
            except UnsatisfiableRangeError:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = byte_range if byte_range is not None else (0, size - 1)
            self._send_headers(relative, size, start, end, partial=byte_range is not None)
            if with_body:
                handle.seek(start)
                copy_exactly(handle, self.wfile, end - start + 1)

    def _open(self, relative: str) -> BinaryIO | None:
        if relative not in self.server.files:
            return None
        descriptor = open_regular_file(self.server.root, relative)
        return None if descriptor is None else os.fdopen(descriptor, "rb")

    def _send_headers(self, relative: str, size: int, start: int, end: int, partial: bool) -> None:
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", content_type(relative))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests to this module's logger instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)


def request_file(target: str) -> str:
    """Return the file a request target asks for, relative to the site (``/`` is index.html).

    Raises
    ------
    BadRequestPathError
        If the path is not valid percent-encoded UTF-8, holds a control character or a
        backslash, or has a ``.`` or ``..`` segment.
    """
    path = urlsplit(target).path
    if not path.startswith("/"):
        raise BadRequestPathError("the request path must start with /")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequestPathError("the request path is not percent-encoded UTF-8") from None
    if _FORBIDDEN_CHARACTERS.search(decoded):
        raise BadRequestPathError("the request path holds a control character or a backslash")
    segments = decoded[1:].split("/")
    if any(segment in (".", "..") for segment in segments):
        raise BadRequestPathError("the request path has a '.' or '..' segment")
    return decoded[1:] or INDEX_FILE


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the first and last byte of a single satisfiable range, or None for the whole file.

    Parameters
    ----------
    header
        The ``Range`` header, if any.
    size
        The file's size in bytes.

    Raises
    ------
    UnsatisfiableRangeError
        For a malformed ``bytes`` range set, or a single range that selects no byte.
    """
    if header is None:
        return None
    unit, _, ranges = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None  # RFC 9110: ignore a Range in a unit the server does not know
    specs = [spec.strip() for spec in ranges.split(",")]
    matches = [_BYTE_RANGE.fullmatch(spec) for spec in specs]
    if not all(matches):
        raise UnsatisfiableRangeError(header)
    if len(matches) > 1:
        return None  # several ranges: the whole file, with 200
    first, last, suffix = matches[0].groups()  # type: ignore[union-attr]
    if suffix is not None:
        length = _position(suffix)
        if length == 0 or size == 0:
            raise UnsatisfiableRangeError(header)
        return max(size - length, 0), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if start > end or start >= size:
        raise UnsatisfiableRangeError(header)
    return start, min(end, size - 1)


def _position(digits: str) -> int:
    """Return a byte position; above 18 digits it is taken as 10**18 (past every file)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > MAX_POSITION_DIGITS:
        return 10**MAX_POSITION_DIGITS
    return int(significant)


def open_regular_file(root: Path, relative: str) -> int | None:
    """Open ``root/relative`` for reading without following any symbolic link below ``root``.

    Returns
    -------
    int or None
        A file descriptor, or None if a part of the path is missing, is a symbolic link, or the
        file is not a regular file.
    """
    *folders, name = relative.split("/")
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in folders:
            inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = inner
        descriptor = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        return None
    os.set_blocking(descriptor, True)
    return descriptor


def site_files(root: Path) -> frozenset[str]:
    """Return the regular files under ``root`` (relative POSIX paths), not following links.

    Hidden names (``.roadcover.lock``, temporary files) and symbolic links are left out.
    """
    found = set()
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            path = Path(folder, name)
            if not name.startswith(".") and stat.S_ISREG(path.lstat().st_mode):
                found.add(path.relative_to(root).as_posix())
    return frozenset(found)


def content_type(relative: str) -> str:
    """Return the Content-Type of a site file from its extension."""
    suffix = Path(relative).suffix.lower()
    return (
        CONTENT_TYPES.get(suffix) or mimetypes.guess_type(relative)[0] or "application/octet-stream"
    )


def copy_exactly(source: BinaryIO, target: io.BufferedIOBase, count: int) -> None:
    """Copy ``count`` bytes (fewer if the file shrank) from ``source`` to ``target``."""
    while count > 0:
        chunk = source.read(min(count, 1 << 16))
        if not chunk:
            break
        target.write(chunk)
        count -= len(chunk)


@contextlib.contextmanager
def serve_directory(
    root: Path, host: str = "127.0.0.1", port: int = 0, files: Iterable[str] | None = None
) -> Iterator[str]:
    """Serve the files of a folder over HTTP (with Range support) while the block runs.

    Parameters
    ----------
    root
        The folder to serve, e.g. the output of :func:`pipeline.export.viewer.write_viewer`.
    host
        Address to bind; loopback by default.
    port
        Port to bind; 0 picks a free one.
    files
        The files that may be sent, as POSIX paths relative to ``root`` (e.g.
        :func:`pipeline.export.viewer.viewer_files`); default: the regular files found under
        ``root`` now (:func:`site_files`). Anything else is a 404.

    Yields
    ------
    str
        The base URL, e.g. ``http://127.0.0.1:8123/``.

    Raises
    ------
    ServeError
        If the port is in use or may not be bound.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder to serve")
    allowed = frozenset(files) if files is not None else site_files(root)
    server = _bind(host, port, root, allowed)
    thread = threading.Thread(target=server.serve_forever, name="roadcover-http", daemon=True)
    thread.start()
    try:
        bound_host, bound_port = server.server_address[:2]
        yield f"http://{bound_host!s}:{bound_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_until_interrupted() -> None:
    """Block the main thread until Ctrl-C (``KeyboardInterrupt``), waking every half second.

    A signal sent to the process is delivered to one of its threads, not always the main one
    (the server's, or a library's); Python's handlers run only in the main thread, when it
    next runs bytecode. A main thread blocked for good (``threading.Event().wait()``) would
    then never see the interrupt, and the server would outlive its Ctrl-C: each wake-up
    (:data:`SIGNAL_CHECK_S`) runs the handlers of the signals received meanwhile.
    """
    while True:
        time.sleep(SIGNAL_CHECK_S)


def _bind(host: str, port: int, root: Path, files: frozenset[str]) -> SiteServer:
    try:
        return SiteServer((host, port), root, files)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            problem = f"port {port} on {host} is already in use"
        else:
            problem = f"cannot listen on {host} port {port} ({error.strerror})"
        raise ServeError(
            f"{problem}; choose another port with --port (--port 0 picks a free one)"
        ) from None
