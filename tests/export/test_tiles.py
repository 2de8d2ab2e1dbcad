"""Vector tiles: a PMTiles v3 archive of MVT, decoded back with pmtiles and mapbox-vector-tile."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import mapbox_vector_tile
import numpy as np
import pandas as pd
import pytest
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType
from pyproj import Geod

from pipeline.errors import InputDataError
from pipeline.export.inputs import as_of_of, read_cells, read_edge_coverage, read_summary
from pipeline.export.tiles import (
    cell_resolution_for_zoom,
    cell_zoom_ranges,
    covered_segments,
    write_coverage_tiles,
)
from pipeline.roads import build_roads, resolve_extract
from tests.builders import write_fully_covered_region
from tests.export.coverage_builder import HELSINKI, helsinki_coverage

MAX_ZOOM = 13


@pytest.fixture(scope="module")
def coverage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


@pytest.fixture(scope="module")
def tiles(coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiles") / "coverage.pmtiles"
    roads = coverage_dir.parent / "roads"
    report = write_coverage_tiles(coverage_dir, out, min_zoom=0, max_zoom=MAX_ZOOM, roads_dir=roads)
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
    cells = read_cells(coverage_dir)
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


def road_feature(path: Path, zoom: int, lon: float, lat: float, road_id: int) -> dict[str, Any]:
    layer = decode(path, zoom, *tile_of(lon, lat, zoom)).get("roads", {"features": []})
    found = [
        f["properties"] for f in layer["features"] if f["properties"]["road_id"] == str(road_id)
    ]
    assert len(found) == 1, f"road {road_id} not in the z{zoom} tile of ({lon}, {lat})"
    return found[0]


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of closed intervals, by a sweep written for this test."""
    total, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def road_union_pct(rows: pd.DataFrame, flip: bool) -> float:
    """Covered % of a road: its directions' intervals on the first edge's axis, merged.

    Lengths are rounded to the millimetre, as the intervals are (and as summary.json counts).
    """
    road_length = round(rows.iloc[0]["length_m"], 3)
    intervals = []
    for row in rows.itertuples():
        for interval in row.intervals:
            a, b = interval["from_m"], interval["to_m"]
            if flip and row.u != rows.iloc[0]["u"]:  # the other direction: from the other end
                a, b = round(row.length_m, 3) - b, round(row.length_m, 3) - a
            intervals.append((max(a, 0.0), min(b, road_length)))
    return 100 * union_length(intervals) / road_length


def test_uncovered_roads_are_drawn_with_class_and_length(
    tiles: tuple[Path, dict], coverage_dir: Path
) -> None:
    path, report = tiles
    edges = read_edge_coverage(coverage_dir)
    covered_roads = set(edges.loc[edges["covered_m"] > 0, "road_id"])
    uncovered = edges[~edges["road_id"].isin(covered_roads) & (edges["highway"] == "residential")]
    road = uncovered.sort_values("length_m").iloc[-1]
    point = road.geometry.interpolate(0.5, normalized=True)
    props = road_feature(path, MAX_ZOOM, point.x, point.y, road["road_id"])
    assert props["highway"] == "residential"
    assert props["covered_pct"] == 0 and props["passes"] == 0
    assert props["contributors_bucket"] == "0"
    assert "first_seen" not in props and "last_seen" not in props
    geodesic = Geod(ellps="WGS84").geometry_length(road.geometry)
    assert props["length_m"] == pytest.approx(geodesic, rel=0.01)
    assert report["layers"]["roads"]["features"] == edges["road_id"].nunique()


