"""A coverage update with work to do: apply new batches to the partitioned state, write outputs.

:func:`pipeline.coverage.stage.compute_coverage` checks the inputs and whether anything is new
without importing pandas; it imports this module only when there is work to do. An update reads
and rewrites only the partitions its batches touch, with their edge coverage
(:mod:`pipeline.coverage.region_tables`, read back through
:mod:`pipeline.coverage.edge_reader`), updates the region's rollup
(:mod:`pipeline.coverage.rollup`), and writes the cell table and the summary from the rollup
and the network's cache (:mod:`pipeline.coverage.partitions`), never from the roads' edge
table, a table of every edge, or the whole state. The batch is applied in steps of
partitions, so that its memory is bounded by ``coverage.batch_max_mb`` whatever its size
(:mod:`pipeline.coverage.steps`). The first update of a folder, and the first after the
roads' partitioning changes, writes every partition; so does the first of a state whose
rollup held the region's covered road pieces and driven edges whole (its ``road_cover`` is
then kept by partition, see :mod:`pipeline.coverage.rollup`).

What an update reads of ``state/``: ``CURRENT.json``; the rollup's tables
(:data:`~pipeline.coverage.rollup.ROLLUP_TABLES`, ``rollup/<rollup>/``); the ``edge_pieces``
and edge totals of the partitions its batch touches (``parts/<key>/<parts[key]>/``), and of
their ``edge_contributors`` runs the rows of its batch's edges alone
(:mod:`pipeline.coverage.contributor_runs`);
the ``road_cover`` and ``cell_contributors`` of the partitions whose cells it changes
(``parts/<key>/<cell_parts[key]>/``); the ``driven`` table of the updates of the week before
its as-of time (``trips/<generation>/``). It writes the same files of these partitions, and
their edge and cell coverage, as its own version, a new rollup, its trips' tables and the
pointer. The first update of a state whose partitions keep their ``edge_contributors`` in
one file writes every partition again with runs (:func:`_migrate_parts`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import CoverageSettings
from pipeline.contracts import MATCHED_SEGMENTS
from pipeline.coverage.partitions import Network, load_network, parent_array
from pipeline.coverage.pointer import CELL_LAYOUT, CONTRIBUTOR_LAYOUT, COVER_LAYOUT, EDGE_LAYOUT
from pipeline.coverage.region_tables import (
    write_cell_parts,
    write_coarse_cells,
)
from pipeline.coverage.rollup import (
    OLD_ROLLUP_TABLES,
    OLDEST_MS,
    ROLLUP_TABLES,
    cell_rows,
    cell_trips_of,
    coarse_cell_trips,
    empty_rollup,
    migrated_rollup,
    summary_driven,
    updated_part_cells,
    updated_road_cover,
    updated_rollup,
)
from pipeline.coverage.stage import (
    OUTPUTS_FILE,
    SEGMENT_COLUMNS,
    SEGMENTS_FILE,
    SUMMARY_FILE,
)
from pipeline.coverage.state import (
    CELL_PAIRS,
    FORMAT,
    PARTS_DIR,
    ROAD_COVER,
    ROLLUP_DIR,
    CoverageState,
    commit_pointer,
    current_pointer,
    empty_state,
    latest_ms,
    merge_states,
    migrate_part,
    read_cell_rows,
    read_rollup,
    read_state,
    state_of_batch,
    state_version,
    trips_row_groups,
    write_cell_rows,
    write_rollup,
    write_trips,
)
from pipeline.coverage.steps import (
    BatchApplied,
    apply_in_steps,
    apply_partitions,
    counted_trips,
    write_empty_parts,
)
from pipeline.coverage.summary import summary_by_highway
from pipeline.coverage.tables import MS_PER_DAY, CellTrips, cells_table
from pipeline.errors import InputDataError
from pipeline.io import read_arrow, write_json
from pipeline.roads import read_edges
from pipeline.roads.shards import is_sharded, shard_dirs

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

CELL_PARTS_AT_ONCE = 64
"""Partitions whose cells are computed together (a first update computes every partition's)."""


def update_coverage(
    roads_dir: Path,
    roads: dict[str, Any],
    new_batches: list[tuple[Path, str]],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None,
    outputs_key: str,
    network: Network | None = None,
) -> dict[str, Any]:
    """Apply the new batches and write every output; the caller holds the folder's lock.

    Parameters
    ----------
    roads_dir, roads
        The roads folder and its identity (:func:`pipeline.roads.identity.roads_identity`).
    new_batches
        The matched folders whose batches are not applied yet, with their ids.
    coverage_dir, settings, as_of
        As for :func:`pipeline.coverage.stage.compute_coverage`.
    outputs_key
        What the outputs depend on besides the state, recorded in ``outputs.json``.
    network
        The network's cache of these roads and settings when the caller has loaded it
        (:func:`pipeline.coverage.folder_stagein.stage_update`); default: loaded here.

    Returns
    -------
    dict
        The summary, as written to ``summary.json``.
    """
    state_root = coverage_dir / "state"
    pointer = current_pointer(state_root)
    if network is None:
        network = load_network(
            lambda: read_edges(roads_dir), roads["edges_sha256"], coverage_dir,
            settings.h3_resolution, settings.partition_resolution,
            shard_dirs(roads_dir) if is_sharded(roads_dir) else None,
        )  # fmt: skip
    batches = sorted(set(pointer.get("batches", [])) | {batch for _, batch in new_batches})
    version = state_version(batches)
    rebuild = not partitioned_as(pointer, network)
    migrate = not rebuild and pointer.get("cover_layout") != COVER_LAYOUT  # road_cover whole
    cell_parts = dict(pointer.get("cell_parts") or {}) if not rebuild else {}
    batch, stepped = None, None
    if not rebuild or not pointer:  # a partitioned state, or none yet
        rollup = _read_rollup(state_root, pointer, migrate) if pointer else empty_rollup(network)
        parts, trips = dict(pointer.get("parts") or {}), dict(pointer.get("trips") or {})
        applied_ids = rollup["trips"]["trip_id"]
        if new_batches:
            stepped = apply_in_steps(
                state_root, pointer, new_batches, applied_ids, bool(parts), network, settings,
                version,
            )  # fmt: skip
    else:  # unpartitioned, or partitioned otherwise: all of it is applied again, partitioned
        whole = read_state(state_root)
        rollup, parts, trips = empty_rollup(network), {}, {}
        applied = set(whole.edge_trips["trip_id"]) | set(whole.cell_trips["trip_id"])
        batch = merge_states(whole, _batch_state(new_batches, applied, network, settings))
        # the unpartitioned format's caches, and the edge and cell tables of the region's
        for old_file in [*coverage_dir.glob("runs_r*.parquet"), *map(coverage_dir.joinpath,
                         ["edges.parquet", "cells.parquet"])]:  # fmt: skip
            old_file.unlink(missing_ok=True)
    changed = bool(new_batches) or rebuild
    touched: set[str] = set()
    if changed:
        if stepped is None:  # at once: a state partitioned again, or a batch of which none counts
            if batch is None:
                batch = _batch_state(new_batches, set(applied_ids), network, settings)
            stepped = _apply(state_root, pointer, batch, parts, network, version)
        rollup, touched = _updated(rollup, stepped, parts, state_root, network, version)
        trips[version] = stepped.latest_ms
    as_of_ms = as_of_ms_of(as_of, trips)
    keys = None
    if changed or migrate:  # the cells of every partition on a first update (none named yet)
        keys = touched if cell_parts and not migrate else set(network.part_keys())
        named = {**pointer, "cell_parts": cell_parts}  # the cells' files before the update
        rollup = _with_road_cover(state_root, version, named, rollup, stepped, keys, network)
        rollup = _with_cell_pairs(state_root, version, named, rollup, keys, network)
        rollup = updated_part_cells(rollup, network.partition_resolution, _part_cells(keys))
        write_rollup(state_root, version, {name: rollup[name] for name in ROLLUP_TABLES})
    for chunk in _chunks(sorted(keys or ()), CELL_PARTS_AT_ONCE):  # a partition's own cells
        fine, covered = _fine_cells(network, rollup, as_of_ms, set(chunk))
        write_cell_parts(state_root / PARTS_DIR, version, fine, covered, set(chunk), network)
        cell_parts.update(dict.fromkeys(chunk, version))
    coarse = _coarse_cells(network, rollup, as_of_ms)
    write_coarse_cells(state_root / ROLLUP_DIR / version, coarse, network.partition_resolution)
    if changed or migrate:
        if pointer.get("contributor_layout") != CONTRIBUTOR_LAYOUT:
            _migrate_parts(state_root, pointer, parts, version)
        pointer = {
            "version": version, "batches": batches, "roads": roads, "parts": parts,
            "trips": trips, "partitioning": network.partition_resolution, "rollup": version,
            "edge_layout": EDGE_LAYOUT, "cell_parts": cell_parts, "cell_layout": CELL_LAYOUT,
            "cover_layout": COVER_LAYOUT, "contributor_layout": CONTRIBUTOR_LAYOUT,
        }  # fmt: skip
        commit_pointer(state_root, pointer, current_pointer(state_root))
    driven = _summary_driven(state_root, pointer, rollup, as_of_ms)
    summary = _summary(network, rollup, driven, settings, as_of_ms)
    summary["batches"] = batches
    summary["roads_sha256"] = roads["source_sha256"]
    summary["roads"] = roads
    write_json(summary, coverage_dir / SUMMARY_FILE)
    write_json({"version": version, "outputs": outputs_key}, coverage_dir / OUTPUTS_FILE)
    return summary


def _batch_state(
    new_batches: list[tuple[Path, str]],
    applied: set[str],
    network: Network,
    settings: CoverageSettings,
) -> CoverageState:
    """Return the state of the new batches alone, without the trips ``applied`` before."""
    applied = set(applied)
    batch = empty_state()
    for matched_dir, batch_id in new_batches:
        edge_ids = pq.read_table(matched_dir / SEGMENTS_FILE, columns=["edge_id"])["edge_id"]
        lengths = network.edge_lengths(edge_ids.to_numpy())
        counted = counted_segments(matched_dir, lengths, settings)
        counted = unapplied_segments(counted, applied, f"batch {batch_id} ({matched_dir})")
        applied |= set(counted["trip_id"])
        touched = set(network.edge_parts(counted["edge_id"].to_numpy()))
        runs = network.runs_of(touched)
        batch = merge_states(batch, state_of_batch(counted, runs, batch_id))
    return batch


def _apply(
    state_root: Path,
    pointer: dict[str, Any],
    batch: CoverageState,
    parts: dict[str, str],
    network: Network,
    version: str,
) -> BatchApplied:
    """Merge a whole batch's state into the partitions it touches; write them and its trips.

    As :func:`~pipeline.coverage.steps.apply_in_steps` does step by step, for a state at hand
    (a state partitioned again, or a batch of which no segment counts); the partitions
    ``parts`` names are merged with their tables as ``pointer`` names them.
    """
    done = apply_partitions(state_root, pointer, batch, bool(parts), network, version)
    write_trips(
        state_root, version,
        {"edge_trips": batch.edge_trips, "cell_trips": batch.cell_trips, "driven": done.driven},
    )  # fmt: skip
    trip_ids = batch.edge_trips["trip_id"].unique()
    cells = cell_rows(batch.cell_trips, network)
    return BatchApplied(done, cells, np.asarray(trip_ids), latest_ms(batch.edge_trips))


def _updated(
    rollup: dict[str, pd.DataFrame],
    batch: BatchApplied,
    parts: dict[str, str],
    state_root: Path,
    network: Network,
    version: str,
) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """Return the rollup with an applied batch, and the partitions of the cells it changed.

    ``parts`` (partition -> generation) is updated in place with the partitions written; when
    it names none (a first update, or a state partitioned again), every other partition of the
    network is written too, empty, so that each has its edge coverage; they add nothing to
    the rollup.
    """
    done = batch.parts
    if not parts:
        others = sorted(set(network.part_keys()) - done.keys)
        write_empty_parts(state_root, version, others, done.empty, network)
        parts.update(dict.fromkeys(others, version))
    parts.update(dict.fromkeys(done.keys, version))
    updated = updated_rollup(rollup, done.keys, done.rows, batch.cells, batch.trip_ids, done.driven)
    return {**rollup, **updated}, done.cell_parts


def _migrate_parts(
    state_root: Path, pointer: dict[str, Any], parts: dict[str, str], version: str
) -> None:
    """Write the partitions ``parts`` names of the layout before runs in this one, as ``version``.

    Once, by the first update of a state of that layout: the partitions it wrote are of
    this layout already; ``parts`` is updated in place with those written.
    """
    migrated = [
        key
        for key in sorted(key for key, generation in parts.items() if generation != version)
        if migrate_part(state_root, pointer, key, version)
    ]
    parts.update(dict.fromkeys(migrated, version))
    if migrated:
        log.info("coverage: %s: %d partitions' edge_contributors written as runs", state_root,
                 len(migrated))  # fmt: skip


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
    counted = counted_trips(matched_dir, settings)
    kept = segments.filter(pc.is_in(segments["trip_id"], value_set=counted)).to_pandas()
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


def partitioned_as(pointer: dict[str, Any], network: Network) -> bool:
    """Whether the state is partitioned as the network's cache, with its rollup, edges, cells."""
    return (
        pointer.get("format") == FORMAT
        and pointer.get("partitioning") == network.partition_resolution
        and pointer.get("rollup") is not None
        and pointer.get("edge_layout") == EDGE_LAYOUT
        and pointer.get("cell_layout") == CELL_LAYOUT
    )


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    """Return ``keys`` in consecutive lists of ``size`` (the last fewer)."""
    return [keys[start : start + size] for start in range(0, len(keys), size)]


def _part_cells(keys: set[str]) -> np.ndarray:
    """Return the H3 cells of partitions ``keys``."""
    return np.array([int(key.rsplit("-", 1)[1], 16) for key in sorted(keys)], dtype="int64")


def _read_rollup(
    state_root: Path, pointer: dict[str, Any], migrate: bool
) -> dict[str, pd.DataFrame]:
    """Read the rollup ``pointer`` names; of the old layout (``migrate``), with its ``road_cover``.

    A rollup of the old layout holds ``road_cover`` and ``edge_totals`` of the whole region
    (:data:`~pipeline.coverage.rollup.OLD_ROLLUP_TABLES`); they are read once, to be kept by
    partition (:func:`_with_road_cover`) and summed by partition and highway.
    """
    if not migrate:
        return read_rollup(state_root, pointer, list(ROLLUP_TABLES))
    kept = [name for name in ROLLUP_TABLES if name != "part_highway"]
    old = read_rollup(state_root, pointer, [*OLD_ROLLUP_TABLES, *kept])
    no_pairs = pd.DataFrame(
        {"cell": pd.Series(dtype="int64"), "contributor_id": pd.Series(dtype=str)}
    )
    rollup = {name: old[name] for name in kept}  # and no batch's (cell, contributor) pairs yet
    return {**rollup, **migrated_rollup(old), "cell_contributors": no_pairs}


def _with_road_cover(
    state_root: Path,
    version: str,
    pointer: dict[str, Any],
    rollup: dict[str, pd.DataFrame],
    applied: BatchApplied | None,
    keys: set[str],
    network: Network,
) -> dict[str, pd.DataFrame]:
    """Return the rollup with the ``road_cover`` rows of partitions ``keys``' cells; write them.

    The rows before the update are the rollup's ``road_cover`` when it has one (a first
    update, or a state of the old layout: of every cell), else those ``pointer`` names of
    these partitions; the rows of the partitions ``applied`` wrote replace theirs.
    """
    old = [rollup["road_cover"]] if "road_cover" in rollup else []
    old = old or read_cell_rows(state_root, pointer, keys, ROAD_COVER)
    if applied is None:  # a state of the old layout, no batch applied: its rows are read whole
        touched, new_rows = set(), old[0].iloc[:0]
    else:
        touched, new_rows = applied.parts.keys, applied.parts.rows["road_cover"]
    level = network.partition_resolution
    cover = updated_road_cover(old, touched, new_rows, level, _part_cells(keys))
    cover_parts = network.cell_parts(cover["cell"].to_numpy())
    write_cell_rows(state_root, version, ROAD_COVER, cover, cover_parts, keys)
    return {**rollup, "road_cover": cover}


def _with_cell_pairs(
    state_root: Path,
    version: str,
    pointer: dict[str, Any],
    rollup: dict[str, pd.DataFrame],
    keys: set[str],
    network: Network,
) -> dict[str, pd.DataFrame]:
    """Return the rollup with the (cell, contributor) pairs of partitions ``keys``; write them.

    The rollup's ``cell_contributors`` are the batch's pairs (their cells are in ``keys``);
    ``pointer`` names the partitions' cells before the update, whose pairs are read.
    """
    old = read_cell_rows(state_root, pointer, keys, CELL_PAIRS)
    pairs = pd.concat([*old, rollup["cell_contributors"]], ignore_index=True)
    pairs = pairs.drop_duplicates(ignore_index=True).astype({"contributor_id": str})
    pair_parts = network.cell_parts(pairs["cell"].to_numpy())
    write_cell_rows(state_root, version, CELL_PAIRS, pairs, pair_parts, keys)
    return {**rollup, "cell_contributors": pairs}


def _fine_cells(
    network: Network, rollup: dict[str, pd.DataFrame], as_of_ms: int, keys: set[str]
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Return the cells of partitions ``keys`` and the rollup's covered road in them.

    The cells are the rows of the resolutions no coarser than the partitions' (contract
    ``cell_coverage``), computed from the figures of the partitions' finest cells alone; the
    covered road the ``road_cover`` rows of these cells (of the rollup as updated).
    """
    level = network.partition_resolution
    cells = network.cells_of(keys)
    in_keys = cells.index
    cover = rollup["road_cover"]
    cover = cover[cover["cell"].isin(in_keys)]
    trips = cell_trips_of(rollup)
    passes = trips.passes[trips.passes["resolution"] >= level]
    parents = parent_array(passes["cell"].to_numpy(), level)
    fine_trips = CellTrips(
        trips.total_mm[trips.total_mm["cell"].isin(in_keys)],
        passes[np.isin(parents, network.parents(in_keys.to_numpy(), level))],
        trips.contributors[trips.contributors["cell"].isin(in_keys)],
    )
    road_mm = cells["road_mm"].dropna().astype("int64")
    fine = cells_table(
        road_mm, cover, fine_trips, as_of_ms, network.resolution, network.parents,
        network.polygons, range(network.resolution, level - 1, -1),
    )  # fmt: skip
    return fine, cover


def _coarse_cells(
    network: Network, rollup: dict[str, pd.DataFrame], as_of_ms: int
) -> gpd.GeoDataFrame:
    """Return the cells coarser than the partitions (contract ``cell_coverage``).

    Summed from what each partition contributes (:data:`~pipeline.coverage.rollup.PART_CELL_TABLES`
    and the partitions' road, :meth:`Network.part_road_mm`), never from the finest cells.
    """
    level = network.partition_resolution
    coarse = cells_table(
        network.part_road_mm(), rollup["part_covered"], coarse_cell_trips(rollup), as_of_ms,
        level, network.parents, network.polygons, range(level - 1, -1, -1) or range(0, -1, -1),
    )  # fmt: skip
    return coarse[coarse["resolution"].to_numpy() < level]  # none at partition resolution 0


def _summary_driven(
    state_root: Path, pointer: dict[str, Any], rollup: dict[str, pd.DataFrame], as_of_ms: int
) -> pd.DataFrame:
    """Return the driven rows the summary sums (:func:`~pipeline.coverage.rollup.summary_driven`).

    Of the ``driven`` tables of the updates ``pointer`` (the pointer in force) names, only
    those of updates whose latest trip ends in the week before ``as_of_ms`` are read, a row
    group at a time, summed by highway and whether in that week (``last_ms`` the week's start,
    or :data:`~pipeline.coverage.rollup.OLDEST_MS`): the summary's sums of them are those
    of their rows, in integer mm.
    """
    week_start = as_of_ms - 7 * MS_PER_DAY
    recent = recent_trips(dict(pointer.get("trips") or {}), as_of_ms)
    columns = ["highway", "last_ms", "driven_mm"]
    rows = pd.DataFrame(
        {"highway": pd.Series(dtype=str), "last_ms": pd.Series(dtype="int64"),
         "driven_mm": pd.Series(dtype="int64")}
    )  # fmt: skip
    for group in trips_row_groups(state_root, pointer, "driven", recent, columns):
        in_week = group["last_ms"].to_numpy() >= week_start
        group = group.assign(last_ms=np.where(in_week, week_start, OLDEST_MS))
        rows = (
            pd.concat([rows, group], ignore_index=True)
            .groupby(["highway", "last_ms"], as_index=False, sort=True)
            .agg(driven_mm=("driven_mm", "sum"))
        )
    return summary_driven(rollup["driven_total"], rows)


def _summary(
    network: Network,
    rollup: dict[str, pd.DataFrame],
    driven: pd.DataFrame,
    settings: CoverageSettings,
    as_of_ms: int,
) -> dict[str, Any]:
    """Return the summary of the rollup and the driven rows (not written).

    The covered road is the partitions' (``part_covered``: by cell, highway and time last
    seen), the directed covered mm summed by partition and highway (``part_highway``).
    """
    by_part = rollup["part_highway"]
    lengths = network.highway_lengths()
    lengths["covered_mm"] = by_part.groupby("highway")["covered_mm"].sum()
    summary = summary_by_highway(
        lengths.fillna({"covered_mm": 0}).astype("int64"), rollup["part_covered"], driven,
        as_of_ms, settings.world_road_km, settings.world_road_km_source,
    )  # fmt: skip
    summary["as_of"] = pd.Timestamp(as_of_ms, unit="ms", tz="UTC").isoformat()
    summary["criteria"] = {
        "min_match_confidence": settings.min_match_confidence,
        "include_flagged_trips": settings.include_flagged_trips,
        "h3_resolution": settings.h3_resolution,
    }
    return summary


def recent_trips(trips: dict[str, int | None], as_of_ms: int) -> list[str]:
    """Return the updates of ``trips`` whose latest trip ends in the week before ``as_of_ms``."""
    week_start = as_of_ms - 7 * MS_PER_DAY
    return [gen for gen, latest in trips.items() if latest is not None and latest >= week_start]


def as_of_ms_of(as_of: pd.Timestamp | None, trips: dict[str, int | None]) -> int:
    """Return ``as_of`` in epoch ms; by default the latest time of every update's trips."""
    if as_of is not None:
        return int(pd.Timestamp(as_of).tz_convert("UTC").value // 1_000_000)
    return max((latest for latest in trips.values() if latest is not None), default=0)
