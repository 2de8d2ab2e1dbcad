"""GeoParquet 1.1 writing and reading through the data contracts, atomically."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from pipeline.contracts import EDGES, NODES, REJECTS, TRIPS, Contract, validate_table
from pipeline.errors import ContractError, InputDataError
from pipeline.io import (
    _parsed_crs,
    arrow_array,
    arrow_strings,
    arrow_to_geodataframe,
    atomic_path,
    concat_tables,
    distinct_texts,
    file_sha256,
    lines_table,
    memoized_sha256,
    merged_geo_metadata,
    numpy_values,
    read_table,
    wkb_linestrings,
    write_in_row_groups,
    write_lines,
    write_points,
    write_table,
)

LINES = Contract(
    name="lines",
    version=1,
    schema=pa.schema(
        [pa.field("line_id", pa.int64(), nullable=False), pa.field("geometry", pa.binary())]
    ),
    key=("line_id",),
)


def nodes_frame(ids: list[int]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "node_id": ids,
            "lon": [24.9 + i / 1000 for i in ids],
            "lat": [60.1] * len(ids),
            "street_count": [3] * len(ids),
        },
        geometry=[Point(24.9 + i / 1000, 60.1) for i in ids],
        crs="EPSG:4326",
    )


def test_written_file_is_geoparquet_1_1_with_covering_bbox_and_schema_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nodes.parquet"
    write_table(nodes_frame([1, 2, 3]), path, NODES)
    metadata = pq.read_schema(path).metadata
    geo = json.loads(metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert json.loads(metadata[b"roadcover"]) == {"schema_version": 1, "table": "nodes"}
    back = read_table(path, NODES)
    assert back["node_id"].tolist() == [1, 2, 3]
    assert back.crs.to_epsg() == 4326
    assert "bbox" not in back.columns
    # plain geopandas, as a user would read it
    assert len(gpd.read_parquet(path)) == 3


def test_points_written_from_coordinates_are_the_geoparquet_of_their_shapely_points(
    tmp_path: Path,
) -> None:
    frame = nodes_frame([4, 1, 9])
    write_table(frame, tmp_path / "shapely.parquet", NODES)
    columns = frame.drop(columns="geometry")
    write_points(
        columns,
        columns["lon"].to_numpy(),
        columns["lat"].to_numpy(),
        tmp_path / "wkb.parquet",
        NODES,
    )
    expected, written = (
        pq.read_table(tmp_path / "shapely.parquet"),
        pq.read_table(tmp_path / "wkb.parquet"),
    )
    assert written.drop_columns("bbox").equals(expected.drop_columns("bbox"))  # same WKB bytes
    assert written.column("bbox").to_pylist() == expected.column("bbox").to_pylist()
    geo, expected_geo = (json.loads(t.schema.metadata[b"geo"]) for t in (written, expected))
    assert geo["columns"] == expected_geo["columns"]  # bbox, types, CRS and covering
    assert geo["creator"]["library"] == "roadcover"
    back = read_table(tmp_path / "wkb.parquet", NODES)
    assert back.geometry.x.tolist() == frame.geometry.x.tolist()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(2, 6), min_size=1, max_size=8),
    st.floats(-180, 180, allow_nan=False),
    st.floats(-90, 90, allow_nan=False),
)
def test_lines_written_from_vertices_are_the_geoparquet_of_their_shapely_lines(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int], x0: float, y0: float
) -> None:
    folder = tmp_path_factory.mktemp("lines")
    offsets = np.r_[0, np.cumsum(counts, dtype="int64")]
    rng = np.random.default_rng(len(counts))
    coords = np.array([x0, y0]) + rng.normal(0, 0.01, (int(offsets[-1]), 2))
    lines = shapely.linestrings(coords, indices=np.repeat(np.arange(len(counts)), counts))
    assert wkb_linestrings(coords, offsets).to_pylist() == list(shapely.to_wkb(lines))
    frame = gpd.GeoDataFrame({"line_id": np.arange(len(counts))}, geometry=lines, crs="EPSG:4326")
    write_table(frame, folder / "shapely.parquet", LINES)
    write_lines(frame.drop(columns="geometry"), coords, offsets, folder / "wkb.parquet", LINES)
    expected, written = (pq.read_table(folder / f"{n}.parquet") for n in ("shapely", "wkb"))
    assert written.equals(expected)  # WKB bytes and covering bboxes
    geo, expected_geo = (json.loads(t.schema.metadata[b"geo"]) for t in (written, expected))
    assert geo["columns"] == expected_geo["columns"]
    with pytest.raises(ValueError, match="one line per row"):
        write_lines(frame.drop(columns="geometry"), coords, offsets[:-1], folder / "x", LINES)
    with pytest.raises(ValueError, match="offsets must give"):
        write_lines(frame.drop(columns="geometry"), coords[:-1], offsets, folder / "x", LINES)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(2, 6), min_size=1, max_size=6),
    st.lists(st.integers(0, 5), min_size=1, max_size=20),
)
def test_lines_taken_by_index_are_the_geoparquet_of_the_repeated_lines(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int], picks: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("indexed")
    offsets = np.r_[0, np.cumsum(counts, dtype="int64")]
    coords = np.random.default_rng(len(picks)).normal(0, 1, (int(offsets[-1]), 2))
    lines = shapely.linestrings(coords, indices=np.repeat(np.arange(len(counts)), counts))
    index = np.array([p % len(counts) for p in picks], dtype="int64")
    frame = gpd.GeoDataFrame({"line_id": np.arange(len(index))}, geometry=lines[index])
    write_table(frame.set_crs("EPSG:4326"), folder / "shapely.parquet", LINES)
    columns = frame.drop(columns="geometry")
    write_lines(columns, coords, offsets, folder / "indexed.parquet", LINES, index=index)
    expected, written = (pq.read_table(folder / f"{n}.parquet") for n in ("shapely", "indexed"))
    assert written.equals(expected)  # each row's line and covering bbox
    geo, expected_geo = (json.loads(t.schema.metadata[b"geo"]) for t in (written, expected))
    assert geo["columns"] == expected_geo["columns"]  # the file's bbox too
    with pytest.raises(ValueError, match="index must name"):
        write_lines(columns, coords, offsets, folder / "x", LINES, index=index + len(counts))
    with pytest.raises(ValueError, match="one line per row"):
        write_lines(columns, coords, offsets, folder / "x", LINES, index=np.r_[index, 0])


def test_no_lines_make_an_empty_geoparquet(tmp_path: Path) -> None:
    frame = pa.table({"line_id": pa.array([], pa.int64())})
    write_lines(frame, np.empty((0, 2)), np.zeros(1, "int64"), tmp_path / "empty.parquet", LINES)
    back = read_table(tmp_path / "empty.parquet", LINES)
    assert back.empty and back.crs == "EPSG:4326"


def test_geoparquet_is_read_as_geopandas_reads_it_with_each_crs_parsed_once(
    tmp_path: Path,
) -> None:
    frame = nodes_frame([1, 2]).to_crs("EPSG:3067")
    frame[["lon", "lat"]] = frame.get_coordinates().to_numpy()
    write_table(frame, tmp_path / "a.parquet", NODES)
    table = pq.read_table(tmp_path / "a.parquet")
    first = arrow_to_geodataframe(table)
    hits = _parsed_crs.cache_info().hits
    second = arrow_to_geodataframe(table)
    assert _parsed_crs.cache_info().hits == hits + 1  # the CRS was not parsed again
    expected = gpd.read_parquet(tmp_path / "a.parquet")
    assert first.crs == second.crs == expected.crs and first.crs.to_epsg() == 3067
    assert first.geometry.geom_equals(expected.geometry).all()
    with pytest.raises(ValueError, match="geo metadata"):
        arrow_to_geodataframe(table.replace_schema_metadata({}))


def test_points_of_an_empty_table_have_no_bbox(tmp_path: Path) -> None:
    columns = nodes_frame([]).drop(columns="geometry").astype({"node_id": "int64"})
    write_points(
        columns, columns["lon"].to_numpy(), columns["lat"].to_numpy(), tmp_path / "e", NODES
    )
    geo = json.loads(pq.read_schema(tmp_path / "e").metadata[b"geo"])["columns"]["geometry"]
    assert "bbox" not in geo and geo["geometry_types"] == []
    assert read_table(tmp_path / "e", NODES).empty


def test_concatenated_parts_keep_their_rows_in_order_and_the_whole_bbox(
    tmp_path: Path,
) -> None:
    parts = [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"]
    for part, ids in zip(parts, ([1, 2], [30], [7, 5]), strict=True):
        write_table(nodes_frame(ids), part, NODES)
    concat_tables(parts, tmp_path / "all.parquet", NODES)
    back = read_table(tmp_path / "all.parquet", NODES)  # contract, keys and nulls checked
    assert back["node_id"].tolist() == [1, 2, 30, 7, 5]
    geo = json.loads(pq.read_schema(tmp_path / "all.parquet").metadata[b"geo"])["columns"]
    assert geo["geometry"]["bbox"] == pytest.approx([24.901, 60.1, 24.93, 60.1])
    assert geo["geometry"]["geometry_types"] == ["Point"]
    assert gpd.read_parquet(tmp_path / "all.parquet").total_bounds.tolist() == pytest.approx(
        [24.901, 60.1, 24.93, 60.1]
    )


@pytest.mark.parametrize("row_group_rows", [2, 64 * 1024])
def test_staged_arrow_parts_concatenate_to_the_bytes_of_parquet_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_group_rows: int
) -> None:
    monkeypatch.setattr("pipeline.io.ROW_GROUP_ROWS", row_group_rows)  # parts of many groups
    rows = ([1, 2, 3, 4, 9], [], [30], [7, 5, 6])
    for suffix in (".parquet", ".arrow"):
        parts = [tmp_path / f"{index}{suffix}" for index in range(len(rows))]
        for part, ids in zip(parts, rows, strict=True):
            frame = nodes_frame(ids)
            write_points(frame.drop(columns="geometry"), frame["lon"], frame["lat"], part, NODES)
        concat_tables(parts, tmp_path / f"all{suffix}.parquet", NODES)
    from_arrow = (tmp_path / "all.arrow.parquet").read_bytes()
    assert from_arrow == (tmp_path / "all.parquet.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "all.arrow.parquet").num_row_groups > len(rows) - 1
    assert read_table(tmp_path / "all.arrow.parquet", NODES)["node_id"].tolist() == [
        1, 2, 3, 4, 9, 30, 7, 5, 6
    ]  # fmt: skip


def rejects_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "source_file": [f"uploads/dev-{i // 97:03d}.csv" for i in range(rows)],
            "source_row": np.arange(rows, dtype="int64"),
            "reason": rng.choice(["privacy", "impossible_speed", "hdop_too_high"], rows),
            "detail": [f"hdop={value:.1f}" for value in rng.uniform(0, 99, rows)],
            "batch_id": "b0",
        }
    )


@pytest.mark.parametrize("cuts", [[0, 5, 5, 1200, 3001], [3001], [0]])
def test_tables_written_in_row_groups_are_the_bytes_of_their_concatenation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuts: list[int]
) -> None:
    monkeypatch.setattr("pipeline.io.ROW_GROUP_ROWS", 1000)  # groups across the pieces
    whole = rejects_frame(cuts[-1])
    write_table(whole, tmp_path / "whole.parquet", REJECTS)
    bounds = [0, *cuts]
    pieces = [
        pa.Table.from_pandas(whole.iloc[start:stop], preserve_index=False)
        for start, stop in itertools.pairwise(bounds)
    ]
    write_in_row_groups(pieces, tmp_path / "pieces.parquet", REJECTS)
    expected = (tmp_path / "whole.parquet").read_bytes()
    assert (tmp_path / "pieces.parquet").read_bytes() == expected
    assert pq.ParquetFile(tmp_path / "pieces.parquet").num_row_groups == max(
        1, -(-cuts[-1] // 1000)
    )


def test_long_lines_written_in_row_groups_are_the_bytes_of_the_whole_geoparquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geopandas.io.arrow import _geopandas_to_arrow

    monkeypatch.setattr("pipeline.io.ROW_GROUP_ROWS", 40)
    rng = np.random.default_rng(5)
    lines = [
        shapely.LineString(rng.uniform(0, 1, (3000, 2)) + np.array([24.0, 60.0]))
        for _ in range(100)
    ]
    trips = gpd.GeoDataFrame(
        {
            "trip_id": [f"t-{i:03d}" for i in range(100)],
            "flags": [["replay"] if i % 7 == 0 else [] for i in range(100)],
            "trust_score": 1.0,
            "plausible": [i % 7 != 0 for i in range(100)],
        },
        geometry=lines,
        crs="EPSG:4326",
    )  # 48 kB of WKB a line: pages of 1 MB are cut within each row group
    columns = ["trip_id", "flags", "trust_score", "plausible", "geometry"]
    contract = Contract(
        "trips", 1, pa.schema([TRIPS.schema.field(c) for c in columns]), ("trip_id",)
    )
    write_table(trips, tmp_path / "whole.parquet", contract)
    pieces = [trips.iloc[a:b] for a, b in ((0, 7), (7, 7), (7, 63), (63, 100))]
    tables = [
        _geopandas_to_arrow(piece, index=False, schema_version="1.1.0", write_covering_bbox=True)
        for piece in pieces
    ]
    geo = pq.read_schema(tmp_path / "whole.parquet").metadata[b"geo"]
    whole = (tmp_path / "whole.parquet").read_bytes()
    for group_bytes in (None, 2**30):  # no group over the bound: the same file
        write_in_row_groups(
            tables, tmp_path / "pieces.parquet", contract, {b"geo": geo}, group_bytes
        )
        assert (tmp_path / "pieces.parquet").read_bytes() == whole
    # groups of at most 1 MB of lines: 7, then 56 (a piece over it: cut at 40 rows), 37
    write_in_row_groups(tables, tmp_path / "small.parquet", contract, {b"geo": geo}, 2**20)
    groups = pq.ParquetFile(tmp_path / "small.parquet").metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [7, 40, 16, 37]
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "small.parquet", contract),
        read_table(tmp_path / "whole.parquet", contract),
    )


def test_tables_of_lines_written_in_row_groups_are_the_bytes_of_the_whole_lines_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts made apart, each with its lines' bbox: their merged ``geo`` is the whole's."""
    monkeypatch.setattr("pipeline.io.ROW_GROUP_ROWS", 16)  # groups across the parts
    rng = np.random.default_rng(3)
    counts = rng.integers(2, 5, 12)
    offsets = np.r_[0, np.cumsum(counts)]
    coords = rng.uniform(0, 1, (int(offsets[-1]), 2)) + np.array([2.0, 43.0])
    index = rng.integers(0, len(counts), 70)  # rows repeat lines, as driven edges do
    frame = pa.table({"line_id": pa.array(np.arange(len(index)))})
    write_lines(frame, coords, offsets, tmp_path / "whole.parquet", LINES, index=index)
    parts = []
    for start, stop in itertools.pairwise([0, 9, 9, 40, 70]):  # one part without rows
        used = np.unique(index[start:stop])  # a part's own lines: those of its rows
        part_offsets = np.r_[0, np.cumsum(counts[used])]
        part_coords = np.concatenate([coords[offsets[i] : offsets[i + 1]] for i in used] or [[]])
        part_index = np.searchsorted(used, index[start:stop])
        part = frame.slice(start, stop - start)
        parts.append(lines_table(part, part_coords, part_offsets, LINES, index=part_index))
    geo = merged_geo_metadata([part.schema.metadata[b"geo"] for part in parts])
    write_in_row_groups(parts, tmp_path / "parts.parquet", LINES, {b"geo": geo})
    assert (tmp_path / "parts.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    boxes = [json.loads(p.schema.metadata[b"geo"])["columns"]["geometry"] for p in parts]
    assert "bbox" not in boxes[1] and len({tuple(b["bbox"]) for b in boxes if "bbox" in b}) > 1


@pytest.mark.parametrize("column", ["source_file", "reason"])
def test_distinct_texts_are_pandas_distinct_values_in_order_across_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, column: str
) -> None:
    monkeypatch.setattr("pipeline.io.ROW_GROUP_ROWS", 1000)  # a dictionary per row group
    frame = rejects_frame(3001, seed=3)
    write_table(frame, tmp_path / "rejects.parquet", REJECTS)
    distinct = distinct_texts(tmp_path / "rejects.parquet", REJECTS, column)
    assert distinct.type == pa.string()
    assert distinct.to_pylist() == frame[column].drop_duplicates().tolist()
    with pytest.raises(ContractError, match="expected 'trips'"):
        distinct_texts(tmp_path / "rejects.parquet", TRIPS, column)


