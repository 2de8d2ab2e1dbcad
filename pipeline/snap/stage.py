"""The snap stage: clean points of a traces batch -> matched points, segments and quality.

The batch's trips, partition file by partition file, are cut into tasks of ``TRIPS_PER_TASK``
trips. Each task (on a Dask worker, or in-process for a batch of one task or one worker) reads
its trips' fixes from the partitions itself, matches them and writes its part of the outputs
(sorted by trace and time, or trip and sequence) to a staging folder; only the per-trip
quality rows come back. The parts are then concatenated in
task order, a row group at a time, so no process ever holds the whole batch: memory is bounded
by a task and a partition file. Each worker loads the roads folder's match network (built once
and cached as ``match_network.npz``) once, not per task. Matching a trip depends on nothing
but the trip, so the outputs are the same with one worker or many. ``MATCHED_DIR`` holds
``matched_points.parquet``, ``matched_segments.parquet``, ``match_quality.parquet`` (see
docs/data-contracts.md) and ``meta.json``, which is written last and records the roads the batch
was matched on (:mod:`pipeline.roads.identity`). A run holds ``MATCHED_DIR``'s lock, and
refuses, before writing its outputs, a batch whose fixes mostly lie farther than the search
radius from every road (``snap.min_fixes_near_roads``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import SnapSettings
from pipeline.contracts import (
    MATCH_QUALITY,
    MATCHED_POINTS,
    MATCHED_SEGMENTS,
    POINTS,
    TRIPS,
    in_key_order,
)
from pipeline.errors import InputDataError
from pipeline.io import (
    STAGED_SUFFIX,
    STAGING_DIR,
    arrow_array,
    arrow_strings,
    batch_of_part,
    committed_batches,
    concat_tables,
    distinct_texts,
    numpy_values,
    read_arrow,
    write_json,
    write_lines,
    write_points,
    write_table,
)
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.parallel import run_tasks
from pipeline.roads.identity import describe_roads, roads_identity
from pipeline.roads.store import read_roads_meta
from pipeline.snap.group_stats import group_means, group_quantiles, group_sums
from pipeline.snap.hmm_kernels import MATCHED, NO_CANDIDATE
from pipeline.snap.match import UNMATCHED_REASONS, TripsMatch, match_trips, substring_lines
from pipeline.snap.network import MatchNetwork, prepare_match_network
from pipeline.snap.params import MatchParams

if TYPE_CHECKING:  # a sharded region's trips are grouped in a DataFrame; the stage uses Arrow
    import pandas as pd

log = logging.getLogger(__name__)

POINT_COLUMNS = ["trace_id", "trip_id", "contributor_id", "observed_at", "lon", "lat",
                 "source_row"]  # fmt: skip
TRIPS_PER_TASK = 64
POINTS_FILE = "matched_points.parquet"
SEGMENTS_FILE = "matched_segments.parquet"
QUALITY_FILE = "match_quality.parquet"
META_FILE = "meta.json"
BREAK_FACTOR = 0.8
NS_PER_S, NS_PER_MS = 1_000_000_000, 1_000_000

TripFiles = dict[str, np.ndarray]
"""The trips of a batch: ``trip_id`` and ``file`` (the partition holding its fixes), row by row."""


def match_params(settings: SnapSettings) -> MatchParams:
    """Return the matcher parameters of the snap settings."""
    return MatchParams(
        sigma_m=settings.sigma_m,
        beta_m=settings.beta_m,
        search_radius_m=settings.search_radius_m,
        max_search_radius_m=settings.max_search_radius_m,
        max_candidates=settings.max_candidates,
        max_speed_mps=settings.max_speed_mps,
        max_route_m=settings.max_route_m,
        uturn_penalty=settings.uturn_penalty,
        max_outlier_points=settings.max_outlier_points,
        estimate_beta=settings.estimate_beta,
    )


def snap_traces(
    roads_dir: Path,
    traces_dir: Path,
    matched_dir: Path,
    settings: SnapSettings,
    batch_id: str | None = None,
    scheduler_address: str | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Match every trip of a traces batch (or of all batches) to the road graph.

    The whole run holds ``matched_dir``'s lock. ``meta.json``, which marks a complete output
    and records the roads it was made with, is removed before the outputs are replaced and
    written after them.

    Parameters
    ----------
    roads_dir
        Roads folder (``roadcover roads build``).
    traces_dir
        Traces dataset (``roadcover ingest``).
    matched_dir
        Output folder.
    settings
        Matcher settings and worker count.
    batch_id
        Only this ingest batch; all batches when None.
    scheduler_address
        An existing Dask scheduler (config ``dask.scheduler_address``); default: the
        ``DASK_SCHEDULER_ADDRESS`` environment variable, else a LocalCluster.
    lock_timeout_s
        How long to wait for another writer of ``matched_dir`` (config ``lock_timeout_s``).

    Returns
    -------
    dict
        What ``meta.json`` holds: counts, timings, the batch and the roads.

    Raises
    ------
    InputDataError
        If the batch has no points, or fewer than ``settings.min_fixes_near_roads`` of its
        fixes lie within ``settings.max_search_radius_m`` of a road (then nothing is written).
    """
    started, since = time.perf_counter(), time.time()
    trip_files = batch_trip_files(traces_dir, batch_id)
    trips = read_batch_trips(traces_dir, batch_id)
    roads = roads_identity(roads_dir)
    with folder_lock(matched_dir, lock_timeout_s):
        params = match_params(settings)
        staging = (matched_dir / STAGING_DIR).absolute()
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
        tasks = _tasks_on_networks(roads_dir, trip_files, staging)
        try:
            networks = Networks(
                str(roads_dir.absolute()), union_cache_mb(roads_dir, settings), lock_timeout_s
            )  # absolute: a shared worker may run in another folder
            quality = _match_batch(
                tasks, trips, networks, params, settings.workers, scheduler_address
            )
            check_near_roads(
                numpy_values(quality.column("far_points")),
                numpy_values(quality.column("points")),
                trip_files, settings, (traces_dir, batch_id), (roads_dir, roads),
            )  # fmt: skip
            quality = quality.drop_columns(["far_points"])
            (matched_dir / META_FILE).unlink(missing_ok=True)  # incomplete until rewritten
            _write_outputs(matched_dir, tasks, quality)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        meta = {
            "batch_id": batch_id,
            "trips": quality.num_rows,
            "points": int(numpy_values(quality.column("points")).sum()),
            "matched_points": int(numpy_values(quality.column("matched_points")).sum()),
            "segments": int(pq.ParquetFile(matched_dir / SEGMENTS_FILE).metadata.num_rows),
            "matched_km": float(numpy_values(quality.column("matched_km")).sum()),
            "seconds": round(time.perf_counter() - started, 3),
            "params": params.__dict__,
            "roads": roads,
        }
        if any(task.shards for task in tasks):
            meta["shard_network_rebuilds"] = _union_rebuilds(roads_dir, since, networks)
        write_json(meta, matched_dir / META_FILE)
    return meta


