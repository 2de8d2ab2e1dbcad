"""The coverage stage: matched batches -> coverage state, edge and cell tables, and summary.

``COVERAGE_DIR`` holds ``state/`` (partitioned, with the region's rollup: see
:mod:`pipeline.coverage.state` and :mod:`pipeline.coverage.rollup`), ``network/`` (what the
roads alone decide, computed once per roads version: :mod:`pipeline.coverage.partitions`),
``edges.parquet`` and ``cells.parquet`` (contracts ``edge_coverage`` and ``cell_coverage``),
``summary.json`` and ``outputs.json`` (the state version and settings the outputs are of).
An update reads and rewrites only the partitions its batches touch; a run with no new batch
and the same settings finds its outputs current from ``CURRENT.json`` and ``outputs.json``
alone and returns at once. A state of the unpartitioned format (before partitions) is
partitioned on its first update, as is a state after ``coverage.partition_resolution``
changes.
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import CoverageSettings
from pipeline.contracts import CELL_COVERAGE, MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.coverage.partitions import Network, load_network
from pipeline.coverage.region_tables import write_edge_coverage
from pipeline.coverage.rollup import (
    ROLLUP_TABLES,
    cell_rows,
    cell_trips_of,
    empty_rollup,
    part_rows,
    updated_rollup,
)
from pipeline.coverage.state import (
    FORMAT,
    CoverageState,
    commit_pointer,
    current_pointer,
    empty_state,
    merge_states,
    read_parts,
    read_rollup,
    read_state,
    split_state,
    state_of_batch,
    state_version,
    write_parts,
    write_rollup,
)
from pipeline.coverage.summary import check_world_road_km, summary_of
from pipeline.coverage.tables import cells_table
from pipeline.errors import InputDataError
from pipeline.io import read_arrow, read_table, write_json, write_table
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads import read_edges, read_roads_meta
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
SUMMARY_FILE = "summary.json"
OUTPUTS_FILE = "outputs.json"  # the state version and settings the outputs were written from
OUTPUT_FILES = ("edges.parquet", "cells.parquet", SUMMARY_FILE)


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
    road_km = float(read_roads_meta(roads_dir)["road_km"])
    check_world_road_km(road_km, settings.world_road_km, roads_dir)
    with folder_lock(coverage_dir, lock_timeout_s):
        check_coverage_roads(coverage_dir, roads_dir, roads)  # what the last writer left
        return _update_coverage(roads_dir, roads, matched_dirs, coverage_dir, settings, as_of)


def _update_coverage(
    roads_dir: Path,
    roads: dict[str, Any],
    matched_dirs: list[Path],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None,
) -> dict[str, Any]:
    """Apply the batches and write every output; the caller holds the folder's lock."""
    state_root = coverage_dir / "state"
    pointer = current_pointer(state_root)
    new_batches = _new_batches(matched_dirs, list(pointer.get("batches", [])))
    outputs_key = _outputs_key(settings, as_of)
    if not new_batches and _outputs_current(coverage_dir, pointer, outputs_key):
        log.info("coverage: nothing new; the outputs of %s stand", coverage_dir)
        return dict(json.loads((coverage_dir / SUMMARY_FILE).read_text(encoding="utf-8")))
    network = load_network(
        lambda: read_edges(roads_dir), roads["edges_sha256"], coverage_dir,
        settings.h3_resolution, settings.partition_resolution,
    )  # fmt: skip
    canonical = network.canonical
    batches = sorted(set(pointer.get("batches", [])) | {batch for _, batch in new_batches})
    version = state_version(batches)
    rebuild = not _partitioned_as(pointer, network)
    if not rebuild:
        rollup = read_rollup(state_root, pointer, list(ROLLUP_TABLES))
        applied = set(rollup["trips"]["trip_id"])
        batch = _batch_state(new_batches, applied, network, settings)
        parts = dict(pointer["parts"])
    else:  # unpartitioned, or partitioned otherwise: all of it is applied again, partitioned
        whole = read_state(state_root)
        rollup, parts = empty_rollup(network, canonical), {}
        applied = set(whole.edge_trips["trip_id"]) | set(whole.cell_trips["trip_id"])
        batch = merge_states(whole, _batch_state(new_batches, applied, network, settings))
        pointer = {**pointer, "parts": {}}  # nothing of it is read again
        for old_cache in coverage_dir.glob("runs_r*.parquet"):  # the unpartitioned format's
            old_cache.unlink()
    if new_batches or rebuild:
        rollup = _apply(state_root, pointer, batch, rollup, parts, network, canonical, version)
        commit_pointer(
            state_root,
            {"version": version, "batches": batches, "roads": roads, "parts": parts,
             "partitioning": network.partition_resolution, "rollup": version},
            current_pointer(state_root),
        )  # fmt: skip
    summary = _write_outputs(network, rollup, coverage_dir, settings, as_of)
    summary["batches"] = batches
    summary["roads_sha256"] = roads["source_sha256"]
    summary["roads"] = roads
    write_json(summary, coverage_dir / SUMMARY_FILE)
    write_json({"version": version, "outputs": outputs_key}, coverage_dir / OUTPUTS_FILE)
    return summary