def test_concatenating_a_part_that_is_not_of_the_contract_is_an_error(tmp_path: Path) -> None:
    write_table(nodes_frame([1]), tmp_path / "nodes.parquet", NODES)
    nodes_frame([2]).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ContractError, match="plain.parquet.*has no roadcover metadata"):
        concat_tables(
            [tmp_path / "nodes.parquet", tmp_path / "plain.parquet"], tmp_path / "x", NODES
        )
    assert not (tmp_path / "x").exists()


def test_same_data_gives_the_same_bytes(tmp_path: Path) -> None:
    write_table(nodes_frame([1, 2]), tmp_path / "a.parquet", NODES)
    write_table(nodes_frame([1, 2]), tmp_path / "b.parquet", NODES)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_contract_error_lists_every_problem_at_once(tmp_path: Path) -> None:
    frame = nodes_frame([1, 1]).drop(columns="street_count")
    frame["lat"] = ["north", "south"]
    frame["colour"] = "red"
    with pytest.raises(ContractError) as error:
        write_table(frame, tmp_path / "nodes.parquet", NODES)
    message = str(error.value)
    assert "column 'lat'" in message and "cannot be double" in message
    assert not (tmp_path / "nodes.parquet").exists()


def test_validation_reports_missing_extra_nulls_and_duplicate_keys() -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "node_id": pa.array([1, 1], pa.int64()),
            "lon": pa.array([1.0, None], pa.float64()),
            "lat": pa.array([1.0, 2.0], pa.float64()),
            "street_count": pa.array([1, 2], pa.int64()),
            "geometry": pa.array([b"x", b"y"], pa.binary()),
        }
    )
    with pytest.raises(ContractError) as error:
        validate_table(table, NODES, "t")
    message = str(error.value)
    assert "'lon' has 1 null(s)" in message and "key (node_id) is not unique" in message
    with pytest.raises(
        ContractError, match="(?s)missing column 'street_count'.*unexpected column 'x'"
    ):
        validate_table(table.drop_columns(["street_count"]).append_column("x", table["lat"]), NODES)


