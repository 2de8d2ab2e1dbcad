"""The web map server of ``roadcover export viewer --serve``, run as a real process.

Requests go over raw sockets, so that malformed request lines and paths reach the server as
written (HTTP clients would normalise ``..`` away). The expected answers are RFC 9110's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from pipeline.cli import EXIT_ERROR
from pipeline.export.tiles import write_coverage_tiles
from tests.export.coverage_builder import helsinki_coverage

TIMEOUT_S = 120
SECRET = b"outside the site: must never be served\n"
HUGE = "9" * 5000


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    coverage = helsinki_coverage(tmp_path_factory)
    tiles = tmp_path_factory.mktemp("tiles") / "coverage.pmtiles"
    write_coverage_tiles(coverage, tiles, min_zoom=0, max_zoom=10)
    return coverage, tiles


def viewer_command(inputs: tuple[Path, Path], site: Path, port: int) -> list[str]:
    coverage, tiles = inputs
    return [
        sys.executable, "-m", "pipeline.cli", "export", "viewer", str(coverage), str(tiles),
        str(site), "--serve", "--port", str(port),
    ]  # fmt: skip


class Served(NamedTuple):
    site: Path
    port: int
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def served(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The server of a real ``roadcover export viewer --serve --port 0`` process."""
    base = tmp_path_factory.mktemp("served")
    site = base / "site"
    process, port = start_viewer(inputs, site)
    plant_links(base, site)
    yield Served(site, port, process)
    # after every test of the module: no request made the server log a traceback
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=TIMEOUT_S)
    assert "Traceback" not in rest and "Error" not in rest.replace("roadcover: aborted", "")


def start_viewer(inputs: tuple[Path, Path], site: Path) -> tuple[subprocess.Popen[str], int]:
    """Start ``roadcover export viewer --serve --port 0``; return it serving, and its port."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        viewer_command(inputs, site, 0), env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:  # until "serving http://127.0.0.1:<port>/ ..."
        if line.startswith("serving http://"):
            return process, int(line.split(":")[2].split("/")[0])
    raise AssertionError("the server did not start")


def plant_links(base: Path, site: Path) -> None:
    """Links in the site to a file and a folder outside it, and one in place of a site file."""
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (site / "secret.txt").symlink_to(outside / "secret.txt")
    (site / "linked").symlink_to(outside, target_is_directory=True)
    (site / "style.css").unlink()
    (site / "style.css").symlink_to(outside / "secret.txt")


def ask(port: int, request: bytes) -> Answer:
    """Send raw bytes to the server and parse its answer (the connection is closed after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def get(port: int, target: str, range_header: str | None = None, method: str = "GET") -> Answer:
    extra = f"Range: {range_header}\r\n" if range_header is not None else ""
    request = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    return ask(port, request.encode("latin-1"))


def test_the_site_files_are_served(served: Served) -> None:
    index = (served.site / "index.html").read_bytes()
    assert get(served.port, "/") == get(served.port, "/index.html")
    answer = get(served.port, "/index.html")
    assert answer.status == 200 and answer.body == index
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    vendor = get(served.port, "/vendor/maplibre-gl.js")
    assert vendor.status == 200
    assert vendor.body == (served.site / "vendor" / "maplibre-gl.js").read_bytes()


@pytest.mark.parametrize(
    "target", ["/vendor/", "/vendor", "/secret.txt", "/linked/secret.txt", "/style.css", "/nope"]
)
def test_folders_links_and_other_files_are_not_found(served: Served, target: str) -> None:
    answer = get(served.port, target)
    assert answer.status == 404
    assert SECRET not in answer.body and b"<li>" not in answer.body  # no listing either


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/vendor/../index.html",
        "/./index.html",
        "/index.html%00.js",
        "/%00",
        "/%ff%fe",
        "/vendor%5c..%5cindex.html",
        "index.html",
    ],
)
def test_malformed_paths_are_bad_requests(served: Served, target: str) -> None:
    answer = get(served.port, target)
    assert answer.status == 400
    assert SECRET not in answer.body