def _new_batches(matched_dirs: list[Path], applied: list[str]) -> list[tuple[Path, str]]:
    """Return the matched folders whose batch is not applied yet (each once), with their ids."""
    seen, new = set(applied), []
    for matched_dir in matched_dirs:
        batch_id = _batch_id(matched_dir)
        if batch_id in seen:
            log.info("coverage: batch %s (%s) already applied", batch_id, matched_dir)
            continue
        seen.add(batch_id)
        new.append((matched_dir, batch_id))
    return new


def _batch_state(
    new_batches: list[tuple[Path, str]],
    applied: set[str],
    network: Network,
    settings: CoverageSettings,
) -> CoverageState:
    """Return the state of the new batches alone, without the trips ``applied`` before."""
    lengths = network.edge_lengths()
    applied = set(applied)
    batch = empty_state()
    for matched_dir, batch_id in new_batches:
        counted = counted_segments(matched_dir, lengths, settings)
        counted = unapplied_segments(counted, applied, f"batch {batch_id} ({matched_dir})")
        applied |= set(counted["trip_id"])
        touched = set(network.edge_parts.loc[counted["edge_id"].to_numpy()])
        runs = network.runs_of(touched)
        batch = merge_states(batch, state_of_batch(counted, runs, batch_id))
    return batch


def _apply(
    state_root: Path,
    pointer: dict[str, Any],
    batch: CoverageState,
    rollup: dict[str, pd.DataFrame],
    parts: dict[str, str],
    network: Network,
    canonical: pd.DataFrame,
    version: str,
) -> dict[str, pd.DataFrame]:
    """Merge the batch into the partitions it touches; write them and the new rollup.

    ``parts`` (partition -> generation) is updated in place with the partitions written.
    """
    cell_parts = network.cells["part"]
    new_parts = split_state(batch, network.edge_parts, cell_parts)
    old_parts = read_parts(state_root, pointer, set(new_parts)) if parts else {}
    merged = {
        key: merge_states(old_parts[key], part) if key in old_parts else part
        for key, part in new_parts.items()
    }
    write_parts(state_root, version, merged)
    parts.update(dict.fromkeys(merged, version))
    edge_tables = CoverageState(  # a partition's edges are its own: the rows are disjoint
        pd.concat([part.edge_pieces for part in merged.values()] or [batch.edge_pieces]),
        pd.concat([part.edge_trips for part in merged.values()] or [batch.edge_trips]),
        batch.cell_trips,
    )
    runs = network.runs_of(set(merged))
    rows = part_rows(edge_tables, network, canonical, runs)
    trips = batch.edge_trips["trip_id"].unique()
    rollup = updated_rollup(rollup, set(merged), rows, cell_rows(batch.cell_trips, network), trips)
    write_rollup(state_root, version, rollup)
    return rollup


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


