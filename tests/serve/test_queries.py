"""RegionRelease: exact coverage and segment answers from a real release of Helsinki.

Oracles: the coverage stage's ``summary.json`` (whole region, and a coverage computed from only
the drives since a date), and the feed's own segment and road geometries clipped with shapely
and measured with pyproj.Geod on OSMnx's sphere (radius 6,371,009 m, the sphere of
``pipeline.geodesy``) or on the WGS 84 ellipsoid.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.ops import substring

from pipeline.errors import InputDataError
from pipeline.roads import build_roads, read_edges, resolve_extract
from pipeline.serve.queries import RegionRelease, RequestError
from tests.serve.release_builder import HELSINKI, SINCE, BuiltRelease, helsinki_release

SPHERE = pyproj.Geod(a=6_371_009.0, b=6_371_009.0)
FRESH = {"7d": "fresh_7d_km", "28d": "fresh_28d_km", "90d": "fresh_90d_km", "365d": "fresh_365d_km"}
KM = 1e-9  # km: sums of the same metres in another order


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltRelease:
    return helsinki_release(tmp_path_factory)


@pytest.fixture(scope="module")
def release(built: BuiltRelease) -> RegionRelease:
    return RegionRelease.open(built.release, built.roads)


@pytest.fixture(scope="module")
def feed(built: BuiltRelease) -> gpd.GeoDataFrame:
    return gpd.read_parquet(built.release / "segments")  # hive partitions: h3_parent column


def _roads(built: BuiltRelease) -> gpd.GeoDataFrame:
    """Each road once, as its lowest edge_id, with its length in whole millimetres."""
    edges = read_edges(built.roads).sort_values("edge_id").drop_duplicates("road_id")
    return edges.assign(mm=np.rint(edges["length_m"].to_numpy() * 1000.0))


def _rounding_km(built: BuiltRelease, highways: list[str] | None = None) -> float:
    """Half a millimetre per road: how far road km summed unrounded may be from rounded."""
    roads = _roads(built)
    count = len(roads) if highways is None else int(roads["highway"].isin(highways).sum())
    return count * 5e-7


def _clipped_road_km(built: BuiltRelease, area: shapely.Geometry) -> float:
    """Each road's whole-mm length times the share of its geodesic length inside the area."""
    return sum(
        mm / 1e6 * _geod_m(line.intersection(area)) / _geod_m(line)
        for mm, line in zip(_roads(built)["mm"], _roads(built).geometry, strict=True)
        if line.intersects(area)
    )


def _summary(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "summary.json").read_text()))


def _geod_m(geometry: shapely.Geometry, geod: pyproj.Geod = SPHERE) -> float:
    lines = [g for g in shapely.get_parts(geometry) if g.geom_type == "LineString"]
    return float(sum(geod.geometry_length(g) for g in lines))


def _city_area(feed: gpd.GeoDataFrame) -> shapely.Polygon:
    """A polygon with holes and slanted sides across the middle of the covered roads."""
    x0, y0, x1, y1 = feed.total_bounds
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    shell = [(cx - w * 0.8, cy - h * 0.3), (cx + w * 0.1, cy - h * 0.7), (cx + w * 0.6, cy),
             (cx, cy + h * 0.6), (cx - w * 0.7, cy + h * 0.2)]  # fmt: skip
    hole = shapely.Point(cx - w * 0.2, cy).buffer(min(w, h) * 0.15)
    return shapely.Polygon(shell, [hole.exterior.coords[::-1]])


def test_whole_region_equals_summary_json(release: RegionRelease, built: BuiltRelease) -> None:
    summary = _summary(built.coverage)
    answer = release.coverage(None)
    assert answer["release_id"] == "r1"
    assert pd.Timestamp(answer["as_of"]) == pd.Timestamp(summary["as_of"])
    # summary.json sums each road's length in whole millimetres (or, before that convention,
    # unrounded): the same figure, to half a millimetre per road
    assert answer["road_km"] == pytest.approx(summary["road_km"], abs=_rounding_km(built))
    assert answer["road_km"] == pytest.approx(_roads(built)["mm"].sum() / 1e6, abs=1e-12)
    assert answer["covered_km"] == pytest.approx(summary["unique_km"], abs=KM)
    assert answer["covered_km"] < summary["directed_covered_km"]  # both directions counted once
    assert answer["coverage_pct"] == pytest.approx(summary["coverage_pct"], rel=1e-6)
    for bucket, key in FRESH.items():
        assert answer["fresh_km"][bucket] == pytest.approx(summary[key], abs=KM)
    assert set(answer["by_highway"]) == set(summary["by_highway"])
    for name, figures in answer["by_highway"].items():
        expected = summary["by_highway"][name]
        rounding = _rounding_km(built, [name])
        assert figures["road_km"] == pytest.approx(expected["road_km"], abs=rounding)
        assert figures["covered_km"] == pytest.approx(expected["unique_km"], abs=KM)
        assert figures["fresh_km"]["28d"] == pytest.approx(expected["fresh_28d_km"], abs=KM)


