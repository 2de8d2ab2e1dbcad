"""A loopback static file server that answers HTTP Range requests, to open the web viewer.

The pmtiles JavaScript library reads an archive with Range requests, which Python's
:mod:`http.server` ignores (it always sends the whole file). :class:`RangeRequestHandler` adds
single-range support (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``); multi-range requests get the
whole file, as RFC 9110 allows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serve files from a folder, honouring a single byte range."""

    extensions_map = {  # noqa: RUF012 (the base class declares it as a class attribute)
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".css": "text/css",
        ".json": "application/json",
        ".pmtiles": "application/vnd.pmtiles",
    }
    _remaining: int | None = None

    def send_head(self) -> Any:
        """Send the headers of a GET/HEAD; a 206 with Content-Range for a satisfiable range."""
        self._remaining = None
        match = _RANGE.match(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, last = match.groups()
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        elif last:
            start, end = max(size - int(last), 0), size - 1
        else:
            return super().send_head()
        if start >= size or start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        handle = path.open("rb")
        handle.seek(start)
        self._remaining = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        return handle

    def end_headers(self) -> None:
        """Advertise range support on every response."""
        if self._remaining is None:
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        """Copy the requested range only (the whole file when there is none)."""
        if self._remaining is None:
            shutil.copyfileobj(source, outputfile)
            return
        _copy_exactly(source, outputfile, self._remaining)

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests to this module's logger instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)


def _copy_exactly(source: BinaryIO, target: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = source.read(min(count, 1 << 16))
        if not chunk:
            break
        target.write(chunk)
        count -= len(chunk)


@contextlib.contextmanager
def serve_directory(root: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve a folder over HTTP (with Range support) while the block runs.

    Parameters
    ----------
    root
        The folder to serve, e.g. the output of :func:`pipeline.export.viewer.write_viewer`.
    host
        Address to bind; loopback by default.
    port
        Port to bind; 0 picks a free one.

    Yields
    ------
    str
        The base URL, e.g. ``http://127.0.0.1:8123/``.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: no such folder to serve")
    handler = partial(RangeRequestHandler, directory=os.fspath(root))
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="roadcover-http", daemon=True)
    thread.start()
    try:
        bound_host, bound_port = server.server_address[:2]
        yield f"http://{bound_host!s}:{bound_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