def union_cache_mb(roads_dir: Path, settings: SnapSettings) -> float:
    """Return the disk (MB) a sharded region's union networks may take together.

    ``snap.shard_network_cache_mb``, else :data:`UNION_CACHE_MB_PER_SHARD` per shard of the
    region (0 for an unsharded region, which has no unions).
    """
    if settings.shard_network_cache_mb is not None:
        return settings.shard_network_cache_mb
    shards = read_roads_meta(roads_dir).get("shards", {}).get("cells", [])
    return UNION_CACHE_MB_PER_SHARD * len(shards)


def _union_rebuilds(roads_dir: Path, since: float, networks: Networks) -> int:
    """Return how many union networks were built again after being emptied since ``since``."""
    from pipeline.snap.shards import NETWORKS_DIR, rebuilds_since

    rebuilds = rebuilds_since(roads_dir / NETWORKS_DIR, since)
    if rebuilds:
        log.warning(
            "snap: %d union networks were built again after being emptied: the unions this batch "
            "needs take more than the %g MB of snap.shard_network_cache_mb; raise it",
            rebuilds, networks.shard_network_cache_mb,
        )  # fmt: skip
    return rebuilds


def _match_batch(
    tasks: list[MatchTask],
    trips: pa.Table,
    networks: Networks,
    params: MatchParams,
    workers: int | None,
    scheduler_address: str | None,
) -> pa.Table:
    """Run the match tasks; return the quality rows with the trips' ingest verdicts.

    A trip the trips table lacks (or whose verdict is null) is implausible, of trust 0.
    """
    results = run_tasks(
        match_task, tasks, "match chunks", workers, scheduler_address,
        networks=networks, params=params,
    )  # fmt: skip
    _partition_fixes.cache_clear()  # the last file read, kept for a next task in this process
    quality = pa.concat_tables(results)
    verdicts = {
        trip: (plausible or False, trust or 0.0)
        for trip, plausible, trust in zip(
            *(trips.column(name).to_pylist() for name in ("trip_id", "plausible", "trust_score")),
            strict=True,
        )
    }
    found = [verdicts.get(trip, (False, 0.0)) for trip in quality.column("trip_id").to_pylist()]
    plausible = np.array([verdict[0] for verdict in found], dtype=bool)
    trust = np.array([verdict[1] for verdict in found], dtype="float64")
    quality = quality.append_column("plausible", arrow_array(plausible))
    return quality.append_column("trust_score", arrow_array(trust))


