"""The coverage stage: matched batches -> coverage state, edge and cell tables, and summary.

``COVERAGE_DIR`` holds ``state/`` (partitioned, with the region's rollup: see
:mod:`pipeline.coverage.state` and :mod:`pipeline.coverage.rollup`; each partition with its
edge coverage, read with :func:`pipeline.coverage.edge_reader.read_edge_table`, contract
``edge_coverage``), ``network/`` (what the roads alone decide, computed once per roads
version: :mod:`pipeline.coverage.partitions`), the cell coverage (per partition and in the
rollup, read with :func:`pipeline.coverage.cell_reader.read_cell_table`, contract
``cell_coverage``), ``summary.json`` and ``outputs.json`` (the state version and settings the
outputs are of).
An update reads and rewrites only the partitions its batches touch; a run with no new batch
and the same settings finds its outputs current from ``CURRENT.json`` and ``outputs.json``
alone and returns at once, without importing pandas or reading any table (the update
itself is :mod:`pipeline.coverage.update`). A state of the unpartitioned format (before
partitions) is partitioned on its first update, as is a state after
``coverage.partition_resolution`` changes.
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
from typing import TYPE_CHECKING, Any

from pipeline.coverage.network_cache import network_current
from pipeline.coverage.pointer import CELL_LAYOUT, EDGE_LAYOUT, FORMAT, current_pointer
from pipeline.coverage.world import check_world_road_km
from pipeline.errors import InputDataError
from pipeline.io import file_sha256
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads.identity import refuse_other_roads, roads_identity
from pipeline.roads.store import EDGES_FILE, read_roads_meta
from pipeline.roads.store import META_FILE as ROADS_META_FILE

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import CoverageSettings
    from pipeline.coverage.folder_stagein import Fetch

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
OUTPUT_FILES = (SUMMARY_FILE,)  # and the edge and cell coverage the pointer names
STEP_SETTINGS = ("batch_max_mb",)
"""Coverage settings of how an update works, not of its outputs (left out of their key)."""
ROADS_RECORDS = (ROADS_META_FILE, "shards/plan.json")  # pipeline.roads.shards' PLAN_FILE
"""What coverage reads of the roads folder on every run."""
ROADS_TABLES = (
    EDGES_FILE,
    *(f"shards/*/{name}" for name in (ROADS_META_FILE, EDGES_FILE, "owners.parquet")),
)
"""What coverage reads of the roads folder to compute its network cache: the edges table, or
on a sharded region each shard's edges and owners (:mod:`pipeline.coverage.network_shards`);
and the edges table's sha256, the roads' identity, when it does not know it."""
ROADS_INPUTS = (*ROADS_RECORDS, *ROADS_TABLES)
"""All coverage reads of the roads folder; never the match networks."""


def compute_coverage(
    roads_dir: Path,
    matched_dirs: list[Path],
    coverage_dir: Path,
    settings: CoverageSettings,
    as_of: pd.Timestamp | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
    roads: dict[str, Any] | None = None,
    fetch: Fetch | None = None,
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
    roads
        The identity of ``roads_dir`` (:func:`~pipeline.roads.identity.roads_identity`) when
        its tables were not staged in because the network cache is current
        (:func:`pipeline.coverage.roads_stagein.stage_roads`); default: computed from the
        folder.
    fetch
        Downloads more of a coverage folder staged from object storage with its records alone
        (:func:`pipeline.coverage.folder_stagein.stage_coverage`): called, when there is work
        to do, for what the update reads (:func:`~pipeline.coverage.folder_stagein.stage_update`).

    Returns
    -------
    dict
        The summary, as written to ``summary.json``.

    Raises
    ------
    InputDataError
        If a matched folder is not a snap output, or it or the coverage folder was made with
        other roads, or ``roads`` is given without the roads' tables and the network cache is
        not current.
    ConfigError
        If ``settings.world_road_km`` is less than the region's road km (a share of the world
        above 100 %).
    LockTimeoutError
        If another writer held the coverage folder for longer than ``lock_timeout_s``.
    """
    roads = roads or roads_identity(roads_dir)
    for matched_dir in matched_dirs:
        check_matched_dir(matched_dir, roads_dir, roads)
    check_coverage_roads(coverage_dir, roads_dir, roads)  # a refusal needs no lock
    road_km = float(read_roads_meta(roads_dir)["road_km"])
    check_world_road_km(road_km, settings.world_road_km, roads_dir)
    with folder_lock(coverage_dir, lock_timeout_s):
        check_coverage_roads(coverage_dir, roads_dir, roads)  # what the last writer left
        _check_network_without_tables(roads_dir, coverage_dir, roads, settings)
        pointer = current_pointer(coverage_dir / "state")
        new_batches = _new_batches(matched_dirs, list(pointer.get("batches", [])))
        outputs_key = _outputs_key(settings, as_of)
        if not new_batches and _outputs_current(coverage_dir, pointer, outputs_key):
            log.info("coverage: nothing new; the outputs of %s stand", coverage_dir)
            return dict(json.loads((coverage_dir / SUMMARY_FILE).read_text(encoding="utf-8")))
        from pipeline.coverage.update import update_coverage  # work to do: the data libraries

        network = None
        if fetch is not None:
            from pipeline.coverage.folder_stagein import stage_update

            network = stage_update(coverage_dir, new_batches, roads, settings, as_of, fetch)
        return update_coverage(
            roads_dir, roads, new_batches, coverage_dir, settings, as_of, outputs_key, network
        )


def _check_network_without_tables(
    roads_dir: Path, coverage_dir: Path, roads: dict[str, Any], settings: CoverageSettings
) -> None:
    """Refuse to go on without the roads' edge table when the network cache must be computed.

    Raises
    ------
    InputDataError
        If ``roads_dir`` has no edge table and the cache of ``roads`` is not complete (another
        writer changed the coverage folder after the roads were staged in).
    """
    if (roads_dir / EDGES_FILE).is_file() or network_current(
        coverage_dir, roads["edges_sha256"], settings.h3_resolution, settings.partition_resolution
    ):
        return
    raise InputDataError(
        f"{coverage_dir}: its network cache of the roads {roads_dir} changed while they were "
        "staged in without their tables; run the coverage again"
    )


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


def _outputs_key(settings: CoverageSettings, as_of: pd.Timestamp | None) -> str:
    """Return a key of what the outputs depend on besides the state: settings, as-of time."""
    asked = None
    if as_of is not None:  # then pandas is imported already: the caller made the Timestamp
        import pandas as pd

        asked = pd.Timestamp(as_of).tz_convert("UTC").isoformat()
    outputs_settings = {
        name: value for name, value in asdict(settings).items() if name not in STEP_SETTINGS
    }
    record = json.dumps({"settings": outputs_settings, "as_of": asked}, sort_keys=True)
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
        and pointer.get("edge_layout") == EDGE_LAYOUT
        and pointer.get("cell_layout") == CELL_LAYOUT
        and record.get("version") == pointer.get("version")
        and record.get("outputs") == outputs_key
        and all((coverage_dir / name).is_file() for name in OUTPUT_FILES)
    )


def _batch_id(matched_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (SEGMENTS_FILE, QUALITY_FILE):
        digest.update(bytes.fromhex(file_sha256(matched_dir / name)))
    return digest.hexdigest()[:16]
