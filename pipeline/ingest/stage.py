"""The ingest stage: raw trace files -> the clean, partitioned ``points`` dataset.

Files are ingested in chunks (up to ``CHUNK_FILES`` files or about ``CHUNK_BYTES`` bytes; one
Dask task per chunk when the batch has enough of them). A chunk's files are read, then all its
fixes are cleaned, split into trips and trimmed for privacy together (every step is per trace,
and a trace never spans files), and written to the batch's staging folder by the worker. What
comes back to the stage process is small: per-file counts, rejects, one summary row (and line)
per trip and a compact key per fix for the shared-coordinates check, so memory is bounded by
the chunk, not the batch. The plausibility checks that compare trips across the batch then run
on those summaries, and the staged files are moved into place.

``TRACES_DIR`` layout (every file written atomically; see docs/data-contracts.md)::

    points/date=YYYY-MM-DD/h3=<cell>/part-<batch>-<chunk>.parquet   accepted fixes (points)
    trips/part-<batch>.parquet                                one row per trip (contract trips)
    rejects/part-<batch>.parquet                              every rejected row (contract rejects)
    reports/<batch>.json                                      rows read/accepted/rejected per file
    ingested_files.json                                       content sha256 of every ingested file

A file whose content was ingested before is skipped, so re-running a batch adds nothing. A
batch interrupted before it finished left only its staging folder (``.staging/<batch>``), which
the next run of the batch removes; the registry is written last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from pipeline.config import IngestSettings
from pipeline.contracts import POINTS, REJECTS, TRIPS
from pipeline.errors import InputDataError
from pipeline.ingest.clean import (
    check_values,
    reject_acceleration_spikes,
    reject_duplicates,
    reject_speed_spikes,
)
from pipeline.ingest.identity import SIDECAR_SUFFIX, assign_identities
from pipeline.ingest.plausibility import (
    Positions,
    TripFixes,
    batch_flags,
    coordinate_keys,
    empty_keys,
    positions_in,
    score,
    shared_keys,
    summarize_trips,
    trace_flags,
)
from pipeline.ingest.privacy import load_pseudonym_key
from pipeline.ingest.readers import (
    REJECT_COLUMNS,
    ReaderOptions,
    ReadResult,
    UnreadableFileError,
    fix_frame,
    read_trace_files,
    repeated,
)
from pipeline.ingest.trips import apply_privacy, reject_short_trips, split_trips
from pipeline.io import STAGING_DIR, read_table, write_json, write_points, write_table
from pipeline.parallel import run_tasks
from pipeline.roads.extracts import file_sha256

log = logging.getLogger(__name__)

REGISTRY_FILE = "ingested_files.json"
WHOLE_FILE_ROW = 0
# Files are read one by one but cleaned in chunks: every cleaning step works on many traces
# at once, so its fixed cost is paid once per chunk instead of once per (often small) file.
# Chunks depend on the files alone, never on the number of workers.
CHUNK_FILES = 32
CHUNK_BYTES = 32 * 2**20
# a LocalCluster pays off from this many chunks per worker (it takes seconds to start)
DASK_MIN_CHUNKS_PER_WORKER = 4
POSITION_COLUMNS = ["observed_at", "lon", "lat"]


@dataclass
class FileOutcome:
    """What reading one file produced, besides its rows: counts and the reader's rejects."""

    path: str
    sha256: str
    format: str | None
    rows_read: int
    reader_rejects: pd.DataFrame
    ignored: dict[str, int]


