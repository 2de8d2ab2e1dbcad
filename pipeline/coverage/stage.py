"""The coverage stage: matched batches -> coverage state, edge and cell tables, and summary.

``COVERAGE_DIR`` holds ``state/`` (see :mod:`pipeline.coverage.state`), ``runs_r{RES}.parquet``
(the H3 runs of the road edges, a cache keyed by the roads' sha256), ``edges.parquet`` and
``cells.parquet`` (contracts ``edge_coverage`` and ``cell_coverage``) and ``summary.json``.
Each matched folder is one batch: a batch already in the state is not applied again, so
running the stage twice gives the same files, and a trip already in the state (matched again
in another folder) is skipped, so it counts once. An update holds the folder's lock
(``.roadcover.lock``, :func:`pipeline.locking.folder_lock`) from reading the state to writing
the summary. The state and the matched folders record which roads they were made with
(:mod:`pipeline.roads.identity`); other roads are refused before anything is written, and
so is a ``coverage.world_road_km`` shorter than the region's roads (a share above 100 %).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import CoverageSettings
from pipeline.contracts import CELL_COVERAGE, EDGE_COVERAGE, MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.state import (
    CoverageState,
    current_pointer,
    merge_states,
    read_state,
    state_of_batch,
    write_state,
)
from pipeline.coverage.summary import check_world_road_km, coverage_summary, region_road_km
from pipeline.coverage.tables import cell_coverage, edge_coverage
from pipeline.errors import InputDataError
from pipeline.io import (
    atomic_path,
    parquet_options,
    read_arrow,
    read_table,
    write_json,
    write_table,
)
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads import read_edges
from pipeline.roads.identity import refuse_other_roads, roads_identity

log = logging.getLogger(__name__)

SEGMENTS_FILE = "matched_segments.parquet"
# what coverage takes from the matched segments (the file is checked whole all the same)
SEGMENT_COLUMNS = [
    "trip_id",
    "seq",
    "contributor_id",
    "edge_id",
    "from_offset_m",
    "to_offset_m",
    "entered_at",
    "exited_at",
]
QUALITY_FILE = "match_quality.parquet"
META_FILE = "meta.json"


def compute_coverage(
    roads_dir: Path,
    matched_dirs: list[Path],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Apply new matched batches to the coverage state and write every coverage output.

    The whole update (reading the state, applying the batches, writing the state and the
    tables) holds the coverage folder's lock, so concurrent runs into one folder apply their
    batches one after the other. Every input is checked before anything is written: each
    matched folder must be a snap output made with ``roads_dir``, and so must the coverage
    folder's state.

    Parameters
    ----------
    roads_dir
        The roads folder the batches were matched on.
    matched_dirs
        Output folders of ``roadcover snap``, one per batch.
    coverage_dir
        Where the state and the tables live.
    settings
        Coverage settings (H3 resolution, confidence threshold, flagged trips, world length).
    as_of
        The time freshness is measured from; default: the latest observation in the state, so
        that re-running gives the same numbers.
    lock_timeout_s
        How long to wait for another writer of ``coverage_dir`` (config ``lock_timeout_s``).

    Returns
    -------
    dict
        The summary, as written to ``summary.json``.

    Raises
    ------
    InputDataError
        If a matched folder is not a snap output, or it or the coverage folder was made with
        other roads.
    ConfigError
        If ``settings.world_road_km`` is less than the region's road km (a share of the world
        above 100 %).
    LockTimeoutError
        If another writer held the coverage folder for longer than ``lock_timeout_s``.
    """
    roads = roads_identity(roads_dir)
    for matched_dir in matched_dirs:
        check_matched_dir(matched_dir, roads_dir, roads)
    check_coverage_roads(coverage_dir, roads_dir, roads)  # a refusal needs no lock
    edges = read_edges(roads_dir)
    canonical = canonical_edges(edges)
    check_world_road_km(region_road_km(canonical), settings.world_road_km, roads_dir)
    with folder_lock(coverage_dir, lock_timeout_s):
        check_coverage_roads(coverage_dir, roads_dir, roads)  # what the last writer left
        return _update_coverage(
            (edges, canonical), roads, matched_dirs, coverage_dir, settings, as_of
        )


