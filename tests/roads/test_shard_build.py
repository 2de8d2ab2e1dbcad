"""The merge of a sharded region: its tables are an unsharded build's, byte for byte.

The oracle is ``roadcover roads build`` of the same extract without shards (a build that never
sees a shard): the merged ``edges.parquet`` and ``nodes.parquet`` must have its sha256, and the
region's ``meta.json`` its figures. The merge streams the shards through buckets of node ids and
writes row groups of ``ROW_GROUP_ROWS`` rows; on the tiny network both are made small, so that
rows cross buckets and row groups, as on a country's network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io
from pipeline.errors import InputDataError
from pipeline.roads import build_roads, read_edges, read_roads_meta
from pipeline.roads import shard_build as shard_build_module
from pipeline.roads.shard_build import build_shard, build_sharded_roads, merge_shards
from pipeline.roads.shards import OWNERS_FILE, SHARDS_DIR, cut_extract, read_plan

TABLES = ("edges.parquet", "nodes.parquet")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_shards(meta: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in meta.items() if key != "shards"}


def assert_same_as_unsharded(region: Path, whole: Path) -> None:
    for name in TABLES:
        assert sha256(region / name) == sha256(whole / name), name
    assert without_shards(read_roads_meta(region)) == read_roads_meta(whole)


@pytest.fixture
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> int:
    """Row groups of 3 rows, in every file written (the unsharded build's too)."""
    monkeypatch.setattr(io, "ROW_GROUP_ROWS", 3)
    monkeypatch.setattr(shard_build_module, "ROW_GROUP_ROWS", 3)
    return 3


@pytest.mark.parametrize("bucket_rows", [1, 2, 4, None])
def test_merged_tables_across_buckets_and_row_groups_are_the_unsharded_files(
    tiny_osm: Path, tmp_path: Path, small_row_groups: int, bucket_rows: int | None
) -> None:
    build_roads(tiny_osm, tmp_path / "whole")
    build_sharded_roads(tiny_osm, tmp_path / "region", 12)
    merge_shards(tmp_path / "region", bucket_rows=bucket_rows)
    assert_same_as_unsharded(tmp_path / "region", tmp_path / "whole")
    edges = pq.ParquetFile(tmp_path / "region" / "edges.parquet")
    assert edges.metadata.num_row_groups == -(-edges.metadata.num_rows // small_row_groups) > 1
    assert len(read_plan(tmp_path / "region")["cells"]) > 1
    assert not list((tmp_path / "region" / ".staging").iterdir())  # no spill file left


def test_a_rerun_of_the_merge_writes_the_same_bytes(tiny_osm: Path, tmp_path: Path) -> None:
    first = build_sharded_roads(tiny_osm, tmp_path, 12)
    digests = {name: sha256(tmp_path / name) for name in TABLES}
    assert merge_shards(tmp_path, bucket_rows=2) == first
    assert {name: sha256(tmp_path / name) for name in TABLES} == digests


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("extract", "resolution"),
    [("osm/monaco-2016.osm.pbf", 7), ("mapmatch/kubicka-dev/00000012/network.osm.bz2", 6)],
)
def test_merged_real_networks_are_the_unsharded_files(
    extract: str, resolution: int, shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / extract
    build_roads(source, tmp_path / "whole")
    meta = build_sharded_roads(source, tmp_path / "region", resolution)
    assert len(meta["shards"]["cells"]) > 1
    assert_same_as_unsharded(tmp_path / "region", tmp_path / "whole")


def test_a_merge_before_every_shard_is_built_is_refused(tiny_osm: Path, tmp_path: Path) -> None:
    plan = cut_extract(tiny_osm, tmp_path, 12)
    for cell in plan["cells"][1:]:
        build_shard(tmp_path, cell)
    missing = plan["cells"][0]
    with pytest.raises(InputDataError, match=f"shard {missing} has not been built") as raised:
        merge_shards(tmp_path)
    assert f"roadcover roads build-shard {tmp_path} {missing}" in str(raised.value)
    assert not (tmp_path / "meta.json").exists()


def test_owners_of_other_edges_are_refused(tiny_osm: Path, tmp_path: Path) -> None:
    build_sharded_roads(tiny_osm, tmp_path, 12)
    cell = next(
        c["cell"] for c in read_roads_meta(tmp_path)["shards"]["cells"] if c["owned_edge_count"]
    )
    owners_path = tmp_path / SHARDS_DIR / cell / OWNERS_FILE
    owners = pq.read_table(owners_path)
    reversed_rows = owners.take(pa.array(range(owners.num_rows - 1, -1, -1)))
    if owners.num_rows == 1:  # one edge: name another one
        reversed_rows = reversed_rows.set_column(0, "edge_id", pa.array([-1], pa.int64()))
    pq.write_table(reversed_rows, owners_path)
    with pytest.raises(InputDataError, match=f"not the edges of edges.parquet; build shard {cell}"):
        merge_shards(tmp_path)


def test_a_loop_of_zero_length_gets_an_owner(tiny_osm: Path, tmp_path: Path) -> None:
    # a way from a node back to itself: an edge whose line has one point (Kubicka 00000013
    # has two), empty once rounded to the canonical line's precision
    text = tiny_osm.read_text(encoding="utf-8")
    loop = '<way id="900"><nd ref="5"/><nd ref="5"/><tag k="highway" v="residential"/></way>'
    extract = tmp_path / "loop.osm"
    extract.write_text(text.replace("</osm>", f"  {loop}\n</osm>"), encoding="utf-8")
    build_roads(extract, tmp_path / "whole")
    meta = build_sharded_roads(extract, tmp_path / "region", 12)
    assert_same_as_unsharded(tmp_path / "region", tmp_path / "whole")
    loops = read_edges(tmp_path / "region").query("u == v and length_m == 0")
    assert len(loops) == 2  # its two directions
    assert meta["edge_count"] == sum(c["owned_edge_count"] for c in meta["shards"]["cells"])