def test_reading_a_file_of_another_table_or_not_parquet_is_a_clear_error(tmp_path: Path) -> None:
    write_table(nodes_frame([1]), tmp_path / "nodes.parquet", NODES)
    with pytest.raises(ContractError, match="holds table 'nodes'.*expected 'edges'"):
        read_table(tmp_path / "nodes.parquet", EDGES)
    nodes_frame([1]).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ContractError, match="has no roadcover metadata"):
        read_table(tmp_path / "plain.parquet", NODES)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(InputDataError, match="not a readable Parquet file"):
        read_table(tmp_path / "text.parquet", NODES)
    with pytest.raises(InputDataError, match="file not found"):
        read_table(tmp_path / "none.parquet", NODES)


def test_atomic_path_leaves_nothing_behind_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_reading_without_geometry_keeps_every_other_column_and_every_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nodes.parquet"
    write_table(nodes_frame([3, 1, 2]), path, NODES)
    decoded = read_table(path, NODES)
    plain = read_table(path, NODES, decode_geometry=False)
    assert not isinstance(plain, gpd.GeoDataFrame)
    assert list(plain.columns) == [c for c in decoded.columns if c != "geometry"]
    assert plain.equals(pd.DataFrame(decoded.drop(columns="geometry")))
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table]), path)  # same metadata, duplicated keys
    with pytest.raises(ContractError, match="is not unique"):
        read_table(path, NODES, decode_geometry=False)