def test_since_equals_coverage_of_the_drives_since(
    release: RegionRelease, built: BuiltRelease
) -> None:
    summary = _summary(built.coverage_since)
    answer = release.coverage(None, since=SINCE)
    assert 0 < answer["covered_km"] < release.coverage(None)["covered_km"]
    assert answer["covered_km"] == pytest.approx(summary["unique_km"], abs=KM)
    assert answer["road_km"] == pytest.approx(summary["road_km"], abs=_rounding_km(built))
    for name, figures in answer["by_highway"].items():
        assert figures["covered_km"] == pytest.approx(
            summary["by_highway"][name]["unique_km"], abs=KM
        )


def test_highway_filter_equals_summary_by_class(
    release: RegionRelease, built: BuiltRelease
) -> None:
    by_class = _summary(built.coverage)["by_highway"]
    classes = ["residential", "primary"]
    answer = release.coverage(None, highways=classes)
    assert set(answer["by_highway"]) == set(classes)
    road = sum(by_class[c]["road_km"] for c in classes)
    covered = sum(by_class[c]["unique_km"] for c in classes)
    assert answer["road_km"] == pytest.approx(road, abs=_rounding_km(built, classes))
    assert answer["covered_km"] == pytest.approx(covered, abs=KM)
    assert release.coverage(None, highways=["motorway"])["road_km"] == 0.0  # known, absent here


def test_polygon_road_km_equals_clipped_roads(release: RegionRelease, built: BuiltRelease) -> None:
    area = _city_area(gpd.read_parquet(built.release / "segments"))
    answer = release.coverage(area)
    assert 0 < answer["road_km"] < release.coverage(None)["road_km"]
    assert answer["road_km"] == pytest.approx(_clipped_road_km(built, area), rel=1e-7)


def test_polygon_covered_km_equals_clipped_feed_segments(
    release: RegionRelease, feed: gpd.GeoDataFrame
) -> None:
    """Both directions' clipped segments, merged with shapely, measured on the ellipsoid."""
    area = _city_area(feed)
    union = shapely.union_all(shapely.intersection(feed.geometry.to_numpy(), area), grid_size=1e-9)
    expected_km = _geod_m(union, pyproj.Geod(ellps="WGS84")) / 1000.0
    answer = release.coverage(area)
    assert 0 < answer["covered_km"] < release.coverage(None)["covered_km"]
    assert answer["covered_km"] == pytest.approx(expected_km, rel=0.01)
    assert answer["coverage_pct"] <= 100.0


def test_halves_add_up_to_the_region(release: RegionRelease, feed: gpd.GeoDataFrame) -> None:
    x0, y0, x1, y1 = feed.total_bounds
    cx = (x0 + x1) / 2 + 0.000123  # not on a vertex
    big = 1.0
    west = shapely.box(x0 - big, y0 - big, cx, y1 + big)
    east = shapely.box(cx, y0 - big, x1 + big, y1 + big)
    whole, halves = release.coverage(None), [release.coverage(a) for a in (west, east)]
    for key in ("road_km", "covered_km"):
        assert halves[0][key] > 0 and halves[1][key] > 0
        assert halves[0][key] + halves[1][key] == pytest.approx(whole[key], rel=1e-9)
    for bucket in FRESH:
        total = halves[0]["fresh_km"][bucket] + halves[1]["fresh_km"][bucket]
        assert total == pytest.approx(whole["fresh_km"][bucket], rel=1e-9)


