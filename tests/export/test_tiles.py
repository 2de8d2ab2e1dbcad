"""Vector tiles: a PMTiles v3 archive of MVT, decoded back with pmtiles and mapbox-vector-tile."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h3
import mapbox_vector_tile
import numpy as np
import pytest
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType
from pyproj import Geod

from pipeline.contracts import CELL_COVERAGE
from pipeline.export.inputs import as_of_of, read_edge_coverage, read_summary
from pipeline.export.tiles import (
    cell_resolution_for_zoom,
    cell_zoom_ranges,
    covered_segments,
    write_coverage_tiles,
)
from pipeline.io import read_table
from tests.builders import write_fully_covered_region
from tests.export.coverage_builder import helsinki_coverage

MAX_ZOOM = 13


@pytest.fixture(scope="module")
def coverage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


@pytest.fixture(scope="module")
def tiles(coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiles") / "coverage.pmtiles"
    report = write_coverage_tiles(coverage_dir, out, min_zoom=0, max_zoom=MAX_ZOOM)
    return out, report


def tile_of(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    n = 2**zoom
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


def decode(path: Path, z: int, x: int, y: int) -> dict[str, Any]:
    with path.open("rb") as handle:
        data = Reader(MmapSource(handle)).get(z, x, y)
    return mapbox_vector_tile.decode(gzip.decompress(data)) if data else {}


def every_tile(path: Path) -> Iterator[tuple[tuple[int, int, int], dict[str, Any]]]:
    with path.open("rb") as handle:
        for zxy, data in all_tiles(MmapSource(handle)):
            yield zxy, mapbox_vector_tile.decode(gzip.decompress(data))


def test_resolution_per_zoom_is_coarse_low_and_finest_high() -> None:
    chosen = [cell_resolution_for_zoom(z, finest=9) for z in range(0, 17)]
    assert chosen[:4] == [3, 3, 3, 3]
    assert chosen[12:] == [9] * 5
    assert chosen == sorted(chosen)
    assert cell_resolution_for_zoom(14, finest=8) == 8
    assert cell_resolution_for_zoom(0, finest=2) == 2
    assert cell_zoom_ranges(10, 13, finest=9) == {7: (10, 10), 8: (11, 11), 9: (12, 13)}


def test_header_is_pmtiles_v3_mvt_with_zooms_and_bounds(tiles: tuple[Path, dict]) -> None:
    path, report = tiles
    with path.open("rb") as handle:
        header = Reader(MmapSource(handle)).header()
    assert header["version"] == 3
    assert header["tile_type"] == TileType.MVT
    assert header["tile_compression"] == Compression.GZIP
    assert (header["min_zoom"], header["max_zoom"]) == (0, MAX_ZOOM)
    west, south, east, north = report["bounds"]
    assert (west, south) == (header["min_lon_e7"] / 1e7, header["min_lat_e7"] / 1e7)
    # Helsinki: the bounds hold the data, and are no larger than a res-3 hexagon around it
    assert 23.0 < west < 24.9 < 25.0 < east < 27.0
    assert 59.0 < south < 60.15 < 60.2 < north < 61.5
    assert report["layers"]["cells"]["features"] > 0
    assert report["layers"]["segments"]["features"] > 0


def test_a_known_cell_is_in_the_tile_of_its_centroid_with_its_attributes(
    tiles: tuple[Path, dict], coverage_dir: Path
) -> None:
    path, _ = tiles
    cells = read_table(coverage_dir / "cells.parquet", CELL_COVERAGE)
    for zoom in (12, 10):
        resolution = cell_resolution_for_zoom(zoom)
        cell = cells[cells["resolution"] == resolution].sort_values("cell").iloc[0]
        hex_id = h3.int_to_str(int(cell["cell"]))
        lat, lon = h3.cell_to_latlng(hex_id)
        layer = decode(path, zoom, *tile_of(lon, lat, zoom))["cells"]
        found = [f["properties"] for f in layer["features"] if f["properties"]["cell"] == hex_id]
        assert len(found) == 1, f"{hex_id} missing at z{zoom}"
        props = found[0]
        assert props["resolution"] == resolution
        assert props["coverage_pct"] == pytest.approx(cell["coverage_pct"], abs=1e-5)
        assert props["road_km"] == pytest.approx(cell["road_km"], abs=1e-5)
        assert props["unique_km"] == pytest.approx(cell["unique_km"], abs=1e-5)
        if cell["last_seen"] is not None:
            assert props["last_seen"].startswith(cell["last_seen"].strftime("%Y-%m-%dT%H:%M"))


def test_each_zoom_shows_one_resolution(tiles: tuple[Path, dict]) -> None:
    path, _ = tiles
    for (z, _x, _y), layers in every_tile(path):
        resolutions = {f["properties"]["resolution"] for f in layers["cells"]["features"]}
        assert resolutions == {cell_resolution_for_zoom(z)}


def test_segments_from_z10_with_freshness(tiles: tuple[Path, dict], coverage_dir: Path) -> None:
    path, report = tiles
    assert report["layers"]["segments"]["min_zoom"] == 10
    seen_at_max: set[tuple[str, float]] = set()
    zooms_with_segments = set()
    for (z, _x, _y), layers in every_tile(path):
        if z < 10:
            assert "segments" not in layers
            continue
        if "segments" not in layers:  # a tile that only a large hexagon reaches into
            continue
        zooms_with_segments.add(z)
        for feature in layers["segments"]["features"]:
            props = feature["properties"]
            assert props["age_bucket"] in {"7d", "28d", "90d", "365d", "older"}
            assert props["passes"] >= 1 and props["highway"]
            assert props["last_seen"].endswith("Z")
            if z == MAX_ZOOM:
                seen_at_max.add((props["edge_id"], props["from_m"]))
    assert zooms_with_segments == set(range(10, MAX_ZOOM + 1))
    # nothing is dropped to fit a budget: at the top zoom only sub-metre slivers are missing
    segments = covered_segments(
        read_edge_coverage(coverage_dir), as_of_of(read_summary(coverage_dir))
    )
    assert len(segments) == report["layers"]["segments"]["features"]
    keys = list(zip(segments["edge_id"], segments["from_m"], strict=True))
    missing = segments[[key not in seen_at_max for key in keys]]
    assert len(missing) < 0.1 * len(segments)
    assert ((missing["to_m"] - missing["from_m"]) < 1.0).all()


def test_same_input_gives_the_same_bytes(coverage_dir: Path, tmp_path: Path) -> None:
    first = write_coverage_tiles(coverage_dir, tmp_path / "a.pmtiles", 8, 12)
    second = write_coverage_tiles(coverage_dir, tmp_path / "b.pmtiles", 8, 12)
    assert (tmp_path / "a.pmtiles").read_bytes() == (tmp_path / "b.pmtiles").read_bytes()
    assert first["min_zoom"] == 8 and second["max_zoom"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pmtiles", "b.pmtiles"]


def test_bad_zoom_range_is_refused(coverage_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="zoom range"):
        write_coverage_tiles(coverage_dir, tmp_path / "x.pmtiles", 5, 3)
    assert not (tmp_path / "x.pmtiles").exists()


def test_segments_are_the_covered_intervals_not_whole_edges(coverage_dir: Path) -> None:
    edges = read_edge_coverage(coverage_dir)
    segments = covered_segments(edges, as_of_of(read_summary(coverage_dir)))
    assert len(segments) == sum(len(i) for i in edges.loc[edges["covered_m"] > 0, "intervals"])
    geod = Geod(ellps="WGS84")
    lengths = np.array([geod.geometry_length(g) for g in segments.geometry])
    wanted = (segments["to_m"] - segments["from_m"]).to_numpy()
    assert np.allclose(lengths, wanted, rtol=0.02, atol=0.05)
    partial = edges[(edges["covered_m"] > 0) & (edges["covered_m"] < edges["length_m"] - 1)]
    assert len(partial) and len(segments) > 0
    assert set(segments["age_bucket"]) <= {"7d", "28d", "90d", "365d", "older"}


def test_cells_of_a_fully_covered_region_are_tiled_at_100_percent(tmp_path: Path) -> None:
    _, coverage = write_fully_covered_region(tmp_path)  # every length rounds up to the mm
    path = tmp_path / "coverage.pmtiles"
    write_coverage_tiles(coverage, path, min_zoom=0, max_zoom=12)
    shares = [
        feature["properties"]["coverage_pct"]
        for _, layers in every_tile(path)
        for feature in layers["cells"]["features"]
    ]
    assert shares and set(shares) == {100.0}
