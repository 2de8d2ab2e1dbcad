"""The web viewer: its files, the Range-capable server, and a real render in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import h3
import numpy as np
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import CELL_COVERAGE
from pipeline.errors import InputDataError
from pipeline.export.inputs import read_cell_table, read_cells
from pipeline.export.priorities import export_priorities
from pipeline.export.server import serve_directory
from pipeline.export.tiles import write_coverage_tiles
from pipeline.export.viewer import finest_cell_bounds, static_files, viewer_files, write_viewer
from pipeline.io import read_table, write_table
from tests.export.browser import Browser, find_chromium
from tests.export.coverage_builder import helsinki_coverage
from tests.imports import modules_imported_by

BACKGROUND = np.array([0x1B, 0x1F, 0x2A])
PANEL_RIGHT_PX = 300  # the summary panel covers the left of the page


@pytest.fixture(scope="module")
def coverage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


@pytest.fixture(scope="module")
def site(coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiles = tmp_path_factory.mktemp("tiles") / "coverage.pmtiles"
    write_coverage_tiles(coverage_dir, tiles, min_zoom=0, max_zoom=13)
    return write_viewer(coverage_dir, tiles, tmp_path_factory.mktemp("site"), title="Helsinki")


def page_config(index: Path) -> dict:
    text = index.read_text()
    found = re.search(r'<script id="roadcover-config" type="application/json">(.*?)</script>', text)
    assert found
    return json.loads(found.group(1))


def test_site_is_self_contained(site: Path, coverage_dir: Path) -> None:
    folder = site.parent
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "index.html",
        "app.js",
        "style.css",
        "coverage.pmtiles",
        "vendor/maplibre-gl.js",
        "vendor/maplibre-gl.css",
        "vendor/pmtiles.js",
        "vendor/LICENSE.maplibre-gl.txt",
        "vendor/LICENSE.pmtiles.txt",
    } <= names
    for name in ("index.html", "app.js", "style.css"):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", (folder / name).read_text())
    config = page_config(site)
    summary = json.loads((coverage_dir / "summary.json").read_text())
    assert config["tiles"] == "coverage.pmtiles" and config["title"] == "Helsinki"
    assert config["summary"]["coverage_pct"] == summary["coverage_pct"]
    assert config["summary"]["fresh_28d_pct"] == summary["fresh_28d_pct"]
    (west, south), (east, north) = config["bounds"]
    assert 24.8 < west < east < 25.1 and 60.1 < south < north < 60.3


def test_bounds_are_those_of_the_finest_cells(coverage_dir: Path) -> None:
    cells = read_cells(coverage_dir)
    finest = cells[cells["resolution"] == cells["resolution"].max()]
    expected = tuple(round(float(v), 7) for v in finest.total_bounds)
    assert finest_cell_bounds(read_cell_table(coverage_dir)) == expected
    coarser = cells[cells["resolution"] < cells["resolution"].max()]
    assert tuple(round(float(v), 7) for v in coarser.total_bounds) != expected


def test_a_coverage_without_cells_is_refused(coverage_dir: Path, tmp_path: Path) -> None:
    empty = read_table(coverage_dir / "cells.parquet", CELL_COVERAGE).iloc[:0]
    write_table(empty, tmp_path / "cells.parquet", CELL_COVERAGE)
    with pytest.raises(InputDataError, match="holds no cells"):
        read_cell_table(tmp_path)


def test_the_viewer_does_without_geopandas(coverage_dir: Path, tmp_path: Path) -> None:
    """The viewer needs the cells' bounds alone: no GeoDataFrame, CRS or pyproj to import."""
    tiles = tmp_path / "coverage.pmtiles"
    tiles.write_bytes(b"not read")
    code = (
        "from pipeline.export.viewer import write_viewer\n"
        f"write_viewer({str(coverage_dir)!r}, {str(tiles)!r}, {str(tmp_path / 'site')!r})"
    )
    assert modules_imported_by(code, ("geopandas", "pyproj")) == []


def test_static_files_come_from_the_package() -> None:
    static = static_files()
    assert static.joinpath("vendor", "maplibre-gl.js").is_file()
    assert "{{CONFIG}}" in static.joinpath("index.html").read_text()
    assert "| maplibre-gl | 5." in static.joinpath("VENDORED.md").read_text()


def test_writing_the_site_again_beside_its_tiles_keeps_them(site: Path, coverage_dir: Path) -> None:
    tiles = site.parent / "coverage.pmtiles"
    before = tiles.read_bytes()
    assert write_viewer(coverage_dir, tiles, site.parent) == site
    assert tiles.read_bytes() == before
    assert not [p for p in site.parent.iterdir() if p.name.startswith(".")]


