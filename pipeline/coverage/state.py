"""The incremental coverage state: what every later number is computed from.

Three tables, each merged batch by batch with associative, commutative operations (interval
union with min/max times, sums, distinct sets), so applying batches one at a time in any order
gives exactly the state of one computation over all of them:

``edge_pieces``
    Disjoint covered pieces of every directed edge, with first and last observation (ms).
``edge_trips``
    One row per (edge, trip): passes, driven millimetres, first and last observation.
``cell_trips``
    One row per (finest H3 cell, trip): driven millimetres and last observation.

On disk (``COVERAGE_DIR/state``) the state is split in two (format 3):

- per partition (:mod:`pipeline.coverage.partitions`), ``parts/<key>/<generation>/``, what an
  update merges its batch into: ``edge_pieces`` and ``edge_contributors`` (one row per edge and
  contributor: passes and driven millimetres summed, first and last observation, so that the
  edge's figures need no row per trip), by their edge's partition, the latter kept as sorted
  runs with the partition's edge totals (:mod:`pipeline.coverage.contributor_runs`: an update
  reads the rows of its batch's edges alone and writes its batch's rows beside the runs
  before, hard-linked), and the distinct ``cell_contributors`` pairs and the ``road_cover``
  rows of the partition's cells (:func:`write_cell_rows`), in the generation ``cell_parts``
  names;
- per update, ``trips/<generation>/``, the rows of the trips it applied (``edge_trips``,
  ``cell_trips``, and ``driven``: driven mm by edge and ``last_ms``, with ``highway``),
  written once and never rewritten: a trip is applied with one batch only, so the state's
  ``edge_trips`` and ``cell_trips`` are these updates' rows together.

``rollup/<generation>/`` holds the region's tables computed from them
(:mod:`pipeline.coverage.rollup`). ``CURRENT.json`` names the generation in force of every
partition and of the rollup, every update's trips (with their latest ``last_ms``), the batches
applied and the roads; replacing it commits an update, which writes only the partitions it
touches and its own trips. A state of format 2 (``edge_trips`` and ``cell_trips`` in every
partition) or of the unpartitioned format is read whole and written again in this format by
the next ``roadcover coverage``; one whose partitions keep ``edge_contributors`` in one file
(a pointer without ``contributor_layout``) has them written as runs by its next update, every
partition once (:func:`migrate_part`).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.coverage.contributor_runs import (
    LEGACY_FILE,
    RUNS_FILE,
    TOTALS_FILE,
    Run,
    has_runs,
    list_runs,
    read_rows,
    read_totals,
    rows_of_edges,
    write_runs,
    write_totals,
)
from pipeline.coverage.edges import (
    edge_trip_rows,
    merge_edge_contributors,
    merge_edge_trips,
    pair_totals,
    segment_pieces,
)
from pipeline.coverage.grouping import aggregate_groups
from pipeline.coverage.intervals import overlap_with_runs, union_pieces
from pipeline.coverage.pointer import (  # noqa: F401 (CURRENT_FILE, PART_PATTERN: theirs, named here)
    CURRENT_FILE,
    EDGE_TABLE,
    FORMAT,
    FORMAT_WITH_TRIPS_PER_PART,
    PART_PATTERN,
    PARTS_DIR,
    ROLLUP_DIR,
    TRIPS_DIR,
    VERSION_PATTERN,
    current_pointer,
    kept_in_state,
)
from pipeline.errors import InputDataError
from pipeline.io import link_or_copy, write_frame, write_json

STATE_TABLES = ("edge_pieces", "edge_trips", "cell_trips")  # and the files of formats 1 and 2
PART_TABLES = ("edge_pieces", "edge_contributors")  # a partition's tables (StatePart)
PIECES_FILE = "edge_pieces.parquet"
PART_FILES = (PIECES_FILE, TOTALS_FILE, RUNS_FILE)  # and the runs RUNS_FILE lists
TRIP_TABLES = ("edge_trips", "cell_trips", "driven")  # an update's trips' files
CELL_PAIRS = "cell_contributors"  # a partition's cells' distinct (cell, contributor) pairs
ROAD_COVER = "road_cover"  # the covered road pieces in a partition's cells (rollup.py)
CELL_ROW_TABLES = (CELL_PAIRS, ROAD_COVER)  # a partition's cells' rows, beside its cell table
WHOLE = "all"  # the one partition of a state written whole


@dataclass
class CoverageState:
    """Coverage accumulated over the batches listed in ``batches``."""

    edge_pieces: pd.DataFrame
    edge_trips: pd.DataFrame
    cell_trips: pd.DataFrame
    batches: list[str] = field(default_factory=list)


@dataclass
class StatePart:
    """A partition's tables: its edges' covered pieces, figures by edge and contributor."""

    edge_pieces: pd.DataFrame
    edge_contributors: pd.DataFrame


def state_of_batch(segments: pd.DataFrame, runs: pd.DataFrame, batch_id: str) -> CoverageState:
    """Return the coverage state of one batch of matched segments alone.

    Parameters
    ----------
    segments
        Matched segments (contract ``matched_segments``), already filtered to the trips that
        count, offsets clamped to their edges.
    runs
        H3 runs of the edges at the finest resolution (``edge_cell_runs``).
    batch_id
        Identifies the batch, so it is never applied twice.
    """
    pieces = segment_pieces(segments)
    trip_pieces = pieces.assign(
        trip_id=segments["trip_id"].astype(str).to_numpy(),
        contributor_id=segments["contributor_id"].astype(str).to_numpy(),
    )
    per_cell = overlap_with_runs(trip_pieces, runs)
    cell_trips = merge_cell_trips(
        per_cell.rename(columns={"length_mm": "driven_mm"})[
            ["cell", "trip_id", "contributor_id", "driven_mm", "last_ms"]
        ]
    )
    return CoverageState(union_pieces(pieces), edge_trip_rows(segments), cell_trips, [batch_id])


def merge_states(first: CoverageState, second: CoverageState) -> CoverageState:
    """Merge two states (of disjoint batches).

    A state's tables are always merged already (union and grouping are idempotent), so when
    ``first`` has no rows at all, e.g. the state before the first batch, ``second``'s tables
    are the result as they are.
    """
    if all(getattr(first, name).empty for name in STATE_TABLES):
        batches = sorted(set(first.batches) | set(second.batches))
        return CoverageState(second.edge_pieces, second.edge_trips, second.cell_trips, batches)
    return CoverageState(
        edge_pieces=union_pieces(pd.concat([first.edge_pieces, second.edge_pieces])),
        edge_trips=merge_edge_trips(pd.concat([first.edge_trips, second.edge_trips])),
        cell_trips=merge_cell_trips(pd.concat([first.cell_trips, second.cell_trips])),
        batches=sorted(set(first.batches) | set(second.batches)),
    )


def merge_cell_trips(rows: pd.DataFrame) -> pd.DataFrame:
    """Combine (cell, trip) rows: driven millimetres summed, latest time kept."""
    return aggregate_groups(
        rows,
        ["cell", "trip_id", "contributor_id"],
        driven_mm=("driven_mm", "sum"),
        last_ms=("last_ms", "max"),
    )


def empty_state() -> CoverageState:
    """Return the state before any batch."""
    segments = pd.DataFrame(
        {
            "edge_id": pd.Series(dtype="int64"),
            "trip_id": pd.Series(dtype="str"),
            "contributor_id": pd.Series(dtype="str"),
            "from_offset_m": pd.Series(dtype="float64"),
            "to_offset_m": pd.Series(dtype="float64"),
            "entered_at": pd.Series(dtype="datetime64[ms, UTC]"),
            "exited_at": pd.Series(dtype="datetime64[ms, UTC]"),
        }
    )
    runs = pd.DataFrame({c: pd.Series(dtype="int64") for c in ("key", "from_mm", "to_mm", "cell")})
    state = state_of_batch(segments, runs, "")
    return CoverageState(state.edge_pieces, state.edge_trips, state.cell_trips, [])


def split_parts(
    edge_pieces: pd.DataFrame, edge_contributors: pd.DataFrame, edge_parts: pd.Series
) -> dict[str, StatePart]:
    """Split a state's edge tables into partitions, by their edge's partition.

    Parameters
    ----------
    edge_pieces, edge_contributors
        The tables (``key`` and ``edge_id`` the edge).
    edge_parts
        The partition key of every edge (indexed by ``edge_id``).
    """
    pieces_at = edge_parts.loc[edge_pieces["key"].to_numpy()].to_numpy()
    pairs_at = edge_parts.loc[edge_contributors["edge_id"].to_numpy()].to_numpy()
    return {
        str(key): StatePart(
            edge_pieces[pieces_at == key].reset_index(drop=True),
            edge_contributors[pairs_at == key].reset_index(drop=True),
        )
        for key in sorted(set(pieces_at) | set(pairs_at))
    }


def write_parts(state_root: Path, generation: str, parts: Mapping[str, StatePart]) -> None:
    """Write partitions' tables whole into ``state_root/parts/<key>/<generation>/``.

    Their pieces, their edges' totals and their ``edge_contributors`` as one run
    (:mod:`pipeline.coverage.contributor_runs`). Nothing reads them before
    :func:`commit_pointer` names them.
    """
    for key, part in parts.items():
        folder = state_root / PARTS_DIR / key / generation
        _write_part(folder, part.edge_pieces, pair_totals(part.edge_contributors))
        write_runs(folder, None, [], part.edge_contributors, generation)


def update_part(
    state_root: Path,
    pointer: Mapping[str, Any],
    key: str,
    batch: StatePart,
    generation: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge a batch's rows into partition ``key`` as ``pointer`` names it; write ``generation``.

    Of the partition's ``edge_contributors`` only the rows of the batch's edges are read; the
    batch's rows are written as a new run beside the runs before (hard-linked), and the edge
    totals of the batch's edges replace theirs. A partition of the layout before runs is read
    and written whole, once.

    Returns
    -------
    tuple of pandas.DataFrame
        The partition's covered pieces and its edges' totals
        (:func:`~pipeline.coverage.edges.pair_totals`, by ``edge_id``).

    Raises
    ------
    InputDataError
        If a file of the partition the pointer names is missing (a damaged folder).
    """
    named = dict(pointer.get("parts") or {})
    if key not in named:
        write_parts(state_root, generation, {key: batch})
        return batch.edge_pieces, pair_totals(batch.edge_contributors)
    before = state_root / PARTS_DIR / key / named[key]
    folder = state_root / PARTS_DIR / key / generation
    try:
        pieces = union_pieces(pd.concat([pq.read_table(before / PIECES_FILE).to_pandas(),
                                         batch.edge_pieces]))  # fmt: skip
        if not has_runs(before):  # the layout before runs: merged whole, written as one run
            old = pq.read_table(before / LEGACY_FILE).to_pandas()
            rows = merge_edge_contributors(pd.concat([old, batch.edge_contributors]))
            write_parts(state_root, generation, {key: StatePart(pieces, rows)})
            return pieces, pair_totals(rows)
        runs = list_runs(before)
        totals = _updated_totals(before, runs, batch.edge_contributors)
        write_runs(folder, before, runs, batch.edge_contributors, generation)
    except FileNotFoundError as error:
        what = Path(str(error.filename)).name
        raise _damaged(state_root, pointer, f"partition {key}'s {what}") from error
    _write_part(folder, pieces, totals)
    return pieces, totals


