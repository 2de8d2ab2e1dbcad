"""Coverage from object storage (moto's S3 server) downloads the roads' tables only when needed.

A region's roads and coverage folders are in a bucket. The first run computes the coverage
folder's network cache from the roads' edge table, so it downloads it; a later run into the
same coverage folder reads the cache and downloads only the roads' ``meta.json``. A run whose
cache is damaged, or whose roads changed in the bucket, downloads the tables again (and so
computes the cache again, or refuses the other roads). The outputs are those of a local run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.coverage.roads_stagein import ROADS_MEMO
from pipeline.roads import read_edges
from tests import objectstore
from tests.builders import write_fully_covered_region, write_matched_batch
from tests.objectstore import sha256_objects, store
from tests.test_cli_storage import record_downloads

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
NOT_OUTPUTS = (ROADS_MEMO, ".roadcover.lock")  # what a local run does not write


@pytest.fixture(scope="module")
def local_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Roads, two matched batches, and the coverage of a local run of one, then of both."""
    root = tmp_path_factory.mktemp("region")
    roads, _ = write_fully_covered_region(root)
    edges = read_edges(roads)
    when = pd.Timestamp("2026-10-02T08:00Z")
    drives = pd.DataFrame(
        {
            "edge_id": edges["edge_id"].to_numpy()[:3],
            "trip_id": "trip1",
            "contributor_id": "c1",
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy()[:3] / 2,  # half of three edges
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    write_matched_batch(root / "matched2", edges, drives, roads_dir=roads)
    assert run_coverage(root, str(roads), str(root / "local"), ["matched"]) == 0
    assert run_coverage(root, str(roads), str(root / "local"), ["matched", "matched2"]) == 0
    return root


@pytest.fixture
def region(local_region: Path, bucket: str) -> tuple[Path, str]:
    """The local region, and a bucket holding its roads folder."""
    fs = store()
    for path in sorted((local_region / "roads").glob("*")):
        if path.is_file() and not path.name.startswith("."):
            fs.put_file(str(path), f"{bucket}/roads/{path.name}")
    return local_region, bucket


def run_coverage(root: Path, roads: str, out: str, batches: list[str]) -> int:
    matched = [arg for name in batches for arg in ("--matched", str(root / name))]
    return main(["coverage", "--roads", roads, *matched, "-o", out])


def local_outputs(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in NOT_OUTPUTS
    }


def stored_outputs(prefix: str) -> dict[str, str]:
    return {
        name: digest
        for name, digest in sha256_objects(prefix).items()
        if name not in NOT_OUTPUTS and Path(name).name not in NOT_OUTPUTS
    }


def run_twice(
    root: Path, roads: str, out: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[str]]:
    """Run coverage of the first batch twice; the second downloads only the roads' meta.json.

    Returns the record of downloads (:func:`record_downloads`), cleared.
    """
    assert run_coverage(root, roads, out, ["matched"]) == 0
    fetched = record_downloads(monkeypatch)
    assert run_coverage(root, roads, out, ["matched"]) == 0  # nothing new: no table
    assert fetched[roads.removeprefix("s3://")] == ["meta.json"]
    fetched.clear()
    return fetched


def test_a_second_run_reads_the_cache_and_downloads_only_the_roads_meta(
    region: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, bucket = region
    roads, out = f"s3://{bucket}/roads", f"s3://{bucket}/coverage"
    fetched = record_downloads(monkeypatch)
    assert run_coverage(root, roads, out, ["matched"]) == 0
    assert sorted(fetched[f"{bucket}/roads"]) == ["edges.parquet", "meta.json"]  # the first
    fetched.clear()
    assert run_coverage(root, roads, out, ["matched", "matched2"]) == 0
    assert fetched[f"{bucket}/roads"] == ["meta.json"]  # the cache of these roads is there
    assert stored_outputs(f"{bucket}/coverage") == local_outputs(root / "local")


def test_a_damaged_cache_downloads_the_tables_and_is_computed_again(
    region: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, bucket = region
    roads, out = f"s3://{bucket}/roads", f"s3://{bucket}/coverage"
    fetched = run_twice(root, roads, out, monkeypatch)
    fs = store()
    (network_json,) = fs.glob(f"{bucket}/coverage/network/*/network.json")
    fs.rm(network_json)  # the cache is incomplete
    assert run_coverage(root, roads, out, ["matched", "matched2"]) == 0
    assert sorted(fetched[f"{bucket}/roads"]) == ["edges.parquet", "meta.json"]
    assert stored_outputs(f"{bucket}/coverage") == local_outputs(root / "local")


def test_roads_changed_in_the_bucket_are_downloaded_and_refused(
    region: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, bucket = region
    roads, out = f"s3://{bucket}/roads", f"s3://{bucket}/coverage"
    fetched = run_twice(root, roads, out, monkeypatch)
    before = stored_outputs(f"{bucket}/coverage")
    edges = (root / "roads" / "edges.parquet").read_bytes()
    store().pipe(f"{bucket}/roads/edges.parquet", edges + b"\0")  # other bytes: other roads
    capsys.readouterr()
    assert run_coverage(root, roads, out, ["matched", "matched2"]) != 0
    assert sorted(fetched[f"{bucket}/roads"]) == ["edges.parquet", "meta.json"]
    assert "other roads" in capsys.readouterr().err
    assert stored_outputs(f"{bucket}/coverage") == before
