"""A real uvicorn server in a thread on a free port, and the served data the API tests use."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pipeline.config import Settings, settings_from_mapping
from pipeline.export.feeds import publish_release
from pipeline.export.tiles import write_coverage_tiles
from pipeline.serve.accounts import AccountStore
from pipeline.serve.app import create_app
from tests.export.coverage_builder import helsinki_coverage

START_TIMEOUT_S = 60


@dataclass(frozen=True)
class ServedData:
    """A region's coverage, roads, tiles and a releases folder with release ``r1``."""

    coverage: Path
    roads: Path
    tiles: Path
    releases: Path

    def copy_releases(self, folder: Path) -> Path:
        """Copy the releases folder (a region of its own that a test may change)."""
        shutil.copytree(self.releases, folder, symlinks=True)
        return folder


def build_served_data(factory: pytest.TempPathFactory) -> ServedData:
    """Build (once per session) coverage of Helsinki, its tiles and its first release."""
    coverage = helsinki_coverage(factory)
    root = coverage.parent
    tiles = root / "coverage.pmtiles"
    releases = root / "releases"
    if not (releases / "latest.json").exists():
        write_coverage_tiles(coverage, tiles)
        publish_release(coverage, root / "roads", releases, releases / "latest.json", "r1")
    return ServedData(coverage, root / "roads", tiles, releases)


def api_config(data: ServedData, regions: Mapping[str, Path] | None = None, **api: Any) -> Settings:
    """Settings serving ``regions`` (name -> releases folder; default helsinki) of ``data``."""
    served = regions or {"helsinki": data.releases}
    api_regions = {
        name: {"releases": str(folder), "roads": str(data.roads), "tiles": str(data.tiles)}
        for name, folder in served.items()
    }
    return settings_from_mapping(
        {"regions": [{"name": "helsinki", "osm": "x.osm"}], "api": {"regions": api_regions, **api}}
    )


@contextlib.contextmanager
def running_server(settings: Settings, store: AccountStore) -> Iterator[str]:
    """Run the API on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(
        create_app(settings, store), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(START_TIMEOUT_S * 20):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the API server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