def _updated_totals(before: Path, runs: list[Run], rows: pd.DataFrame) -> pd.DataFrame:
    """Return the edge totals of partition generation ``before`` with new (edge, contributor) rows.

    The totals of the rows' edges are counted from their rows in ``runs`` (``before``'s) and
    the new rows, merged; the other edges' are ``before``'s.
    """
    old_rows = rows_of_edges(before, runs, rows["edge_id"].to_numpy())
    merged = pair_totals(merge_edge_contributors(pd.concat([old_rows, rows])))
    old_totals = read_totals(before / TOTALS_FILE)
    kept = old_totals[~old_totals.index.isin(merged.index)]
    return pd.concat([kept, merged]).sort_index(kind="stable")


def migrate_part(state_root: Path, pointer: Mapping[str, Any], key: str, generation: str) -> bool:
    """Write partition ``key`` of the layout before runs again in this one, as ``generation``.

    Its pieces and edge coverage are hard-linked; its ``edge_contributors`` written as one
    run, with its edges' totals. Returns whether it was of that layout (else nothing is done).
    """
    before = state_root / PARTS_DIR / key / str(dict(pointer["parts"])[key])
    if has_runs(before):
        return False
    folder = state_root / PARTS_DIR / key / generation
    if not (before / LEGACY_FILE).is_file():
        raise _damaged(state_root, pointer, f"partition {key}'s {LEGACY_FILE}")
    rows = pq.read_table(before / LEGACY_FILE).to_pandas()
    folder.mkdir(parents=True, exist_ok=True)
    for name in (PIECES_FILE, EDGE_TABLE):
        link_or_copy(before / name, folder / name)
    write_totals(pair_totals(rows), folder / TOTALS_FILE)
    write_runs(folder, None, [], rows, generation)
    return True


