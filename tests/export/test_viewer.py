"""The web viewer: its files, the Range-capable server, and a real render in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import CELL_COVERAGE_COARSE
from pipeline.coverage.pointer import COARSE_CELLS
from pipeline.errors import InputDataError
from pipeline.export.inputs import read_cell_table, read_cells, read_edge_coverage
from pipeline.export.priorities import export_priorities
from pipeline.export.server import serve_directory
from pipeline.export.tiles import write_coverage_tiles
from pipeline.export.viewer import (
    finest_cell_bounds,
    static_files,
    viewer_files,
    week_ends,
    write_viewer,
)
from pipeline.io import write_table
from tests.builders import write_fully_covered_region
from tests.export.browser import Browser, find_chromium
from tests.export.coverage_builder import helsinki_coverage
from tests.imports import modules_imported_by

BACKGROUND = np.array([0x1B, 0x1F, 0x2A])
WHEN_IDLE = (
    "window.roadcoverIdle = false; roadcoverMap.once('idle', () => window.roadcoverIdle = true);"
)
UNCOVERED = np.array([0x5F, 0x66, 0x75])  # app.js: the grey of roads never driven
PANEL_RIGHT_PX = 300  # the summary panel covers the left of the page


@pytest.fixture(scope="module")
def coverage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


@pytest.fixture(scope="module")
def site(coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiles = tmp_path_factory.mktemp("tiles") / "coverage.pmtiles"
    roads = coverage_dir.parent / "roads"
    write_coverage_tiles(coverage_dir, tiles, min_zoom=0, max_zoom=13, roads_dir=roads)
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
    folder = tmp_path / "coverage"
    shutil.copytree(coverage_dir, folder)
    pointer = json.loads((folder / "state" / "CURRENT.json").read_text())
    (folder / "state" / "CURRENT.json").write_text(json.dumps({**pointer, "cell_parts": {}}))
    coarse = folder / "state" / "rollup" / pointer["rollup"] / COARSE_CELLS
    write_table(read_cells(coverage_dir).iloc[:0].drop(columns="age_days"), coarse,
                CELL_COVERAGE_COARSE)  # fmt: skip
    with pytest.raises(InputDataError, match="holds no cells"):
        read_cell_table(folder)


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

        cells = read_cells(coverage_dir)
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
            assert "Class" in popup and "Last seen" in popup  # a road's numbers
        assert browser.errors() == []


def test_the_page_of_a_fully_covered_region_reads_100_percent(tmp_path: Path) -> None:
    _, coverage = write_fully_covered_region(tmp_path)  # every length rounds up to the mm
    tiles = tmp_path / "tiles" / "coverage.pmtiles"
    write_coverage_tiles(coverage, tiles, min_zoom=12, max_zoom=14)
    summary = page_config(write_viewer(coverage, tiles, tmp_path / "site"))["summary"]
    assert summary["coverage_pct"] == 100.0 and summary["fresh_28d_pct"] == 100.0


def test_week_ends_are_mondays_from_the_first_observation_to_as_of() -> None:
    first = int(pd.Timestamp("2026-10-01T08:00Z").timestamp())  # a Thursday
    as_of = int(pd.Timestamp("2026-10-20T12:00Z").timestamp())
    expected = ["2026-10-05", "2026-10-12", "2026-10-19"]
    ends = week_ends(first, as_of)
    assert [pd.Timestamp(e, unit="s").strftime("%Y-%m-%d") for e in ends[:-1]] == expected
    assert all(pd.Timestamp(e, unit="s").day_of_week == 0 for e in ends[:-1])
    assert ends[-1] == as_of
    monday = int(pd.Timestamp("2026-10-05T00:00Z").timestamp())
    assert week_ends(monday, monday + 3600) == [monday + 3600]  # its week is in progress
    assert week_ends(monday - 1, monday + 1) == [monday, monday + 1]


def road_at_zoom(browser: Browser, lon: float, lat: float, zoom: float) -> tuple[float, float]:
    """Centre the map on a point, wait until it has rendered, return the point's pixel."""
    browser.evaluate(
        WHEN_IDLE + f"roadcoverMap.jumpTo({{center: [{lon}, {lat}], zoom: {zoom}}});"
        "roadcoverMap.triggerRepaint()"
    )
    assert browser.wait_for("window.roadcoverIdle === true", 30), browser.errors()
    x, y = browser.evaluate(f"(p => [p.x, p.y])(roadcoverMap.project([{lon}, {lat}]))")
    return x, y


