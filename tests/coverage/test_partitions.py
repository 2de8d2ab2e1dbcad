"""A partitioned coverage state gives exactly the answer of one computation over all batches.

The expected files are written from the whole state (every batch's state merged in memory,
then the edge, cell and summary tables of it), never from partitions or the rollup; an
update must rewrite only the partitions its batch touches, and a rerun with nothing new must
not read the state at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import LineString

from pipeline.config import load_config
from pipeline.contracts import CELL_COVERAGE, EDGE_COVERAGE
from pipeline.coverage.cell_reader import read_cell_table
from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.partitions import (
    EDGE_INDEX_COLUMNS,
    EDGE_INDEX_DIR,
    NETWORK_FORMAT,
    Network,
    edge_rows_by_ranges,
)
from pipeline.coverage.stage import _batch_id, compute_coverage
from pipeline.coverage.state import (
    STATE_TABLES,
    CoverageState,
    empty_state,
    merge_states,
    read_state,
    state_of_batch,
)
from pipeline.coverage.summary import coverage_summary
from pipeline.coverage.tables import cell_coverage, edge_coverage
from pipeline.coverage.update import counted_segments
from pipeline.errors import ConfigError, InputDataError
from pipeline.io import read_arrow, write_table
from pipeline.roads import read_edges
from pipeline.roads.identity import roads_identity
from tests.builders import write_matched_batch

SETTINGS = load_config().coverage
DAY = pd.Timedelta(days=1)


def with_parts(resolution: int | str) -> object:
    """The default coverage settings with ``partition_resolution``."""
    return dataclasses.replace(SETTINGS, partition_resolution=resolution)


@pytest.fixture(scope="module")
def roads(monaco_roads: Path) -> Path:
    return monaco_roads


@pytest.fixture(scope="module")
def batches(roads: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four batches over 60 days: partial and repeated drives, shared contributors."""
    edges = read_edges(roads)
    rng = np.random.default_rng(22)
    folders = []
    for number in range(4):
        pick = edges.iloc[rng.choice(len(edges), 300, replace=True)]
        length = pick["length_m"].to_numpy()
        start = rng.uniform(0, 0.5, len(pick)) * length
        when = pd.Timestamp("2026-09-01T08:00Z") + number * 15 * DAY
        when = when + pd.to_timedelta(rng.integers(0, 15 * 86_400, len(pick)), "s")
        drives = pd.DataFrame(
            {
                "edge_id": pick["edge_id"].to_numpy(),
                "trip_id": [f"b{number}-trip{i // 12}" for i in range(len(pick))],
                "contributor_id": [f"c{(number + i // 12) % 5}" for i in range(len(pick))],
                "from_offset_m": start,
                "to_offset_m": np.where(rng.random(len(pick)) < 0.5, length, start + length / 3),
                "entered_at": when,
                "exited_at": when + pd.Timedelta(seconds=20),
            }
        )
        folder = tmp_path_factory.mktemp(f"batch{number}")
        folders.append(write_matched_batch(folder, edges, drives, roads_dir=roads))
    return folders


def expected_folder(roads: Path, batches: list[Path], folder: Path) -> dict:
    """Write the edge and cell tables of the whole state; return the summary's totals."""
    edges = read_edges(roads)
    runs = edge_cell_runs(edges, SETTINGS.h3_resolution)
    lengths = edges.set_index("edge_id")["length_m"]
    state = empty_state()
    for number, batch in enumerate(batches):
        counted = counted_segments(batch, lengths, SETTINGS)
        state = merge_states(state, state_of_batch(counted, runs, f"b{number}"))
    as_of = int(state.edge_trips["last_ms"].max())
    table = edge_coverage(edges, state, as_of)
    write_table(table, folder / "edges.parquet", EDGE_COVERAGE)
    canonical = canonical_edges(edges)
    cells = cell_coverage(edges, canonical, runs, state, as_of, SETTINGS.h3_resolution)
    write_table(cells, folder / "cells.parquet", CELL_COVERAGE)
    return coverage_summary(
        table, state, canonical, as_of, SETTINGS.world_road_km, SETTINGS.world_road_km_source
    )


