"""A coverage update's batch applied in steps of partitions, so that its memory is bounded.

An update's work grows with its batch: a row per segment, per (edge, trip) and per (cell,
trip). :func:`apply_in_steps` holds about ``coverage.batch_max_mb`` of them at a time
(:func:`step_segments`), whatever the batch's size:

1. The batch's matched segments are read a chunk at a time (twice): the first pass counts the
   segments that count (confident, plausible, of trips not applied before, see
   :func:`~pipeline.coverage.update.counted_segments`) by their edge's partition and cuts the
   partitions, in key order, into steps of at most :func:`step_segments` segments (a
   partition with more is a step of its own); the second spills each step's segments to a
   scratch file.
2. Each step's segments make its state (:func:`~pipeline.coverage.state.state_of_batch`),
   merged into its partitions and written with their edge coverage and rollup rows
   (:func:`apply_partitions`), as the whole batch's would be: every row of these tables is
   of one edge, and an edge's segments are all in its partition's step. Its ``edge_trips``
   and ``driven`` rows are spilled by range of ``edge_id``, its ``cell_trips`` rows by the
   step of their cell's partition (a road's pieces may lie in cells of other partitions).
3. The trips' tables are written range by range (:class:`~pipeline.io.RowGroupWriter`): the
   ``edge_trips`` and ``driven`` rows of a range of edges, sorted; the ``cell_trips`` rows of
   a step's cells, merged. Their files, the rollup and every other output are those of
   applying the batch at once, byte for byte: the rows are sorted by the same keys and cut
   into the same row groups. The distinct trips of the cells coarser than the partitions
   (which span steps) are counted from the (cell, trip) pairs of every step.

Not bounded by the setting: the region's rollup (rows per partition and highway, per
partition cell and time last seen, the trips' ids), and the covered road pieces and (cell,
contributor) pairs of the partitions whose cells change.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from pipeline.config import CoverageSettings
from pipeline.contracts import MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.coverage.edges import merge_edge_contributors, pair_totals
from pipeline.coverage.partitions import Network
from pipeline.coverage.pointer import EDGE_TABLE
from pipeline.coverage.region_tables import write_edge_coverage
from pipeline.coverage.rollup import cell_rows, driven_rows, edge_info, part_rows
from pipeline.coverage.stage import QUALITY_FILE, SEGMENT_COLUMNS, SEGMENTS_FILE
from pipeline.coverage.state import (
    PARTS_DIR,
    TRIPS_DIR,
    CoverageState,
    StatePart,
    merge_cell_trips,
    split_parts,
    state_of_batch,
    update_part,
    write_parts,
)
from pipeline.coverage.tables import cell_trip_counts
from pipeline.errors import InputDataError
from pipeline.io import (
    RowGroupWriter,
    atomic_path,
    read_checked_chunks,
    read_table,
    write_frame,
)

log = logging.getLogger(__name__)

BYTES_PER_SEGMENT = 2048
"""What a step holds per segment at its peak (its segments, state, partitions and spills)."""
SCRATCH_PREFIX = ".batch-steps-"
"""The scratch folders (in ``state/``) where an update spills its batch's steps."""
READ_ROWS = 65_536
"""Segments read at a time (fewer when a step holds fewer, but at least :data:`MIN_READ_ROWS`)."""
MIN_READ_ROWS = 64
FILE_ROW_GROUP = 1024 * 1024
"""Rows per row group of the trips' tables: pyarrow's default, as one write of the table."""
EDGE_SAMPLE = 16
"""One counted segment's edge in this many is kept to cut the edges into ranges."""


def remove_killed_steps(state_root: Path) -> None:
    """Remove the scratch folders of updates killed while applying their steps.

    The caller holds the coverage folder's lock: no other update is under way, so every
    scratch folder is a dead update's (a killed process leaves its temporary folder behind).
    """
    for scratch in sorted(state_root.glob(f"{SCRATCH_PREFIX}*")):
        if scratch.is_dir() and not scratch.is_symlink():
            shutil.rmtree(scratch)
            log.info("%s: removed %s, left by a killed update", state_root, scratch.name)


