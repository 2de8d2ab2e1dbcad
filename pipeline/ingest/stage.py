"""The ingest stage: raw trace files -> the clean, partitioned ``points`` dataset.

Files are read, cleaned, split into trips and trimmed for privacy in parallel (one Dask task
per file; every step is per trace, and a trace never spans files). Plausibility flags, which
compare trips with each other and with earlier batches, are computed once the batch is in.

``TRACES_DIR`` layout (every file written atomically; see docs/data-contracts.md)::

    points/date=YYYY-MM-DD/h3=<cell>/part-<batch>.parquet   accepted fixes (contract points)
    trips/part-<batch>.parquet                                one row per trip (contract trips)
    rejects/part-<batch>.parquet                              every rejected row (contract rejects)
    reports/<batch>.json                                      rows read/accepted/rejected per file
    ingested_files.json                                       content sha256 of every ingested file

A file whose content was ingested before is skipped, so re-running a batch adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import pandas as pd
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
from pipeline.ingest.plausibility import flag_trips, summarize_trips
from pipeline.ingest.privacy import load_pseudonym_key
from pipeline.ingest.readers import (
    REJECT_COLUMNS,
    ReaderOptions,
    UnreadableFileError,
    detect_format,
    read_trace_file,
)
from pipeline.ingest.trips import apply_privacy, reject_short_trips, split_trips
from pipeline.io import read_table, write_json, write_table
from pipeline.parallel import dask_client, gather_with_progress, with_progress
from pipeline.roads.extracts import file_sha256

log = logging.getLogger(__name__)

REGISTRY_FILE = "ingested_files.json"
WHOLE_FILE_ROW = 0
# Files are read one by one but cleaned in chunks: every cleaning step works on many traces
# at once, so its fixed cost is paid once per chunk instead of once per (often small) file.
# Chunks depend on the files alone, never on the number of workers.
CHUNK_FILES = 32
CHUNK_BYTES = 32 * 2**20


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
    """What ingesting a chunk of files produced: its files, and all their cleaned rows.

    Every row of ``rows`` is accepted (``reason`` null) or rejected with a reason.
    """

    files: list[FileOutcome]
    rows: pd.DataFrame


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
    hashes = {path: file_sha256(path) for path in files}
    new_files = _new_files(files, hashes, registry)
    skipped = [str(p) for p in files if p not in new_files]
    if not new_files:
        log.info("ingest: nothing new (%d file(s) already ingested)", len(skipped))
        return {"batch_id": None, "files_skipped": skipped, "rows_read": 0}
    batch_id = hashlib.sha256("".join(sorted(hashes[p] for p in new_files)).encode()).hexdigest()[
        :16
    ]
    chunks = _process_chunks(new_files, hashes, settings, key, now, scheduler_address)
    outcomes = [file for chunk in chunks for file in chunk.files]
    rows = pd.concat([chunk.rows for chunk in chunks], ignore_index=True)
    accepted = rows[rows["reason"].isna()].reset_index(drop=True)
    trips = flag_trips(summarize_trips(accepted), accepted, _earlier_trips(traces_dir), settings)
    rejects = _rejects_table(outcomes, rows, batch_id)
    report = _batch_report(batch_id, outcomes, rows, rejects, trips, skipped)
    if strict and len(rejects):
        raise InputDataError(
            f"--strict: {len(rejects)} row(s) rejected ({report['rejected_by_reason']}); "
            "nothing was written"
        )
    _write_batch(traces_dir, batch_id, accepted, trips, rejects, settings)
    write_json(report, traces_dir / "reports" / f"{batch_id}.json")
    registry.update({hashes[p]: {"file": str(p), "batch_id": batch_id} for p in new_files})
    write_json(registry, traces_dir / REGISTRY_FILE)
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


def _process_chunks(
    files: list[Path],
    hashes: dict[Path, str],
    settings: IngestSettings,
    key: bytes,
    now: pd.Timestamp,
    scheduler_address: str | None = None,
) -> list[ChunkOutcome]:
    chunks = file_chunks(files)
    chunk_hashes = [[hashes[p] for p in chunk] for chunk in chunks]
    if settings.workers <= 1 or len(chunks) == 1:
        return [
            ingest_files(chunk, sha256s, settings, key, now)
            for chunk, sha256s in with_progress(
                zip(chunks, chunk_hashes, strict=True), "ingest file chunks", len(chunks)
            )
        ]
    with dask_client(settings.workers, scheduler_address) as client:
        futures = client.map(
            ingest_files,
            chunks,
            chunk_hashes,
            settings=settings,
            pseudonym_key=key,
            now=now,
            pure=False,
        )
        results: list[ChunkOutcome] = gather_with_progress(futures, "ingest file chunks")
    return results


def ingest_files(
    paths: list[Path],
    sha256s: list[str],
    settings: IngestSettings,
    pseudonym_key: bytes,
    now: pd.Timestamp,
) -> ChunkOutcome:
    """Read and identify each file, then clean, split and trim all their rows together.

    Every row read ends accepted or rejected; a file that cannot be read is one
    ``unreadable_file`` reject and the others go on.
    """
    read = [read_file(p, h, settings, pseudonym_key) for p, h in zip(paths, sha256s, strict=True)]
    files = [outcome for outcome, _ in read]
    readable = [file_rows for outcome, file_rows in read if outcome.format is not None]
    if not readable:
        return ChunkOutcome(files, _empty_rows())
    rows = pd.concat(readable, ignore_index=True)
    rows = rows.sort_values(
        ["trace_id", "observed_at", "source_row"], kind="stable", ignore_index=True
    )
    rows["reason"] = pd.Series(None, index=rows.index, dtype=object)
    rows["detail"] = pd.Series(None, index=rows.index, dtype=object)
    clean_rows(rows, settings, now)
    return ChunkOutcome(files, rows)


def read_file(
    path: Path, sha256: str, settings: IngestSettings, pseudonym_key: bytes
) -> tuple[FileOutcome, pd.DataFrame]:
    """Read one file; return what was read and its fixes with pseudonymous identities."""
    options = ReaderOptions(
        csv_columns=dict(settings.csv_columns) or None, csv_time_unit=settings.csv_time_unit
    )
    try:
        fmt = detect_format(path)
        result = read_trace_file(path, options)
    except UnreadableFileError as exc:
        whole_file = pd.DataFrame(
            [
                {
                    "source_file": str(path),
                    "source_row": WHOLE_FILE_ROW,
                    "reason": "unreadable_file",
                    "detail": str(exc),
                }
            ]
        )
        return FileOutcome(str(path), sha256, None, 1, whole_file, {}), _empty_rows()
    rows = assign_identities(result.fixes, path, sha256, settings, pseudonym_key)
    reader_rejects = result.rejects[REJECT_COLUMNS]
    outcome = FileOutcome(str(path), sha256, fmt, result.rows_read, reader_rejects, result.ignored)
    return outcome, rows


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


def _rejects_table(outcomes: list[FileOutcome], rows: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    cleaned = rows.loc[rows["reason"].notna(), REJECT_COLUMNS]
    read_failures = [o.reader_rejects for o in outcomes if len(o.reader_rejects)]
    rejects = pd.concat([*read_failures, cleaned], ignore_index=True)
    rejects["detail"] = rejects["detail"].fillna("").astype(str)
    rejects["source_row"] = rejects["source_row"].astype("int64")
    rejects["batch_id"] = batch_id
    return rejects.sort_values(["source_file", "source_row"], kind="stable", ignore_index=True)


def _batch_report(
    batch_id: str,
    outcomes: list[FileOutcome],
    rows: pd.DataFrame,
    rejects: pd.DataFrame,
    trips: pd.DataFrame,
    skipped: list[str],
) -> dict[str, Any]:
    per_file: list[dict[str, Any]] = []
    # grouped once, not filtered per file (which is quadratic in the number of files)
    accepted_by_file = rows.loc[rows["reason"].isna(), "source_file"].value_counts()
    reasons_by_file = {
        str(path): group.tolist()
        for path, group in rejects.groupby("source_file", sort=False)["reason"]
    }
    for outcome in outcomes:
        file_reasons = reasons_by_file.get(outcome.path, [])
        per_file.append(
            {
                "file": outcome.path,
                "sha256": outcome.sha256,
                "format": outcome.format,
                "rows_read": outcome.rows_read,
                "accepted": int(accepted_by_file.get(outcome.path, 0)),
                "rejected": len(file_reasons),
                "rejected_by_reason": dict(Counter(file_reasons)),
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
        "rejected_by_reason": dict(sorted(Counter(rejects["reason"]).items())),
        "trips": len(trips),
        "trips_flagged": int((~trips["plausible"]).sum()) if len(trips) else 0,
        "flags": dict(sorted(flags.items())),
    }


def _write_batch(
    traces_dir: Path,
    batch_id: str,
    accepted: pd.DataFrame,
    trips: pd.DataFrame,
    rejects: pd.DataFrame,
    settings: IngestSettings,
) -> None:
    points = gpd.GeoDataFrame(
        accepted[[f.name for f in POINTS.schema if f.name != "geometry"]],
        geometry=shapely.points(accepted["lon"].to_numpy(), accepted["lat"].to_numpy()),
        crs="EPSG:4326",
    )
    partition = _trip_partitions(accepted, settings.partition_h3_res)
    for (day, cell), part in points.groupby(points["trip_id"].map(partition), sort=True):
        path = traces_dir / "points" / f"date={day}" / f"h3={cell}" / f"part-{batch_id}.parquet"
        write_table(part.reset_index(drop=True), path, POINTS)
    trip_lines = _trip_lines(accepted, trips)
    write_table(
        trip_lines.assign(batch_id=batch_id),
        traces_dir / "trips" / f"part-{batch_id}.parquet",
        TRIPS,
    )
    write_table(rejects, traces_dir / "rejects" / f"part-{batch_id}.parquet", REJECTS)


def _trip_partitions(accepted: pd.DataFrame, resolution: int) -> dict[str, tuple[str, str]]:
    """Each trip's partition: the date and coarse H3 cell of its first fix."""
    firsts = accepted.groupby("trip_id", sort=False)[["observed_at", "lat", "lon"]].first()
    days = firsts["observed_at"].dt.strftime("%Y-%m-%d")
    cells = [
        h3.latlng_to_cell(lat, lon, resolution)
        for lat, lon in zip(firsts["lat"], firsts["lon"], strict=True)
    ]
    return dict(zip(firsts.index.astype(str), zip(days, cells, strict=True), strict=True))


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