def assert_same_outputs(folder: Path, expected: Path, totals: dict) -> None:
    edges = read_edge_table(folder)
    assert edges.equals(read_arrow(expected / "edges.parquet", EDGE_COVERAGE))
    assert edges.schema.names == EDGE_COVERAGE.schema.names
    cells = read_cell_table(folder)
    assert cells.equals(read_arrow(expected / "cells.parquet", CELL_COVERAGE))
    assert cells.schema.names == CELL_COVERAGE.schema.names
    summary = json.loads((folder / "summary.json").read_text())
    assert {key: summary[key] for key in totals} == json.loads(json.dumps(totals))


@pytest.mark.shared_data
@pytest.mark.parametrize("resolution", [0, 7, 9, "auto"])
def test_a_partitioned_state_gives_the_answer_of_the_whole_state(
    roads: Path, batches: list[Path], tmp_path: Path, resolution: int | str
) -> None:
    totals = expected_folder(roads, batches, tmp_path / "expected")
    out = tmp_path / "coverage"
    for batch in batches:  # one update per batch
        compute_coverage(roads, [batch], out, with_parts(resolution))
    assert_same_outputs(out, tmp_path / "expected", totals)
    pointer = json.loads((out / "state" / "CURRENT.json").read_text())
    if resolution == 9:
        assert len(pointer["parts"]) > 30  # many partitions, so the test means something


