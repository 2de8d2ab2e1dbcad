"""A sharded region's jobs on a bucket (moto's S3 server): the files of the same jobs on disk.

``roadcover roads cut``, ``build-shard`` (one per cell) and ``merge`` at an ``s3://`` URL must
leave in the bucket the files they leave in a local folder (the shards' ``meta.json`` naming
their extract by its URL); each job reads only what it needs: a shard's build its own folder
and the plan, the merge no extract, a match only the shards its trips are in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.cli import main
from pipeline.roads import build_roads
from pipeline.roads.shard_build import stage_match_roads, stage_simulate_roads
from pipeline.roads.shards import SHARDS_DIR, read_plan
from pipeline.storage import Staging
from tests import objectstore
from tests.builders import write_traces_batch
from tests.objectstore import sha256_objects, store

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
RESOLUTION = "10"


def sha256_tree(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".roadcover.lock"
    }


def build_in_jobs(osm: Path, roads: str) -> list[str]:
    """Cut, build every shard and merge, each as its own command; return the cells."""
    assert main(["roads", "cut", str(osm), "--shard-resolution", RESOLUTION, "-o", roads]) == 0
    if roads.startswith("s3://"):
        plan = json.loads(store().cat_file(f"{roads.removeprefix('s3://')}/shards/plan.json"))
    else:
        plan = read_plan(roads)
    for cell in plan["cells"]:
        assert main(["roads", "build-shard", roads, cell]) == 0
    assert main(["roads", "merge", roads]) == 0
    return list(plan["cells"])


def test_the_jobs_of_a_sharded_region_on_a_bucket_write_the_local_files(
    bucket: str, tiny_osm: Path, tmp_path: Path
) -> None:
    cells = build_in_jobs(tiny_osm, str(tmp_path / "roads"))
    assert len(cells) > 1
    assert build_in_jobs(tiny_osm, f"s3://{bucket}/run/roads") == cells
    local, remote = sha256_tree(tmp_path / "roads"), sha256_objects(f"{bucket}/run/roads")
    assert remote.keys() == local.keys()
    differ = sorted(name for name in local if remote[name] != local[name])
    assert differ == [f"{SHARDS_DIR}/{cell}/meta.json" for cell in cells]  # their extract's path
    for cell in cells:
        name = f"{SHARDS_DIR}/{cell}/meta.json"
        in_bucket = json.loads(store().cat_file(f"{bucket}/run/roads/{name}"))
        on_disk = json.loads((tmp_path / "roads" / name).read_text())
        extract = f"{SHARDS_DIR}/{cell}/extract.osm.pbf"
        assert in_bucket.pop("source_file") == f"s3://{bucket}/run/roads/{extract}"
        assert on_disk.pop("source_file") == str(tmp_path / "roads" / extract)
        assert in_bucket == on_disk
    # the region's tables are those of an unsharded build
    build_roads(tiny_osm, tmp_path / "whole")
    for name in ("edges.parquet", "nodes.parquet"):
        assert remote[name] == sha256_tree(tmp_path / "whole")[name]


def test_a_cut_again_replaces_the_region_in_the_bucket(
    bucket: str, tiny_osm: Path, tmp_path: Path
) -> None:
    roads = f"s3://{bucket}/run/roads"
    build_in_jobs(tiny_osm, roads)
    assert main(["roads", "cut", str(tiny_osm), "--shard-resolution", "9", "-o", roads]) == 0
    left = sha256_objects(f"{bucket}/run/roads")
    plan = json.loads(store().cat_file(f"{bucket}/run/roads/shards/plan.json"))
    # no region table or shard of the earlier cut: a roads folder again once merged
    expected = {"shards/plan.json"} | {
        f"shards/{cell}/{name}"
        for cell in plan["cells"]
        for name in ("extract.osm.pbf", "core_ways.npy")
    }
    assert set(left) == expected


def fixes_along_first_street(count: int) -> gpd.GeoDataFrame:
    """One trip's fixes, 1 s apart, along the tiny network's way 100 (lat 60.17, lon 24.940-2)."""
    lon = np.linspace(24.9400, 24.9420, count)
    lat = np.full(count, 60.1700)
    times = pd.date_range("2026-10-01", periods=count, freq="1s", tz="UTC").as_unit("ms")
    frame = pd.DataFrame(
        {
            "trace_id": "t1", "trip_id": "t1-001", "contributor_id": "c1", "device_id": "d1",
            "observed_at": times,
            "lon": lon, "lat": lat, "hdop": 1.0, "speed_mps": 10.0, "heading_deg": 90.0,
            "source_file": "t.csv", "source_row": np.arange(count) + 2,
        }
    )  # fmt: skip
    return gpd.GeoDataFrame(frame, geometry=shapely.points(lon, lat), crs=4326)


def test_a_match_downloads_only_the_shards_its_trips_are_in(
    bucket: str, tiny_osm: Path, tmp_path: Path
) -> None:
    points = fixes_along_first_street(count=12)
    traces = write_traces_batch(tmp_path / "traces", points, "b1")
    roads = f"s3://{bucket}/run/roads"
    cells = build_in_jobs(tiny_osm, roads)
    # independently: the cells of the fixes (h3), and the shards one ring or more away
    fix_cells = {
        h3.latlng_to_cell(y, x, int(RESOLUTION))
        for x, y in zip(points["lon"], points["lat"], strict=True)
    }
    near = set().union(*(h3.grid_disk(cell, 1) for cell in fix_cells))
    with Staging() as staging:
        local = stage_match_roads(staging, roads, traces, "b1")
        got = sorted(
            path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()
        )
    shards = {
        name.split("/")[1] for name in got if name.startswith("shards/") and name.count("/") == 2
    }
    assert fix_cells & set(cells) <= shards <= near & set(cells)
    assert shards < set(cells)  # not every shard
    expected = ["edges.parquet", "meta.json", "shards/plan.json"] + [
        f"shards/{cell}/{name}"
        for cell in shards
        for name in ("edges.parquet", "meta.json", "nodes.parquet")
    ]
    assert got == sorted(expected)  # no extract, owners or core ways; no region nodes


def test_a_simulation_downloads_the_shards_files_not_the_regions_tables(
    bucket: str, tiny_osm: Path, tmp_path: Path
) -> None:
    roads = f"s3://{bucket}/run/roads"
    cells = build_in_jobs(tiny_osm, roads)
    with Staging() as staging:
        local = stage_simulate_roads(staging, roads)
        got = sorted(
            path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()
        )
    out = tmp_path / "fleet"  # the command on the bucket's roads
    assert main(["simulate", "--roads", roads, "-o", str(out), "--devices", "2", "--days", "1",
                 "--workers", "1"]) == 0  # fmt: skip
    expected = ["meta.json"] + [
        f"shards/{cell}/{name}"
        for cell in cells
        for name in ("edges.parquet", "meta.json", "nodes.parquet", "owners.parquet")
    ]
    assert got == sorted(expected)  # no region tables, plan, extracts or core ways
    assert (out / "truth.parquet").exists()


def test_a_merge_of_a_bucket_with_a_shard_not_built_is_one_line(
    bucket: str, tiny_osm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roads = f"s3://{bucket}/run/roads"
    assert main(["roads", "cut", str(tiny_osm), "--shard-resolution", RESOLUTION, "-o", roads]) == 0
    capsys.readouterr()
    assert main(["roads", "merge", roads]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has not been built; run `roadcover roads build-shard" in err[0]
    assert "meta.json" not in sha256_objects(f"{bucket}/run/roads")
