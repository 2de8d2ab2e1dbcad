"""verify_release on damaged copies of a real release: every kind of damage is reported.

One release of the Helsinki coverage, in all three formats, is built per module; each test
copies it, damages the copy in one way and expects exactly the problem that names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.export.feeds import export_feed, verify_release
from tests.export.coverage_builder import helsinki_coverage

FORMATS = ("geoparquet", "csv", "geojsonseq")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    coverage = helsinki_coverage(tmp_path_factory)
    releases = tmp_path_factory.mktemp("releases")
    export_feed(coverage, coverage.parent / "roads", releases, "r1", formats=FORMATS)
    return releases / "r1"


@pytest.fixture
def copy(release: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(release, tmp_path / "r1"))


def manifest(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / "manifest.json").read_text()))


def data_files(root: Path, fmt: str) -> list[dict[str, Any]]:
    """Manifest records of one format's files with rows, the largest first."""
    records = [r for r in manifest(root)["files"] if r.get("format") == fmt and r.get("rows")]
    return sorted(records, key=lambda r: -r["size_bytes"])


def test_an_intact_release_has_no_problem(release: Path) -> None:
    assert len(data_files(release, "geoparquet")) >= 2  # enough partitions to swap files
    assert verify_release(release) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_changed_byte_is_a_wrong_sha256(copy: Path, fmt: str) -> None:
    record = data_files(copy, fmt)[0]
    path = copy / record["path"]
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = (data[middle] + 1) % 256  # same size, one byte different
    path.write_bytes(bytes(data))
    problems = verify_release(copy)
    assert len(problems) == 1
    assert problems[0].startswith(f"{record['path']}: sha256 is ")
    assert record["sha256"] in problems[0]


def test_a_changed_stac_item_is_reported(copy: Path) -> None:
    record = next(r for r in manifest(copy)["files"] if r["path"].endswith(".json"))
    path = copy / record["path"]
    path.write_text(path.read_text().replace('"bbox"', '"BBOX"', 1))
    assert [p.split(": ")[0] for p in verify_release(copy)] == [record["path"]]


def test_a_missing_file_is_reported(copy: Path) -> None:
    record = data_files(copy, "csv")[0]
    (copy / record["path"]).unlink()
    assert verify_release(copy) == [f"{record['path']}: missing"]


def test_an_extra_file_is_reported(copy: Path) -> None:
    extra = copy / "segments" / "notes.txt"
    extra.write_text("not part of the release\n")
    assert verify_release(copy) == ["segments/notes.txt: not in the manifest"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_with_another_row_count_than_the_manifest_is_reported(copy: Path, fmt: str) -> None:
    """Another partition's file in place of one, with size and sha256 made to agree."""
    first, second = data_files(copy, fmt)[:2]
    assert first["rows"] != second["rows"]
    shutil.copyfile(copy / second["path"], copy / first["path"])
    edited = manifest(copy)
    for record in edited["files"]:
        if record["path"] == first["path"]:
            record.update(size_bytes=second["size_bytes"], sha256=second["sha256"])
    (copy / "manifest.json").write_text(json.dumps(edited))
    assert verify_release(copy) == [
        f"{first['path']}: rows is {second['rows']}, manifest says {first['rows']}"
    ]


def test_a_wrong_row_count_in_the_manifest_is_reported(copy: Path) -> None:
    edited = manifest(copy)
    record = next(r for r in edited["files"] if r.get("format") == "geoparquet")
    record["rows"] += 1
    (copy / "manifest.json").write_text(json.dumps(edited))
    actual = pq.ParquetFile(copy / record["path"]).metadata.num_rows
    assert verify_release(copy) == [
        f"{record['path']}: rows is {actual}, manifest says {record['rows']}"
    ]