def test_segments_are_the_feed_rows_clipped(release: RegionRelease, feed: gpd.GeoDataFrame) -> None:
    area = _city_area(feed)
    got = release.segments(area)
    meets = feed[shapely.length(shapely.intersection(feed.geometry.to_numpy(), area)) > 0]
    inside = feed[shapely.covered_by(feed.geometry.to_numpy(), area)]
    assert set(got["segment_id"]) == set(meets["segment_id"])
    whole = got[got["segment_id"].isin(inside["segment_id"])].set_index("segment_id")
    original = inside.set_index("segment_id").loc[whole.index]
    assert (whole["from_m"] == original["from_m"]).all()
    assert whole.geometry.geom_equals(original.geometry).all()
    # a cut piece's length is its feed length times its share of the segment's geodesic length
    by_id = feed.set_index("segment_id")
    expected = sum(
        row.length_m * _geod_m(row.geometry.intersection(area)) / _geod_m(row.geometry)
        for row in by_id.loc[sorted(set(meets["segment_id"]))].itertuples()
    )
    assert got["length_m"].sum() == pytest.approx(expected, rel=1e-6, abs=0.01)
    assert shapely.covered_by(got.geometry.to_numpy(), area.buffer(1e-9)).all()
    assert (got["to_m"] - got["from_m"] - got["length_m"]).abs().max() < 1.5e-3
    cut = got[~got["segment_id"].isin(inside["segment_id"])]
    assert len(cut) > 0
    for row in cut.itertuples():
        whole_row = by_id.loc[row.segment_id]
        ends = [
            whole_row.from_m
            + whole_row.length_m
            * _geod_m(substring(whole_row.geometry, 0.0, whole_row.geometry.project(point)))
            / _geod_m(whole_row.geometry)
            for point in shapely.points([row.geometry.coords[0], row.geometry.coords[-1]])
        ]
        assert row.from_m == pytest.approx(min(ends), abs=2e-3)
        assert row.to_m == pytest.approx(max(ends), abs=2e-3)


def test_segments_since_and_highway(release: RegionRelease, feed: gpd.GeoDataFrame) -> None:
    area = shapely.box(*feed.total_bounds).buffer(0.01)
    since = pd.Timestamp(SINCE, tz="UTC")
    got = release.segments(area, since=SINCE, highways=["residential"])
    wanted = feed[(feed["last_seen"] >= since) & (feed["highway"] == "residential")]
    assert len(wanted) > 0
    assert sorted(got["segment_id"]) == sorted(wanted["segment_id"])
    recent = release.segments(area, since=SINCE)
    assert (recent["last_seen"] == since).any()  # the drive that ended at 00:00 that day
    assert sorted(recent["segment_id"]) == sorted(feed[feed["last_seen"] >= since]["segment_id"])


def test_segments_are_sorted_by_partition_id_and_position(
    release: RegionRelease, feed: gpd.GeoDataFrame
) -> None:
    longest = feed.geometry.iloc[int(np.argmax(shapely.length(feed.geometry.to_numpy())))]
    hole = longest.interpolate(0.5, normalized=True).buffer(longest.length * 0.2)
    area = shapely.box(*feed.total_bounds).buffer(0.01).difference(hole)
    got = release.segments(area)
    assert got["h3_parent"].nunique() > 1 and got["segment_id"].duplicated().any()  # cut twice
    keys = list(zip(got["h3_parent"], got["segment_id"], got["from_m"], strict=True))
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("highways", "field"),
    [(["residential", "warp_lane"], "highway[1]"), ("residential", "highway"), ([3], "highway[0]")],
)
def test_unknown_highway_is_a_request_error(
    release: RegionRelease, highways: Any, field: str
) -> None:
    with pytest.raises(RequestError) as caught:
        release.coverage(None, highways=highways)
    assert caught.value.field == field and caught.value.code == "invalid_highway"


def test_since_must_be_a_date(release: RegionRelease) -> None:
    with pytest.raises(RequestError) as caught:
        release.coverage(None, since="2026-11-10")  # type: ignore[arg-type]
    assert caught.value.field == "since"


def test_roads_of_another_extract_are_refused(built: BuiltRelease, tmp_path: Path) -> None:
    roads = tmp_path / "roads"
    roads.mkdir()
    for name in ("edges.parquet", "nodes.parquet"):
        (roads / name).write_bytes((built.roads / name).read_bytes())
    meta = json.loads((built.roads / "meta.json").read_text())
    (roads / "meta.json").write_text(json.dumps({**meta, "source_sha256": "0" * 64}))
    with pytest.raises(InputDataError, match="pass the roads folder the release's coverage used"):
        RegionRelease.open(built.release, roads)