def unapplied_segments(segments: pd.DataFrame, applied: set[str], batch: str) -> pd.DataFrame:
    """Return the segments of trips not ``applied`` yet; log the trips skipped.

    A trip already in the state was applied with an earlier batch, e.g. a snap of every batch
    after a snap of one: counting it again would count its kilometres twice.
    """
    again = segments["trip_id"].isin(list(applied))
    if again.any():
        log.warning(
            "coverage: %s: %d of its %d counted trips were applied with an earlier batch; "
            "skipped, so that they count once",
            batch, segments.loc[again, "trip_id"].nunique(), segments["trip_id"].nunique(),
        )  # fmt: skip
    return segments.loc[~again].reset_index(drop=True)


def _partitioned_as(pointer: dict[str, Any], network: Network) -> bool:
    """Whether the state is partitioned as the network's cache, with its rollup."""
    return (
        pointer.get("format") == FORMAT
        and pointer.get("partitioning") == network.partition_resolution
        and pointer.get("rollup") is not None
    )


def _outputs_key(settings: CoverageSettings, as_of: pd.Timestamp | None) -> str:
    """Return a key of what the outputs depend on besides the state: settings, as-of time."""
    asked = None if as_of is None else pd.Timestamp(as_of).tz_convert("UTC").isoformat()
    record = json.dumps({"settings": asdict(settings), "as_of": asked}, sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _outputs_current(coverage_dir: Path, pointer: dict[str, Any], outputs_key: str) -> bool:
    """Whether the outputs were written from the state in force, with these settings."""
    try:
        record = json.loads((coverage_dir / OUTPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and pointer.get("format") == FORMAT
        and record.get("version") == pointer.get("version")
        and record.get("outputs") == outputs_key
        and all((coverage_dir / name).is_file() for name in OUTPUT_FILES)
    )


def _write_outputs(
    network: Network,
    rollup: dict[str, pd.DataFrame],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None,
) -> dict[str, Any]:
    """Write the edge and cell tables from the rollup; return the summary (not written)."""
    totals = rollup["edge_totals"].set_index("edge_id")
    as_of_ms = _as_of_ms(as_of, totals["last_ms"])
    edge_table_ = write_edge_coverage(
        network.fixed_edges(), rollup["edge_pieces"], totals, as_of_ms,
        coverage_dir / "edges.parquet",
    )  # fmt: skip
    road_mm = network.cells["road_mm"].dropna().astype("int64")
    cells = cells_table(
        road_mm, rollup["road_cover"], cell_trips_of(rollup), as_of_ms,
        settings.h3_resolution, network.parents, network.polygons,
    )  # fmt: skip
    write_table(cells, coverage_dir / "cells.parquet", CELL_COVERAGE)
    summary = summary_of(
        edge_table_, rollup["road_cover"], rollup["driven"], network.canonical, as_of_ms,
        settings.world_road_km, settings.world_road_km_source,
    )  # fmt: skip
    summary["as_of"] = pd.Timestamp(as_of_ms, unit="ms", tz="UTC").isoformat()
    summary["criteria"] = {
        "min_match_confidence": settings.min_match_confidence,
        "include_flagged_trips": settings.include_flagged_trips,
        "h3_resolution": settings.h3_resolution,
    }
    return summary


def _batch_id(matched_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (SEGMENTS_FILE, QUALITY_FILE):
        with (matched_dir / name).open("rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]


def _as_of_ms(as_of: pd.Timestamp | None, last_ms: pd.Series) -> int:
    if as_of is not None:
        return int(pd.Timestamp(as_of).tz_convert("UTC").value // 1_000_000)
    if len(last_ms):
        return int(last_ms.max())
    return 0
