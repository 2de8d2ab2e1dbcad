"""The coverage stage: matched batches -> coverage state, edge and cell tables, and summary.

``COVERAGE_DIR`` holds ``state/`` (see :mod:`pipeline.coverage.state`), ``runs_r{RES}.parquet``
(the H3 runs of the road edges, a cache keyed by the roads' sha256), ``edges.parquet`` and
``cells.parquet`` (contracts ``edge_coverage`` and ``cell_coverage``) and ``summary.json``.
Each matched folder is one batch: a batch already in the state is not applied again, so
running the stage twice gives the same files.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import CoverageSettings
from pipeline.contracts import CELL_COVERAGE, EDGE_COVERAGE, MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.state import merge_states, read_state, state_of_batch, write_state
from pipeline.coverage.summary import coverage_summary
from pipeline.coverage.tables import cell_coverage, edge_coverage
from pipeline.io import (
    atomic_path,
    parquet_options,
    read_arrow,
    read_table,
    write_json,
    write_table,
)
from pipeline.roads import read_edges, read_roads_meta
from pipeline.roads.extracts import file_sha256

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


def compute_coverage(
    roads_dir: Path,
    matched_dirs: list[Path],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """Apply new matched batches to the coverage state and write every coverage output.

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

    Returns
    -------
    dict
        The summary, as written to ``summary.json``.
    """
    edges = read_edges(roads_dir)
    runs = _cached_runs(edges, roads_dir, coverage_dir, settings.h3_resolution)
    state = read_state(coverage_dir / "state")
    lengths = edges.set_index("edge_id")["length_m"]
    for matched_dir in matched_dirs:
        batch_id = _batch_id(matched_dir)
        if batch_id in state.batches:
            log.info("coverage: batch %s (%s) already applied", batch_id, matched_dir)
            continue
        counted = counted_segments(matched_dir, lengths, settings)
        state = merge_states(state, state_of_batch(counted, runs, batch_id))
    write_state(state, coverage_dir / "state")
    as_of_ms = _as_of_ms(as_of, state.edge_trips)
    canonical = canonical_edges(edges)
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
    summary["roads_sha256"] = read_roads_meta(roads_dir)["source_sha256"]
    write_json(summary, coverage_dir / "summary.json")
    return summary


def counted_segments(
    matched_dir: Path, lengths: pd.Series, settings: CoverageSettings
) -> pd.DataFrame:
    """Return the batch's segments of trips that count: confident, plausible matches.

    Offsets are clamped to the edge, so coverage never exceeds road length.
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
    length = lengths.loc[kept["edge_id"].to_numpy()].to_numpy()
    for column in ("from_offset_m", "to_offset_m"):
        kept[column] = np.clip(kept[column].to_numpy(), 0.0, length)
    log.info("coverage: %s: %d of %d trips count", matched_dir, int(counts.sum()), len(quality))
    return kept


def _cached_runs(
    edges: pd.DataFrame, roads_dir: Path, coverage_dir: Path, resolution: int
) -> pd.DataFrame:
    roads_sha = file_sha256(roads_dir / "edges.parquet")
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