def check_near_roads(
    far_points: np.ndarray,
    points: np.ndarray,
    trip_files: TripFiles,
    settings: SnapSettings,
    traces: tuple[Path, str | None],
    roads: tuple[Path, dict[str, Any]],
) -> None:
    """Refuse a batch whose fixes mostly lie farther than the search radius from every road.

    Such fixes cannot be matched (``no_candidate``): the traces are of another region than
    the roads, or the roads are of too small an extent. A result of the few fixes left would
    look like a run that found little coverage, so it is an error instead.

    Parameters
    ----------
    far_points, points
        Per trip: fixes with no road within ``settings.max_search_radius_m``, and all fixes.
    trip_files
        The batch's partition files (:func:`batch_trip_files`), for the fixes' extent.
    settings
        ``min_fixes_near_roads`` (the share required) and ``max_search_radius_m``.
    traces, roads
        The traces folder and batch, the roads folder and its identity (for the message).

    Raises
    ------
    InputDataError
        If the share of fixes near a road is below ``settings.min_fixes_near_roads``.
    """
    total = int(points.sum())
    near = total - int(far_points.sum())
    if total == 0 or near >= settings.min_fixes_near_roads * total:
        return
    (traces_dir, batch_id), (roads_dir, identity) = traces, roads
    extent = _fixes_extent(sorted({str(file) for file in trip_files["file"]}))
    raise InputDataError(
        f"{traces_dir} (batch {batch_id or '(all)'}): only {near} of {total} fixes "
        f"({100 * near / total:.1f}%) lie within {settings.max_search_radius_m:g} m of a road "
        f"of {roads_dir} ({describe_roads(identity)}); the fixes lie in {extent}; snap them "
        "with the roads of their region (or lower snap.min_fixes_near_roads, now "
        f"{settings.min_fixes_near_roads:g})"
    )


def _fixes_extent(files: list[str]) -> str:
    """Return the fixes' bbox ``[xmin, ymin, xmax, ymax]`` from the files' column statistics."""
    low, high = [np.inf, np.inf], [-np.inf, -np.inf]
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        names = metadata.schema.to_arrow_schema().names
        for group in range(metadata.num_row_groups):
            for axis, name in enumerate(("lon", "lat")):
                stats = metadata.row_group(group).column(names.index(name)).statistics
                if stats is None or not stats.has_min_max:
                    return "an unknown extent"
                low[axis] = min(low[axis], stats.min)
                high[axis] = max(high[axis], stats.max)
    return "[" + ", ".join(f"{value:.4f}" for value in (*low, *high)) + "]"