def test_other_roads_of_the_same_extract_are_refused(built: BuiltRelease, tmp_path: Path) -> None:
    """Every way of the extract, not its drivable roads: the same extract, other edges."""
    other = tmp_path / "all-ways"
    build_roads(resolve_extract(HELSINKI, built.roads.parent / "cache"), other, network="all")
    metas = [json.loads((r / "meta.json").read_text()) for r in (built.roads, other)]
    assert metas[0]["source_sha256"] == metas[1]["source_sha256"]
    edges = [
        hashlib.sha256((r / "edges.parquet").read_bytes()).hexdigest() for r in (built.roads, other)
    ]
    assert edges[0] != edges[1]
    with pytest.raises(InputDataError) as refused:
        RegionRelease.open(built.release, other)
    message = str(refused.value)
    assert "\n" not in message and "the release was made on other roads" in message
    assert f"edges sha256 {edges[0][:12]}" in message and f"edges sha256 {edges[1][:12]}" in message
    assert str(other) in message and "pass the roads folder the release's coverage used" in message
    assert RegionRelease.open(built.release, built.roads).release_id  # its own roads: opened


def test_a_folder_without_manifest_is_refused(built: BuiltRelease, tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="manifest.json: not found"):
        RegionRelease.open(tmp_path, built.roads)


def test_empty_area_answers_zero(release: RegionRelease) -> None:
    far = shapely.box(10.0, 10.0, 10.01, 10.01)
    answer = release.coverage(far)
    assert answer["road_km"] == 0.0 and answer["covered_km"] == 0.0 and answer["by_highway"] == {}
    assert len(release.segments(far)) == 0
    assert np.isfinite(answer["coverage_pct"])


def test_a_box_around_the_region_is_the_whole_region(
    release: RegionRelease, built: BuiltRelease
) -> None:
    roads = read_edges(built.roads)
    summary = _summary(built.coverage)
    answer = release.coverage(shapely.box(*roads.total_bounds).buffer(0.001))
    assert answer["road_km"] == pytest.approx(summary["road_km"], abs=_rounding_km(built))
    assert answer["covered_km"] == pytest.approx(summary["unique_km"], abs=KM)
    assert answer["fresh_km"]["7d"] == pytest.approx(summary["fresh_7d_km"], abs=KM)


def test_multipolygon_road_km_equals_clipped_roads(
    release: RegionRelease, built: BuiltRelease, feed: gpd.GeoDataFrame
) -> None:
    x0, y0, x1, y1 = feed.total_bounds
    w, h = (x1 - x0) / 5, (y1 - y0) / 5
    area = shapely.MultiPolygon(
        [shapely.box(x0 + w, y0 + h, x0 + 2 * w, y0 + 3 * h),
         shapely.Polygon([(x0 + 3 * w, y0), (x1, y0 + 2 * h), (x0 + 3 * w, y1)])]
    )  # fmt: skip
    answer = release.coverage(area)
    assert answer["road_km"] == pytest.approx(_clipped_road_km(built, area), rel=1e-7)
    parts = [release.coverage(part) for part in area.geoms]
    assert answer["covered_km"] == pytest.approx(sum(p["covered_km"] for p in parts), rel=1e-12)


def test_threads_sharing_a_release_get_the_answers_of_one_thread(
    release: RegionRelease, built: BuiltRelease, feed: gpd.GeoDataFrame
) -> None:
    """8 threads on a freshly opened release: they also read its partitions at the same time."""
    x0, y0, x1, y1 = feed.total_bounds
    rng = np.random.default_rng(5)
    areas = [
        shapely.box(x, y, x + (x1 - x0) / 3, y + (y1 - y0) / 3)
        for x, y in zip(rng.uniform(x0, x1, 24), rng.uniform(y0, y1, 24), strict=True)
    ]
    alone = [(release.coverage(a), release.segments(a).to_wkb()) for a in areas]
    fresh = RegionRelease.open(built.release, built.roads)

    def ask(area: shapely.Polygon) -> tuple[dict[str, Any], pd.DataFrame]:
        area = shapely.from_wkb(shapely.to_wkb(area))  # each request parses its own area
        return fresh.coverage(area), fresh.segments(area).to_wkb()

    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(ask, areas, timeout=120))
    for (coverage, rows), (coverage_alone, rows_alone) in zip(together, alone, strict=True):
        assert coverage == coverage_alone
        pd.testing.assert_frame_equal(rows, rows_alone)


def _manifest_copy(built: BuiltRelease, folder: Path, files: Any) -> Path:
    manifest = json.loads((built.release / "manifest.json").read_text())
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    return folder