def _update_coverage(
    road_tables: tuple[gpd.GeoDataFrame, pd.DataFrame],
    roads: dict[str, Any],
    matched_dirs: list[Path],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None,
) -> dict[str, Any]:
    """Apply the batches and write every output; the caller holds the folder's lock.

    ``road_tables``: the roads folder's edges and their :func:`canonical_edges`.
    """
    edges, canonical = road_tables
    runs = _cached_runs(edges, roads["edges_sha256"], coverage_dir, settings.h3_resolution)
    state = read_state(coverage_dir / "state")
    lengths = edges.set_index("edge_id")["length_m"]
    for matched_dir in matched_dirs:
        batch_id = _batch_id(matched_dir)
        if batch_id in state.batches:
            log.info("coverage: batch %s (%s) already applied", batch_id, matched_dir)
            continue
        counted = counted_segments(matched_dir, lengths, settings)
        counted = unapplied_segments(counted, state, f"batch {batch_id} ({matched_dir})")
        state = merge_states(state, state_of_batch(counted, runs, batch_id))
    write_state(state, coverage_dir / "state", roads)
    as_of_ms = _as_of_ms(as_of, state.edge_trips)
    edge_table = edge_coverage(edges, state, as_of_ms)
    write_table(edge_table, coverage_dir / "edges.parquet", EDGE_COVERAGE)
    cells = cell_coverage(edges, canonical, runs, state, as_of_ms, settings.h3_resolution)
    write_table(cells, coverage_dir / "cells.parquet", CELL_COVERAGE)
    summary = coverage_summary(
        edge_table,
        state,
        canonical,
        as_of_ms,
        settings.world_road_km,
        settings.world_road_km_source,
    )
    summary["as_of"] = pd.Timestamp(as_of_ms, unit="ms", tz="UTC").isoformat()
    summary["criteria"] = {
        "min_match_confidence": settings.min_match_confidence,
        "include_flagged_trips": settings.include_flagged_trips,
        "h3_resolution": settings.h3_resolution,
    }
    summary["batches"] = state.batches
    summary["roads_sha256"] = roads["source_sha256"]
    summary["roads"] = roads
    write_json(summary, coverage_dir / "summary.json")
    return summary


def check_matched_dir(matched_dir: Path, roads_dir: Path, roads: dict[str, Any]) -> None:
    """Check that ``matched_dir`` is a complete snap output made with the roads ``roads``.

    Raises
    ------
    InputDataError
        If it is not (one line naming the folder, what it should be, or both roads).
    """
    meta_path = matched_dir / META_FILE
    missing = [name for name in (SEGMENTS_FILE, QUALITY_FILE, META_FILE)
               if not (matched_dir / name).is_file()]  # fmt: skip
    if missing:
        raise InputDataError(
            f"{matched_dir}: not an output folder of `roadcover snap` (no {', '.join(missing)}); "
            "pass the folder that `roadcover snap -o` wrote"
        )
    try:
        made_with = json.loads(meta_path.read_text())["roads"]
    except (ValueError, KeyError, TypeError):
        raise InputDataError(
            f"{meta_path}: does not say which roads the batch was matched on; match it again "
            "with `roadcover snap`"
        ) from None
    refuse_other_roads(
        made_with, roads, roads_dir, output=f"{matched_dir} was matched on",
        fix="pass the roads folder it was matched on, or match it again on these roads",
    )  # fmt: skip


def check_coverage_roads(coverage_dir: Path, roads_dir: Path, roads: dict[str, Any]) -> None:
    """Check that the coverage folder's state (if any) was computed on the roads ``roads``.

    Raises
    ------
    InputDataError
        If it was computed on other roads (one line naming both).
    """
    refuse_other_roads(
        current_pointer(coverage_dir / "state").get("roads"), roads, roads_dir,
        output=f"{coverage_dir} holds coverage of",
        fix="pass the roads folder it was made with, or write to a new coverage folder",
    )  # fmt: skip