@pytest.mark.shared_data
def test_batch_order_and_repartitioning_do_not_change_the_answer(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    totals = expected_folder(roads, batches, tmp_path / "expected")
    backward = tmp_path / "backward"
    for batch in reversed(batches):
        compute_coverage(roads, [batch], backward, with_parts(8))
    assert_same_outputs(backward, tmp_path / "expected", totals)
    repartitioned = tmp_path / "repartitioned"
    compute_coverage(roads, batches[:2], repartitioned, with_parts(6))
    compute_coverage(roads, batches[2:], repartitioned, with_parts(9))
    assert_same_outputs(repartitioned, tmp_path / "expected", totals)
    pointer = json.loads((repartitioned / "state" / "CURRENT.json").read_text())
    assert pointer["partitioning"] == 9
    assert all(key.startswith("r9-") for key in pointer["parts"])


def cell_parts_along(line: LineString, resolution: int, part_resolution: int) -> set[str]:
    """The partition keys of the H3 cells a line runs through, by h3 at points 0.1 m apart."""
    metres = line.length * 111_000  # degrees to metres, roughly: more points than needed
    points = [line.interpolate(f, normalized=True) for f in np.linspace(0, 1, int(metres * 10) + 2)]
    cells = {h3.latlng_to_cell(point.y, point.x, resolution) for point in points}
    return {f"r{part_resolution}-{h3.cell_to_parent(cell, part_resolution)}" for cell in cells}


def part_files(out: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every partition file: its modification time (ns), inode and bytes."""
    files = (out / "state" / "parts").rglob("*.parquet")
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes())
        for p in files
    }


def one_drive_batch(roads: Path, folder: Path) -> tuple[Path, LineString]:
    """A matched batch of one trip over one short edge; the batch and the edge's line."""
    edges = read_edges(roads)
    road = edges[edges["length_m"] < 30].iloc[0]  # one short edge: one or two partitions
    drive = pd.DataFrame(
        {
            "edge_id": [road["edge_id"]],
            "trip_id": ["one-more"],
            "contributor_id": ["c9"],
            "from_offset_m": [0.0],
            "to_offset_m": [road["length_m"]],
            "entered_at": [pd.Timestamp("2026-11-01T08:00Z")],
            "exited_at": [pd.Timestamp("2026-11-01T08:00:05Z")],
        }
    )
    return write_matched_batch(folder, edges, drive, roads_dir=roads), road["geometry"]


@pytest.mark.shared_data
def test_an_update_rewrites_only_the_partitions_it_touches(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads, batches[:3], out, with_parts(9))
    pointer = json.loads((out / "state" / "CURRENT.json").read_text())
    before, cells_before = pointer["parts"], pointer["cell_parts"]
    files = part_files(out)
    small, line = one_drive_batch(roads, tmp_path / "small")
    compute_coverage(roads, [small], out, with_parts(9))
    pointer = json.loads((out / "state" / "CURRENT.json").read_text())
    after, cells_after = pointer["parts"], pointer["cell_parts"]
    changed = {key for key in after if before.get(key) != after[key]}
    assert 1 <= len(changed) <= 3 < len(after)
    changed_cells = {key for key in cells_after if cells_before.get(key) != cells_after[key]}
    assert set(cells_after) == set(cells_before)
    assert 1 <= len(changed_cells) < len(cells_after)
    assert changed_cells <= cell_parts_along(line, SETTINGS.h3_resolution, 9)
    changed |= changed_cells
    assert set(after) == set(before)  # every partition has its edges from the first update
    edge_files = [path for path in files if path.endswith("/edge_coverage.parquet")]
    assert len(edge_files) == len(after)
    for path, (mtime, inode, content) in files.items():  # what it did not touch is untouched
        if path.split("/")[2] not in changed:
            assert (out / path).stat().st_mtime_ns == mtime
            assert (out / path).stat().st_ino == inode
            assert (out / path).read_bytes() == content
    assert not (out / "edges.parquet").exists()  # no table of every edge
    totals = expected_folder(roads, [*batches[:3], small], tmp_path / "expected")
    assert_same_outputs(out, tmp_path / "expected", totals)


@pytest.mark.shared_data
def test_an_update_reads_only_the_partitions_it_touches(
    roads: Path, batches: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads, batches[:3], out, with_parts(9))
    small, line = one_drive_batch(roads, tmp_path / "small")
    read: list[Path] = []
    read_table, load = pq.read_table, np.load

    def recorded_read(source: object, *args: object, **kwargs: object) -> pa.Table:
        read.append(Path(str(source)))
        return read_table(source, *args, **kwargs)

    def recorded_load(file: object, *args: object, **kwargs: object) -> object:
        assert kwargs.get("mmap_mode") == "r", "an array of every edge read whole"
        read.append(Path(str(file)))
        return load(file, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", recorded_read)
    monkeypatch.setattr(np, "load", recorded_load)
    compute_coverage(roads, [small], out, with_parts(9))
    monkeypatch.undo()
    (cache,) = (out / "network").iterdir()
    touched = cell_parts_along(line, SETTINGS.h3_resolution, 9)  # h3, not the cache
    parts = json.loads((cache / "network.json").read_text())["parts"]
    assert len(touched) < len(parts)
    per_part = [p for p in read if p.parent.name in ("cells", "polygons", "edges")]
    per_part += [p.parents[1] for p in read if "parts" in p.parts]  # parts/<key>/<gen>/x
    assert per_part and {p.stem if p.suffix else p.name for p in per_part} <= touched
    region = {p.name for p in read if p.parent == cache}
    assert region <= {"runs.parquet", "highways.parquet", "part_road.parquet",
                      "coarse_polygons.parquet"}  # fmt: skip
    totals = expected_folder(roads, [*batches[:3], small], tmp_path / "expected")
    assert_same_outputs(out, tmp_path / "expected", totals)


@pytest.mark.shared_data
def test_the_summary_reads_the_driven_rows_of_the_last_weeks_updates_alone(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    for batch in batches:  # four updates 15 days apart
        compute_coverage(roads, [batch], out, with_parts(8))
    latest = json.loads((out / "state" / "CURRENT.json").read_text())["trips"]
    as_of = max(latest.values())
    old = [gen for gen, last in latest.items() if last < as_of - 7 * 86_400_000]
    assert len(old) == 3
    for generation in old:  # an update that read them would stop: a damaged folder
        (out / "state" / "trips" / generation / "driven.parquet").unlink()
    asked = pd.Timestamp(as_of, unit="ms", tz="UTC")  # the default as_of, asked: all written anew
    compute_coverage(roads, [], out, with_parts(8), as_of=asked)
    totals = expected_folder(roads, batches, tmp_path / "expected")
    assert 0 < totals["weekly_driven_km"] < totals["total_km"]  # the last week's alone
    assert_same_outputs(out, tmp_path / "expected", totals)


@pytest.mark.shared_data
def test_a_rerun_with_nothing_new_reads_no_state(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    summary = compute_coverage(roads, batches[:2], out, with_parts(8))
    shutil.rmtree(out / "state" / "parts")  # not read when nothing is new: no error
    shutil.rmtree(out / "network")
    data = [p for p in out.rglob("*") if p.is_file() and p.name != ".roadcover.lock"]
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in data}
    assert compute_coverage(roads, batches[:2], out, with_parts(8)) == summary
    assert compute_coverage(roads, [batches[1]], out, with_parts(8)) == summary
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == files
    as_of = pd.Timestamp("2026-12-01T00:00Z")  # other outputs: from the rollup alone
    later = compute_coverage(roads, batches[:2], out, with_parts(8), as_of=as_of)
    assert later["as_of"] == as_of.isoformat() and later["unique_km"] == summary["unique_km"]


def write_old_state(state: CoverageState, old: Path, pointer: dict, layout: str) -> Path:
    """Write ``state`` as the unpartitioned format or format 2 (every table per partition)."""
    version = pointer["version"]
    if layout == "format 2":  # one partition, as format 2's whole-state writer wrote it
        pointer = {**pointer, "format": 2, "parts": {"all": version}, "partitioning": "all",
                   "rollup": None}  # fmt: skip
    folder = old / version if layout == "unpartitioned" else old / "parts" / "all" / version
    folder.mkdir(parents=True)
    for name in STATE_TABLES:  # the three tables of the state, trips and all
        table = pa.Table.from_pandas(getattr(state, name), preserve_index=False)
        pq.write_table(table, folder / f"{name}.parquet")
    (old / "CURRENT.json").write_text(json.dumps(pointer))
    return folder


@pytest.mark.shared_data
@pytest.mark.parametrize("layout", ["unpartitioned", "format 2"])
def test_a_state_of_an_older_format_is_written_again_on_its_next_update(
    roads: Path, batches: list[Path], tmp_path: Path, layout: str
) -> None:
    edges = read_edges(roads)
    runs = edge_cell_runs(edges, SETTINGS.h3_resolution)
    lengths = edges.set_index("edge_id")["length_m"]
    states = [empty_state()]
    ids = [_batch_id(batch) for batch in batches]
    for batch, batch_id in zip(batches, ids, strict=True):
        counted = counted_segments(batch, lengths, SETTINGS)
        states.append(merge_states(states[-1], state_of_batch(counted, runs, batch_id)))
    old = tmp_path / "coverage" / "state"
    pointer = {
        "version": "0123456789abcdef",
        "batches": sorted(ids[:2]),
        "roads": roads_identity(roads),
    }
    folder = write_old_state(states[2], old, pointer, layout)
    compute_coverage(roads, batches[2:], tmp_path / "coverage", with_parts(8))
    totals = expected_folder(roads, batches, tmp_path / "expected")
    assert_same_outputs(tmp_path / "coverage", tmp_path / "expected", totals)
    current = json.loads((old / "CURRENT.json").read_text())
    assert current["format"] == 3 and current["partitioning"] == 8
    assert len(current["trips"]) == 1  # the old state's trips and the new batches', together
    assert folder.is_dir()  # what the pointer named before is kept one update
    whole = read_state(old)  # the state of every batch, as the report reads it
    for name in STATE_TABLES:
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(states[-1], name))


@pytest.mark.shared_data
def test_a_state_with_a_region_edge_table_is_rewritten_per_partition_on_its_next_update(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads, batches[:2], out, with_parts(8))
    current = out / "state" / "CURRENT.json"  # as the layout with a region-wide edges.parquet
    pointer = json.loads(current.read_text())
    del pointer["edge_layout"]
    current.write_text(json.dumps(pointer))
    for edge_file in (out / "state" / "parts").rglob("edge_coverage.parquet"):
        edge_file.unlink()
    (out / "edges.parquet").write_bytes(b"the region's edge table")
    with pytest.raises(InputDataError, match="holds no edge coverage"):
        read_edge_table(out)
    compute_coverage(roads, batches[2:], out, with_parts(8))
    assert json.loads(current.read_text())["edge_layout"] == 1
    assert not (out / "edges.parquet").exists()
    totals = expected_folder(roads, batches, tmp_path / "expected")
    assert_same_outputs(out, tmp_path / "expected", totals)


def test_a_partition_resolution_finer_than_the_cells_is_refused(tmp_path: Path) -> None:
    from pipeline.coverage.partitions import load_network

    with pytest.raises(ConfigError, match="partition_resolution is 10, finer than"):
        load_network(pd.DataFrame, "0" * 64, tmp_path, 9, 10)


@pytest.mark.shared_data
def test_an_update_reads_the_network_cache_not_the_roads_edge_table(
    roads: Path, batches: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads, batches[:2], out, with_parts(8))

    def refuse(roads_dir: Path) -> None:
        raise AssertionError(f"read the edge table of {roads_dir}")

    monkeypatch.setattr("pipeline.coverage.update.read_edges", refuse)
    compute_coverage(roads, batches[2:], out, with_parts(8))
    totals = expected_folder(roads, batches, tmp_path / "expected")
    assert_same_outputs(out, tmp_path / "expected", totals)


@pytest.mark.shared_data
def test_a_network_cache_of_the_older_format_is_computed_again(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads, batches[:2], out, with_parts(8))
    (cache,) = (out / "network").iterdir()
    meta = json.loads((cache / "network.json").read_text())
    (cache / "network.json").write_text(json.dumps({**meta, "format": NETWORK_FORMAT - 1}))
    records = np.load(cache / "edge_index" / "rows.npy")
    for name in ("edges", "edge_index", "cells", "polygons"):  # older formats had not all
        shutil.rmtree(cache / name)
    (cache / "part_road.parquet").unlink()
    (cache / "edge_index").mkdir()
    for name in EDGE_INDEX_COLUMNS:  # format 7: an array a column
        np.save(cache / "edge_index" / f"{name}.npy", records[name])
    compute_coverage(roads, batches[2:], out, with_parts(8))
    assert json.loads((cache / "network.json").read_text())["format"] == NETWORK_FORMAT
    assert {path.name for path in (cache / "edge_index").iterdir()} == {"rows.npy", "fence.npy"}
    totals = expected_folder(roads, batches, tmp_path / "expected")
    assert_same_outputs(out, tmp_path / "expected", totals)


@pytest.mark.shared_data
def test_the_network_gives_each_cells_polygon_its_own_or_a_new_one(
    roads: Path, tmp_path: Path
) -> None:
    from pipeline.coverage.cells import cell_polygons
    from pipeline.coverage.partitions import load_network

    sha256 = roads_identity(roads)["edges_sha256"]
    network = load_network(lambda: read_edges(roads), sha256, tmp_path, 9, "auto")
    known = network.cells_of(set(network.part_keys())).index
    ours = known.to_numpy()[[0, -1]]
    cells = np.array([*ours, network.parents(ours, 4)[0], 0x89283082803FFFF], dtype="int64")
    assert cells[-1] not in known  # a cell in California, not in Monaco
    expected = shapely.to_wkb(cell_polygons(cells))
    assert shapely.to_wkb(network.polygons(cells)).tolist() == expected.tolist()


NOTHING_NEW = """
import dataclasses, json, sys
from pathlib import Path
from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
roads, batch, out = (Path(a) for a in sys.argv[1:4])
settings = dataclasses.replace(load_config().coverage, partition_resolution=8)
summary = compute_coverage(roads, [batch], out, settings)
libraries = ["pandas", "geopandas", "shapely", "h3", "h3ronpy"]
print(json.dumps({"unique_km": summary["unique_km"],
                  "imported": [name for name in libraries if name in sys.modules]}))
"""


@pytest.mark.shared_data
def test_a_rerun_with_nothing_new_imports_no_data_library(
    roads: Path, batches: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    summary = compute_coverage(roads, batches[:1], out, with_parts(8))
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", NOTHING_NEW, str(roads), str(batches[0]), str(out)],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer == {"unique_km": summary["unique_km"], "imported": []}


BLOCK_BYTES = 256 * 37
"""The bytes of a block of the fence: 256 packed records of 8 + 4 + 8 + 1 + 8 + 8 bytes."""


def write_edge_index(tmp_path: Path, table: pd.DataFrame) -> int:
    """Write ``table`` (sorted by ``edge_id``) as ``edge_index/rows.npy`` and its fence.

    Returns where the records start in the file.
    """
    folder = tmp_path / EDGE_INDEX_DIR
    folder.mkdir()
    packed = np.dtype([(name, table[name].dtype) for name in EDGE_INDEX_COLUMNS])
    assert packed.itemsize == 37  # no padding
    records = np.empty(len(table), dtype=packed)
    for name in EDGE_INDEX_COLUMNS:
        records[name] = table[name].to_numpy()
    np.save(folder / "rows.npy", records)
    np.save(folder / "fence.npy", table["edge_id"].to_numpy()[::256])
    return (folder / "rows.npy").stat().st_size - 37 * len(table)


def random_edge_table(count: int) -> pd.DataFrame:
    """``count`` edges with random figures, sorted by ``edge_id`` (every third id from 10)."""
    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(np.arange(10, 10**6, 3), size=count, replace=False))
    return pd.DataFrame({
        "edge_id": ids, "part": rng.integers(0, 7, len(ids)).astype("int32"),
        "canonical_id": rng.choice(ids, len(ids)), "flip": rng.random(len(ids)) < 0.5,
        "length_mm": rng.integers(1, 10**6, len(ids)), "length_m": rng.random(len(ids)),
    })  # fmt: skip


def asked_ids(ids: np.ndarray) -> np.ndarray:
    """Ids at block borders (blocks 0-3), one alone in block 10 and in 12, absent, outside.

    Their blocks: 0, 1, 2, 3, 10, 12 and 19 (the last, of 136 rows: its last id, and ``10**7``,
    above every id).
    """
    borders = ids[[0, 255, 256, 511, 512, 768]].tolist()
    return np.array([*borders, ids[700], ids[700] + 1, 5, 10**7, ids[300], ids[2600],
                     ids[3100], ids[-1]], dtype="int64")  # fmt: skip


@pytest.mark.parametrize(
    ("request_bytes", "first_blocks"),
    [
        (0, [(0, 4), (10, 11), (12, 13), (19, 20)]),  # adjacent blocks joined alone
        (10_000, [(0, 4), (10, 13), (19, 20)]),  # and those a block apart (9,472 B < 10,000)
        (50_000, [(0, 20)]),  # the whole file: 185,000 B, less than 3 ranges' 221,336
        (10**9, [(0, 20)]),  # the whole file
    ],
)
def test_looking_up_edges_by_byte_ranges_gives_their_rows_and_their_roads_rows(
    request_bytes: int, first_blocks: list[tuple[int, int]], tmp_path: Path
) -> None:
    """5,000 edges (20 blocks of the fence); ids at block borders, absent, outside.

    The expected rows are a pandas join of the table written here with ``np.save``; the
    blocks each read reads are worked out by hand from the ids' rows.
    """
    table = random_edge_table(5_000)
    start = write_edge_index(tmp_path, table)
    calls: list[list[tuple[int, int]]] = []

    def read(name: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        assert name == "edge_index/rows.npy"
        calls.append(ranges)
        data = (tmp_path / name).read_bytes()
        return [data[low:high] for low, high in ranges]

    ids = table["edge_id"].to_numpy()
    asked = asked_ids(ids)
    fence = np.load(tmp_path / EDGE_INDEX_DIR / "fence.npy")
    rows = edge_rows_by_ranges(read, fence, asked, request_bytes)

    edges = table[table["edge_id"].isin(asked)]
    roads = table[table["edge_id"].isin(edges["canonical_id"])]
    expected = pd.concat([edges, roads]).drop_duplicates("edge_id").sort_values("edge_id")
    got = pd.DataFrame({name: rows.rows[name] for name in EDGE_INDEX_COLUMNS})
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    assert set(rows.asked) == set(asked) | set(edges["canonical_id"])

    assert calls[0] == [(0, 512)]  # the header
    size = (tmp_path / EDGE_INDEX_DIR / "rows.npy").stat().st_size
    blocks = [[((low - start) // BLOCK_BYTES, -(-(high - start) // BLOCK_BYTES))
               for low, high in call] for call in calls[1:]]  # fmt: skip
    assert all(
        (low - start) % BLOCK_BYTES == 0 and ((high - start) % BLOCK_BYTES == 0 or high == size)
        for call in calls[1:] for low, high in call
    )  # whole blocks  # fmt: skip
    assert blocks[0] == first_blocks
    read_blocks = [b for call in blocks for low, high in call for b in range(low, high)]
    assert len(read_blocks) == len(set(read_blocks))  # none read twice
    road_blocks = set(np.flatnonzero(table["edge_id"].isin(roads["edge_id"])) // 256)
    assert road_blocks <= set(read_blocks)
    if request_bytes == 0:  # the blocks of the roads not read yet, and no other
        assert set(read_blocks) == road_blocks | {b for low, high in first_blocks
                                                  for b in range(low, high)}  # fmt: skip

    network = Network(tmp_path, 11, 9, tuple(f"p{n}" for n in range(7)), rows)
    lengths = network.edge_lengths(asked)
    assert lengths.to_dict() == edges.set_index("edge_id")["length_m"].to_dict()
    with pytest.raises(LookupError, match="was not looked up"):
        network.edge_parts(np.setdiff1d(ids, rows.asked)[:1])


def test_the_local_edge_index_gives_the_rows_of_ids_at_block_borders_absent_and_outside(
    tmp_path: Path,
) -> None:
    """The memory-mapped file, looked up through its fence, against a pandas join."""
    table = random_edge_table(5_000)
    write_edge_index(tmp_path, table)
    parts = tuple(f"p{n}" for n in range(7))
    network = Network(tmp_path, 11, 9, parts)
    asked = asked_ids(table["edge_id"].to_numpy())
    edges = table[table["edge_id"].isin(asked)].set_index("edge_id")
    lengths = network.edge_lengths(asked)
    assert lengths.to_dict() == edges["length_m"].to_dict()
    known = asked[np.isin(asked, table["edge_id"])]
    expected_parts = [parts[code] for code in edges.loc[known, "part"]]
    assert network.edge_parts(known).tolist() == expected_parts
    with pytest.raises(KeyError, match=f"edge_id {asked[7]} is not an edge"):
        network.edge_parts(asked)
    roads = table[table["edge_id"].isin(edges["canonical_id"])].set_index("edge_id")
    expected = pd.concat([edges, roads])[["canonical_id", "flip", "length_mm"]]
    expected = expected[~expected.index.duplicated()].sort_index()
    pd.testing.assert_frame_equal(network.canonical(asked), expected)