def test_a_roads_attributes_equal_the_coverage_tables(
    tiles: tuple[Path, dict], coverage_dir: Path
) -> None:
    path, _ = tiles
    edges = read_edge_coverage(coverage_dir)
    # a two-way road driven in both directions, where measuring the reverse direction
    # from the far end matters
    candidates = []
    for road_id, rows in edges.groupby("road_id"):
        if len(rows) != 2 or not (rows["passes"] > 0).all():
            continue
        rows = rows.sort_values("edge_id")
        expected_pct, flipped = road_union_pct(rows, flip=True), road_union_pct(rows, flip=False)
        if abs(expected_pct - flipped) > 1:
            candidates.append((rows["length_m"].iloc[0], road_id))
    assert candidates, "no two-way road driven both ways in the fixture"
    road_id = max(candidates)[1]
    rows = edges[edges["road_id"] == road_id].sort_values("edge_id")
    canonical = rows.iloc[0]
    road_length = canonical["length_m"]
    expected_pct = road_union_pct(rows, flip=True)
    first = [i["first_seen"] for intervals in rows["intervals"] for i in intervals]
    last = [i["last_seen"] for intervals in rows["intervals"] for i in intervals]
    names = gpd.read_parquet(coverage_dir.parent / "roads" / "edges.parquet")
    name = names.set_index("edge_id").loc[canonical["edge_id"], "name"]

    point = canonical.geometry.interpolate(0.5, normalized=True)
    props = road_feature(path, MAX_ZOOM, point.x, point.y, road_id)
    assert props["covered_pct"] == pytest.approx(expected_pct, abs=0.01)
    assert props["length_m"] == pytest.approx(road_length, abs=0.05)
    assert props["passes"] == rows["passes"].sum()
    assert props["contributors"] == rows["contributors"].max()
    assert props["first_seen"] == min(first).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert props["last_seen"] == max(last).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert props["highway"] == canonical["highway"]
    assert props.get("name") == (name if isinstance(name, str) else None)


def test_road_classes_start_at_their_zoom(tiles: tuple[Path, dict]) -> None:
    path, report = tiles
    by_class = report["layers"]["roads"]["min_zoom_by_class"]
    assert by_class["residential"] == 12 and by_class["primary"] == 7
    seen: dict[str, int] = {}
    for (z, _x, _y), layers in every_tile(path):
        for feature in layers.get("roads", {"features": []})["features"]:
            highway = feature["properties"]["highway"]
            seen[highway] = min(seen.get(highway, 99), z)
    assert seen["residential"] == 12 and seen["primary"] == 7
    assert all(seen[h] == by_class[h] for h in seen)


def test_segments_carry_their_first_observation(coverage_dir: Path) -> None:
    edges = read_edge_coverage(coverage_dir)
    segments = covered_segments(edges, as_of_of(read_summary(coverage_dir)))
    firsts = [i["first_seen"] for ii in edges.loc[edges["covered_m"] > 0, "intervals"] for i in ii]
    assert [pd.Timestamp(t).timestamp() for t in firsts] == list(segments["first_seen_s"])
    assert (segments["first_seen"] <= segments["last_seen"]).all()


def test_roads_of_another_extract_are_refused(coverage_dir: Path, tmp_path: Path) -> None:
    roads = tmp_path / "roads"
    shutil.copytree(coverage_dir.parent / "roads", roads)
    meta = json.loads((roads / "meta.json").read_text())
    (roads / "meta.json").write_text(json.dumps({**meta, "source_sha256": "0" * 64}))
    with pytest.raises(InputDataError, match="pass the roads folder the coverage used"):
        write_coverage_tiles(coverage_dir, tmp_path / "x.pmtiles", 10, 12, roads_dir=roads)


def test_other_roads_of_the_same_extract_are_refused_in_one_line(
    coverage_dir: Path, tmp_path: Path
) -> None:
    """Every way of the extract, not its drivable roads: the same extract, other edges."""
    other = tmp_path / "all-ways"
    build_roads(resolve_extract(HELSINKI, coverage_dir.parent / "cache"), other, network="all")
    drive = coverage_dir.parent / "roads"
    same_extract = [
        json.loads((r / "meta.json").read_text())["source_sha256"] for r in (drive, other)
    ]
    assert same_extract[0] == same_extract[1]
    edges = [hashlib.sha256((r / "edges.parquet").read_bytes()).hexdigest() for r in (drive, other)]
    assert edges[0] != edges[1]
    out = tmp_path / "x.pmtiles"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "export", "tiles", str(coverage_dir), str(out),
         "--roads", str(other), "--min-zoom", "10", "--max-zoom", "12"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert "other roads" in lines[0] and str(other) in lines[0]
    assert (
        f"edges sha256 {edges[0][:12]}" in lines[0] and f"edges sha256 {edges[1][:12]}" in lines[0]
    )
    assert "pass the roads folder the coverage used" in lines[0]
    assert not out.exists()
