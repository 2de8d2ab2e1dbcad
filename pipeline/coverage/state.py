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
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.coverage.edges import edge_trip_rows, merge_edge_trips, segment_pieces
from pipeline.coverage.grouping import aggregate_groups
from pipeline.coverage.intervals import overlap_with_runs, union_pieces
from pipeline.errors import InputDataError
from pipeline.io import atomic_path, parquet_options, write_json

STATE_TABLES = ("edge_pieces", "edge_trips", "cell_trips")
CURRENT_FILE = "CURRENT.json"
VERSION_PATTERN = re.compile(r"[0-9a-f]{16}")  # a version folder's name: a sha256 prefix


@dataclass
class CoverageState:
    """Coverage accumulated over the batches listed in ``batches``."""

    edge_pieces: pd.DataFrame
    edge_trips: pd.DataFrame
    cell_trips: pd.DataFrame
    batches: list[str] = field(default_factory=list)


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


def write_state(
    state: CoverageState, state_root: Path, roads: Mapping[str, Any] | None = None
) -> None:
    """Write the state as a new version folder, then point ``CURRENT.json`` at it.

    The pointer is replaced atomically after every table is written, so a run killed at any
    moment leaves the previous state in force, and applying the batch again is safe. The
    version the pointer named before is kept (a reader that does not take the folder's lock
    may have read that pointer and be reading its tables); only older versions are deleted.
    A state of the same batches as the one in force is not written again, so a rerun that
    applies nothing changes nothing.
    Call it holding the coverage folder's lock (:func:`pipeline.locking.folder_lock`).

    Parameters
    ----------
    state
        The state to write.
    state_root
        The state folder (``CURRENT.json`` and the version folders).
    roads
        The identity of the roads the state was computed on
        (:func:`pipeline.roads.identity.roads_identity`), recorded in the pointer.
    """
    current = current_pointer(state_root)
    previous = current.get("version")
    version = hashlib.sha256("\n".join(state.batches).encode()).hexdigest()[:16]
    if version == previous and current.get("roads") == dict(roads or {}):
        return  # no batch applied: the version in force stays, and so do the ones kept with it
    folder = state_root / version
    for name in STATE_TABLES:
        table = pa.Table.from_pandas(getattr(state, name), preserve_index=False)
        with atomic_path(folder / f"{name}.parquet") as temp:
            pq.write_table(table, temp, **parquet_options(table.schema))
    pointer = {"version": version, "batches": state.batches, "roads": dict(roads or {})}
    write_json(pointer, state_root / CURRENT_FILE)
    for old in state_root.iterdir():
        if old.is_dir() and old.name not in {version, previous}:
            shutil.rmtree(old)


def current_pointer(state_root: Path) -> dict[str, Any]:
    """Return ``CURRENT.json`` of a state folder (version, batches, roads); ``{}`` if none.

    Raises
    ------
    InputDataError
        If the pointer is not JSON, or does not name a version folder of ``state_root`` by
        its 16 hex digits (a damaged or planted pointer is never followed elsewhere).
    """
    pointer = state_root / CURRENT_FILE
    if not pointer.exists():
        return {}
    try:
        current = json.loads(pointer.read_text(encoding="utf-8"))
        valid = VERSION_PATTERN.fullmatch(current["version"]) is not None
        valid &= isinstance(current["batches"], list)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InputDataError(
            f"{pointer}: not a coverage state pointer written by roadcover coverage; the "
            "coverage folder is damaged: compute it again into a new folder"
        )
    return dict(current)


def read_state(state_root: Path, columns: Mapping[str, list[str]] | None = None) -> CoverageState:
    """Read the current state written by :func:`write_state`; none yet is the empty state.

    Parameters
    ----------
    state_root
        The state folder (``CURRENT.json`` and the version folders).
    columns
        Read only these columns of the tables named (``[]``: none, the rows alone); the other
        tables are read whole. A reader of a few columns of ``edge_trips`` then does without
        decoding its trip and contributor ids.

    Raises
    ------
    InputDataError
        If a table of the version ``CURRENT.json`` names is missing (a damaged folder).
    """
    wanted = dict(columns or {})
    current = current_pointer(state_root)
    if not current:
        empty = empty_state()
        for name, names in wanted.items():
            setattr(empty, name, getattr(empty, name)[names])
        return empty
    folder = state_root / current["version"]
    missing = [name for name in STATE_TABLES if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise InputDataError(
            f"{state_root / CURRENT_FILE} names version {current['version']}, whose "
            f"{', '.join(missing)} table is missing: the coverage folder is damaged; compute "
            "the coverage again into a new folder from all the matched batches"
        )
    tables = {
        name: pq.read_table(folder / f"{name}.parquet", columns=wanted.get(name)).to_pandas()
        for name in STATE_TABLES
    }
    return CoverageState(**tables, batches=current["batches"])