def _write_part(folder: Path, pieces: pd.DataFrame, totals: pd.DataFrame) -> None:
    """Write a partition's covered pieces and its edges' totals into ``folder``."""
    write_frame(pieces, folder / PIECES_FILE)
    write_totals(totals, folder / TOTALS_FILE)


def write_trips(state_root: Path, generation: str, tables: Mapping[str, pd.DataFrame]) -> None:
    """Write an update's trips' tables (of :data:`TRIP_TABLES`) into ``trips/<generation>/``."""
    for name, table in tables.items():
        write_frame(table, state_root / TRIPS_DIR / generation / f"{name}.parquet")


def write_cell_rows(
    state_root: Path,
    generation: str,
    name: str,
    rows: pd.DataFrame,
    row_parts: np.ndarray,
    keys: set[str],
) -> None:
    """Write table ``name`` (of :data:`CELL_ROW_TABLES`) of partitions ``keys``' cells.

    ``row_parts``: the partition key of each row's cell. Into
    ``state_root/parts/<key>/<generation>/``, beside the partition's cell table.
    """
    for key in sorted(keys):
        part_rows = rows[row_parts == key].reset_index(drop=True)
        write_frame(part_rows, state_root / PARTS_DIR / key / generation / f"{name}.parquet")


def read_cell_rows(
    state_root: Path, pointer: Mapping[str, Any], keys: set[str], name: str
) -> list[pd.DataFrame]:
    """Read table ``name`` (of :data:`CELL_ROW_TABLES`) of the partitions of ``keys`` it names.

    ``pointer``'s ``cell_parts`` name the partitions' cells' generations.

    Raises
    ------
    InputDataError
        If a table the pointer names is missing (a damaged folder).
    """
    named = dict(pointer.get("cell_parts") or {})
    frames = []
    for key in sorted(set(keys) & set(named)):
        path = state_root / PARTS_DIR / key / named[key] / f"{name}.parquet"
        if not path.is_file():
            raise _damaged(state_root, pointer, f"partition {key}'s {name} table")
        frames.append(pq.read_table(path).to_pandas())
    return frames