def raw_nodes(path: Path, ids: list[int], lons: list[float | None], statistics: bool) -> None:
    """Write a nodes file as it comes, unchecked: row groups of two, statistics or none."""
    table = pa.table(
        {
            "node_id": pa.array(ids, pa.int64()),
            "lon": pa.array(lons, pa.float64()),
            "lat": pa.array([60.0] * len(ids), pa.float64()),
            "street_count": pa.array([3] * len(ids), pa.int64()),
            "geometry": pa.array([b"x"] * len(ids), pa.binary()),
        }
    ).replace_schema_metadata(NODES.metadata())
    pq.write_table(table, path, row_group_size=2, write_statistics=statistics)


@pytest.mark.parametrize("statistics", [True, False])
@pytest.mark.parametrize(
    ("ids", "lons"),
    [
        ([3, 1, 2], [1.0, 2.0, 3.0]),  # unsorted, valid
        ([3, 1, 3], [1.0, 2.0, 3.0]),  # a repeated key, not neighbours
        ([1, 2, 3, 4], [1.0, 2.0, None, 4.0]),  # a null in a column not read
        ([2, 1, 2], [None, 2.0, 3.0]),  # both
    ],
)
def test_reading_some_columns_checked_whole_finds_what_a_whole_read_finds(
    tmp_path: Path, statistics: bool, ids: list[int], lons: list[float | None]
) -> None:
    from pipeline.io import read_arrow

    path = tmp_path / "nodes.parquet"
    raw_nodes(path, ids, lons, statistics)
    try:
        whole = read_arrow(path, NODES)
    except ContractError as error:
        with pytest.raises(ContractError) as part_error:
            read_arrow(path, NODES, columns=["lat"], check_all=True)
        assert str(part_error.value) == str(error)
    else:
        part = read_arrow(path, NODES, columns=["lat", "street_count"], check_all=True)
        assert part.equals(whole.select(["lat", "street_count"]))
        assert part.schema.metadata == whole.schema.metadata
    read_arrow(path, NODES, columns=["lat"])  # unchecked, as before


