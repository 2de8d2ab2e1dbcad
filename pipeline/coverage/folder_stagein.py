"""Stage a coverage folder in from object storage: what a run reads of it, and only that.

A coverage folder in storage (``roadcover coverage -o s3://...``) is locked, and its records
(:data:`COVERAGE_RECORDS`: the state's ``CURRENT.json``, ``outputs.json``, ``summary.json``
and the network cache's ``network.json`` files and roads memo) are downloaded; they are all a
run with nothing new reads. A run with work to do downloads, before the update
(:func:`stage_update`), the files that :func:`update_reads` names: the network cache's small
tables of a row per partition or coarse cell (the per-partition road, the coarse polygons, the
highway lengths) and its fence of edge ids, the rollup in force, the trips' ``driven`` tables
the summary sums, and, of the partitions the new batches may touch (:func:`touched_parts`),
their state tables and network files (their runs among them). Of the cache's arrays of every
edge it reads the rows of the batches' edges and their roads' alone, by byte ranges
(:func:`~pipeline.coverage.partitions.edge_rows_by_ranges`), never the files. A state of an
older layout, of another partitioning, without a complete network cache of these roads (or
with one of an older format), or the first update of the folder, downloads the whole folder
(the update reads or rewrites all of it).

Publishing uploads the files the run wrote, new or changed, and deletes those it removed: the
downloaded ones it deleted, and of the others the state's files that neither the new pointer
nor the one it replaced names (:func:`~pipeline.coverage.pointer.stale_state_files`, the rule
of :func:`~pipeline.coverage.state.commit_pointer`). A file the pointer names that is not in
storage is an error naming it, never an empty partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.coverage.network_cache import NETWORK_DIR, NETWORK_META, network_current
from pipeline.coverage.network_cache import network_folder as network_cache_folder
from pipeline.coverage.pointer import (
    CONTRIBUTOR_LAYOUT,
    COVER_LAYOUT,
    CURRENT_FILE,
    PARTS_DIR,
    ROLLUP_DIR,
    TRIPS_DIR,
    current_pointer,
    stale_state_files,
)
from pipeline.coverage.stage import OUTPUTS_FILE, SEGMENTS_FILE, SUMMARY_FILE
from pipeline.storage import is_url

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipeline.config import CoverageSettings
    from pipeline.coverage.partitions import EdgeRows, Network
    from pipeline.storage import Staging

STATE_DIR = "state"
COVERAGE_RECORDS = (
    f"{STATE_DIR}/{CURRENT_FILE}", OUTPUTS_FILE, SUMMARY_FILE, f"{NETWORK_DIR}/*.json",
)  # fmt: skip
"""What every run reads of a coverage folder (glob patterns; ``*`` matches ``/`` too)."""


class Fetch(Protocol):
    """What reads more of a staged coverage folder (:func:`stage_coverage`)."""

    def __call__(self, names: Sequence[str] | None, required: bool = True) -> list[str]:
        """Download files of the folder: names (required) or glob patterns; None: the rest."""

    def read_ranges(self, name: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Read byte ranges ``[start, stop)`` of a file of the folder, without downloading it."""


