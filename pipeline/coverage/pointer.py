"""The pointer of a coverage state (``state/CURRENT.json``), read without pandas.

``CURRENT.json`` names the version of the state in force, the batches applied, the roads, and
the generation of every partition and of the rollup (:mod:`pipeline.coverage.state`), and
whether every partition of the network is named with its edge coverage (``edge_layout``), and
the generation of every partition's cells (``cell_parts``, ``cell_layout``; with their covered
road pieces when ``cover_layout`` is set), whether every partition keeps its
``edge_contributors`` as runs (``contributor_layout``), and every update's trips with their
latest time (``trips``). Reading
it is all a run with nothing new needs of the state, so this module imports no data library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import InputDataError

CURRENT_FILE = "CURRENT.json"
VERSION_PATTERN = re.compile(r"[0-9a-f]{16}")  # a version's name: a sha256 prefix
PART_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a partition's key (partitions.py)
FORMAT = 3  # partitioned, trips per update; a pointer without ``format`` is unpartitioned (1)
FORMAT_WITH_TRIPS_PER_PART = 2  # partitioned, the trips' rows in every partition
EDGE_TABLE = "edge_coverage.parquet"  # a partition's edge coverage, beside its state tables
EDGE_LAYOUT = 1  # ``edge_layout`` of a pointer whose every partition has its EDGE_TABLE
CELL_TABLE = "cell_coverage.parquet"  # a partition's cells (pipeline.coverage.cell_reader)
FRESHNESS_TABLE = "cell_freshness.parquet"  # their covered road by the time last seen
COARSE_CELLS = "coarse_cells.parquet"  # the cells coarser than the partitions, in the rollup
CELL_LAYOUT = 1  # ``cell_layout`` of a pointer whose ``cell_parts`` name every cells' partition
COVER_LAYOUT = 1  # ``cover_layout`` of a pointer whose ``cell_parts`` hold their road_cover rows
CONTRIBUTOR_LAYOUT = 1  # ``contributor_layout`` of a pointer whose ``parts`` keep runs (state.py)
PARTS_DIR = "parts"  # parts/<key>/<generation>/: a partition's tables
TRIPS_DIR = "trips"  # trips/<generation>/: an update's trips' tables
ROLLUP_DIR = "rollup"  # rollup/<generation>/: the region's tables

Read = TypeVar("Read")


def pointer_with(coverage_dir: Path, layout_key: str, layout: int, what: str) -> dict[str, Any]:
    """Return the pointer in force of a coverage folder whose ``layout_key`` is ``layout``.

    Raises
    ------
    InputDataError
        If the folder's state has no such pointer: no update wrote its ``what`` there.
    """
    state_root = coverage_dir / "state"
    pointer = current_pointer(state_root)
    if pointer.get(layout_key) != layout:
        raise InputDataError(
            f"{coverage_dir}: holds no {what} (no {state_root / CURRENT_FILE} of an update "
            "that wrote it); run `roadcover coverage` into this folder"
        )
    return pointer


def read_in_force(read: Callable[[], Read]) -> Read:
    """Return ``read()``, called once more if it failed on files an update removed meanwhile.

    An update that commits twice while a reader follows the pointer it read removes the files
    that pointer named; the second call follows the pointer now in force.
    """
    try:
        return read()
    except InputDataError:
        return read()


def current_pointer(state_root: Path) -> dict[str, Any]:
    """Return ``CURRENT.json`` of a state folder (version, batches, roads, ...); ``{}`` if none.

    A pointer of the unpartitioned format (one version folder of three tables) has no
    ``format``; one of format 2 names partitions holding every table, the per-trip ones too;
    :func:`pipeline.coverage.state.read_state` reads both and ``roadcover coverage`` writes
    them again in this format.

    Raises
    ------
    InputDataError
        If the pointer is not JSON, or does not name a version and partitions by their hex
        digits and keys (a damaged or planted pointer is never followed elsewhere).
    """
    pointer = state_root / CURRENT_FILE
    if not pointer.exists():
        return {}
    try:
        current = json.loads(pointer.read_text(encoding="utf-8"))
        valid = VERSION_PATTERN.fullmatch(current["version"]) is not None
        valid &= isinstance(current["batches"], list)
        if "format" in current:
            valid &= current["format"] in (FORMAT, FORMAT_WITH_TRIPS_PER_PART)
            valid &= _valid_parts(current) and _valid_trips(current.get("trips", {}))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InputDataError(
            f"{pointer}: not a coverage state pointer written by roadcover coverage; the "
            "coverage folder is damaged: compute it again into a new folder"
        )
    return dict(current)


def _valid_parts(current: Mapping[str, Any]) -> bool:
    rollup = current["rollup"]
    return (
        _valid_generations(current["parts"])
        and _valid_generations(current.get("cell_parts", {}))
        and (rollup is None or (isinstance(rollup, str) and _is_version(rollup)))
    )


def _valid_generations(parts: object) -> bool:
    """Whether ``parts`` maps partition keys to generations (a dict of valid names)."""
    return isinstance(parts, dict) and all(
        isinstance(key, str) and PART_PATTERN.fullmatch(key) is not None and _is_version(gen)
        for key, gen in parts.items()
    )


def _valid_trips(trips: object) -> bool:
    """Whether ``trips`` maps generations to their latest time (epoch ms) or None."""
    return isinstance(trips, dict) and all(
        _is_version(gen) and (latest is None or type(latest) is int)
        for gen, latest in trips.items()
    )


def _is_version(name: object) -> bool:
    return isinstance(name, str) and VERSION_PATTERN.fullmatch(name) is not None


def kept_in_state(parts: Sequence[str], pointers: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a commit keeps the state's file or folder at ``parts`` (path parts in ``state/``).

    What one of ``pointers`` (the new pointer and the one it replaces) names is kept: a
    partition's generation (``parts/<key>/<gen>``), an update's trips (``trips/<gen>``), a
    rollup (``rollup/<gen>``), the version folder of a replaced pointer of the unpartitioned
    format (``<version>/``); and whatever is not of these (``CURRENT.json``).
    """
    head = parts[0] if parts else ""
    if head == PARTS_DIR and len(parts) >= 3:
        return any(
            dict(named.get(table) or {}).get(parts[1]) == parts[2]
            for named in pointers
            for table in ("parts", "cell_parts")
        )
    if head == TRIPS_DIR and len(parts) >= 2:
        return any(parts[1] in dict(named.get("trips") or {}) for named in pointers)
    if head == ROLLUP_DIR and len(parts) >= 2:
        return any(parts[1] == named.get("rollup") for named in pointers)
    if VERSION_PATTERN.fullmatch(head):
        return any(head == named.get("version") and "format" not in named for named in pointers[1:])
    return True


def stale_state_files(
    names: Iterable[str], pointer: Mapping[str, Any], previous: Mapping[str, Any]
) -> list[str]:
    """Return the files of ``names`` (paths in ``state/``) that committing ``pointer`` removes."""
    return sorted(name for name in names if not kept_in_state(name.split("/"), [pointer, previous]))
