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
docs/data-contracts.md) and ``meta.json``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.config import SnapSettings
from pipeline.contracts import MATCH_QUALITY, MATCHED_POINTS, MATCHED_SEGMENTS, POINTS, TRIPS
from pipeline.errors import InputDataError
from pipeline.io import (
    STAGING_DIR,
    concat_tables,
    read_table,
    write_json,
    write_lines,
    write_points,
    write_table,
)
from pipeline.parallel import run_tasks
from pipeline.snap.match import TripMatch, match_trip, route_segment_lines
from pipeline.snap.network import MatchNetwork, prepare_match_network
from pipeline.snap.params import MatchParams

log = logging.getLogger(__name__)

POINT_COLUMNS = ["trace_id", "trip_id", "contributor_id", "observed_at", "lon", "lat", "hdop",
                 "source_file", "source_row"]  # fmt: skip
TRIPS_PER_TASK = 64
POINTS_FILE = "matched_points.parquet"
SEGMENTS_FILE = "matched_segments.parquet"
QUALITY_FILE = "match_quality.parquet"
BREAK_FACTOR = 0.8


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
    )


def snap_traces(
    roads_dir: Path,
    traces_dir: Path,
    matched_dir: Path,
    settings: SnapSettings,
    batch_id: str | None = None,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Match every trip of a traces batch (or of all batches) to the road graph.

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

    Returns
    -------
    dict
        What ``meta.json`` holds: counts, timings and the batch.
    """
    started = time.perf_counter()
    trip_files = batch_trip_files(traces_dir, batch_id)
    trips = read_batch_trips(traces_dir, batch_id)
    params = match_params(settings)
    prepare_match_network(roads_dir)  # build and cache the network once, before the workers
    staging = (matched_dir / STAGING_DIR).absolute()
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    tasks = _match_tasks(trip_files, staging)
    roads = str(roads_dir.absolute())  # a shared worker may run in another folder
    results = run_tasks(
        match_task, tasks, "match chunks", settings.workers, scheduler_address,
        roads_dir=roads, params=params,
    )  # fmt: skip
    quality = pd.concat(results, ignore_index=True).merge(
        trips[["trip_id", "plausible", "trust_score"]], on="trip_id", how="left"
    )
    quality = quality.fillna({"plausible": False, "trust_score": 0.0})
    _write_outputs(matched_dir, tasks, quality)
    shutil.rmtree(staging, ignore_errors=True)
    meta = {
        "batch_id": batch_id,
        "trips": len(quality),
        "points": int(quality["points"].sum()),
        "matched_points": int(quality["matched_points"].sum()),
        "segments": int(pq.ParquetFile(matched_dir / SEGMENTS_FILE).metadata.num_rows),
        "matched_km": float(quality["matched_km"].sum()),
        "seconds": round(time.perf_counter() - started, 3),
        "params": params.__dict__,
    }
    write_json(meta, matched_dir / "meta.json")
    return meta


def batch_point_files(traces_dir: Path, batch_id: str | None) -> list[Path]:
    """Return the points partition files of one batch (all batches when None)."""
    pattern = f"part-{batch_id}-*.parquet" if batch_id else "part-*.parquet"
    files = sorted((traces_dir / "points").glob(f"date=*/h3=*/{pattern}"))
    if not files:
        raise InputDataError(
            f"{traces_dir}: no points of batch {batch_id or '(any)'}; run roadcover ingest first"
        )
    return files


def batch_trip_files(traces_dir: Path, batch_id: str | None) -> pd.DataFrame:
    """Every trip of a batch and the partition file holding its fixes.

    Reads only the ``trip_id`` column of each file (a trip never spans partitions).
    """
    frames = []
    for path in batch_point_files(traces_dir, batch_id):
        ids = read_table(path, POINTS, columns=["trip_id"])["trip_id"]
        frames.append(pd.DataFrame({"trip_id": ids.unique(), "file": str(path.absolute())}))
    return pd.concat(frames, ignore_index=True)


def read_batch_trips(traces_dir: Path, batch_id: str | None) -> pd.DataFrame:
    """Read the trips table of one batch (all batches when None)."""
    pattern = f"part-{batch_id}.parquet" if batch_id else "part-*.parquet"
    files = sorted((traces_dir / "trips").glob(pattern))
    columns = ["trip_id", "plausible", "trust_score"]
    return pd.concat(
        [pd.DataFrame(read_table(f, TRIPS, columns=columns)) for f in files], ignore_index=True
    )


@dataclass(frozen=True)
class MatchTask:
    """Trips to match together: which partition files hold them, and where to stage outputs."""

    index: int
    trips_by_file: dict[str, list[str]]
    staging_dir: Path

    def part(self, output: str) -> Path:
        """Return where the task stages its part of ``output`` (``matched_points.parquet``)."""
        name = f"part-{self.index:05d}.parquet"
        return self.staging_dir / output.removesuffix(".parquet") / name


def _match_tasks(trip_files: pd.DataFrame, staging: Path) -> list[MatchTask]:
    """Cut the trips into tasks of at most ``TRIPS_PER_TASK``, taken file by file.

    So each partition file is read by as few tasks as possible (by one, when it holds fewer
    trips than that).
    """
    ordered = trip_files.sort_values(["file", "trip_id"], ignore_index=True)
    tasks = []
    for index, start in enumerate(range(0, len(ordered), TRIPS_PER_TASK)):
        run = ordered.iloc[start : start + TRIPS_PER_TASK]
        by_file = {str(f): group["trip_id"].tolist() for f, group in run.groupby("file")}
        tasks.append(MatchTask(index, by_file, staging))
    return tasks


def match_task(task: MatchTask, roads_dir: str, params: MatchParams) -> pd.DataFrame:
    """Read, match and stage a task's trips; return their quality rows.

    Run on a Dask worker (or in-process): the fixes are read here, from the partitions, and
    the matched points and segments are written here, to the task's staged parts.
    """
    frames = [
        pd.DataFrame(
            read_table(Path(f), POINTS, columns=POINT_COLUMNS, filters=[("trip_id", "in", ids)])
        )
        for f, ids in task.trips_by_file.items()
    ]
    points = pd.concat(frames, ignore_index=True)
    points = points.sort_values(["trip_id", "observed_at"], ignore_index=True)
    matched, segments, quality = match_chunk(points, roads_dir, params)
    matched = matched.sort_values(["trace_id", "observed_at"], ignore_index=True)
    lon, lat = matched.pop("lon").to_numpy(), matched.pop("lat").to_numpy()
    write_points(matched, lon, lat, task.part(POINTS_FILE), MATCHED_POINTS)
    write_lines(
        segments.columns, segments.coords, segments.offsets, task.part(SEGMENTS_FILE),
        MATCHED_SEGMENTS,
    )  # fmt: skip
    return quality


@dataclass
class Segments:
    """Matched segments: every column of ``matched_segments`` but the geometry, and its lines.

    Segment ``i``'s line is ``coords[offsets[i]:offsets[i + 1]]`` (lon, lat); rows are in
    ``(trip_id, seq)`` order.
    """

    columns: pd.DataFrame
    coords: np.ndarray
    offsets: np.ndarray


def match_chunk(
    points: pd.DataFrame, roads_dir: str, params: MatchParams
) -> tuple[pd.DataFrame, Segments, pd.DataFrame]:
    """Match the trips of a chunk; return matched points, segments and per-trip quality.

    ``points`` is sorted by trip, then time. The matched points' positions (snapped, or the
    fix's own where it was not matched) are their ``lon`` and ``lat`` columns. Only the
    matching itself runs per trip; the output tables are assembled once per chunk from the
    concatenated arrays.
    """
    net = _worker_network(roads_dir)
    codes = pd.factorize(points["trip_id"], sort=False)[0]
    bounds = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    seconds = points["observed_at"].dt.as_unit("ms").astype("int64").to_numpy() / 1000.0
    lon, lat = points["lon"].to_numpy(), points["lat"].to_numpy()
    results = [
        match_trip(net, lon[a:b], lat[a:b], seconds[a:b], params)
        for a, b in itertools.pairwise(bounds)
    ]
    routes = _concat_routes(results)
    firsts = points.iloc[bounds[:-1]].reset_index(drop=True)
    segments = _segments(net, routes, firsts)
    matched = _matched_points(net, points, results)
    return matched, segments, _trip_quality(firsts, matched, segments, params)


def _concat_routes(results: list[TripMatch]) -> pd.DataFrame:
    """Join the trips' routes into one table with ``trip_index``, by array concatenation."""
    names = list(results[0].route_columns)
    columns = {n: np.concatenate([r.route_columns[n] for r in results]) for n in names}
    sizes = [len(r.route_columns["edge"]) for r in results]
    columns["trip_index"] = np.repeat(np.arange(len(results), dtype="int64"), sizes)
    return pd.DataFrame(columns)


@functools.lru_cache(maxsize=2)
def _worker_network(roads_dir: str) -> MatchNetwork:
    """Return the match network, loaded once per worker process (a cache keyed by folder)."""
    return prepare_match_network(roads_dir)


def _matched_points(
    net: MatchNetwork, points: pd.DataFrame, results: list[TripMatch]
) -> pd.DataFrame:
    edge = np.concatenate([r.edge for r in results])
    matched = edge >= 0
    safe_edge = np.where(matched, edge, 0)
    raw_lon = points["lon"].to_numpy(dtype="float64")
    raw_lat = points["lat"].to_numpy(dtype="float64")
    return pd.DataFrame(
        {
            "trace_id": points["trace_id"].to_numpy(),
            "trip_id": points["trip_id"].to_numpy(),
            "observed_at": points["observed_at"].reset_index(drop=True),
            "edge_id": _where_matched(net.edge_id[safe_edge], matched),
            "u": _where_matched(net.edge_u_id[safe_edge], matched),
            "v": _where_matched(net.edge_v_id[safe_edge], matched),
            "key": _where_matched(net.edge_key[safe_edge], matched),
            "offset_m": np.where(matched, np.concatenate([r.offset_m for r in results]), np.nan),
            "distance_m": np.concatenate([r.distance_m for r in results]),
            "run": np.concatenate([r.segment for r in results]).astype("int64"),
            "is_break": np.concatenate([r.is_break for r in results]).astype(bool),
            "unmatched_reason": np.concatenate([r.reason for r in results]),
            "source_file": points["source_file"].to_numpy(),
            "source_row": points["source_row"].to_numpy(),
            "lon": np.where(matched, np.concatenate([r.lon for r in results]), raw_lon),
            "lat": np.where(matched, np.concatenate([r.lat for r in results]), raw_lat),
        }
    )


def _where_matched(ids: np.ndarray, matched: np.ndarray) -> pd.Series:
    """Nullable int64 ids, null where the fix was not matched."""
    return pd.Series(ids, dtype="Int64").where(matched)


def _segments(net: MatchNetwork, routes: pd.DataFrame, firsts: pd.DataFrame) -> Segments:
    segments, coords, offsets = route_segment_lines(net, routes)
    segments = segments.drop(columns=["segment"])
    trip_index = routes["trip_index"].to_numpy()
    segments.insert(0, "trace_id", firsts["trace_id"].to_numpy()[trip_index])
    segments.insert(1, "trip_id", firsts["trip_id"].to_numpy()[trip_index])
    segments.insert(2, "seq", routes.groupby("trip_index").cumcount().to_numpy().astype("int32"))
    segments.insert(3, "contributor_id", firsts["contributor_id"].to_numpy()[trip_index])
    for column in ("entered_at", "exited_at"):  # interpolated times, kept to the millisecond
        segments[column] = segments[column].dt.round("ms").dt.as_unit("ms")
    return Segments(segments, coords, offsets)


def _trip_quality(
    firsts: pd.DataFrame, matched: pd.DataFrame, segments: Segments, params: MatchParams
) -> pd.DataFrame:
    # trips are grouped by integer code (in order of appearance, as in ``firsts``)
    trip = pd.factorize(matched["trip_id"], sort=False)[0]
    per_fix = pd.DataFrame(
        {
            "matched": matched["edge_id"].notna().to_numpy(),
            "is_break": matched["is_break"].to_numpy(),
            "distance": matched["distance_m"].where(matched["edge_id"].notna()).to_numpy(),
        }
    )
    by_trip = per_fix.groupby(trip, sort=False)
    pieces = segments.columns
    driven_m = (pieces["to_offset_m"] - pieces["from_offset_m"]).abs()
    quality = pd.DataFrame(
        {
            "trace_id": firsts["trace_id"].to_numpy(),
            "trip_id": firsts["trip_id"].to_numpy(),
            "contributor_id": firsts["contributor_id"].to_numpy(),
            "points": by_trip.size().to_numpy(),
            "matched_points": by_trip["matched"].sum().to_numpy().astype("int64"),
            "breaks": by_trip["is_break"].sum().to_numpy().astype("int64"),
            "mean_distance_m": by_trip["distance"].mean().to_numpy(),
            "p95_distance_m": by_trip["distance"].quantile(0.95).to_numpy(),
        }
    )
    km = driven_m.groupby(pieces["trip_id"]).sum() / 1000.0
    quality["matched_km"] = quality["trip_id"].map(km).fillna(0.0).to_numpy()
    quality["confidence"] = [
        match_confidence(m / n, b, d if np.isfinite(d) else None, params.search_radius_m)
        for m, n, b, d in zip(
            quality["matched_points"], quality["points"], quality["breaks"],
            quality["mean_distance_m"], strict=True,
        )
    ]  # fmt: skip
    return quality


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


def _write_outputs(matched_dir: Path, tasks: list[MatchTask], quality: pd.DataFrame) -> None:
    """Concatenate the tasks' staged parts, in task order, and write the quality table."""
    concat_tables([t.part(POINTS_FILE) for t in tasks], matched_dir / POINTS_FILE, MATCHED_POINTS)
    concat_tables(
        [t.part(SEGMENTS_FILE) for t in tasks], matched_dir / SEGMENTS_FILE, MATCHED_SEGMENTS
    )
    quality = quality.sort_values("trip_id", ignore_index=True)
    write_table(quality, matched_dir / QUALITY_FILE, MATCH_QUALITY)