@dataclass(frozen=True)
class _FolderFetch:
    """:class:`Fetch` of the folder a :class:`~pipeline.storage.Staging` staged at ``local``."""

    staging: Staging
    local: Path

    def __call__(self, names: Sequence[str] | None, required: bool = True) -> list[str]:
        return self.staging.fetch(self.local, names, required)

    def read_ranges(self, name: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        return self.staging.read_ranges(self.local, name, ranges)


def stage_coverage(staging: Staging, location: str | Path) -> tuple[Path, Fetch | None]:
    """Stage the coverage folder ``location``: lock it and download its records if a URL.

    Returns
    -------
    tuple
        The local folder, and what downloads more of it (None for a local folder).
    """
    local = staging.output_folder(location, records=COVERAGE_RECORDS)
    if not is_url(location):
        return local, None
    previous = current_pointer(local / STATE_DIR)

    def stale(names: list[str]) -> list[str]:
        pointer = current_pointer(local / STATE_DIR)
        if pointer == previous:
            return []  # nothing committed: nothing removed
        in_state = [name.removeprefix(f"{STATE_DIR}/") for name in names
                    if name.startswith(f"{STATE_DIR}/")]  # fmt: skip
        return [f"{STATE_DIR}/{name}" for name in stale_state_files(in_state, pointer, previous)]

    staging.prune_with(local, stale)
    return local, _FolderFetch(staging, local)


def stage_update(
    coverage_dir: Path,
    new_batches: list[tuple[Path, str]],
    roads: dict[str, Any],
    settings: CoverageSettings,
    as_of: pd.Timestamp | None,
    fetch: Fetch,
) -> Network | None:
    """Download what the update of ``new_batches`` reads of the coverage folder.

    Call it holding the folder's lock, after the records are downloaded.

    Returns
    -------
    Network or None
        The network's cache, loaded to find the partitions the batches touch (for the update
        to use, not to load again), or None when the whole folder was downloaded.
    """
    from pipeline.coverage.partitions import RUNS_DIR, load_network
    from pipeline.coverage.update import as_of_ms_of, partitioned_as

    pointer = current_pointer(coverage_dir / STATE_DIR)
    edges_sha256 = roads["edges_sha256"]
    resolutions = (settings.h3_resolution, settings.partition_resolution)
    complete = network_current(coverage_dir, edges_sha256, *resolutions)
    if not pointer.get("cell_parts") or not complete:
        fetch(None, True)  # a first update, or a cache to compute: all of it
        return None
    folder = network_cache_folder(coverage_dir, edges_sha256, *resolutions)
    cache = folder.relative_to(coverage_dir).as_posix()
    as_of_ms = as_of_ms_of(as_of, dict(pointer.get("trips") or {}))
    network = load_network(_no_edges, edges_sha256, coverage_dir, *resolutions)
    layouts = (pointer.get("cover_layout"), pointer.get("contributor_layout"))
    if not partitioned_as(pointer, network) or layouts != (COVER_LAYOUT, CONTRIBUTOR_LAYOUT):
        fetch(None, True)  # an older layout, or partitioned otherwise: read whole
        return None
    required, _ = update_reads(pointer, cache, set(), as_of_ms)
    fetch(required, True)
    matched_dirs = [matched_dir for matched_dir, _ in new_batches]
    ids = batch_edge_ids(matched_dirs)
    network = replace(network, rows=_edge_rows(fetch, cache, folder, ids))
    edge_parts = edge_parts_of(network, ids)
    fetch([f"{cache}/{RUNS_DIR}/{key}.parquet" for key in sorted(edge_parts)])
    parts = touched_parts(network, ids, edge_parts)
    required, optional = update_reads(pointer, cache, parts, as_of_ms)
    fetch(required, True)
    fetch(optional, False)
    return network


def update_reads(
    pointer: dict[str, Any], cache: str, parts: set[str], as_of_ms: int
) -> tuple[list[str], list[str]]:
    """Return the files of a coverage folder an update of partitions ``parts`` reads.

    The one place that knows which files of the state and the network cache an update
    (:func:`pipeline.coverage.update.update_coverage`) reads, besides :data:`COVERAGE_RECORDS`.

    Parameters
    ----------
    pointer
        The state's pointer in force (of the current layout).
    cache
        The network cache's folder, relative to the coverage folder.
    parts
        The partitions whose tables the update may read or rewrite (:func:`touched_parts`).
    as_of_ms
        The time freshness is measured from, or an earlier one (the summary reads the trips
        of the week before it).

    Returns
    -------
    tuple of list of str
        The paths in the folder that must be there, and glob patterns of the network cache's
        files of the partitions (a partition has some of them only).
    """
    from pipeline.coverage.contributor_runs import RUN_PREFIX
    from pipeline.coverage.partitions import (
        CANONICAL_DIR,
        CELLS_DIR,
        COARSE_POLYGONS,
        EDGE_INDEX_DIR,
        FENCE_FILE,
        FIXED_EDGES_DIR,
        HIGHWAYS_FILE,
        PART_ROAD,
        POLYGONS_DIR,
        RUNS_DIR,
    )
    from pipeline.coverage.rollup import ROLLUP_TABLES
    from pipeline.coverage.state import CELL_ROW_TABLES, PART_FILES
    from pipeline.coverage.update import recent_trips

    state = STATE_DIR
    required = [
        f"{cache}/{NETWORK_META}", f"{cache}/{PART_ROAD}", f"{cache}/{COARSE_POLYGONS}",
        f"{cache}/{HIGHWAYS_FILE}", f"{cache}/{EDGE_INDEX_DIR}/{FENCE_FILE}",
        *(f"{state}/{ROLLUP_DIR}/{pointer['rollup']}/{name}.parquet" for name in ROLLUP_TABLES),
        *(f"{state}/{TRIPS_DIR}/{gen}/driven.parquet"
          for gen in recent_trips(dict(pointer.get("trips") or {}), as_of_ms)),
    ]  # fmt: skip
    named_parts, cell_parts = dict(pointer["parts"]), dict(pointer["cell_parts"])
    runs: list[str] = []  # the runs a partition's RUNS_FILE lists (checked when read)
    for key in sorted(parts):
        if key in named_parts:
            folder = f"{state}/{PARTS_DIR}/{key}/{named_parts[key]}"
            required += [f"{folder}/{name}" for name in PART_FILES]
            runs.append(f"{folder}/{RUN_PREFIX}*")
        if key in cell_parts:
            folder = f"{state}/{PARTS_DIR}/{key}/{cell_parts[key]}"
            required += [f"{folder}/{name}.parquet" for name in CELL_ROW_TABLES]
    optional = runs + [
        f"{cache}/{kind}/{key}.parquet"
        for key in sorted(parts)
        for kind in (RUNS_DIR, CELLS_DIR, POLYGONS_DIR, CANONICAL_DIR, FIXED_EDGES_DIR)
    ]
    return required, optional


def touched_parts(network: Network, edge_ids: np.ndarray, edge_parts: set[str]) -> set[str]:
    """Return the partitions whose tables an update of batches of edges ``edge_ids`` may read.

    The partitions of the batches' edges, ``edge_parts`` (:func:`edge_parts_of`: their state,
    edge coverage and canonical edges), and of the cells their roads run through (a road's
    cells may lie in other partitions than its own: the cells' figures and (cell, contributor)
    pairs). ``edge_ids``: of every segment (:func:`batch_edge_ids`), counted or not: a superset
    of what the update touches.
    """
    import pandas as pd

    roads = network.canonical(edge_ids).index  # the edges and their roads' edges
    runs = network.runs_of(edge_parts)
    cells = pd.unique(runs.loc[runs["key"].isin(roads), "cell"].to_numpy())
    return edge_parts | set(network.cell_parts(cells))


def edge_parts_of(network: Network, edge_ids: np.ndarray) -> set[str]:
    """Return the partitions of the edges of ``edge_ids`` (an id of no edge has none)."""
    known = network.edge_lengths(edge_ids).index
    return set(network.edge_parts(known.to_numpy()))


def batch_edge_ids(matched_dirs: list[Path]) -> np.ndarray:
    """Return the ``edge_id`` of every segment of the matched batches in ``matched_dirs``."""
    import numpy as np
    import pyarrow.parquet as pq

    ids = [
        pq.read_table(matched_dir / SEGMENTS_FILE, columns=["edge_id"])["edge_id"].to_numpy()
        for matched_dir in matched_dirs
    ]
    return np.concatenate([np.empty(0, "int64"), *ids])


def _edge_rows(fetch: Fetch, cache: str, folder: Path, edge_ids: np.ndarray) -> EdgeRows:
    """Look up edges and their roads' in the cache's edge index, by byte ranges."""
    import numpy as np

    from pipeline.coverage.partitions import EDGE_INDEX_DIR, FENCE_FILE, edge_rows_by_ranges

    def read(name: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        return fetch.read_ranges(f"{cache}/{name}", ranges)

    fence = np.load(folder / EDGE_INDEX_DIR / FENCE_FILE)
    return edge_rows_by_ranges(read, fence, edge_ids)


def _no_edges() -> Any:
    raise AssertionError("the network cache is current: the roads' edges are not read")