def test_server_answers_range_requests(site: Path) -> None:
    size = (site.parent / "coverage.pmtiles").stat().st_size
    with serve_directory(site.parent) as url:
        request = urllib.request.Request(url + "coverage.pmtiles", headers={"Range": "bytes=0-6"})
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 206
            assert answer.headers["Content-Range"] == f"bytes 0-6/{size}"
            assert answer.read() == b"PMTiles"
        request = urllib.request.Request(url + "coverage.pmtiles", headers={"Range": "bytes=-4"})
        with urllib.request.urlopen(request) as answer:
            assert len(answer.read()) == 4
        with urllib.request.urlopen(url + "coverage.pmtiles") as answer:
            assert answer.status == 200 and len(answer.read()) == size
        bad = urllib.request.Request(url + "coverage.pmtiles", headers={"Range": f"bytes={size}-"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(bad)
        assert error.value.code == 416


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium at /usr/bin/chromium (apt-get install chromium)")
        pytest.skip("no Chromium (/usr/bin/chromium): apt-get install chromium to run this test")
    session = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield session
    session.close()


def test_viewer_renders_coverage_in_headless_chromium(
    site: Path, coverage_dir: Path, browser: Browser
) -> None:
    with serve_directory(site.parent) as url:
        browser.call("Page.navigate", url=url + "index.html")
        assert browser.wait_for("window.roadcoverReady === true", 45), browser.errors()
        rendered = browser.evaluate(
            "[ 'cells', 'segments' ].map(l => roadcoverMap.queryRenderedFeatures({layers: [l]})"
            ".length)"
        )
        assert rendered[0] > 10 and rendered[1] > 100, rendered
        assert browser.evaluate("document.getElementById('summary').textContent").startswith(
            "Coverage"
        )
        image = browser.screenshot()
        map_part = image[:, PANEL_RIGHT_PX:].reshape(-1, 3).astype(int)
        painted = np.abs(map_part - BACKGROUND).max(axis=1) > 40
        assert painted.mean() > 0.15, f"only {painted.mean():.1%} of the map is painted"
        red, blue = map_part[:, 0], map_part[:, 2]
        segment_like = (blue > 200) & (blue > red + 60)  # the 7d / 28d / 90d blues and violet
        assert segment_like.sum() > 500

        cells = read_table(coverage_dir / "cells.parquet", CELL_COVERAGE)
        cell = cells[cells["resolution"] == 9].sort_values("coverage_pct").iloc[len(cells) // 4]
        hex_id = h3.int_to_str(int(cell["cell"]))
        lat, lng = h3.cell_to_latlng(hex_id)
        x, y = browser.evaluate(f"(p => [p.x, p.y])(roadcoverMap.project([{lng}, {lat}]))")
        browser.click(x, y)
        assert browser.wait_for("!!document.querySelector('.maplibregl-popup-content')", 10)
        popup = browser.evaluate("document.querySelector('.maplibregl-popup-content').textContent")
        if "H3 cell" in popup:
            assert hex_id in popup and f"{cell['coverage_pct']:.1f} %" in popup
        else:
            assert "Interval" in popup and "Last seen" in popup
        assert browser.errors() == []


@pytest.fixture(scope="module")
def priorities_site(
    site: Path, coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The Helsinki site again, with the priorities of its coverage (two tours)."""
    settings = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).priorities
    out = tmp_path_factory.mktemp("priorities")
    export_priorities(coverage_dir, coverage_dir.parent / "roads", out, replace(settings, tours=2))
    folder = tmp_path_factory.mktemp("priorities-site")
    return write_viewer(coverage_dir, site.parent / "coverage.pmtiles", folder, "Helsinki", out)


def test_a_site_with_priorities_carries_their_cells_and_tours(priorities_site: Path) -> None:
    folder = priorities_site.parent
    config = page_config(priorities_site)
    assert config["priorities"] == {
        "cells": "priorities-cells.geojson",
        "tours": "priorities-tours.geojson",
    }
    tours = json.loads((folder / "priorities-tours.geojson").read_text())["features"]
    cells = json.loads((folder / "priorities-cells.geojson").read_text())["features"]
    assert len(tours) == 2 and len(cells) >= 2
    assert all("edge_ids" not in tour["properties"] for tour in tours)
    served = set(viewer_files(folder / "coverage.pmtiles", priorities=True))
    assert {"priorities-cells.geojson", "priorities-tours.geojson"} <= served
    assert "priorities-tours.geojson" not in viewer_files(folder / "coverage.pmtiles")


def test_a_missing_priorities_folder_is_one_clear_error(
    coverage_dir: Path, site: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputDataError, match="cells.geojson: file not found"):
        write_viewer(coverage_dir, site.parent / "coverage.pmtiles", tmp_path / "s", None, tmp_path)


def test_viewer_draws_where_to_drive_next_in_headless_chromium(
    priorities_site: Path, browser: Browser
) -> None:
    folder = priorities_site.parent
    files = viewer_files(folder / "coverage.pmtiles", priorities=True)
    with serve_directory(folder, files=files) as url:
        browser.call("Page.navigate", url=url + "index.html")
        assert browser.wait_for("window.roadcoverReady === true", 45), browser.errors()
        rendered = browser.evaluate(
            "['priority-cells', 'priority-tours'].map(l => "
            "roadcoverMap.queryRenderedFeatures({layers: [l]}).length)"
        )
        assert rendered[0] >= 2 and rendered[1] >= 1, rendered
        legend = browser.evaluate("document.querySelector('#panel .legend').textContent")
        assert "Where to drive next" in legend
        image = browser.screenshot()
        map_part = image[:, PANEL_RIGHT_PX:].reshape(-1, 3).astype(int)
        red, green, blue = map_part.T
        magenta = (red > 200) & (blue > 200) & (green < 80)
        assert magenta.sum() > 300, f"{magenta.sum()} tour pixels"

        tour = json.loads((folder / "priorities-tours.geojson").read_text())["features"][0]
        lng, lat = np.mean(tour["geometry"]["coordinates"][:2], axis=0)
        x, y = browser.evaluate(f"(p => [p.x, p.y])(roadcoverMap.project([{lng}, {lat}]))")
        browser.click(x, y)
        assert browser.wait_for("!!document.querySelector('.maplibregl-popup-content')", 10)
        popup = browser.evaluate("document.querySelector('.maplibregl-popup-content').textContent")
        assert "Tour" in popup and "Gained per km driven" in popup, popup
        assert browser.errors() == []