def batch_point_files(traces_dir: Path, batch_id: str | None) -> list[Path]:
    """Return the points partition files of one batch (all batches when None).

    Only the parts of committed batches (with a report, :func:`~pipeline.io.committed_batches`)
    are taken: an ingest writing or rolling back a batch at the same time is not seen.
    """
    pattern = f"part-{batch_id}-*.parquet" if batch_id else "part-*.parquet"
    committed = committed_batches(traces_dir)
    found = sorted((traces_dir / "points").glob(f"date=*/h3=*/{pattern}"))
    files = [path for path in found if batch_of_part(path) in committed]
    if not files:
        raise InputDataError(
            f"{traces_dir}: no points of batch {batch_id or '(any)'}; run roadcover ingest first"
        )
    return files


def batch_trip_files(traces_dir: Path, batch_id: str | None) -> TripFiles:
    """Every trip of a batch and the partition file holding its fixes.

    Reads only the ``trip_id`` column of each file (a trip never spans partitions).
    """
    files = [str(path.absolute()) for path in batch_point_files(traces_dir, batch_id)]
    ids = [distinct_texts(f, POINTS, "trip_id") for f in files]
    return {
        "trip_id": np.array(pa.chunked_array(ids, type=pa.string()).to_pylist(), dtype=object),
        "file": np.repeat(np.array(files, dtype=object), [len(i) for i in ids]),
    }


def read_batch_trips(traces_dir: Path, batch_id: str | None) -> pa.Table:
    """Read the trips' ``trip_id, plausible, trust_score`` of one batch (all when None)."""
    pattern = f"part-{batch_id}.parquet" if batch_id else "part-*.parquet"
    committed = committed_batches(traces_dir)
    found = sorted((traces_dir / "trips").glob(pattern))
    files = [path for path in found if batch_of_part(path) in committed]
    columns = ["trip_id", "plausible", "trust_score"]
    tables = [read_arrow(f, TRIPS, columns=columns) for f in files]
    return pa.concat_tables(tables) if tables else TRIPS.schema.empty_table().select(columns)


@dataclass(frozen=True)
class MatchTask:
    """Trips to match together: which partition files hold them, and where to stage outputs.

    ``trips_by_file`` maps a file to the ids of the task's trips in it, or to None when the
    task takes every trip of the file (then the file is read whole, without a row filter).
    """

    index: int
    trips_by_file: dict[str, list[str] | None]
    staging_dir: Path
    shards: tuple[str, ...] | None = None
    """The shards whose roads to match on, in a sharded region (their cells, sorted)."""

    def part(self, output: str) -> Path:
        """Return where the task stages its part of ``output`` (``matched_points.parquet``)."""
        name = f"part-{self.index:05d}{STAGED_SUFFIX}"
        return self.staging_dir / output.removesuffix(".parquet") / name


def _tasks_on_networks(roads_dir: Path, trip_files: TripFiles, staging: Path) -> list[MatchTask]:
    """Cut the batch into match tasks; in an unsharded region, build its match network first.

    In a sharded region (:mod:`pipeline.snap.shards`) each task's trips share the shards they
    are matched on, and the task names those shards: the task builds (or loads) their network
    itself, on its worker (:func:`pipeline.snap.shards.shard_network`). The shards' modules
    (which import geopandas, osmium and OSMnx) are imported only for a sharded region.
    """
    trips_in_file = dict(Counter(str(file) for file in trip_files["file"]))
    if "shards" not in read_roads_meta(roads_dir):  # as pipeline.roads.shards.is_sharded
        prepare_match_network(roads_dir)  # build and cache the network once, before the workers
        return _match_tasks(trip_files, staging, trips_in_file)
    import pandas as pd

    from pipeline.snap.shards import group_trips

    tasks: list[MatchTask] = []
    for shards, trips in group_trips(pd.DataFrame(trip_files), roads_dir):
        for task in _match_tasks(trips, staging, trips_in_file, first_index=len(tasks)):
            tasks.append(replace(task, shards=shards))
    return tasks


