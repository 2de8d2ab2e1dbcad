"""Stage-in from a bucket (moto's S3 server): coverage and the exports fetch only what they read.

A roads folder in object storage holds more than its region's tables: the shard folders of a
sharded region (extracts of up to tens of MB each) and the match network. Coverage, the feed,
the tiles and priorities read only the folder's ``meta.json`` and ``edges.parquet``; each
command must download those two objects of the roads folder and no other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline import storage
from pipeline.cli import main
from pipeline.snap import prepare_match_network
from tests import objectstore
from tests.builders import write_fully_covered_region
from tests.objectstore import store

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
READ = ["edges.parquet", "meta.json"]  # what these stages read of a roads folder


def record_downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record, by prefix, the objects every folder download fetches (the download runs)."""
    fetched: dict[str, list[str]] = {}
    download = storage.download_folder

    def recording(
        fs: Any, prefix: str, folder: Path, include: Sequence[str] | None = None
    ) -> dict[str, str]:
        got = download(fs, prefix, folder, include)
        fetched.setdefault(prefix, []).extend(got)
        return got

    monkeypatch.setattr(storage, "download_folder", recording)
    return fetched


@pytest.fixture
def region_in_bucket(bucket: str, tmp_path: Path) -> tuple[Path, str]:
    """A covered region whose roads folder is in the bucket with a shard folder and match network.

    Returns the local region folder (``roads``, ``matched``, ``coverage``) and the roads URL.
    """
    (tmp_path / "region").mkdir()
    roads, _ = write_fully_covered_region(tmp_path / "region")
    prepare_match_network(roads)  # match_network.npz and .json, as snap leaves them
    prefix = f"{bucket}/run/roads"
    fs = store()
    for path in sorted(roads.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{prefix}/{path.relative_to(roads).as_posix()}")
    extract = (tmp_path / "region" / "region.osm").read_bytes()
    fs.pipe(f"{prefix}/shards/851f8d6bfffffff/extract.osm.pbf", extract)  # as a cut leaves it
    fs.pipe(f"{prefix}/shards/851f8d6bfffffff/core_ways.npy", b"\x93NUMPY")
    in_bucket = sorted(path[len(prefix) + 1 :] for path in fs.find(prefix))
    assert {"match_network.npz", "nodes.parquet", *READ} <= set(in_bucket)
    return tmp_path / "region", f"s3://{prefix}"


def test_coverage_and_the_exports_fetch_only_the_roads_meta_and_edges(
    region_in_bucket: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    region, roads = region_in_bucket
    prefix = roads.removeprefix("s3://")
    coverage = str(region / "coverage")
    fetched = record_downloads(monkeypatch)
    commands = {
        "coverage": ["coverage", "--roads", roads, "--matched", str(region / "matched"),
                     "-o", str(tmp_path / "coverage")],
        "feed": ["export", "feed", coverage, "--roads", roads, "-o", str(tmp_path / "releases")],
        "priorities": ["export", "priorities", coverage, "--roads", roads,
                       "-o", str(tmp_path / "priorities"), "--tours", "0"],
        "tiles": ["export", "tiles", coverage, str(tmp_path / "coverage.pmtiles"),
                  "--max-zoom", "12", "--roads", roads],
    }  # fmt: skip
    for name, argv in commands.items():
        fetched.clear()
        assert main(argv) == 0, name
        assert {key: sorted(names) for key, names in fetched.items()} == {prefix: READ}, name