def test_a_release_without_segments_has_roads_and_no_coverage(
    built: BuiltRelease, tmp_path: Path
) -> None:
    empty = _manifest_copy(built, tmp_path / "r0", [])
    answer = RegionRelease.open(empty, built.roads).coverage(None)
    road_km = _summary(built.coverage)["road_km"]
    assert answer["road_km"] == pytest.approx(road_km, abs=_rounding_km(built))
    assert answer["covered_km"] == 0.0 and answer["coverage_pct"] == 0.0


def test_a_manifest_naming_a_file_outside_the_release_is_refused(
    built: BuiltRelease, tmp_path: Path
) -> None:
    outside = {"path": "../../roads/edges.parquet", "table": "feed_segments", "h3_parent": "x"}
    hostile = _manifest_copy(built, tmp_path / "r2", [{**outside, "format": "geoparquet"}])
    with pytest.raises(InputDataError, match="outside the release"):
        RegionRelease.open(hostile, built.roads)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ("segments/", "'files' is not a list of objects"),
        ([None], "'files' is not a list of objects"),
        ([{"table": "feed_segments", "format": "geoparquet", "path": 3}], "lacks its path"),
        ([{"table": "feed_segments", "format": "geoparquet", "path": "a"}], "lacks its path"),
    ],
)
def test_a_corrupt_manifest_is_one_error(
    built: BuiltRelease, tmp_path: Path, files: Any, words: str
) -> None:
    corrupt = _manifest_copy(built, tmp_path / "r3", files)
    with pytest.raises(InputDataError, match=words):
        RegionRelease.open(corrupt, built.roads)


@pytest.mark.parametrize("as_of", ["yesterday", "2026-12-01T00:00:00", None])
def test_a_manifest_without_a_zoned_as_of_is_refused(
    built: BuiltRelease, tmp_path: Path, as_of: Any
) -> None:
    folder = _manifest_copy(built, tmp_path / "r4", [])
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "as_of": as_of}))
    with pytest.raises(InputDataError, match="is not a time with a zone"):
        RegionRelease.open(folder, built.roads)


def test_an_area_and_its_complement_add_up_to_the_region(
    release: RegionRelease, feed: gpd.GeoDataFrame
) -> None:
    """A concave star with a hole, and the rest of a box around the region: nothing is lost."""
    x0, y0, x1, y1 = feed.total_bounds
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    turns = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = np.where(np.arange(24) % 2 == 0, r * 0.7, r * 0.25)
    xy = np.column_stack([cx + radii * np.cos(turns), cy + radii * np.sin(turns)])
    star = shapely.Polygon(xy)
    star = star.difference(shapely.Point(cx, cy).buffer(r * 0.1))
    rest = shapely.box(x0 - 1, y0 - 1, x1 + 1, y1 + 1).difference(star)
    whole, parts = release.coverage(None), [release.coverage(a) for a in (star, rest)]
    for key in ("road_km", "covered_km"):
        assert 0 < parts[0][key] < whole[key]
        assert parts[0][key] + parts[1][key] == pytest.approx(whole[key], rel=1e-9)
    for name, figures in whole["by_highway"].items():
        split = sum(p["by_highway"].get(name, {}).get("covered_km", 0.0) for p in parts)
        assert split == pytest.approx(figures["covered_km"], rel=1e-9, abs=1e-12)


def test_segments_read_only_the_partitions_the_area_meets(
    built: BuiltRelease, feed: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    """Partitions with no segment in the area are deleted after open: they must not be read."""
    copy = tmp_path / "r1"
    shutil.copytree(built.release, copy)
    opened = RegionRelease.open(copy, built.roads)
    centre = feed.geometry.iloc[len(feed) // 2].interpolate(0.5, normalized=True)
    area = centre.buffer(0.002)
    meets = feed[shapely.length(shapely.intersection(feed.geometry.to_numpy(), area)) > 0]
    needed = set(meets["h3_parent"])
    others = [p for p in (copy / "segments").iterdir() if p.name.split("=")[1] not in needed]
    assert len(others) > 0
    for folder in others:
        shutil.rmtree(folder)
    got = opened.segments(area)
    assert sorted(set(got["segment_id"])) == sorted(meets["segment_id"])
    assert opened.coverage(None) == RegionRelease.open(built.release, built.roads).coverage(None)
    with pytest.raises(InputDataError):  # an area over everything needs a deleted partition
        opened.segments(shapely.box(*feed.total_bounds))