def _match_tasks(
    trip_files: TripFiles | pd.DataFrame,
    staging: Path,
    trips_in_file: dict[str, int],
    first_index: int = 0,
) -> list[MatchTask]:
    """Cut the trips into tasks of at most ``TRIPS_PER_TASK``, taken file by file.

    So each partition file is read by as few tasks as possible (by one, when it holds fewer
    trips than that). A task that takes all of a file's ``trips_in_file`` (the batch's trips
    per file) names the file with None: it reads the file whole.
    """
    files = np.asarray(trip_files["file"], dtype=object)
    trip_ids = np.asarray(trip_files["trip_id"], dtype=object)
    order = np.lexsort((trip_ids, files))
    files, trip_ids = files[order], trip_ids[order].tolist()
    file_starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
    tasks = []
    for index, start in enumerate(range(0, len(files), TRIPS_PER_TASK)):
        stop = min(start + TRIPS_PER_TASK, len(files))
        cuts = [start, *file_starts[(file_starts > start) & (file_starts < stop)], stop]
        by_file = {
            str(files[a]): None if b - a == trips_in_file[files[a]] else trip_ids[a:b]
            for a, b in itertools.pairwise(cuts)
        }
        tasks.append(MatchTask(first_index + index, by_file, staging))
    return tasks


UNION_CACHE_MB_PER_SHARD = 64.0
"""The default disk of a sharded region's union networks, per shard: the 32x test network's
batch of 29 M fixes needed 802 unions (628 of two shards, 174 of three), 14.1 GB for 377
shards, 37 MB a shard (docs/workflow.md, "Match networks of shards")."""


@dataclass(frozen=True)
class Networks:
    """Where the match tasks find their networks, and the settings of the shards' cache."""

    roads_dir: str
    """The roads folder, absolute."""
    shard_network_cache_mb: float
    """The disk a sharded region's cached union networks may take (``shard_network``)."""
    lock_timeout_s: float = DEFAULT_TIMEOUT_S
    """How long a task waits for another building the network it needs."""


def match_task(task: MatchTask, networks: Networks, params: MatchParams) -> pa.Table:
    """Read, match and stage a task's trips; return their quality rows.

    Run on a Dask worker (or in-process): the fixes are read here, from the partitions, and
    the matched points and segments are written here, to the task's staged parts. The match
    network is loaded (or, for shards, built) here too, once per worker.
    """
    tables = [_read_trips(Path(f), ids) for f, ids in task.trips_by_file.items()]
    points = sort_trips(pa.concat_tables(tables).combine_chunks())
    net = _worker_network(networks, task.shards)
    matched, segments, quality = match_chunk(points, net, params)
    matched = sort_rows(matched, ["trace_id", "observed_at"])
    lon, lat = (numpy_values(matched.column(c)) for c in ("lon", "lat"))
    write_points(
        matched.drop_columns(["lon", "lat"]), lon, lat, task.part(POINTS_FILE), MATCHED_POINTS
    )
    write_lines(
        segments.columns, segments.coords, segments.offsets, task.part(SEGMENTS_FILE),
        MATCHED_SEGMENTS,
    )  # fmt: skip
    return quality


def _read_trips(path: Path, trip_ids: list[str] | None) -> pa.Table:
    """Read the fixes of some trips (all when None) of a partition file.

    The file is read whole and filtered in Arrow (as a row filter on the read would, whose
    expression would import pandas).
    """
    status = os.stat(path)
    table = _partition_fixes(str(path), (status.st_dev, status.st_ino, status.st_size,
                                         status.st_mtime_ns))  # fmt: skip
    if trip_ids is None:
        return table
    return table.filter(pc.is_in(table.column("trip_id"), value_set=arrow_strings(trip_ids)))


@functools.lru_cache(maxsize=1)
def _partition_fixes(path: str, stamp: tuple[int, int, int, int]) -> pa.Table:
    """Read a partition file's fixes; the last file read is kept, by its path and ``stamp``.

    The tasks take a file's trips in turn, so a file whose trips are cut between two tasks is
    read by both, one after the other: the second (on the same worker) takes the table the
    first read. ``stamp`` (device, inode, size, modification time) is part of the key, so a
    file written anew since is read anew.
    """
    return read_arrow(Path(path), POINTS, columns=POINT_COLUMNS)


def sort_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    """Return ``table`` sorted by ``keys`` (ascending, stable); as it is if already sorted."""
    if in_key_order(table, keys):
        return table
    return table.take(pc.sort_indices(table, [(key, "ascending") for key in keys]))