def wait_rendered(browser: Browser, action: str) -> None:
    browser.evaluate(WHEN_IDLE + action + "; roadcoverMap.triggerRepaint()")
    assert browser.wait_for("window.roadcoverIdle === true", 30), browser.errors()


def rendered_at(browser: Browser, x: float, y: float, layer: str, key: str) -> list:
    return browser.evaluate(
        f"roadcoverMap.queryRenderedFeatures([[{x - 2}, {y - 2}], [{x + 2}, {y + 2}]], "
        f"{{layers: ['{layer}']}}).map(f => f.properties.{key})"
    )


def grey_near(image: np.ndarray, x: float, y: float, radius: int = 3) -> bool:
    """Whether a pixel around (x, y) has the uncovered roads' grey (antialiasing aside)."""
    ix, iy = round(x), round(y)
    window = image[iy - radius : iy + radius + 1, ix - radius : ix + radius + 1].astype(int)
    return bool((np.abs(window - UNCOVERED).max(axis=2) <= 6).any())


def test_uncovered_roads_render_grey_filter_by_class_and_show_their_numbers(
    site: Path, coverage_dir: Path, browser: Browser
) -> None:
    edges = read_edge_coverage(coverage_dir)
    covered_roads = set(edges.loc[edges["covered_m"] > 0, "road_id"])
    uncovered = edges[~edges["road_id"].isin(covered_roads) & (edges["highway"] == "residential")]
    road = uncovered.sort_values("length_m").iloc[-1]
    point = road.geometry.interpolate(0.5, normalized=True)
    names = gpd.read_parquet(coverage_dir.parent / "roads" / "edges.parquet").set_index("edge_id")
    canonical_id = edges.loc[edges["road_id"] == road["road_id"], "edge_id"].min()
    name = names.loc[canonical_id, "name"]
    with serve_directory(site.parent) as url:
        browser.call("Page.navigate", url=url + "index.html")
        assert browser.wait_for("window.roadcoverReady === true", 45), browser.errors()
        x, y = road_at_zoom(browser, point.x, point.y, 15)
        assert str(road["road_id"]) in rendered_at(browser, x, y, "roads", "road_id")
        assert grey_near(browser.screenshot(), x, y)

        browser.click(x, y)
        assert browser.wait_for("!!document.querySelector('.maplibregl-popup-content')", 10)
        popup = browser.evaluate(
            "Array.from(document.querySelectorAll('.maplibregl-popup-content tr'))"
            ".map(r => [r.children[0].textContent, r.children[1].textContent])"
        )
        rows = dict(popup)
        assert rows["Class"] == "residential" and rows["Covered"] == "0.0 %"
        assert rows["Name"] == (name if isinstance(name, str) else "\u2013")
        assert rows["Length"] == f"{road['length_m']:,.0f} m"
        assert rows["First seen"] == "never" and rows["Last seen"] == "never"
        assert rows["Passes"] == "0" and rows["Contributors"] == "0"
        browser.evaluate("document.querySelectorAll('.maplibregl-popup').forEach(p => p.remove())")

        wait_rendered(
            browser, "document.querySelector('#class-filter input[value=residential]').click()"
        )
        assert rendered_at(browser, x, y, "roads", "road_id") == []
        assert not grey_near(browser.screenshot(), x, y)
        wait_rendered(
            browser, "document.querySelector('#class-filter input[value=residential]').click()"
        )
        assert str(road["road_id"]) in rendered_at(browser, x, y, "roads", "road_id")
        assert browser.errors() == []


