"""The release registry (latest.json followed without restart) and the PMTiles tile reader."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import write

from pipeline.config import ServedRegion
from pipeline.io import write_json
from pipeline.serve.releases import (
    NoReleaseError,
    ReleaseRegistry,
    TileArchive,
    TileNotFoundError,
)


@dataclass
class OpenedRelease:
    """Stands for an open release: records what was opened."""

    release_id: str
    roads_dir: Path


class Opener:
    """Opens releases by name and counts how often each was opened."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, release_dir: Path, roads_dir: Path) -> OpenedRelease:
        self.opened.append(release_dir.name)
        return OpenedRelease(release_dir.name, roads_dir)


def make_release(releases: Path, release_id: str, files: list[str]) -> None:
    """A release folder with a manifest listing ``files`` (each written with its name)."""
    folder = releases / release_id
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"release_id": release_id, "files": [{"path": name} for name in files]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def point_latest(releases: Path, release_id: str) -> None:
    pointer = {"release_id": release_id, "path": str(releases / release_id)}
    write_json(pointer, releases / "latest.json")


@pytest.fixture
def served(tmp_path: Path) -> ServedRegion:
    releases = tmp_path / "releases"
    releases.mkdir()
    return ServedRegion("r", releases, tmp_path / "roads", None)


def test_latest_follows_the_pointer_and_opens_each_release_once(served: ServedRegion) -> None:
    make_release(served.releases_dir, "a", ["segments/part-0.parquet"])
    make_release(served.releases_dir, "b", ["segments/part-0.parquet"])
    opener = Opener()
    registry = ReleaseRegistry([served], opener)
    point_latest(served.releases_dir, "a")
    first = registry.latest("r")
    assert first.release_id == "a"
    assert registry.latest("r") is first
    point_latest(served.releases_dir, "b")
    assert registry.latest("r").release_id == "b"
    point_latest(served.releases_dir, "a")
    assert registry.latest("r") is first  # reopened from the cache, not from disk
    assert opener.opened == ["a", "b"]


def test_latest_id_reads_the_pointer_without_opening(served: ServedRegion) -> None:
    make_release(served.releases_dir, "a", [])
    point_latest(served.releases_dir, "a")
    opener = Opener()
    assert ReleaseRegistry([served], opener).latest_id("r") == "a"
    assert opener.opened == []


def test_missing_or_broken_pointer_is_no_release(served: ServedRegion) -> None:
    registry = ReleaseRegistry([served], Opener())
    with pytest.raises(NoReleaseError, match="no release yet"):
        registry.latest("r")
    (served.releases_dir / "latest.json").write_text("{not json")
    with pytest.raises(NoReleaseError, match="not JSON"):
        registry.latest("r")
    point_latest(served.releases_dir, "missing")
    with pytest.raises(NoReleaseError, match="not a complete release"):
        registry.latest("r")


def test_unknown_region_is_a_key_error(served: ServedRegion) -> None:
    with pytest.raises(KeyError):
        ReleaseRegistry([served], Opener()).latest("other")


def test_release_ids_are_complete_real_folders_only(served: ServedRegion, tmp_path: Path) -> None:
    make_release(served.releases_dir, "r2", [])
    make_release(served.releases_dir, "r1", [])
    (served.releases_dir / "incomplete").mkdir()
    make_release(tmp_path / "elsewhere", "outside", [])
    os.symlink(tmp_path / "elsewhere" / "outside", served.releases_dir / "linked")
    (served.releases_dir / ".r3.tmp").mkdir()
    registry = ReleaseRegistry([served], Opener())
    assert registry.release_ids("r") == ["r1", "r2"]


def test_release_files_are_the_manifest_and_its_list(served: ServedRegion) -> None:
    make_release(served.releases_dir, "a", ["segments/p.parquet", "stac/collection.json"])
    (served.releases_dir / "a" / "unlisted.txt").write_text("x")
    folder, files = ReleaseRegistry([served], Opener()).release_files("r", "a")
    assert folder == served.releases_dir / "a"
    assert files == {"manifest.json", "segments/p.parquet", "stac/collection.json"}
    with pytest.raises(KeyError):
        ReleaseRegistry([served], Opener()).release_files("r", "..")


TILES = {(3, 4, 2): b"tile-a", (3, 5, 2): b"tile-b", (4, 9, 5): b"tile-c"}


def write_archive(path: Path, tiles: dict[tuple[int, int, int], bytes]) -> None:
    """A PMTiles archive of gzip-compressed tiles, written with the pmtiles package's writer."""
    with write(path) as writer:
        for (z, x, y), data in sorted(tiles.items(), key=lambda item: zxy_to_tileid(*item[0])):
            writer.write_tile(zxy_to_tileid(z, x, y), gzip.compress(data))
        writer.finalize(
            {
                "tile_type": TileType.MVT,
                "tile_compression": Compression.GZIP,
                "min_zoom": 3,
                "max_zoom": 4,
            },
            {"name": "test"},
        )


def test_tile_archive_reads_stored_tiles_and_tells_empty_from_out_of_range(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.pmtiles"
    write_archive(path, TILES)
    archive = TileArchive(path)
    for (z, x, y), data in TILES.items():
        tile = archive.tile(z, x, y)
        assert tile is not None and tile.encoding == "gzip"
        assert gzip.decompress(tile.data) == data
    assert archive.tile(3, 0, 0) is None  # inside the zoom range, no data: empty
    for z, x, y in [(2, 0, 0), (5, 0, 0), (3, 8, 0), (3, 0, 8), (3, -1, 0)]:
        with pytest.raises(TileNotFoundError):
            archive.tile(z, x, y)


def test_tile_archive_follows_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.pmtiles"
    write_archive(path, TILES)
    archive = TileArchive(path)
    assert archive.tile(3, 0, 0) is None
    write_archive(tmp_path / "new.pmtiles", {**TILES, (3, 0, 0): b"new"})
    os.replace(tmp_path / "new.pmtiles", path)
    tile = archive.tile(3, 0, 0)
    assert tile is not None and gzip.decompress(tile.data) == b"new"


def test_missing_archive_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TileArchive(tmp_path / "none.pmtiles").tile(0, 0, 0)