def sort_trips(fixes: pa.Table) -> pa.Table:
    """Return fixes sorted by ``trip_id``, then ``observed_at``, as :func:`sort_rows` sorts them.

    A task's fixes come file after file, each trip's fixes a run of rows in time order (a trip
    never spans partition files): the runs are put in the order of their trips (a stable sort
    of a few dozen ids, not of every row). That is the rows' stable sort when the result is in
    key order, which is checked: otherwise the rows are sorted.
    """
    keys = ["trip_id", "observed_at"]
    if in_key_order(fixes, keys):
        return fixes
    bounds = _run_bounds(fixes.column("trip_id"))
    firsts = fixes.column("trip_id").take(arrow_array(bounds[:-1]))
    order = numpy_values(pc.sort_indices(firsts).cast(pa.int64()))
    sizes = np.diff(bounds)[order]
    ends = np.cumsum(sizes)
    rows = np.arange(ends[-1]) + np.repeat(bounds[:-1][order] - (ends - sizes), sizes)
    runs_sorted = fixes.take(arrow_array(rows))
    return runs_sorted if in_key_order(runs_sorted, keys) else sort_rows(fixes, keys)


@dataclass
class Segments:
    """Matched segments: every column of ``matched_segments`` but the geometry, and its lines.

    Segment ``i``'s line is ``coords[offsets[i]:offsets[i + 1]]`` (lon, lat); rows are in
    ``(trip_id, seq)`` order.
    """

    columns: pa.Table
    coords: np.ndarray
    offsets: np.ndarray


def match_chunk(
    points: pa.Table, net: MatchNetwork, params: MatchParams
) -> tuple[pa.Table, Segments, pa.Table]:
    """Match the trips of a chunk; return matched points, segments and per-trip quality.

    ``points`` is sorted by trip, then time. The matched points' positions (snapped, or the
    fix's own where it was not matched) are their ``lon`` and ``lat`` columns. Only the
    matching itself runs per trip; the output tables are assembled once per chunk from the
    concatenated arrays.
    """
    bounds = _run_bounds(points.column("trip_id"))
    seconds = numpy_values(points.column("observed_at").cast(pa.int64())) / 1000.0
    lon, lat = (numpy_values(points.column(c)) for c in ("lon", "lat"))
    trips = match_trips(net, lon, lat, seconds, bounds, params)
    fixes = {name: getattr(trips, name) for name in _FIX_FIELDS}
    firsts = points.take(arrow_array(bounds[:-1]))
    segments = _segments(net, trips, firsts)
    quality = _trip_quality(firsts, bounds, fixes, segments, trips.route_bounds, params)
    return _matched_points(net, points, fixes), segments, quality


_FIX_FIELDS = ("edge", "offset_m", "lon", "lat", "distance_m", "status", "segment", "is_break")


def _run_bounds(ids: pa.ChunkedArray) -> np.ndarray:
    """Where each run of equal ``ids`` starts, and the length: run ``i`` is ``[b[i], b[i+1])``."""
    changed = pc.not_equal(ids.slice(1), ids.slice(0, max(len(ids) - 1, 0)))
    return np.flatnonzero(np.r_[True, numpy_values(changed), True])


@functools.lru_cache(maxsize=2)
def _worker_network(networks: Networks, shards: tuple[str, ...] | None) -> MatchNetwork:
    """Return the match network, loaded once per worker process.

    The roads folder's, or in a sharded region the ``shards``'
    (:func:`pipeline.snap.shards.shard_network`).
    """
    if shards is None:
        return prepare_match_network(networks.roads_dir)
    from pipeline.snap.shards import shard_network

    return shard_network(
        Path(networks.roads_dir), shards, networks.shard_network_cache_mb, networks.lock_timeout_s
    )


