"""The ingest stage: raw trace files -> the clean, partitioned ``points`` dataset.

Files are ingested in chunks (up to ``CHUNK_FILES`` files or about ``CHUNK_BYTES`` bytes; one
Dask task per chunk when the batch has enough of them). A chunk's files are read, then all its
fixes are cleaned, split into trips and trimmed for privacy together (every step is per trace,
and a trace never spans files), and written to the batch's staging folder by the worker, with
the chunk's rejects, trip lines and coordinate keys (:mod:`pipeline.ingest.parts`). What comes
back to the stage process is small: per-file counts, rejects by reason and one summary row per
trip, so its memory is bounded by the chunk, not the batch. Copies of fixes counted before (in
the dataset, or in an earlier file of the batch) are rejected before trips are split
(:mod:`pipeline.ingest.duplicates`). The plausibility checks that compare trips across the
batch then run on those summaries and on the coordinate keys shared by several trips (found
one bucket of keys at a time), the trips and rejects tables are written from the staged parts,
and the staged points files are moved into place.

``TRACES_DIR`` layout (every file written atomically; see docs/data-contracts.md)::

    points/date=YYYY-MM-DD/h3=<cell>/part-<batch>-<chunk>.parquet   accepted fixes (points)
    trips/part-<batch>.parquet                                one row per trip (contract trips)
    rejects/part-<batch>.parquet                              every rejected row (contract rejects)
    reports/<batch>.json                                      the batch's report: its commit record
    pseudonym_key.json                                        fingerprint of the pseudonym key

One ingest at a time updates a traces folder: the whole sequence, from finding which files are
new to the last write, holds the folder's lock (:func:`~pipeline.locking.folder_lock`). A
batch's report is written last and is what marks it applied: the files already ingested are
those its reports list (by content sha256), and on taking the lock the parts of a batch with no
report (what a killed ingest left) are removed, with every staging folder. So a file is counted
in one batch or none, whenever a writer is killed, and re-running a batch adds nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from pipeline.config import IngestSettings
from pipeline.contracts import POINTS, TRIPS
from pipeline.errors import ConfigError, InputDataError
from pipeline.ingest.clean import (
    check_values,
    reject_acceleration_spikes,
    reject_duplicates,
    reject_speed_spikes,
)
from pipeline.ingest.duplicates import (
    reject_fixes_of_earlier_batches,
    reject_fixes_of_earlier_files,
    valid_fixes,
)
from pipeline.ingest.identity import SIDECAR_SUFFIX, assign_identities, log_date
from pipeline.ingest.parts import (
    BatchTables,
    RejectsPart,
    key_buckets,
    part_path,
    shared_keys_of_parts,
    stage_keys,
    stage_rejects,
    stage_trips,
)
from pipeline.ingest.plausibility import (
    Positions,
    TripFixes,
    batch_flags,
    coordinate_keys,
    positions_in,
    score,
    summarize_trips,
    trace_flags,
)
from pipeline.ingest.privacy import key_fingerprint, load_pseudonym_key
from pipeline.ingest.readers import (
    FILE_TOO_LARGE,
    MISSING_DATE,
    REJECT_COLUMNS,
    ReaderOptions,
    ReadResult,
    UnreadableFileError,
    fix_frame,
    read_trace_files,
    repeated,
)
from pipeline.ingest.trips import apply_privacy, reject_short_trips, split_trips
from pipeline.io import (
    STAGING_DIR,
    batch_of_part,
    committed_batches,
    file_sha256,
    read_table,
    write_json,
    write_points,
)
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.parallel import run_tasks

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"
KEY_FILE = "pseudonym_key.json"
BATCH_OUTPUTS = ("points", "trips", "rejects")  # a batch's parts, applied once its report is
WHOLE_FILE_ROW = 0
UNREADABLE_FILE = "unreadable_file"
# a file rejected for one of these reasons had none of its rows read: it may be given again
WHOLE_FILE_REASONS = frozenset({UNREADABLE_FILE, FILE_TOO_LARGE})
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
    """What reading one file produced, besides its rows: counts and the reader's rejects.

    In a :class:`ChunkOutcome` the reader's rejects are left out (empty): they are staged.
    """

    path: str
    sha256: str
    format: str | None
    rows_read: int
    reader_rejects: pd.DataFrame
    ignored: dict[str, int]
    samples: dict[str, str] = field(default_factory=dict)


@dataclass
class ChunkOutcome:
    """What ingesting a chunk of files produced; its accepted fixes are in the staged files.

    Attributes
    ----------
    files
        What reading each file produced (without the reader's rejects, staged).
    accepted_by_file
        Accepted fixes per file (``source_file`` -> count).
    rejects
        The staged part of every row rejected, by reader, cleaning, splitting and privacy.
    trips
        One row per trip: :func:`summarize_trips` (the trips' lines are staged).
    trips_part
        The staged trips with their lines (None: no trip).
    flags
        The flags found within traces (flag -> trip ids).
    keys_part
        The staged :func:`coordinate_keys` of the chunk's accepted fixes, by bucket (None:
        no accepted fix).
    points_files
        Trip id -> the staged points file holding its fixes (relative to the staging folder).
    spans
        Per file and device, the first and last time read (``source_file``, ``device_id``,
        ``first``, ``last``): where another chunk may hold copies of its fixes.
    """

    files: list[FileOutcome]
    accepted_by_file: dict[str, int]
    rejects: RejectsPart
    trips: pd.DataFrame
    trips_part: Path | None
    flags: dict[str, set[str]]
    keys_part: Path | None
    points_files: dict[str, str]
    spans: pd.DataFrame


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of a batch to ingest: its files, and where the worker stages its outputs.

    ``paths`` are as given (they name the rows' ``source_file``); relative ones are opened
    from ``base_dir``, the stage's working folder, since a shared worker may run elsewhere.
    Copies of fixes already in ``traces_dir`` (absolute) or read from ``earlier_paths``
    (earlier files of the batch, in other chunks) are rejected. The coordinate keys are
    staged in ``key_buckets`` buckets, as many in every chunk of the batch.
    """

    index: int
    paths: list[Path]
    sha256s: list[str]
    batch_id: str
    staging_dir: Path
    base_dir: Path
    traces_dir: Path
    key_buckets: int = 1
    earlier_paths: tuple[Path, ...] = ()
    earlier_sha256s: tuple[str, ...] = ()


def find_trace_files(
    inputs: list[Path], base_dir: Path | None = None
) -> tuple[list[Path], list[Path]]:
    """Expand folders into the trace files they hold (sidecars excluded); both lists sorted.

    Symbolic links are never followed, neither inside the folders nor as inputs themselves:
    they are returned apart, to be listed in the report. Relative ``inputs`` are found in
    ``base_dir`` (default: the working folder), and the files returned are named like them.

    Returns
    -------
    files
        The regular files to ingest.
    links
        The symbolic links found (files or folders), not read.
    """
    files: set[Path] = set()
    links: set[Path] = set()
    base = base_dir if base_dir is not None else Path()
    for item in inputs:
        where = base / item
        if where.is_symlink():
            links.add(item)
        elif where.is_dir():
            found, linked = _files_in(where)
            files |= {item / path.relative_to(where) for path in found}
            links |= {item / path.relative_to(where) for path in linked}
        elif where.exists():
            files.add(item)
        else:
            raise InputDataError(f"{item}: no such file or folder")
    return sorted(p for p in files if not p.name.endswith(SIDECAR_SUFFIX)), sorted(links)


def _files_in(folder: Path) -> tuple[set[Path], set[Path]]:
    """Return the regular, not hidden files under ``folder``, and the links there."""
    files: set[Path] = set()
    links: set[Path] = set()
    for root, folders, names in os.walk(folder):  # os.walk does not enter linked folders
        here = Path(root)
        links |= {here / name for name in folders if (here / name).is_symlink()}
        for name in names:
            path = here / name
            if path.is_symlink():
                links.add(path)
            elif not name.startswith(".") and path.is_file():
                files.add(path)
    return files, links


def ingest_traces(
    inputs: list[Path],
    traces_dir: Path,
    settings: IngestSettings,
    strict: bool = False,
    now: pd.Timestamp | None = None,
    scheduler_address: str | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Ingest trace files into ``traces_dir`` as one batch and return the batch report.

    Parameters
    ----------
    inputs
        Trace files, or folders searched recursively (symbolic links are not followed).
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
    lock_timeout_s
        How long to wait for another ingest into ``traces_dir`` (config ``lock_timeout_s``).
    base_dir
        Where relative ``inputs`` are (default: the working folder); the outputs name the files
        as given (``source_file``, the report), e.g. relative to a staging folder's root.

    Raises
    ------
    InputDataError
        If an input does not exist, or ``strict`` and some row was rejected.
    ConfigError
        If no pseudonym key is configured, or ``traces_dir`` was started with another key.
    LockTimeoutError
        If another ingest held ``traces_dir`` for longer than ``lock_timeout_s``.
    """
    key = load_pseudonym_key(settings)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    base = (base_dir if base_dir is not None else Path.cwd()).absolute()
    files, links = find_trace_files(inputs, base)
    for link in links:
        log.warning("%s: a symbolic link, not followed (give the file it links to)", link)
    hashes = _file_hashes(files, base)
    with folder_lock(traces_dir, lock_timeout_s):
        roll_back_unfinished_batches(traces_dir)
        check_pseudonym_key(traces_dir, key, settings)
        ingested = ingested_files(traces_dir)
        new_files = _new_files(files, hashes, ingested)
        to_ingest = set(new_files)  # a set: the batch may hold many thousand files
        skipped = [str(p) for p in files if p not in to_ingest]
        not_followed = [str(p) for p in links]
        if not new_files:
            log.info("ingest: nothing new (%d file(s) already ingested)", len(skipped))
            earlier = {ingested[hashes[path]] for path in files}
            if len(earlier) == 1:  # the same batch again (e.g. a rerun of the workflow's rule)
                (earlier_batch,) = earlier
                earlier_report = json.loads(
                    (traces_dir / REPORTS_DIR / f"{earlier_batch}.json").read_text()
                )
                return {**earlier_report, "files_skipped": skipped, "ingested_before": True}
            return {
                "batch_id": None,
                "earlier_batches": sorted(earlier),
                "files_skipped": skipped,
                "rows_read": 0,
                "symlinks_not_followed": not_followed,
            }
        batch_id = hashlib.sha256("".join(sorted(hashes[p] for p in new_files)).encode())
        batch_name = batch_id.hexdigest()[:16]
        batch = _BatchRun(batch_name, traces_dir.absolute(), settings, key, now, base)
        _withdraw_refused_batch(traces_dir, batch.batch_id)
        tables, report = batch.ingest(new_files, hashes, scheduler_address)
        report.update(files_skipped=skipped, symlinks_not_followed=not_followed)
        if strict and report["rejected"]:
            shutil.rmtree(batch.staging, ignore_errors=True)
            raise InputDataError(
                f"--strict: {report['rejected']} row(s) rejected "
                f"({report['rejected_by_reason']}); nothing was written"
            )
        commit_batch(traces_dir, batch.staging, tables, report, key)
    return report


@dataclass
class _BatchRun:
    """One batch being ingested: its id, where it stages, and what its chunks need."""

    batch_id: str
    traces_dir: Path
    settings: IngestSettings
    key: bytes
    now: pd.Timestamp
    base_dir: Path  # where the files' names are found

    @property
    def staging(self) -> Path:
        return self.traces_dir / STAGING_DIR / self.batch_id

    def ingest(
        self, files: list[Path], hashes: dict[Path, str], scheduler_address: str | None
    ) -> tuple[BatchTables, dict[str, Any]]:
        """Ingest and stage the batch's chunks; return its staged tables and its report."""
        buckets = key_buckets(sum((self.base_dir / path).stat().st_size for path in files))
        tasks = [
            ChunkTask(
                i, chunk, [hashes[p] for p in chunk], self.batch_id, self.staging, self.base_dir,
                self.traces_dir, buckets,
            )
            for i, chunk in enumerate(file_chunks(files, self.base_dir))
        ]  # fmt: skip
        chunks = self.run(tasks, scheduler_address)
        rechecks = _rechecks(tasks, chunks, hashes)
        if rechecks:  # chunks holding copies of fixes of other chunks' files: done again
            for task in rechecks:
                _remove_staged(self.staging, chunks[task.index])
            for task, chunk in zip(rechecks, self.run(rechecks, scheduler_address), strict=True):
                chunks[task.index] = chunk
        outcomes = [file for chunk in chunks for file in chunk.files]
        trips = _flag_batch_trips(chunks, self.traces_dir, self.staging, self.settings, buckets)
        report = _batch_report(self.batch_id, outcomes, chunks, trips)
        tables = BatchTables(
            trips.assign(batch_id=self.batch_id),
            [chunk.trips_part for chunk in chunks if chunk.trips_part is not None],
            [chunk.rejects for chunk in chunks],
            self.batch_id,
        )
        return tables, report

    def run(self, tasks: list[ChunkTask], scheduler_address: str | None) -> list[ChunkOutcome]:
        chunks: list[ChunkOutcome] = run_tasks(
            ingest_chunk,
            tasks,
            "ingest file chunks",
            self.settings.workers,
            scheduler_address,
            min_tasks_per_worker=DASK_MIN_CHUNKS_PER_WORKER,
            settings=self.settings,
            pseudonym_key=self.key,
            now=self.now,
        )
        return chunks


def _rechecks(
    tasks: list[ChunkTask], chunks: list[ChunkOutcome], hashes: dict[Path, str]
) -> list[ChunkTask]:
    """Return the chunks to ingest again, each with the earlier files that may hold its fixes.

    Those are the files of earlier chunks read with fixes of one of the chunk's devices in a
    time span overlapping its own (the rare case of one drive uploaded twice in one batch).
    """
    spans = pd.concat(
        [chunk.spans.assign(chunk=task.index) for task, chunk in zip(tasks, chunks, strict=True)],
        ignore_index=True,
    )
    pairs = spans.merge(spans, on="device_id", suffixes=("", "_earlier"))
    overlapping = pairs[
        (pairs["chunk_earlier"] < pairs["chunk"])
        & (pairs["first_earlier"] <= pairs["last"])
        & (pairs["first"] <= pairs["last_earlier"])
    ]
    paths = {str(p): p for p in hashes}
    rechecks = []
    for index in sorted(set(overlapping["chunk"])):
        found = overlapping[overlapping["chunk"] == index]
        earlier = [paths[name] for name in sorted(set(found["source_file_earlier"]))]
        rechecks.append(
            replace(
                tasks[index],
                earlier_paths=tuple(earlier),
                earlier_sha256s=tuple(hashes[p] for p in earlier),
            )
        )
    return rechecks


def _remove_staged(staging: Path, chunk: ChunkOutcome) -> None:
    for relative in set(chunk.points_files.values()):
        (staging / relative).unlink(missing_ok=True)
    for part in (chunk.rejects.path, chunk.trips_part, chunk.keys_part):
        if part is not None:
            part.unlink(missing_ok=True)


def commit_batch(
    traces_dir: Path,
    staging: Path,
    tables: BatchTables,
    report: dict[str, Any],
    key: bytes,
) -> None:
    """Move a staged batch into the dataset; its report, written last, marks it applied.

    Until the report is in place the batch's parts are not applied: a killed commit leaves
    parts that the next ingest removes (:func:`roll_back_unfinished_batches`).
    """
    batch_id = report["batch_id"]
    record_pseudonym_key(traces_dir, key)
    _publish_points(staging, traces_dir)
    tables.write(
        traces_dir / "trips" / f"part-{batch_id}.parquet",
        traces_dir / "rejects" / f"part-{batch_id}.parquet",
    )
    write_json(report, traces_dir / REPORTS_DIR / f"{batch_id}.json")
    shutil.rmtree(staging, ignore_errors=True)


def roll_back_unfinished_batches(traces_dir: Path) -> list[Path]:
    """Remove the parts of batches with no report, and every staging folder.

    Call it holding the folder's lock: then no ingest is under way, and a part without a
    report is a killed ingest's.

    Returns
    -------
    list of Path
        The part files removed.
    """
    shutil.rmtree(traces_dir / STAGING_DIR, ignore_errors=True)
    applied = committed_batches(traces_dir)
    removed = []
    for output in BATCH_OUTPUTS:
        for part in sorted((traces_dir / output).rglob("part-*.parquet")):
            if batch_of_part(part) not in applied:
                part.unlink()
                removed.append(part)
                log.info("%s: removed %s, left by a killed ingest", traces_dir, part.name)
    for folder in {part.parent for part in removed}:
        for empty in (folder, folder.parent):
            if empty != traces_dir and empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
    return removed


def ingested_files(traces_dir: Path) -> dict[str, str]:
    """Return the content sha256 of every file the applied batches read -> their batch.

    A file that was refused whole (:data:`WHOLE_FILE_REASONS`: it could not be read, or it was
    over a reader's limit), or whose fixes had no date (``missing_date``: a log without one,
    nothing of it accepted) is not counted as read: once the reader, the limit or the file's
    date changes, giving the file again reads it.
    """
    ingested: dict[str, str] = {}
    for path in sorted((traces_dir / REPORTS_DIR).glob("*.json")):
        try:
            report = json.loads(path.read_text())
            ingested.update(
                {
                    entry["sha256"]: report["batch_id"]
                    for entry in report["files"]
                    if not _refused_whole(entry)
                }
            )
        except (ValueError, KeyError, TypeError):
            raise InputDataError(
                f"{path}: not a batch report of roadcover ingest; move it out of {path.parent}"
            ) from None
    return ingested


def _withdraw_refused_batch(traces_dir: Path, batch_id: str) -> None:
    """Withdraw an earlier run of this batch, every file of which was refused whole.

    Only such a batch can come again under the same id (its files are new again), and its
    report must go before its parts are written anew: a report over half-written parts would
    commit them.
    """
    report = traces_dir / REPORTS_DIR / f"{batch_id}.json"
    if report.exists():
        log.info("ingest: batch %s was refused whole before; reading its files again", batch_id)
        report.unlink()
        roll_back_unfinished_batches(traces_dir)


def _refused_whole(entry: dict[str, Any]) -> bool:
    """Whether a report's file entry is a file none of whose rows was read, or dated."""
    reasons = set(entry["rejected_by_reason"])
    if entry["accepted"] or not reasons:
        return False
    return reasons <= WHOLE_FILE_REASONS or MISSING_DATE in reasons


def check_pseudonym_key(traces_dir: Path, key: bytes, settings: IngestSettings) -> None:
    """Refuse a key other than the one ``traces_dir`` was started with.

    Raises
    ------
    ConfigError
        If the key's fingerprint differs from the dataset's.
    """
    path = traces_dir / KEY_FILE
    if not path.exists():
        return
    try:
        recorded = str(json.loads(path.read_text())["hmac_sha256"])
    except (ValueError, KeyError, TypeError):
        raise InputDataError(
            f"{path}: not a pseudonym key fingerprint written by roadcover ingest"
        ) from None
    if not hmac.compare_digest(recorded, key_fingerprint(key)):
        raise ConfigError(
            f"{traces_dir}: this traces dataset was started with another pseudonym key; set "
            f"{settings.pseudonym_key_env} (or ingest.pseudonym_key_file) to the key it was "
            "started with, or ingest into a new traces folder"
        )


def record_pseudonym_key(traces_dir: Path, key: bytes) -> None:
    """Record the key's fingerprint in ``traces_dir`` if none is recorded yet."""
    path = traces_dir / KEY_FILE
    if not path.exists():
        write_json({"hmac_sha256": key_fingerprint(key)}, path)


def format_report(report: dict[str, Any]) -> str:
    """Return a short human summary of a batch report (for stderr)."""
    if report.get("ingested_before"):
        nothing = (
            f"ingest: nothing new; the {len(report['files_skipped'])} file(s) are batch "
            f"{report['batch_id']}, ingested before"
        )
        return "\n".join([nothing, *_not_followed_lines(report)])
    if report["batch_id"] is None:
        nothing = f"ingest: nothing new; {len(report['files_skipped'])} file(s) already ingested"
        return "\n".join([nothing, *_not_followed_lines(report)])
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
    lines += _not_followed_lines(report)
    return "\n".join(lines)


def _not_followed_lines(report: dict[str, Any]) -> list[str]:
    links = report.get("symlinks_not_followed", [])
    if not links:
        return []
    return [f"  symbolic links, not followed: {len(links)}", *(f"    {link}" for link in links)]


def _file_hashes(files: list[Path], base_dir: Path) -> dict[Path, str]:
    """Each file's sha256, on two threads (hashlib releases the GIL on large blocks)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = pool.map(file_sha256, [base_dir / path for path in files])
        return dict(zip(files, digests, strict=True))


def _new_files(files: list[Path], hashes: dict[Path, str], registry: dict[str, str]) -> list[Path]:
    """Files whose content was not ingested before, nor seen earlier in this list."""
    seen = set(registry)
    new = []
    for path in files:
        if hashes[path] not in seen:
            new.append(path)
            seen.add(hashes[path])
    return new


def file_chunks(files: list[Path], base_dir: Path | None = None) -> list[list[Path]]:
    """Consecutive groups of at most ``CHUNK_FILES`` files and about ``CHUNK_BYTES`` bytes.

    Relative ``files`` are in ``base_dir`` (default: the working folder).
    """
    base = base_dir if base_dir is not None else Path()
    chunks: list[list[Path]] = []
    size = 0
    for path in files:
        if not chunks or len(chunks[-1]) >= CHUNK_FILES or size >= CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += (base / path).stat().st_size
    return chunks


def ingest_chunk(
    task: ChunkTask, settings: IngestSettings, pseudonym_key: bytes, now: pd.Timestamp
) -> ChunkOutcome:
    """Ingest a chunk of files and stage its accepted fixes (run in a Dask worker or in-process).

    Every row read ends accepted (in a staged points file) or rejected; a file that cannot
    be read is one ``unreadable_file`` reject and the others go on.
    """
    earlier = None
    if task.earlier_paths:
        earlier = read_valid_fixes(
            list(task.earlier_paths), list(task.earlier_sha256s), settings, pseudonym_key, now,
            task.base_dir,
        )  # fmt: skip
    files, rows = ingest_files(
        task.paths, task.sha256s, settings, pseudonym_key, now, task.base_dir,
        task.traces_dir, earlier,
    )  # fmt: skip
    rejected = rows["reason"].notna().to_numpy()
    rejects = _stage_chunk_rejects(task, files, rows.loc[rejected, REJECT_COLUMNS])
    files = [replace(file, reader_rejects=file.reader_rejects.iloc[:0]) for file in files]
    accepted = rows[~rejected].reset_index(drop=True)
    spans = _time_spans(rows)
    del rows
    if accepted.empty:
        return ChunkOutcome(files, {}, rejects, _empty_trips(), None, {}, None, {}, spans)
    keys_part = part_path(task.staging_dir, "keys", task.index)
    stage_keys(coordinate_keys(accepted), keys_part, task.key_buckets)
    trips_part = part_path(task.staging_dir, "trips", task.index)
    return ChunkOutcome(
        files=files,
        accepted_by_file={
            str(path): int(count) for path, count in accepted["source_file"].value_counts().items()
        },
        rejects=rejects,
        trips=stage_trips(_trip_lines(accepted, summarize_trips(accepted)), trips_part),
        trips_part=trips_part,
        flags=trace_flags(accepted),
        keys_part=keys_part,
        points_files=_stage_points(task, accepted, settings.partition_h3_res),
        spans=spans,
    )


def _stage_chunk_rejects(
    task: ChunkTask, files: list[FileOutcome], cleaned: pd.DataFrame
) -> RejectsPart:
    """Stage the chunk's rejects: its files' readers' rejects, in file order, then cleaning's."""
    parts = [file.reader_rejects for file in files if len(file.reader_rejects)]
    if len(cleaned):
        parts.append(cleaned)
    rejects = pd.concat(parts, ignore_index=True) if parts else _empty_rows()[REJECT_COLUMNS]
    return stage_rejects(rejects, part_path(task.staging_dir, "rejects", task.index), task.batch_id)


def _time_spans(rows: pd.DataFrame) -> pd.DataFrame:
    """Return per file and device the first and last time read (:attr:`ChunkOutcome.spans`)."""
    if rows.empty:
        return pd.DataFrame(
            {
                name: pd.Series(dtype=object)
                for name in ("source_file", "device_id", "first", "last")
            }
        )
    times = rows.groupby(["source_file", "device_id"], sort=True)["observed_at"]
    return times.agg(first="min", last="max").reset_index()


def read_valid_fixes(
    paths: list[Path],
    sha256s: list[str],
    settings: IngestSettings,
    pseudonym_key: bytes,
    now: pd.Timestamp,
    base_dir: Path,
) -> pd.DataFrame:
    """Return the fixes of files that pass the value checks (as ``duplicates.valid_fixes``)."""
    read = read_files(paths, sha256s, settings, pseudonym_key, [base_dir / p for p in paths])
    readable = [columns for _, columns in read if columns is not None]
    if not readable:
        return valid_fixes(_empty_rows())
    rows = _sorted_rows(readable)
    check_values(rows, settings, now)
    return valid_fixes(rows)


def ingest_files(
    paths: list[Path],
    sha256s: list[str],
    settings: IngestSettings,
    pseudonym_key: bytes,
    now: pd.Timestamp,
    base_dir: Path | None = None,
    traces_dir: Path | None = None,
    earlier: pd.DataFrame | None = None,
) -> tuple[list[FileOutcome], pd.DataFrame]:
    """Read and identify each file, then clean, split and trim all their rows together.

    Relative ``paths`` are opened from ``base_dir`` (default: the working folder). Copies of
    fixes in ``traces_dir``, in ``earlier`` (valid fixes of earlier files of the batch) or in
    an earlier one of ``paths`` are rejected (:mod:`pipeline.ingest.duplicates`).

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
    file_order = {str(path): position for position, path in enumerate(paths)}
    clean_rows(rows, settings, now, traces_dir, file_order, earlier)
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
    dates = [log_date(p, settings, at) for p, at in zip(paths, locations, strict=True)]
    results = read_trace_files(locations, options, [str(p) for p in paths], dates)
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
                    "reason": UNREADABLE_FILE,
                    "detail": str(result),
                }
            ]
        )
        return FileOutcome(str(path), sha256, None, 1, whole_file, {}), None
    columns = assign_identities(result.columns, path, sha256, settings, pseudonym_key, location)
    columns["source_file"] = repeated(str(path), len(columns["source_row"]))
    outcome = FileOutcome(
        str(path), sha256, result.format, result.rows_read, result.rejects, result.ignored,
        result.samples,
    )  # fmt: skip
    return outcome, columns