def test_the_time_slider_hides_pieces_first_seen_after_the_week(
    site: Path, coverage_dir: Path, browser: Browser
) -> None:
    weeks = page_config(site)["weeks"]
    assert len(weeks) >= 3
    edges = read_edge_coverage(coverage_dir)
    pieces = edges[edges["covered_m"] > 0].explode("intervals")
    first = pieces["intervals"].map(lambda i: pd.Timestamp(i["first_seen"]).timestamp())
    road_first = first.groupby(pieces["road_id"]).min()
    late_roads = road_first[road_first >= weeks[1]].index  # first driven after week 0 ended
    late = pieces[pieces["road_id"].isin(late_roads)]
    late = late.assign(piece_m=late["intervals"].map(lambda i: i["to_m"] - i["from_m"]))
    piece = late.sort_values("piece_m").iloc[-1]
    interval = piece["intervals"]
    middle = (interval["from_m"] + interval["to_m"]) / 2 / piece["length_m"]
    point = piece.geometry.interpolate(middle, normalized=True)
    with serve_directory(site.parent) as url:
        browser.call("Page.navigate", url=url + "index.html")
        assert browser.wait_for("window.roadcoverReady === true", 45), browser.errors()
        x, y = road_at_zoom(browser, point.x, point.y, 15)
        assert str(piece["edge_id"]) in rendered_at(browser, x, y, "segments", "edge_id")
        assert not grey_near(browser.screenshot(), x, y, radius=1)
        label = browser.evaluate("document.getElementById('time-label').textContent")
        assert label.endswith("(now)")

        slider = "document.getElementById('time-slider')"
        wait_rendered(browser, f"{slider}.value = '0'; {slider}.dispatchEvent(new Event('input'))")
        week_end = pd.Timestamp(weeks[0], unit="s").strftime("%Y-%m-%d")
        assert browser.evaluate("document.getElementById('time-label').textContent") == week_end
        assert rendered_at(browser, x, y, "segments", "edge_id") == []
        assert grey_near(browser.screenshot(), x, y, radius=1)  # the road is there, uncovered
        shown = browser.evaluate(
            "roadcoverMap.queryRenderedFeatures({layers: ['segments']})"
            ".map(f => f.properties.first_seen_s)"
        )
        assert all(s < weeks[0] for s in shown)
        wait_rendered(
            browser, f"{slider}.value = {slider}.max; {slider}.dispatchEvent(new Event('input'))"
        )
        assert str(piece["edge_id"]) in rendered_at(browser, x, y, "segments", "edge_id")
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


def window_colour(image: np.ndarray, x: float, y: float, radius: int = 6) -> np.ndarray:
    """The median colour around (x, y): a cell's fill, whatever thin road crosses it."""
    ix, iy = round(x), round(y)
    window = image[iy - radius : iy + radius + 1, ix - radius : ix + radius + 1]
    return np.median(window.reshape(-1, 3).astype(int), axis=0)


def test_the_cell_switch_colours_cells_by_fresh_share(
    site: Path, coverage_dir: Path, browser: Browser
) -> None:
    cells = read_cells(coverage_dir)
    finest = cells[cells["resolution"] == 9]
    stale = finest[(finest["coverage_pct"] >= 90) & (finest["fresh_28d_km"] == 0)]
    cell = stale.sort_values("road_km").iloc[-1]  # fully driven, but not in the last 28 days
    lat, lng = h3.cell_to_latlng(h3.int_to_str(int(cell["cell"])))
    with serve_directory(site.parent) as url:
        browser.call("Page.navigate", url=url + "index.html")
        assert browser.wait_for("window.roadcoverReady === true", 45), browser.errors()
        x, y = road_at_zoom(browser, lng, lat, 14)
        red, green, _ = window_colour(browser.screenshot(), x, y)
        assert green > red + 30  # coverage ramp: 90-100 % is green
        wait_rendered(browser, "document.querySelector('input[value=fresh]').click()")
        red, green, _ = window_colour(browser.screenshot(), x, y)
        assert red > green + 30  # fresh share 0 %: red
        wait_rendered(browser, "document.querySelector('input[value=coverage]').click()")
        red, green, _ = window_colour(browser.screenshot(), x, y)
        assert green > red + 30
        assert browser.errors() == []