def _matched_points(net: MatchNetwork, points: pa.Table, fixes: dict[str, np.ndarray]) -> pa.Table:
    """Build the matched points' columns, and their positions ``lon``, ``lat``, in trip order."""
    matched = fixes["edge"] >= 0
    safe_edge = np.where(matched, fixes["edge"], 0)
    raw_lon, raw_lat = (numpy_values(points.column(c)) for c in ("lon", "lat"))
    columns = {
        "trace_id": points.column("trace_id"),
        "trip_id": points.column("trip_id"),
        "observed_at": points.column("observed_at"),
        "edge_id": _where_matched(net.edge_id[safe_edge], matched),
        "u": _where_matched(net.edge_u_id[safe_edge], matched),
        "v": _where_matched(net.edge_v_id[safe_edge], matched),
        "key": _where_matched(net.edge_key[safe_edge], matched),
        "offset_m": _float_array(np.where(matched, fixes["offset_m"], np.nan)),
        "distance_m": _float_array(fixes["distance_m"]),
        "run": arrow_array(fixes["segment"].astype("int64")),
        "is_break": arrow_array(fixes["is_break"].astype(bool)),
        "unmatched_reason": _reasons(fixes["status"]),
        "source_row": points.column("source_row"),
        "lon": arrow_array(np.where(matched, fixes["lon"], raw_lon)),
        "lat": arrow_array(np.where(matched, fixes["lat"], raw_lat)),
    }
    return pa.table(columns)


def _where_matched(ids: np.ndarray, matched: np.ndarray) -> pa.Array:
    """Nullable int64 ids, null where the fix was not matched."""
    return arrow_array(ids.astype("int64"), valid=matched)


def _float_array(values: np.ndarray) -> pa.Array:
    """Floats with NaN as null (as pandas' missing values are written)."""
    values = np.asarray(values, dtype="float64")
    return arrow_array(values, valid=~np.isnan(values))


def _reasons(status: np.ndarray) -> pa.Array:
    """Return the fixes' unmatched reasons as strings, null where matched (status codes)."""
    names = [name for _, name in sorted(UNMATCHED_REASONS.items()) if name is not None]
    unmatched = status != MATCHED
    codes = np.where(unmatched, status.astype(np.int32) - 1, 0)  # the codes after MATCHED (0)
    return arrow_strings(names).take(arrow_array(codes, valid=unmatched))


def _segments(net: MatchNetwork, trips: TripsMatch, firsts: pa.Table) -> Segments:
    """Return the trips' traversed pieces as segments (trip ``i``'s: ``trips.route_bounds``)."""
    route, trip_bounds = trips.route_columns, trips.route_bounds
    sizes = np.diff(trip_bounds)
    trip_index = arrow_array(np.repeat(np.arange(len(sizes)), sizes))
    edge = route["edge"]
    columns = {
        "trace_id": firsts.column("trace_id").take(trip_index),
        "trip_id": firsts.column("trip_id").take(trip_index),
        "seq": arrow_array(
            (np.arange(len(edge)) - np.repeat(trip_bounds[:-1], sizes)).astype("int32")
        ),
        "contributor_id": firsts.column("contributor_id").take(trip_index),
        "edge_id": arrow_array(net.edge_id[edge]),
        "u": arrow_array(net.edge_u_id[edge]),
        "v": arrow_array(net.edge_v_id[edge]),
        "key": arrow_array(net.edge_key[edge]),
        "osmid": arrow_array(net.edge_osmid[edge]),
        "from_offset_m": _float_array(route["from_offset_m"]),
        "to_offset_m": _float_array(route["to_offset_m"]),
        "entered_at": _utc_ms(route["entered_at_s"]),
        "exited_at": _utc_ms(route["exited_at_s"]),
    }
    coords, offsets = substring_lines(net, edge, route["from_metric_m"], route["to_metric_m"])
    return Segments(pa.table(columns), coords, offsets)


def _utc_ms(seconds: np.ndarray) -> pa.Array:
    """UTC timestamps of Unix seconds (interpolated times), kept to the millisecond.

    As pandas' ``to_datetime(seconds, unit="s", utc=True).round("ms")`` gives them: the
    whole seconds and the fraction rounded to 9 decimals make nanoseconds, rounded to the
    nearest millisecond, halves to even; NaN gives null.
    """
    seconds = np.asarray(seconds, dtype="float64")
    known = np.isfinite(seconds)
    finite = np.where(known, seconds, 0.0)
    whole = finite.astype(np.int64)
    nanoseconds = whole * NS_PER_S + (np.round(finite - whole, 9) * NS_PER_S).astype(np.int64)
    ms, rest = np.divmod(nanoseconds, NS_PER_MS)
    ms += (2 * rest > NS_PER_MS) | ((2 * rest == NS_PER_MS) & (ms % 2 == 1))
    return arrow_array(ms, valid=known, type=pa.timestamp("ms", tz="UTC"))