@dataclass
class ChunkOutcome:
    """What ingesting a chunk of files produced; its accepted fixes are in the staged files.

    Attributes
    ----------
    files
        What reading each file produced.
    accepted_by_file
        Accepted fixes per file (``source_file`` -> count).
    rejects
        The rows rejected by cleaning, splitting and privacy (:data:`REJECT_COLUMNS`).
    trips
        One row per trip: :func:`summarize_trips` with the trip's line as ``geometry``.
    flags
        The flags found within traces (flag -> trip ids).
    keys
        :func:`coordinate_keys` of the chunk's accepted fixes.
    points_files
        Trip id -> the staged points file holding its fixes (relative to the staging folder).
    """

    files: list[FileOutcome]
    accepted_by_file: dict[str, int]
    rejects: pd.DataFrame
    trips: gpd.GeoDataFrame
    flags: dict[str, set[str]]
    keys: pd.DataFrame
    points_files: dict[str, str]


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of a batch to ingest: its files, and where the worker stages its points.

    ``paths`` are as given (they name the rows' ``source_file``); relative ones are opened
    from ``base_dir``, the stage's working folder, since a shared worker may run elsewhere.
    """

    index: int
    paths: list[Path]
    sha256s: list[str]
    batch_id: str
    staging_dir: Path
    base_dir: Path


def find_trace_files(inputs: list[Path]) -> list[Path]:
    """Expand folders into the trace files they hold (sidecars excluded), sorted."""
    files: set[Path] = set()
    for item in inputs:
        if item.is_dir():
            files |= {p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")}
        elif item.exists():
            files.add(item)
        else:
            raise InputDataError(f"{item}: no such file or folder")
    return sorted(p for p in files if not p.name.endswith(SIDECAR_SUFFIX))


def ingest_traces(
    inputs: list[Path],
    traces_dir: Path,
    settings: IngestSettings,
    strict: bool = False,
    now: pd.Timestamp | None = None,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Ingest trace files into ``traces_dir`` as one batch and return the batch report.

    Parameters
    ----------
    inputs
        Trace files, or folders searched recursively.
    traces_dir
        The traces dataset (created if needed); earlier batches are kept.
    settings
        Ingest settings.
    strict
        Make any rejected row fatal: nothing is written and the error lists the reasons.
    now
        The time against which future timestamps are judged (default: the current time).
    scheduler_address
        An existing Dask scheduler (config ``dask.scheduler_address``); default: the
        ``DASK_SCHEDULER_ADDRESS`` environment variable, else a LocalCluster.

    Raises
    ------
    InputDataError
        If an input does not exist, or ``strict`` and some row was rejected.
    ConfigError
        If no pseudonym key is configured.
    """
    key = load_pseudonym_key(settings)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    registry = _read_registry(traces_dir)
    files = find_trace_files(inputs)
    hashes = _file_hashes(files)
    new_files = _new_files(files, hashes, registry)
    to_ingest = set(new_files)  # a set: the batch may hold many thousand files
    skipped = [str(p) for p in files if p not in to_ingest]
    if not new_files:
        log.info("ingest: nothing new (%d file(s) already ingested)", len(skipped))
        return {"batch_id": None, "files_skipped": skipped, "rows_read": 0}
    batch_id = hashlib.sha256("".join(sorted(hashes[p] for p in new_files)).encode()).hexdigest()[
        :16
    ]
    staging = (traces_dir / STAGING_DIR / batch_id).absolute()
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run of this batch left
    tasks = [
        ChunkTask(i, chunk, [hashes[p] for p in chunk], batch_id, staging, Path.cwd())
        for i, chunk in enumerate(file_chunks(new_files))
    ]
    chunks: list[ChunkOutcome] = run_tasks(
        ingest_chunk,
        tasks,
        "ingest file chunks",
        settings.workers,
        scheduler_address,
        min_tasks=DASK_MIN_CHUNKS_PER_WORKER * settings.workers,
        settings=settings,
        pseudonym_key=key,
        now=now,
    )
    outcomes = [file for chunk in chunks for file in chunk.files]
    trips = _flag_batch_trips(chunks, traces_dir, staging, settings)
    rejects = _rejects_table(outcomes, chunks, batch_id)
    report = _batch_report(batch_id, outcomes, chunks, rejects, trips, skipped)
    if strict and len(rejects):
        shutil.rmtree(staging, ignore_errors=True)
        raise InputDataError(
            f"--strict: {len(rejects)} row(s) rejected ({report['rejected_by_reason']}); "
            "nothing was written"
        )
    _publish_points(staging, traces_dir)
    write_table(
        trips.assign(batch_id=batch_id), traces_dir / "trips" / f"part-{batch_id}.parquet", TRIPS
    )
    write_table(rejects, traces_dir / "rejects" / f"part-{batch_id}.parquet", REJECTS)
    write_json(report, traces_dir / "reports" / f"{batch_id}.json")
    registry.update({hashes[p]: {"file": str(p), "batch_id": batch_id} for p in new_files})
    write_json(registry, traces_dir / REGISTRY_FILE)
    shutil.rmtree(staging, ignore_errors=True)
    return report


def format_report(report: dict[str, Any]) -> str:
    """Return a short human summary of a batch report (for stderr)."""
    if report["batch_id"] is None:
        return f"ingest: nothing new; {len(report['files_skipped'])} file(s) already ingested"
    lines = [f"ingest batch {report['batch_id']}:"]
    width = max(len(Path(f["file"]).name) for f in report["files"])
    lines.append(f"  {'file':<{width}}  {'format':<9} {'read':>8} {'accepted':>9} {'rejected':>9}")
    for f in report["files"]:
        name = Path(f["file"]).name
        lines.append(
            f"  {name:<{width}}  {f['format'] or '-':<9} {f['rows_read']:>8} "
            f"{f['accepted']:>9} {f['rejected']:>9}"
        )
    lines.append(
        f"  {'total':<{width}}  {'':<9} {report['rows_read']:>8} {report['accepted']:>9} "
        f"{report['rejected']:>9}"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items())
    lines.append(f"  rejected by reason: {reasons or 'none'}")
    flags = ", ".join(f"{k} {v}" for k, v in report["flags"].items())
    lines.append(
        f"  trips: {report['trips']}, flagged {report['trips_flagged']} ({flags or 'none'})"
    )
    if report["files_skipped"]:
        lines.append(f"  skipped (already ingested): {len(report['files_skipped'])} file(s)")
    return "\n".join(lines)


def _file_hashes(files: list[Path]) -> dict[Path, str]:
    """Each file's sha256, on two threads (hashlib releases the GIL on large blocks)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(files, pool.map(file_sha256, files), strict=True))


def _new_files(files: list[Path], hashes: dict[Path, str], registry: dict[str, Any]) -> list[Path]:
    """Files whose content was not ingested before, nor seen earlier in this list."""
    seen = set(registry)
    new = []
    for path in files:
        if hashes[path] not in seen:
            new.append(path)
            seen.add(hashes[path])
    return new


def file_chunks(files: list[Path]) -> list[list[Path]]:
    """Consecutive groups of at most ``CHUNK_FILES`` files and about ``CHUNK_BYTES`` bytes."""
    chunks: list[list[Path]] = []
    size = 0
    for path in files:
        if not chunks or len(chunks[-1]) >= CHUNK_FILES or size >= CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += path.stat().st_size
    return chunks


def ingest_chunk(
    task: ChunkTask, settings: IngestSettings, pseudonym_key: bytes, now: pd.Timestamp
) -> ChunkOutcome:
    """Ingest a chunk of files and stage its accepted fixes (run in a Dask worker or in-process).

    Every row read ends accepted (in a staged points file) or rejected; a file that cannot
    be read is one ``unreadable_file`` reject and the others go on.
    """
    files, rows = ingest_files(
        task.paths, task.sha256s, settings, pseudonym_key, now, task.base_dir
    )
    rejected = rows["reason"].notna().to_numpy()
    rejects = rows.loc[rejected, REJECT_COLUMNS].reset_index(drop=True)
    accepted = rows[~rejected].reset_index(drop=True)
    if accepted.empty:
        return ChunkOutcome(files, {}, rejects, _empty_trips(), {}, empty_keys(), {})
    return ChunkOutcome(
        files=files,
        accepted_by_file={
            str(path): int(count) for path, count in accepted["source_file"].value_counts().items()
        },
        rejects=rejects,
        trips=_trip_lines(accepted, summarize_trips(accepted)),
        flags=trace_flags(accepted),
        keys=coordinate_keys(accepted),
        points_files=_stage_points(task, accepted, settings.partition_h3_res),
    )


def ingest_files(
    paths: list[Path],
    sha256s: list[str],
    settings: IngestSettings,
    pseudonym_key: bytes,
    now: pd.Timestamp,
    base_dir: Path | None = None,
) -> tuple[list[FileOutcome], pd.DataFrame]:
    """Read and identify each file, then clean, split and trim all their rows together.

    Relative ``paths`` are opened from ``base_dir`` (default: the working folder).

    Returns
    -------
    files
        What reading each file produced.
    rows
        Every fix read, sorted by trace and time: accepted (``reason`` null, with a
        ``trip_id``) or rejected with a reason.
    """
    base = base_dir if base_dir is not None else Path.cwd()
    read = read_files(paths, sha256s, settings, pseudonym_key, [base / p for p in paths])
    files = [outcome for outcome, _ in read]
    readable = [columns for _, columns in read if columns is not None]
    if not readable:
        return files, _empty_rows()
    rows = _sorted_rows(readable)
    clean_rows(rows, settings, now)
    return files, rows


def _sorted_rows(files: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Join the files' fix columns into one table sorted by trace and time, with no reasons yet.

    The files' columns are joined and sorted as arrays, and the table built once for the chunk.
    """
    columns = {name: np.concatenate([file[name] for file in files]) for name in files[0]}
    trace_codes = pd.factorize(columns["trace_id"], sort=True)[0]
    order = np.lexsort((columns["source_row"], columns["observed_at"], trace_codes))
    no_problem = np.full(len(order), None, dtype=object)
    sorted_columns = {name: values[order] for name, values in columns.items()}
    return fix_frame({**sorted_columns, "reason": no_problem, "detail": no_problem.copy()})


def read_files(
    paths: list[Path],
    sha256s: list[str],
    settings: IngestSettings,
    pseudonym_key: bytes,
    locations: list[Path],
) -> list[tuple[FileOutcome, dict[str, np.ndarray] | None]]:
    """Read files; per file, what was read and its fix columns with pseudonymous identities.

    The columns are :data:`~pipeline.ingest.readers.FIX_COLUMNS` and ``trace_id``
    (``observed_at`` naive UTC), None for a file that cannot be read. ``paths`` name the files
    in the outputs; ``locations`` are where to open them.
    """
    options = ReaderOptions(
        csv_columns=dict(settings.csv_columns) or None,
        csv_time_unit=settings.csv_time_unit,
        max_file_rows=settings.max_file_rows,
        max_decoded_mb=settings.max_decoded_mb,
    )
    results = read_trace_files(locations, options, [str(p) for p in paths])
    return [
        _identified(result, path, sha256, settings, pseudonym_key, location)
        for result, path, sha256, location in zip(results, paths, sha256s, locations, strict=True)
    ]


def _identified(
    result: ReadResult | UnreadableFileError,
    path: Path,
    sha256: str,
    settings: IngestSettings,
    pseudonym_key: bytes,
    location: Path,
) -> tuple[FileOutcome, dict[str, np.ndarray] | None]:
    """One file's outcome, and its columns with identities (None if it could not be read)."""
    if isinstance(result, UnreadableFileError):
        whole_file = pd.DataFrame(
            [
                {
                    "source_file": str(path),
                    "source_row": WHOLE_FILE_ROW,
                    "reason": "unreadable_file",
                    "detail": str(result),
                }
            ]
        )
        return FileOutcome(str(path), sha256, None, 1, whole_file, {}), None
    columns = assign_identities(result.columns, path, sha256, settings, pseudonym_key, location)
    columns["source_file"] = repeated(str(path), len(columns["source_row"]))
    outcome = FileOutcome(
        str(path), sha256, result.format, result.rows_read, result.rejects, result.ignored
    )
    return outcome, columns


def clean_rows(rows: pd.DataFrame, settings: IngestSettings, now: pd.Timestamp) -> None:
    """Run every cleaning, splitting and privacy step on rows sorted by trace and time."""
    check_values(rows, settings, now)
    reject_duplicates(rows)
    reject_speed_spikes(rows, settings)
    reject_acceleration_spikes(rows, settings)
    split_trips(rows, settings)
    apply_privacy(rows, settings)
    reject_short_trips(rows, settings)


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame(columns=["source_file", "source_row", "reason", "detail", "trip_id"])


def _rejects_table(
    outcomes: list[FileOutcome], chunks: list[ChunkOutcome], batch_id: str
) -> pd.DataFrame:
    read_failures = [o.reader_rejects for o in outcomes if len(o.reader_rejects)]
    cleaned = [chunk.rejects for chunk in chunks if len(chunk.rejects)]
    parts = [*read_failures, *cleaned]
    rejects = pd.concat(parts, ignore_index=True) if parts else _empty_rows()[REJECT_COLUMNS]
    rejects["detail"] = rejects["detail"].fillna("").astype(str)
    rejects["source_row"] = rejects["source_row"].astype("int64")
    rejects["batch_id"] = batch_id
    return rejects.sort_values(["source_file", "source_row"], kind="stable", ignore_index=True)


def _batch_report(
    batch_id: str,
    outcomes: list[FileOutcome],
    chunks: list[ChunkOutcome],
    rejects: pd.DataFrame,
    trips: pd.DataFrame,
    skipped: list[str],
) -> dict[str, Any]:
    per_file: list[dict[str, Any]] = []
    accepted_by_file: Counter[str] = Counter()
    for chunk in chunks:
        accepted_by_file.update(chunk.accepted_by_file)
    # counted once, not filtered per file (which is quadratic in the number of files); a
    # file's reasons in the order they first appear in its rows
    reasons_by_file: dict[str, dict[str, int]] = {}
    counts = rejects.groupby(["source_file", "reason"], sort=False).size()
    for path, reason, count in zip(
        counts.index.get_level_values(0), counts.index.get_level_values(1), counts, strict=True
    ):
        reasons_by_file.setdefault(str(path), {})[str(reason)] = int(count)
    for outcome in outcomes:
        file_reasons = reasons_by_file.get(outcome.path, {})
        per_file.append(
            {
                "file": outcome.path,
                "sha256": outcome.sha256,
                "format": outcome.format,
                "rows_read": outcome.rows_read,
                "accepted": int(accepted_by_file.get(outcome.path, 0)),
                "rejected": sum(file_reasons.values()),
                "rejected_by_reason": file_reasons,
                "ignored": outcome.ignored,
            }
        )
    unbalanced = [f["file"] for f in per_file if f["rows_read"] != f["accepted"] + f["rejected"]]
    if unbalanced:  # a bug, never bad input: every row must be accepted or rejected
        raise AssertionError(f"rows read != accepted + rejected for {unbalanced}")
    flags = Counter(flag for names in trips["flags"] for flag in names)
    return {
        "batch_id": batch_id,
        "files": per_file,
        "files_skipped": skipped,
        "files_unreadable": [f["file"] for f in per_file if f["format"] is None],
        "rows_read": sum(f["rows_read"] for f in per_file),
        "accepted": sum(f["accepted"] for f in per_file),
        "rejected": len(rejects),
        "rejected_by_reason": {
            str(k): int(v) for k, v in sorted(rejects["reason"].value_counts().items())
        },
        "trips": len(trips),
        "trips_flagged": int((~trips["plausible"]).sum()) if len(trips) else 0,
        "flags": dict(sorted(flags.items())),
    }


def _stage_points(task: ChunkTask, accepted: pd.DataFrame, resolution: int) -> dict[str, str]:
    """Write a chunk's accepted fixes to its staged partitions; return trip -> file written.

    Partitions are by the date and coarse H3 cell of each trip's first fix, so a trip never
    spans partitions; the file names carry the batch and the chunk, so re-running the batch
    writes the same files.
    """
    columns = [f.name for f in POINTS.schema if f.name != "geometry"]
    table = pa.Table.from_pandas(accepted[columns], preserve_index=False, nthreads=1)
    lon, lat = accepted["lon"].to_numpy(), accepted["lat"].to_numpy()
    trip_codes, trip_ids = pd.factorize(accepted["trip_id"])
    partition = _trip_partitions(accepted, resolution)
    trip_folders = [f"points/date={partition[t][0]}/h3={partition[t][1]}" for t in trip_ids]
    folder_codes, folders = pd.factorize(np.array(trip_folders, dtype=object), sort=True)
    row_folders = folder_codes[trip_codes]
    by_folder = np.argsort(row_folders, kind="stable")  # each folder's rows, in order
    ends = np.searchsorted(row_folders[by_folder], np.arange(len(folders)), side="right")
    name = f"part-{task.batch_id}-{task.index:05d}.parquet"
    files: dict[str, str] = {}
    for folder, rows in zip(folders, np.split(by_folder, ends[:-1]), strict=True):
        relative = f"{folder}/{name}"  # folders sorted, so files are written in a stable order
        write_points(table.take(rows), lon[rows], lat[rows], task.staging_dir / relative, POINTS)
        files.update(dict.fromkeys(trip_ids[np.unique(trip_codes[rows])], relative))
    return files


def _publish_points(staging: Path, traces_dir: Path) -> None:
    """Move the batch's staged points files into the dataset (each an atomic rename)."""
    for staged in sorted((staging / "points").rglob("*.parquet")):
        final = traces_dir / staged.relative_to(staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)


def _flag_batch_trips(
    chunks: list[ChunkOutcome], traces_dir: Path, staging: Path, settings: IngestSettings
) -> gpd.GeoDataFrame:
    """Trips of the batch with their flags, trust score and plausibility.

    The batch-wide checks see trip summaries and coordinate keys; the fixes of a trip are read
    back from its staged file only when a device has trips overlapping in time.
    """
    found = [c.trips for c in chunks if len(c.trips)]
    trips = pd.concat(found, ignore_index=True) if found else _empty_trips()
    keys = shared_keys([c.keys for c in chunks])
    points_files = {trip: f for chunk in chunks for trip, f in chunk.points_files.items()}

    @functools.lru_cache(maxsize=16)
    def staged(relative: str) -> Positions:
        return positions_in(
            read_table(staging / relative, POINTS, columns=["trip_id", *POSITION_COLUMNS])
        )

    def positions(trip: str) -> TripFixes:
        return staged(points_files[trip])(trip)

    later = batch_flags(trips, _earlier_trips(traces_dir), keys, positions, settings)
    flagged = score(trips, *(c.flags for c in chunks), later)
    return gpd.GeoDataFrame(flagged, geometry="geometry", crs="EPSG:4326")


def _trip_partitions(accepted: pd.DataFrame, resolution: int) -> dict[str, tuple[str, str]]:
    """Each trip's partition: the date and coarse H3 cell of its first fix."""
    firsts = accepted.groupby("trip_id", sort=False)[["observed_at", "lat", "lon"]].first()
    days = firsts["observed_at"].dt.strftime("%Y-%m-%d")
    cells = [
        h3.latlng_to_cell(lat, lon, resolution)
        for lat, lon in zip(firsts["lat"], firsts["lon"], strict=True)
    ]
    return dict(zip(firsts.index.astype(str), zip(days, cells, strict=True), strict=True))


def _empty_trips() -> gpd.GeoDataFrame:
    columns = [f.name for f in TRIPS.schema if f.name not in ("flags", "trust_score", "plausible")]
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs="EPSG:4326"))


def _trip_lines(accepted: pd.DataFrame, trips: pd.DataFrame) -> gpd.GeoDataFrame:
    codes = pd.factorize(accepted["trip_id"])[0]
    coords = accepted[["lon", "lat"]].to_numpy()
    lines = shapely.linestrings(coords, indices=codes)
    by_trip = dict(zip(accepted["trip_id"].drop_duplicates(), lines, strict=True))
    return gpd.GeoDataFrame(trips, geometry=[by_trip[t] for t in trips["trip_id"]], crs="EPSG:4326")


def _earlier_trips(traces_dir: Path) -> pd.DataFrame:
    parts = sorted((traces_dir / "trips").glob("part-*.parquet"))
    columns = ["trip_id", "contributor_id", "started_at", "fingerprint"]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat([read_table(p, TRIPS, columns=columns) for p in parts], ignore_index=True)


def _read_registry(traces_dir: Path) -> dict[str, dict[str, str]]:
    path = traces_dir / REGISTRY_FILE
    if not path.exists():
        return {}
    registry: dict[str, dict[str, str]] = json.loads(path.read_text())
    return registry