def counted_segments(
    matched_dir: Path, lengths: pd.Series, settings: CoverageSettings
) -> pd.DataFrame:
    """Return the batch's segments of trips that count: confident, plausible matches.

    Offsets are clamped to the edge, so coverage never exceeds road length.

    Raises
    ------
    InputDataError
        If a segment's edge is not one of the roads' edges.
    """
    segments = read_arrow(
        matched_dir / SEGMENTS_FILE, MATCHED_SEGMENTS, SEGMENT_COLUMNS, check_all=True
    )
    quality = read_table(matched_dir / QUALITY_FILE, MATCH_QUALITY)
    counts = quality["confidence"] >= settings.min_match_confidence
    if not settings.include_flagged_trips:
        counts &= quality["plausible"]
    counted_trips = pa.array(quality.loc[counts, "trip_id"], pa.string())
    kept = segments.filter(pc.is_in(segments["trip_id"], value_set=counted_trips)).to_pandas()
    unknown = ~kept["edge_id"].isin(lengths.index)
    if unknown.any():
        raise InputDataError(
            f"{matched_dir}: {int(unknown.sum())} segments lie on edges the roads do not have "
            f"(e.g. edge_id {kept.loc[unknown, 'edge_id'].iloc[0]}); match the batch again "
            "on these roads"
        )
    length = lengths.loc[kept["edge_id"].to_numpy()].to_numpy()
    for column in ("from_offset_m", "to_offset_m"):
        kept[column] = np.clip(kept[column].to_numpy(), 0.0, length)
    log.info("coverage: %s: %d of %d trips count", matched_dir, int(counts.sum()), len(quality))
    return kept


def unapplied_segments(segments: pd.DataFrame, state: CoverageState, batch: str) -> pd.DataFrame:
    """Return the segments of trips the state does not hold yet; log the trips skipped.

    A trip already in the state (its id in ``edge_trips`` or ``cell_trips``) was applied with
    an earlier batch, e.g. a snap of every batch after a snap of one: counting it again would
    count its kilometres twice.
    """
    applied = pd.concat([state.edge_trips["trip_id"], state.cell_trips["trip_id"]]).unique()
    again = segments["trip_id"].isin(applied)
    if again.any():
        log.warning(
            "coverage: %s: %d of its %d counted trips were applied with an earlier batch; "
            "skipped, so that they count once",
            batch, segments.loc[again, "trip_id"].nunique(), segments["trip_id"].nunique(),
        )  # fmt: skip
    return segments.loc[~again].reset_index(drop=True)


def _cached_runs(
    edges: pd.DataFrame, roads_sha: str, coverage_dir: Path, resolution: int
) -> pd.DataFrame:
    path = coverage_dir / f"runs_r{resolution}.parquet"
    if path.exists():
        table = pq.read_table(path)
        if (table.schema.metadata or {}).get(b"roads_sha256", b"").decode() == roads_sha:
            return table.to_pandas()
    runs = edge_cell_runs(edges, resolution)
    table = pa.Table.from_pandas(runs, preserve_index=False)
    table = table.replace_schema_metadata({b"roads_sha256": roads_sha.encode()})
    with atomic_path(path) as temp:
        pq.write_table(table, temp, **parquet_options(table.schema))
    return runs


def _batch_id(matched_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (SEGMENTS_FILE, QUALITY_FILE):
        with (matched_dir / name).open("rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]


def _as_of_ms(as_of: pd.Timestamp | None, edge_trips: pd.DataFrame) -> int:
    if as_of is not None:
        return int(pd.Timestamp(as_of).tz_convert("UTC").value // 1_000_000)
    if len(edge_trips):
        return int(edge_trips["last_ms"].max())
    return 0