def _trip_quality(
    firsts: pa.Table,
    bounds: np.ndarray,
    fixes: dict[str, np.ndarray],
    segments: Segments,
    trip_bounds: np.ndarray,
    params: MatchParams,
) -> pa.Table:
    """Return the quality rows of the trips, one per trip, and each trip's ``far_points``.

    Trip ``i``'s fixes are ``bounds[i]:bounds[i + 1]``, its segments
    ``trip_bounds[i]:trip_bounds[i + 1]``.
    """
    matched = fixes["edge"] >= 0
    distance = np.where(matched, fixes["distance_m"], np.nan)
    pieces = segments.columns
    driven_m = np.abs(
        numpy_values(pieces.column("to_offset_m")) - numpy_values(pieces.column("from_offset_m"))
    )
    points = np.diff(bounds).astype("int64")
    matched_points = np.add.reduceat(matched.astype("int64"), bounds[:-1])
    breaks = np.add.reduceat(fixes["is_break"].astype("int64"), bounds[:-1])
    mean_distance = group_means(distance, bounds)
    confidence = [
        match_confidence(m / n, b, d if np.isfinite(d) else None, params.search_radius_m)
        for m, n, b, d in zip(
            matched_points.tolist(), points.tolist(), breaks.tolist(), mean_distance.tolist(),
            strict=True,
        )
    ]  # fmt: skip
    far_points = (fixes["status"] == NO_CANDIDATE).astype("int64")
    columns = {
        "trace_id": firsts.column("trace_id"),
        "trip_id": firsts.column("trip_id"),
        "contributor_id": firsts.column("contributor_id"),
        "points": arrow_array(points),
        "matched_points": arrow_array(matched_points),
        "breaks": arrow_array(breaks),
        "mean_distance_m": _float_array(mean_distance),
        "p95_distance_m": _float_array(group_quantiles(distance, bounds, 0.95)),
        "matched_km": _float_array(group_sums(driven_m, trip_bounds)[0] / 1000.0),
        # fixes with no road within the largest search radius (not a column of the table)
        "far_points": arrow_array(np.add.reduceat(far_points, bounds[:-1])),
        "confidence": _float_array(np.array(confidence, dtype="float64")),
    }
    return pa.table(columns)


def match_confidence(
    matched_fraction: float, breaks: int, mean_distance_m: float | None, radius_m: float
) -> float:
    """Return the confidence in [0, 1] of a trip's match.

    The share of matched fixes, times ``BREAK_FACTOR`` per break (a place where no plausible
    route joins two runs: the runs themselves may be right, but the trip is less certain), and
    scaled down linearly as the mean fix-to-road distance approaches the search radius.
    """
    if mean_distance_m is None:
        return 0.0
    closeness = max(0.0, 1.0 - mean_distance_m / radius_m)
    return float(matched_fraction * BREAK_FACTOR**breaks * closeness)


def _write_outputs(matched_dir: Path, tasks: list[MatchTask], quality: pa.Table) -> None:
    """Concatenate the tasks' staged parts, in task order, and write the quality table.

    The points and the segments are written side by side, on two threads (Parquet encoding
    releases the GIL): after the matching, this is all the stage does.
    """
    outputs = [(POINTS_FILE, MATCHED_POINTS), (SEGMENTS_FILE, MATCHED_SEGMENTS)]
    with ThreadPoolExecutor(max_workers=len(outputs)) as pool:
        futures = [
            pool.submit(concat_tables, [t.part(name) for t in tasks], matched_dir / name, contract)
            for name, contract in outputs
        ]
        for future in futures:
            future.result()
    write_table(sort_rows(quality, ["trip_id"]), matched_dir / QUALITY_FILE, MATCH_QUALITY)