def clean_rows(
    rows: pd.DataFrame,
    settings: IngestSettings,
    now: pd.Timestamp,
    traces_dir: Path | None = None,
    file_order: dict[str, int] | None = None,
    earlier: pd.DataFrame | None = None,
) -> None:
    """Run every cleaning, splitting and privacy step on rows sorted by trace and time.

    Copies of fixes counted before are rejected after the value checks: those in
    ``traces_dir`` (if given), in ``earlier`` and in files earlier in ``file_order``
    (``source_file`` -> position; default: no file before another).
    """
    check_values(rows, settings, now)
    if traces_dir is not None:
        reject_fixes_of_earlier_batches(rows, traces_dir)
    if file_order is not None:
        reject_fixes_of_earlier_files(rows, file_order, earlier)
    reject_duplicates(rows)
    reject_speed_spikes(rows, settings)
    reject_acceleration_spikes(rows, settings)
    split_trips(rows, settings)
    apply_privacy(rows, settings)
    reject_short_trips(rows, settings)


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame(columns=["source_file", "source_row", "reason", "detail", "trip_id"])


def _batch_report(
    batch_id: str,
    outcomes: list[FileOutcome],
    chunks: list[ChunkOutcome],
    trips: pd.DataFrame,
) -> dict[str, Any]:
    per_file: list[dict[str, Any]] = []
    accepted_by_file: Counter[str] = Counter()
    for chunk in chunks:
        accepted_by_file.update(chunk.accepted_by_file)
    # a file's reasons in the order they first appear in its rows (a file is in one chunk)
    reasons_by_file = {file: r for chunk in chunks for file, r in chunk.rejects.reasons.items()}
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
                "ignored_samples": outcome.samples,
            }
        )
    unbalanced = [f["file"] for f in per_file if f["rows_read"] != f["accepted"] + f["rejected"]]
    if unbalanced:  # a bug, never bad input: every row must be accepted or rejected
        raise AssertionError(f"rows read != accepted + rejected for {unbalanced}")
    flags = Counter(flag for names in trips["flags"] for flag in names)
    rejected: Counter[str] = Counter()
    for file in per_file:
        rejected.update(file["rejected_by_reason"])
    return {
        "batch_id": batch_id,
        "files": per_file,
        "files_unreadable": [f["file"] for f in per_file if f["format"] is None],
        "rows_read": sum(f["rows_read"] for f in per_file),
        "accepted": sum(f["accepted"] for f in per_file),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
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
    chunks: list[ChunkOutcome],
    traces_dir: Path,
    staging: Path,
    settings: IngestSettings,
    key_buckets: int,
) -> pd.DataFrame:
    """Trips of the batch with their flags, trust score and plausibility, without their lines.

    The batch-wide checks see trip summaries and the coordinate keys shared by several trips;
    the fixes of a trip are read back from its staged file only when a device has trips
    overlapping in time. With no trip, an empty table with a geometry column.
    """
    found = [c.trips for c in chunks if len(c.trips)]
    trips = pd.concat(found, ignore_index=True) if found else _empty_trips()
    parts = [c.keys_part for c in chunks if c.keys_part is not None]
    keys = shared_keys_of_parts(parts, key_buckets)
    points_files = {trip: f for chunk in chunks for trip, f in chunk.points_files.items()}

    @functools.lru_cache(maxsize=16)
    def staged(relative: str) -> Positions:
        return positions_in(
            read_table(staging / relative, POINTS, columns=["trip_id", *POSITION_COLUMNS])
        )

    def positions(trip: str) -> TripFixes:
        return staged(points_files[trip])(trip)

    later = batch_flags(trips, _earlier_trips(traces_dir), keys, positions, settings)
    return score(trips, *(c.flags for c in chunks), later)


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