def write_rollup(state_root: Path, generation: str, tables: Mapping[str, pd.DataFrame]) -> None:
    """Write the region's rollup tables into ``state_root/rollup/<generation>/``."""
    for name, table in tables.items():
        write_frame(table, state_root / ROLLUP_DIR / generation / f"{name}.parquet")


def read_trips(
    state_root: Path,
    pointer: Mapping[str, Any],
    name: str,
    generations: list[str] | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame | None:
    """Return the rows of trips' table ``name`` of updates ``generations`` (default: all).

    None when no update is named (the caller knows the table's empty form).

    Raises
    ------
    InputDataError
        If a table the pointer names is missing (a damaged folder).
    """
    frames = [
        pq.read_table(path, columns=columns).to_pandas()
        for path in _trips_paths(state_root, pointer, name, generations)
    ]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def trips_row_groups(
    state_root: Path,
    pointer: Mapping[str, Any],
    name: str,
    generations: list[str],
    columns: list[str],
) -> Iterator[pd.DataFrame]:
    """Yield the rows of trips' table ``name`` of updates ``generations``, a row group at a time.

    Raises
    ------
    InputDataError
        If a table the pointer names is missing (a damaged folder).
    """
    for path in _trips_paths(state_root, pointer, name, generations):
        parquet_file = pq.ParquetFile(path)
        for group in range(parquet_file.num_row_groups):
            yield parquet_file.read_row_group(group, columns=columns).to_pandas()


def _trips_paths(
    state_root: Path, pointer: Mapping[str, Any], name: str, generations: list[str] | None
) -> list[Path]:
    """Return the files of trips' table ``name`` of updates ``generations`` (default: all)."""
    named = sorted(dict(pointer.get("trips") or {}) if generations is None else generations)
    paths = [state_root / TRIPS_DIR / generation / f"{name}.parquet" for generation in named]
    for generation, path in zip(named, paths, strict=True):
        if not path.is_file():
            raise _damaged(state_root, pointer, f"trips {generation}'s {name} table")
    return paths


def read_rollup(
    state_root: Path, pointer: Mapping[str, Any], names: list[str]
) -> dict[str, pd.DataFrame]:
    """Read the rollup tables ``names`` of the version ``pointer`` names."""
    folder = state_root / ROLLUP_DIR / str(pointer["rollup"])
    missing = [name for name in names if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise _damaged(state_root, pointer, f"rollup table {', '.join(missing)}")
    return {name: pq.read_table(folder / f"{name}.parquet").to_pandas() for name in names}


def read_rollup_if_any(
    state_root: Path, pointer: Mapping[str, Any], names: list[str]
) -> dict[str, pd.DataFrame] | None:
    """Read the rollup tables ``names`` of the version ``pointer`` names; None if one is missing.

    For tables that a rollup written by an earlier layout does not have.
    """
    folder = state_root / ROLLUP_DIR / str(pointer["rollup"])
    if not all((folder / f"{name}.parquet").is_file() for name in names):
        return None
    return read_rollup(state_root, pointer, names)


def commit_pointer(state_root: Path, pointer: dict[str, Any], previous: Mapping[str, Any]) -> None:
    """Point ``CURRENT.json`` at a new version, then delete what neither it nor ``previous`` names.

    The pointer is replaced atomically after every table is written, so a run killed at any
    moment leaves the previous state in force, and applying the batch again is safe. What the
    previous pointer named is kept (a reader that does not take the folder's lock may have read
    that pointer and be reading its tables); only older files are deleted. Call it holding the
    coverage folder's lock (:func:`pipeline.locking.folder_lock`).
    """
    write_json({**pointer, "format": FORMAT}, state_root / CURRENT_FILE)
    named = [pointer, previous]
    for folder in _generation_folders(state_root):
        if not kept_in_state(folder.relative_to(state_root).parts, named):
            shutil.rmtree(folder)
    parts_root = state_root / PARTS_DIR
    for key_folder in parts_root.iterdir() if parts_root.is_dir() else []:
        if not any(key_folder.iterdir()):
            key_folder.rmdir()


def _generation_folders(state_root: Path) -> list[Path]:
    """Return the folders of generations in ``state_root``: each kept or removed whole."""
    found = [path for path in state_root.iterdir() if path.is_dir()]
    for name, depth in ((PARTS_DIR, 2), (TRIPS_DIR, 1), (ROLLUP_DIR, 1)):
        root = state_root / name
        found += [path for path in root.glob("/".join("*" * depth)) if path.is_dir()]
    return sorted(found)


def state_version(batches: list[str]) -> str:
    """Return the version of a state of ``batches``: a sha256 prefix of their sorted ids."""
    return hashlib.sha256("\n".join(sorted(batches)).encode()).hexdigest()[:16]


def write_state(
    state: CoverageState,
    state_root: Path,
    roads: Mapping[str, Any] | None = None,
) -> None:
    """Write a whole state as a new version: one partition, ``all``, and its trips.

    A state of the same batches as the one in force is not written again. The state has no
    rollup tables: ``roadcover coverage`` computes them (and repartitions the state) the next
    time it updates the folder. See :func:`commit_pointer` for what is kept.

    Parameters
    ----------
    state
        The state to write.
    state_root
        The state folder (``CURRENT.json``, ``parts/``, ``trips/``, ``rollup/``).
    roads
        The identity of the roads the state was computed on
        (:func:`pipeline.roads.identity.roads_identity`), recorded in the pointer.
    """
    previous = current_pointer(state_root)
    version = state_version(state.batches)
    if version == previous.get("version") and previous.get("roads") == dict(roads or {}):
        return  # no batch applied: the version in force stays, and so do the ones kept with it
    contributors = merge_edge_contributors(state.edge_trips)
    write_parts(state_root, version, {WHOLE: StatePart(state.edge_pieces, contributors)})
    trip_tables = {name: getattr(state, name) for name in ("edge_trips", "cell_trips")}
    write_trips(state_root, version, trip_tables)  # no ``driven``: the next update computes it
    pointer = {
        "version": version,
        "batches": sorted(state.batches),
        "roads": dict(roads or {}),
        "parts": {WHOLE: version},
        "trips": {version: latest_ms(state.edge_trips)},
        "partitioning": WHOLE,
        "rollup": None,
    }
    commit_pointer(state_root, pointer, previous)


def latest_ms(edge_trips: pd.DataFrame) -> int | None:
    """Return the latest ``last_ms`` of ``edge_trips`` rows (None when there are none)."""
    return int(edge_trips["last_ms"].max()) if len(edge_trips) else None


def read_parts(
    state_root: Path, pointer: Mapping[str, Any], keys: set[str] | list[str]
) -> dict[str, StatePart]:
    """Read partitions ``keys`` of the version ``pointer`` names (those it names, of ``keys``).

    Their ``edge_contributors`` are their runs' rows merged (or the file of the layout before).

    Raises
    ------
    InputDataError
        If a table of a partition is missing (a damaged folder).
    """
    named = dict(pointer.get("parts") or {})
    parts = {}
    for key in sorted(set(keys) & set(named)):
        folder = state_root / PARTS_DIR / key / named[key]
        try:
            pieces = pq.read_table(folder / PIECES_FILE).to_pandas()
            parts[key] = StatePart(pieces, read_rows(folder))
        except FileNotFoundError as error:
            what = Path(str(error.filename)).name
            raise _damaged(state_root, pointer, f"partition {key}'s {what}") from error
    return parts


def read_state(state_root: Path, columns: Mapping[str, list[str]] | None = None) -> CoverageState:
    """Read the whole current state, every partition merged; none yet is the empty state.

    Parameters
    ----------
    state_root
        The state folder (``CURRENT.json``, ``parts/``, ``trips/`` and ``rollup/``, or the
        partitions of format 2, or the version folders of the unpartitioned format).
    columns
        Return only these columns of the tables named (``[]``: none, the rows alone).

    Raises
    ------
    InputDataError
        If a table the pointer names is missing (a damaged folder).
    """
    wanted = dict(columns or {})
    current = current_pointer(state_root)
    if not current:
        state = empty_state()
    elif "format" not in current:
        state = _read_unpartitioned(state_root, current)
    elif current["format"] == FORMAT_WITH_TRIPS_PER_PART:
        parts = _read_part_tables(state_root, current, set(current["parts"]), STATE_TABLES)
        whole = [
            CoverageState(t["edge_pieces"], t["edge_trips"], t["cell_trips"])
            for t in parts.values()
        ]
        state = merge_parts(whole, list(current["batches"]))
    else:
        state = _read_with_trips(state_root, current)
    for name, names in wanted.items():
        setattr(state, name, getattr(state, name)[names])
    return state


def merge_parts(parts: list[CoverageState], batches: list[str]) -> CoverageState:
    """Merge partitions of one state (disjoint rows) into the state they were split from."""
    if not parts:
        empty = empty_state()
        return CoverageState(empty.edge_pieces, empty.edge_trips, empty.cell_trips, batches)
    merged = CoverageState(
        edge_pieces=union_pieces(pd.concat([part.edge_pieces for part in parts])),
        edge_trips=merge_edge_trips(pd.concat([part.edge_trips for part in parts])),
        cell_trips=merge_cell_trips(pd.concat([part.cell_trips for part in parts])),
        batches=batches,
    )
    return merged


def _read_with_trips(state_root: Path, current: Mapping[str, Any]) -> CoverageState:
    """Read a state of this format: the partitions' pieces and every update's trips."""
    empty = empty_state()
    parts = _read_part_tables(state_root, current, set(current["parts"]), ("edge_pieces",))
    pieces = [tables["edge_pieces"] for tables in parts.values()]
    edge_trips = read_trips(state_root, current, "edge_trips")
    cell_trips = read_trips(state_root, current, "cell_trips")
    return CoverageState(
        edge_pieces=union_pieces(pd.concat(pieces)) if pieces else empty.edge_pieces,
        edge_trips=empty.edge_trips if edge_trips is None else merge_edge_trips(edge_trips),
        cell_trips=empty.cell_trips if cell_trips is None else merge_cell_trips(cell_trips),
        batches=list(current["batches"]),
    )


def _read_part_tables(
    state_root: Path, pointer: Mapping[str, Any], keys: set[str] | list[str], names: tuple[str, ...]
) -> dict[str, dict[str, pd.DataFrame]]:
    """Read tables ``names`` of partitions ``keys`` of the version ``pointer`` names."""
    named = dict(pointer.get("parts") or {})
    parts = {}
    for key in sorted(set(keys) & set(named)):
        folder = state_root / PARTS_DIR / key / named[key]
        missing = [name for name in names if not (folder / f"{name}.parquet").is_file()]
        if missing:
            raise _damaged(state_root, pointer, f"partition {key}'s {', '.join(missing)} table")
        parts[key] = {name: pq.read_table(folder / f"{name}.parquet").to_pandas() for name in names}
    return parts


def _read_unpartitioned(state_root: Path, current: Mapping[str, Any]) -> CoverageState:
    folder = state_root / current["version"]
    missing = [name for name in STATE_TABLES if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise _damaged(state_root, current, f"{', '.join(missing)} table")
    tables = {name: pq.read_table(folder / f"{name}.parquet").to_pandas() for name in STATE_TABLES}
    return CoverageState(**tables, batches=list(current["batches"]))


def _damaged(state_root: Path, pointer: Mapping[str, Any], what: str) -> InputDataError:
    return InputDataError(
        f"{state_root / CURRENT_FILE} names version {pointer['version']}, whose {what} is "
        "missing: the coverage folder is damaged; compute the coverage again into a new folder "
        "from all the matched batches"
    )