def step_segments(batch_max_mb: float) -> int:
    """Return the counted segments a step holds at most for ``batch_max_mb`` (at least one)."""
    return max(1, int(batch_max_mb * 2**20 // BYTES_PER_SEGMENT))


@dataclass
class PartsApplied:
    """What merging a state's rows into their partitions gave (one step, or all steps).

    Attributes
    ----------
    keys
        The partitions written.
    rows
        :func:`~pipeline.coverage.rollup.part_rows` of these partitions.
    driven
        :func:`~pipeline.coverage.rollup.driven_rows` of the state's trips.
    cell_parts
        The partitions of the cells whose figures changed.
    empty
        A partition of no rows, and edge totals of none, typed as the state's.
    """

    keys: set[str]
    rows: dict[str, pd.DataFrame]
    driven: pd.DataFrame
    cell_parts: set[str]
    empty: tuple[StatePart, pd.DataFrame]


def apply_partitions(
    state_root: Path,
    pointer: dict[str, Any],
    state: CoverageState,
    merge_old: bool,
    network: Network,
    version: str,
) -> PartsApplied:
    """Merge a state's rows into the partitions of their edges; write them as ``version``.

    Each partition's tables, as ``pointer`` names them when ``merge_old``, are merged with
    the state's rows of its edges (:func:`~pipeline.coverage.state.update_part`: of its
    ``edge_contributors``, which grow with the history, only the rows of these edges are
    read, and the state's rows written beside them) and written with its edge coverage, one
    partition at a time.
    """
    edge_ids = np.concatenate(
        [state.edge_pieces["key"].to_numpy(), state.edge_trips["edge_id"].to_numpy()]
    )
    contributors = merge_edge_contributors(state.edge_trips)
    new_parts = split_parts(state.edge_pieces, contributors, network.edge_part_series(edge_ids))
    part_pieces, part_totals, part_edges = [], [], []
    for key, new_part in new_parts.items():
        named = pointer if merge_old else {}
        pieces, totals = update_part(state_root, named, key, new_part, version)
        part_totals.append(totals)
        part_edges.append(write_part_edges(state_root, version, key, pieces, totals, network))
        part_pieces.append(pieces)
    # a partition's edges are its own: the rows are disjoint
    pieces = pd.concat(part_pieces or [state.edge_pieces])
    totals = (
        pd.concat(part_totals).sort_index(kind="stable") if part_totals
        else pair_totals(contributors)
    )  # fmt: skip
    edges = pd.concat(part_edges) if part_edges else edge_info({})
    rows = part_rows(pieces, totals, network, network.runs_of(set(new_parts)), edges)
    empty = StatePart(state.edge_pieces.iloc[:0].copy(), contributors.iloc[:0].copy())
    return PartsApplied(
        set(new_parts),
        rows,
        driven_rows(state.edge_trips, edges["highway"]),
        _changed_cell_parts(rows["road_cover"], state, network),
        (empty, totals.iloc[:0].copy()),  # copies: a slice would hold the whole tables
    )


def write_part_edges(
    state_root: Path,
    generation: str,
    key: str,
    pieces: pd.DataFrame,
    totals: pd.DataFrame,
    network: Network,
) -> pd.DataFrame:
    """Write the edge coverage of partition ``key`` beside its state tables.

    ``pieces`` and ``totals``: its covered pieces and its driven edges' totals
    (:func:`~pipeline.coverage.edges.pair_totals`, by ``edge_id``).

    Returns
    -------
    pandas.DataFrame
        ``highway``, ``length_m`` and ``part`` of the partition's edges, by ``edge_id``.
    """
    fixed = network.fixed_edges(key)
    write_edge_coverage(
        fixed, pieces, totals, state_root / PARTS_DIR / key / generation / EDGE_TABLE
    )
    return edge_info({key: fixed.select(["edge_id", "highway", "length_m"])})


def write_empty_parts(
    state_root: Path, version: str, keys: list[str], empty: tuple[StatePart, pd.DataFrame],
    network: Network,
) -> None:  # fmt: skip
    """Write partitions ``keys`` with no rows, and their edge coverage, one at a time."""
    part, totals = empty
    for key in keys:
        write_parts(state_root, version, {key: part})
        write_part_edges(state_root, version, key, part.edge_pieces, totals, network)


def _changed_cell_parts(
    road_cover: pd.DataFrame, state: CoverageState, network: Network
) -> set[str]:
    """Return the partitions of the cells whose figures an update changed.

    A cell's covered road changes with the roads the batch drove (their new ``road_cover``
    rows, which cover every cell their rows covered before), its passes, driven length and
    contributors with the batch's ``cell_trips``; a road may run into the cells of another
    partition than its own.
    """
    roads = network.canonical(state.edge_trips["edge_id"].to_numpy())["canonical_id"]
    driven = road_cover[road_cover["key"].isin(roads.to_numpy())]
    cells = np.concatenate([driven["cell"].to_numpy(), state.cell_trips["cell"].to_numpy()])
    return set(network.cell_parts(pd.unique(cells)))


@dataclass
class BatchApplied:
    """What applying a batch in steps gave: for the rollup and the pointer.

    Attributes
    ----------
    parts
        The partitions written, their rollup rows, the batch's driven rows by highway
        (``highway``, ``driven_mm``), the partitions of the cells that changed.
    cells
        :func:`~pipeline.coverage.rollup.cell_rows` of the batch's trips.
    trip_ids
        The batch's trips, in the order of their first row of its ``edge_trips``.
    latest_ms
        The latest ``last_ms`` of its trips (None when none counts).
    """

    parts: PartsApplied
    cells: dict[str, pd.DataFrame]
    trip_ids: np.ndarray
    latest_ms: int | None


@dataclass
class _Plan:
    """How a batch is cut: the steps' partitions, the edges' ranges, the trips skipped."""

    rows: int  # segments read at a time
    first_keys: list[str] = field(default_factory=list)
    edge_bounds: np.ndarray = field(default_factory=lambda: np.empty(0, "int64"))
    counted: dict[str, pa.Array] = field(default_factory=dict)  # by matched folder
    skipped: dict[str, pa.Array] = field(default_factory=dict)  # trips applied before

    def step_of_parts(self, keys: np.ndarray) -> np.ndarray:
        """Return the step of each partition key (those between steps: the one before)."""
        at = np.searchsorted(np.asarray(self.first_keys, dtype=object), keys, "right") - 1
        return np.maximum(at, 0)

    def range_of_edges(self, edge_ids: np.ndarray) -> np.ndarray:
        """Return the range of each edge id."""
        return np.searchsorted(self.edge_bounds, edge_ids, "right")


def apply_in_steps(
    state_root: Path,
    pointer: dict[str, Any],
    new_batches: list[tuple[Path, str]],
    applied: pd.Series,
    merge_old: bool,
    network: Network,
    settings: CoverageSettings,
    version: str,
) -> BatchApplied | None:
    """Apply the batches' counted segments in steps; write the partitions and the trips.

    Parameters
    ----------
    state_root, pointer
        The state folder and the pointer in force.
    new_batches
        The matched folders to apply, with their ids.
    applied
        The ids of the trips applied before (skipped, so that they count once), in any order.
    merge_old
        Whether the partitions have tables to merge with (False on a first update).
    network, settings, version
        The network's cache, the coverage settings, the version written.

    Returns
    -------
    BatchApplied or None
        None when no segment counts (nothing is written).
    """
    step = step_segments(settings.batch_max_mb)
    plan, total = _plan_steps(new_batches, applied, network, settings, step)
    if total == 0:
        return None
    state_root.mkdir(parents=True, exist_ok=True)
    remove_killed_steps(state_root)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=state_root) as name:
        scratch = Path(name)
        _spill_segments(new_batches, plan, network, scratch)
        applied_parts = []
        for index in range(len(plan.first_keys)):
            segments = _read_spills(scratch / "segments", f"{index:06d}")
            if segments is None:
                continue
            touched = set(network.edge_parts(segments.column("edge_id").to_numpy()))
            state = state_of_batch(segments.to_pandas(), network.runs_of(touched), "")
            del segments
            done = apply_partitions(state_root, pointer, state, merge_old, network, version)
            _spill_trips(state, done.driven, plan, network, scratch, index)
            applied_parts.append(replace(done, driven=_by_highway(done.driven)))
            no_cells = state.cell_trips.iloc[:0].copy()
            del state, done
        trip_ids, latest = _write_edge_trips(scratch, state_root / TRIPS_DIR / version)
        cells = _write_cell_trips(scratch, state_root / TRIPS_DIR / version, network, no_cells)
    return BatchApplied(_joined(applied_parts), cells, trip_ids, latest)


def _plan_steps(
    new_batches: list[tuple[Path, str]],
    applied: pd.Series,
    network: Network,
    settings: CoverageSettings,
    step: int,
) -> tuple[_Plan, int]:
    """Read the batches' trips and edges a chunk at a time; cut them into steps.

    Returns the plan and the number of segments that count.

    Raises
    ------
    InputDataError
        If a segment that counts lies on an edge the roads do not have.
    """
    plan = _Plan(rows=min(READ_ROWS, max(step, MIN_READ_ROWS)))
    per_part, sample = Counter[str](), []
    seen = [pa.array(applied, pa.string())]  # the trips applied before, and each batch's
    for matched_dir, batch_id in new_batches:
        counted = counted_trips(matched_dir, settings)
        skipped = pa.concat_arrays(seen)
        unknown, example, again, trips = 0, None, set(), set()
        for chunk in _counted_chunks(matched_dir, counted, ["trip_id", "edge_id"], plan.rows):
            edge_ids = chunk.column("edge_id").to_numpy()
            known = network.edge_lengths(edge_ids).index
            missing = ~np.isin(edge_ids, known)
            if missing.any():
                unknown, example = unknown + int(missing.sum()), example or edge_ids[missing][0]
                continue
            is_again = pc.is_in(chunk.column("trip_id"), value_set=skipped)
            again |= set(chunk.column("trip_id").filter(is_again).unique().to_pylist())
            chunk = chunk.filter(pc.invert(is_again))
            trips |= set(chunk.column("trip_id").unique().to_pylist())
            edge_ids = chunk.column("edge_id").to_numpy()
            per_part.update(Counter(network.edge_parts(edge_ids).tolist()))
            sample.append(edge_ids[::EDGE_SAMPLE])
        if unknown:
            raise InputDataError(
                f"{matched_dir}: {unknown} segments lie on edges the roads do not have "
                f"(e.g. edge_id {example}); match the batch again on these roads"
            )
        if again:
            log.warning(
                "coverage: %s: %d of its %d counted trips were applied with an earlier batch; "
                "skipped, so that they count once",
                f"batch {batch_id} ({matched_dir})", len(again), len(again | trips),
            )  # fmt: skip
        plan.counted[str(matched_dir)], plan.skipped[str(matched_dir)] = counted, skipped
        seen.append(pa.array(sorted(trips), pa.string()))
    total = sum(per_part.values())
    size = 0
    for key in sorted(per_part):
        if not plan.first_keys or size + per_part[key] > step:
            plan.first_keys.append(key)
            size = 0
        size += per_part[key]
    edges = np.sort(np.concatenate(sample)) if sample else np.empty(0, "int64")
    ranges = -(-total // step)
    plan.edge_bounds = edges[(np.arange(1, ranges) * len(edges)) // max(ranges, 1)]
    log.info(
        "coverage: %d segments count, applied in %d steps of at most %d (coverage.batch_max_mb)",
        total, len(plan.first_keys), step,
    )  # fmt: skip
    return plan, total


def counted_trips(matched_dir: Path, settings: CoverageSettings) -> pa.Array:
    """Return the ids of a batch's trips that count: confident, plausible matches."""
    quality = read_table(matched_dir / QUALITY_FILE, MATCH_QUALITY)
    counts = quality["confidence"] >= settings.min_match_confidence
    if not settings.include_flagged_trips:
        counts &= quality["plausible"]
    log.info("coverage: %s: %d of %d trips count", matched_dir, int(counts.sum()), len(quality))
    return pa.array(quality.loc[counts, "trip_id"], pa.string())


def _counted_chunks(
    matched_dir: Path, counted: pa.Array, columns: list[str], rows: int
) -> Iterator[pa.Table]:
    """Yield the columns of the segments of trips ``counted``, ``rows`` segments at a time."""
    path = matched_dir / SEGMENTS_FILE
    for chunk in read_checked_chunks(path, MATCHED_SEGMENTS, columns, rows):
        yield chunk.filter(pc.is_in(chunk.column("trip_id"), value_set=counted))


def _spill_segments(
    new_batches: list[tuple[Path, str]], plan: _Plan, network: Network, scratch: Path
) -> None:
    """Spill the segments that count to their step's scratch files, offsets clamped."""
    for number, (matched_dir, _) in enumerate(new_batches):
        counted, skipped = plan.counted[str(matched_dir)], plan.skipped[str(matched_dir)]
        chunks = _counted_chunks(matched_dir, counted, SEGMENT_COLUMNS, plan.rows)
        for index, chunk in enumerate(chunks):
            chunk = chunk.filter(pc.invert(pc.is_in(chunk.column("trip_id"), value_set=skipped)))
            edge_ids = chunk.column("edge_id").to_numpy()
            length = network.edge_lengths(edge_ids).loc[edge_ids].to_numpy()
            for column in ("from_offset_m", "to_offset_m"):
                clamped = np.clip(chunk.column(column).to_numpy(), 0.0, length)
                chunk = chunk.set_column(chunk.schema.get_field_index(column), column, [clamped])
            steps = plan.step_of_parts(network.edge_parts(edge_ids))
            _spill_by(chunk, steps, scratch / "segments", f"{number:04d}-{index:06d}")


def _spill_trips(
    state: CoverageState,
    driven: pd.DataFrame,
    plan: _Plan,
    network: Network,
    scratch: Path,
    index: int,
) -> None:
    """Spill a step's trips' rows: by range of their edge, and by step of their cell."""
    for name, frame in (("edge_trips", state.edge_trips), ("driven", driven)):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        ranges = plan.range_of_edges(frame["edge_id"].to_numpy())
        _spill_by(table, ranges, scratch / name, f"{index:06d}")
    cells = pa.Table.from_pandas(state.cell_trips, preserve_index=False)
    steps = plan.step_of_parts(network.cell_parts(state.cell_trips["cell"].to_numpy()))
    _spill_by(cells, steps, scratch / "cell_trips", f"{index:06d}")


def _spill_by(table: pa.Table, buckets: np.ndarray, folder: Path, name: str) -> None:
    """Write the rows of each bucket of ``table`` to ``folder/<bucket>/<name>.arrow``."""
    for bucket in np.unique(buckets):
        rows = table.filter(pa.array(buckets == bucket))
        (folder / f"{bucket:06d}").mkdir(parents=True, exist_ok=True)
        feather.write_feather(rows, folder / f"{bucket:06d}" / f"{name}.arrow", "uncompressed")


def _read_spills(folder: Path, bucket: str) -> pa.Table | None:
    """Return the rows spilled to a bucket, in the order of their files' names (None: none)."""
    files = sorted((folder / bucket).glob("*.arrow"))
    if not files:
        return None
    return pa.concat_tables([feather.read_table(path, memory_map=False) for path in files])


def _buckets(folder: Path) -> list[str]:
    """Return the buckets rows were spilled to, in order."""
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def _bucket_rows(folder: Path, bucket: str) -> pa.Table:
    """Return the rows spilled to one of :func:`_buckets`."""
    rows = _read_spills(folder, bucket)
    if rows is None:
        raise FileNotFoundError(f"{folder / bucket}: no spilled rows")
    return rows


def _write_edge_trips(scratch: Path, folder: Path) -> tuple[np.ndarray, int | None]:
    """Write the ``edge_trips`` and ``driven`` tables range by range of edges.

    Returns the trips in the order of their first ``edge_trips`` row, and their latest time.
    """
    trip_ids: dict[str, None] = {}
    latest = None
    with _SortedWriter(folder / "edge_trips.parquet") as out:
        for bucket in _buckets(scratch / "edge_trips"):
            rows = _sorted_by(_bucket_rows(scratch / "edge_trips", bucket), "edge_id")
            trip_ids.update(dict.fromkeys(pc.unique(rows.column("trip_id")).to_pylist()))
            top = pc.max(rows.column("last_ms")).as_py()
            latest = top if latest is None else max(latest, top)
            out.write(rows)
    with _SortedWriter(folder / "driven.parquet") as out:
        for bucket in _buckets(scratch / "driven"):
            out.write(_sorted_by(_bucket_rows(scratch / "driven", bucket), "edge_id"))
    return np.array(list(trip_ids), dtype=object), latest


def _sorted_by(table: pa.Table, column: str) -> pa.Table:
    """Return the rows in the order of ``column``, equal values in their order (stable)."""
    order = np.argsort(table.column(column).to_numpy(), kind="stable")
    return table.take(pa.array(order))


def _write_cell_trips(
    scratch: Path, folder: Path, network: Network, no_cells: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Write the ``cell_trips`` table step by step of cells; return its ``cell_rows``.

    A step's rows of a cell are those of every step merged; the distinct trips of the cells
    coarser than the partitions are counted from every step's (cell, trip) pairs. With no
    rows (pieces of no length), ``no_cells`` (a step's empty table) is written.
    """
    if not _buckets(scratch / "cell_trips"):
        write_frame(no_cells, folder / "cell_trips.parquet")
        return cell_rows(no_cells, network)
    level = network.partition_resolution
    fine: list[dict[str, pd.DataFrame]] = []
    coarse: list[pd.DataFrame] = []
    with _SortedWriter(folder / "cell_trips.parquet") as out:
        for bucket in _buckets(scratch / "cell_trips"):
            rows = merge_cell_trips(_bucket_rows(scratch / "cell_trips", bucket).to_pandas())
            out.write(pa.Table.from_pandas(rows, preserve_index=False))
            counts = cell_trip_counts(rows, network.resolution, network.parents)
            passes = counts.passes[counts.passes["resolution"] >= level]
            fine.append({"cell_total": counts.total_mm, "cell_passes": passes,
                         "cell_contributors": counts.contributors})  # fmt: skip
            coarse.append(_coarse_pairs(rows, level, network))
    pairs = pd.concat(coarse, ignore_index=True).drop_duplicates(ignore_index=True)
    counted = pairs.groupby(["resolution", "cell"], as_index=False, sort=True).size()
    coarse_passes = counted.rename(columns={"size": "passes"}).astype("int64")
    cells = {name: pd.concat([part[name] for part in fine], ignore_index=True) for name in fine[0]}
    cells["cell_passes"] = pd.concat([cells["cell_passes"], coarse_passes], ignore_index=True)
    return cells


def _coarse_pairs(rows: pd.DataFrame, level: int, network: Network) -> pd.DataFrame:
    """Return the distinct (``resolution``, ``cell``, ``trip_id``) of cells coarser than level."""
    frames = [
        pd.DataFrame({
            "resolution": coarser,
            "cell": network.parents(rows["cell"].to_numpy(), coarser),
            "trip_id": rows["trip_id"].to_numpy(),
        }).drop_duplicates()
        for coarser in range(level - 1, -1, -1)
    ]  # fmt: skip
    empty = pd.DataFrame({"resolution": [], "cell": [], "trip_id": []})
    return pd.concat(frames or [empty], ignore_index=True)


class _SortedWriter:
    """A trips' table written in pieces as :func:`~pipeline.io.write_frame` writes it whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._atomic: Any = None
        self._out: RowGroupWriter | None = None

    def __enter__(self) -> _SortedWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_path(self.path)
        self._temp = self._atomic.__enter__()
        return self

    def write(self, table: pa.Table) -> None:
        """Append rows (the schema of the first; the table's pandas metadata)."""
        if self._out is None:
            self._out = RowGroupWriter(self._temp, table.schema, FILE_ROW_GROUP)
        self._out.write(table)

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            if self._out is not None:
                self._out.__exit__(kind, error, traceback)
        finally:
            self._atomic.__exit__(kind, error, traceback)


def _joined(steps: list[PartsApplied]) -> PartsApplied:
    """Return the steps' results as one: rollup rows in the order of applying them at once."""
    rows = {}
    for name, key in (("edge_totals", "edge_id"), ("road_cover", "key")):
        frame = pd.concat([done.rows[name] for done in steps], ignore_index=True)
        order = np.argsort(frame[key].to_numpy(), kind="stable")
        rows[name] = frame.iloc[order].reset_index(drop=True)
    driven = pd.concat([done.driven for done in steps], ignore_index=True)
    return PartsApplied(
        set().union(*(done.keys for done in steps)),
        rows,
        _by_highway(driven),
        set().union(*(done.cell_parts for done in steps)),
        steps[0].empty,
    )


def _by_highway(driven: pd.DataFrame) -> pd.DataFrame:
    """Return driven rows' ``driven_mm`` summed by ``highway`` (all the rollup takes of them)."""
    return driven.groupby("highway", as_index=False, sort=True).agg(driven_mm=("driven_mm", "sum"))