def tiles_bytes(served: Served) -> bytes:
    return (served.site / "coverage.pmtiles").read_bytes()


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=0-6", 0, 6),
        ("bytes=10-", 10, None),
        ("bytes=-4", -4, None),
        (f"bytes=0-{HUGE}", 0, None),  # an end past the file is cut to it
        (f"bytes=-{HUGE}", 0, None),  # a suffix longer than the file is the whole file
        ("bytes=000003-000005", 3, 5),
    ],
)
def test_satisfiable_ranges_are_partial_content(
    served: Served, range_header: str, first: int, last: int | None
) -> None:
    data = tiles_bytes(served)
    expected = data[first : None if last is None else last + 1]
    answer = get(served.port, "/coverage.pmtiles", range_header)
    assert answer.status == 206
    assert answer.body == expected
    start = first % len(data)
    assert answer.headers["content-range"] == (
        f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    )


@pytest.mark.parametrize(
    "range_header",
    [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}", "bytes=5-1", "bytes=-0", "bytes=abc", "bytes=",
     "bytes=1-2-3", "bytes= - ", "bytes=0-1,junk"],
)  # fmt: skip
def test_malformed_or_unsatisfiable_ranges_are_416(served: Served, range_header: str) -> None:
    answer = get(served.port, "/coverage.pmtiles", range_header)
    assert answer.status == 416
    assert answer.headers["content-range"] == f"bytes */{len(tiles_bytes(served))}"
    assert answer.body == b""


@pytest.mark.parametrize("range_header", ["bytes=0-1,4-5", "bytes=0-1, -2", "items=0-5"])
def test_several_ranges_or_another_unit_get_the_whole_file(
    served: Served, range_header: str
) -> None:
    answer = get(served.port, "/coverage.pmtiles", range_header)
    assert answer.status == 200 and answer.body == tiles_bytes(served)


def test_head_sends_the_headers_of_get_without_a_body(served: Served) -> None:
    answer = get(served.port, "/coverage.pmtiles", "bytes=0-6", method="HEAD")
    assert answer.status == 206 and answer.body == b""
    assert answer.headers["content-length"] == "7"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /index.html HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /index.html HTTP/x.y\r\n\r\n", 400),
        (b"POST /index.html HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
def test_malformed_requests_get_an_error_status(
    served: Served, request_bytes: bytes, status: int
) -> None:
    assert ask(served.port, request_bytes).status == status


def test_a_busy_port_is_one_line_naming_it_and_the_fix(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            viewer_command(inputs, tmp_path / "site", port),
            capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
        )  # fmt: skip
    assert result.returncode == EXIT_ERROR
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"roadcover: error: port {port} on 127.0.0.1 is already in use; choose another port "
        "with --port (--port 0 picks a free one)"
    )
    shutil.rmtree(tmp_path / "site")


def test_an_interrupt_that_lands_on_the_server_thread_stops_the_server(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Ctrl-C stops the server whichever of its threads the system delivers the signal to.

    A signal sent to a process goes to one of its threads; if it is not the main thread, a main
    thread blocked for good (``threading.Event().wait()``) never runs Python's handler. Here the
    interrupt is sent to the server's own thread (``tgkill``), as the system may do (and did,
    under load: the module's server then outlived its 120 s teardown).
    """
    process, _ = start_viewer(inputs, tmp_path / "site")
    threads = sorted(int(tid) for tid in os.listdir(f"/proc/{process.pid}/task"))
    newest = threads[-1]  # the server's (started last); Linux numbers threads in order
    assert newest != process.pid
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(process.pid, newest, signal.SIGINT) == 0
    try:
        _, rest = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the server did not stop within 20 s of the interrupt")
    assert process.returncode == EXIT_ERROR
    assert rest.strip().splitlines()[-1] == "roadcover: aborted"