@pytest.mark.parametrize("statistics", [True, False])
@pytest.mark.parametrize(
    ("ids", "lons"),
    [
        ([1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0]),  # in key order, across chunks
        ([3, 1, 2], [1.0, 2.0, 3.0]),  # unsorted, valid
        ([1, 2, 2, 3], [1.0, 2.0, 3.0, 4.0]),  # a repeated key at a chunk's border
        ([3, 1, 3], [1.0, 2.0, 3.0]),  # a repeated key, not neighbours
        ([1, 2, 3, 4], [1.0, 2.0, None, 4.0]),  # a null in a column not read
    ],
)
def test_reading_in_chunks_finds_what_a_whole_read_finds(
    tmp_path: Path, statistics: bool, ids: list[int], lons: list[float | None]
) -> None:
    from pipeline.io import read_arrow, read_checked_chunks

    path = tmp_path / "nodes.parquet"
    raw_nodes(path, ids, lons, statistics)
    chunks: list[pa.Table] = []
    try:
        whole = read_arrow(path, NODES)
    except ContractError as error:
        with pytest.raises(ContractError) as chunk_error:
            chunks.extend(read_checked_chunks(path, NODES, ["lat"], 2))
        assert str(chunk_error.value) == str(error)
    else:
        chunks.extend(read_checked_chunks(path, NODES, ["lat", "street_count"], 2))
        assert [chunk.num_rows for chunk in chunks] == [2] * (len(ids) // 2) + [1] * (len(ids) % 2)
        assert pa.concat_tables(chunks).equals(whole.select(["lat", "street_count"]))


@pytest.mark.parametrize("size", [0, 5, (1 << 20) - 1, 1 << 20, (5 << 19) + 3])
def test_file_sha256_is_hashlib_of_the_whole_file(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


NUMPY_DTYPES = ["int32", "int64", "float64", "bool"]


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(NUMPY_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(0, 40),
    with_nulls=st.booleans(),
)
def test_arrow_array_is_the_array_pyarrow_makes_of_the_values(
    dtype: str, seed: int, size: int, with_nulls: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1e6, size) if dtype == "float64" else rng.integers(0, 2, size) * 7
    values = values.astype(dtype)
    valid = rng.random(size) > 0.3 if with_nulls else None
    made = arrow_array(values, valid=valid)
    expected = pa.array(values, mask=None if valid is None else ~valid)
    assert made.type == expected.type and made.null_count == expected.null_count
    assert made.to_pylist() == expected.to_pylist()


def test_arrow_array_of_a_timestamp_type_and_strings_are_pyarrows() -> None:
    ms = np.array([0, 1_700_000_000_123, -5], dtype="int64")
    stamps = arrow_array(ms, valid=np.array([True, True, False]), type=pa.timestamp("ms", "UTC"))
    expected = pa.array([0, 1_700_000_000_123, None], type=pa.int64()).cast(
        pa.timestamp("ms", "UTC")
    )
    assert stamps.equals(expected)
    names = ["no_candidate", "", "outlier", "é€"]
    assert arrow_strings(names).equals(pa.array(names, type=pa.string()))
    assert arrow_strings([]).equals(pa.array([], type=pa.string()))


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(NUMPY_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(0, 20), min_size=0, max_size=4),
    cut=st.integers(0, 5),
)
def test_numpy_values_of_chunked_and_sliced_columns_are_pyarrows(
    dtype: str, seed: int, sizes: list[int], cut: int
) -> None:
    """Chunks and slices start at offsets inside their buffers (booleans: inside a byte)."""
    rng = np.random.default_rng(seed)
    chunks = [
        pa.array((rng.normal(0, 1e6, n) if dtype == "float64" else rng.integers(-9, 9, n)) > 0)
        if dtype == "bool"
        else pa.array((rng.normal(0, 1e6, n) if dtype == "float64" else rng.integers(-9, 9, n))
                      .astype(dtype))
        for n in sizes
    ]  # fmt: skip
    column = pa.chunked_array(chunks, type=pa.from_numpy_dtype(np.dtype(dtype)))
    column = column.slice(min(cut, len(column)))
    values = numpy_values(column)
    assert values.dtype == np.dtype(dtype)
    assert values.tolist() == column.to_pylist()
    for chunk in chunks:  # an array sliced: its values start inside its buffer
        part = chunk.slice(min(cut, len(chunk)))
        assert numpy_values(part).tolist() == part.to_pylist()


def test_numpy_values_of_timestamps_are_their_int64s_and_other_types_are_refused() -> None:
    stamps = pa.array([0, 1_700_000_000_123], type=pa.timestamp("ms", "UTC"))
    assert numpy_values(stamps).tolist() == [0, 1_700_000_000_123]
    with pytest.raises(TypeError, match="not string"):
        numpy_values(pa.array(["a"]))


def test_memoized_sha256_is_the_files_and_is_kept_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "edges.parquet"
    path.write_bytes(b"the roads, version one")
    expected = hashlib.sha256(b"the roads, version one").hexdigest()
    assert memoized_sha256(path, racy_s=0) == expected
    memo = json.loads((tmp_path / ".edges.parquet.sha256.json").read_text())
    assert memo["sha256"] == expected
    assert memo["keys"]["size"] == len(b"the roads, version one")


def test_a_memo_is_trusted_only_while_every_key_is_the_files(tmp_path: Path) -> None:
    path = tmp_path / "edges.parquet"
    path.write_bytes(b"the roads, version one")
    memoized_sha256(path, racy_s=0)
    memo_path = tmp_path / ".edges.parquet.sha256.json"
    planted = {**json.loads(memo_path.read_text()), "sha256": "planted"}
    memo_path.write_text(json.dumps(planted))
    assert memoized_sha256(path, racy_s=0) == "planted"  # every key matches: the memo is used
    status = path.stat()
    time.sleep(0.05)  # past the tick of the file's timestamps
    with path.open("r+b") as handle:  # rewritten in place, same size, mtime put back
        handle.write(b"THE")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_size == status.st_size
    assert memoized_sha256(path, racy_s=0) == hashlib.sha256(b"THE roads, version one").hexdigest()


def test_a_replaced_file_of_the_same_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "edges.parquet"
    path.write_bytes(b"aaaa")
    memoized_sha256(path, racy_s=0)
    status = path.stat()
    time.sleep(0.05)
    other = tmp_path / "other"
    other.write_bytes(b"bbbb")
    os.utime(other, ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(other, path)
    assert memoized_sha256(path, racy_s=0) == hashlib.sha256(b"bbbb").hexdigest()


def test_a_file_changed_just_now_gets_no_memo(tmp_path: Path) -> None:
    path = tmp_path / "edges.parquet"
    path.write_bytes(b"aaaa")
    assert memoized_sha256(path) == hashlib.sha256(b"aaaa").hexdigest()
    assert not (tmp_path / ".edges.parquet.sha256.json").exists()
