"""A batch's rejects, trips and coordinate keys, staged by the workers chunk by chunk.

The stage process never holds a batch-sized table: each worker writes what its chunk found
as staged Arrow IPC parts (:func:`~pipeline.io.write_staged`) and returns only small tallies
(:class:`RejectsPart`, trip summaries, key bucket bounds). The stage then

- finds the coordinate keys shared by several trips bucket by bucket (:func:`repeated_keys`):
  equal keys are in the same bucket of every chunk, so one bucket of the batch's keys is in
  memory at a time and only the repeated ones (rare) are kept;
- writes the ``rejects`` table by taking each file's sorted block from its chunk's part, files
  in order (:func:`write_rejects`), and the ``trips`` table chunk by chunk, each trip's line
  from the part and its flags from the stage (:func:`write_trips`), one row group at a time
  (:func:`~pipeline.io.write_in_row_groups`): the same files as writing the whole tables.

Layout under the batch's staging folder: ``parts/rejects/<chunk>.arrow`` (one record batch per
file with rejects), ``parts/trips/<chunk>.arrow`` (one), ``parts/keys/<chunk>.arrow`` (one
record batch per key bucket).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contracts import REJECTS, TRIPS
from pipeline.ingest.plausibility import empty_keys, repeated_keys
from pipeline.ingest.readers import REJECT_COLUMNS
from pipeline.io import (
    GEOPARQUET_VERSION,
    STAGED_SUFFIX,
    arrow_array,
    merged_geo_metadata,
    numpy_values,
    read_staged_batch,
    write_in_row_groups,
    write_staged,
    write_table,
)

PARTS_DIR = "parts"
# about one bucket of coordinate keys per this many input bytes (a chunk's worth): a bucket
# of the batch's keys holds about a chunk's keys, whatever the batch's size
KEY_BUCKET_BYTES = 32 * 2**20
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads nearby keys
FLAG_COLUMNS = ["flags", "trust_score", "plausible", "batch_id"]
# a row group of the trips table holds up to this many bytes (with the lines of its trips)
TRIPS_GROUP_BYTES = 64 * 2**20


def part_path(staging: Path, table: str, chunk: int) -> Path:
    """Where chunk ``chunk`` stages its part of ``table`` (rejects, trips or keys)."""
    return staging / PARTS_DIR / table / f"{chunk:05d}{STAGED_SUFFIX}"


@dataclass(frozen=True)
class RejectsPart:
    """A chunk's staged rejects: per file, its record batch and its rejects by reason.

    ``reasons`` are in the order each first appears in the file's rows (sorted by row).
    """

    path: Path
    batch_of_file: dict[str, int]
    reasons: dict[str, dict[str, int]]


def stage_rejects(rejects: pd.DataFrame, path: Path, batch_id: str) -> RejectsPart:
    """Write a chunk's rejects sorted by file then row, one record batch per file.

    ``rejects`` (:data:`REJECT_COLUMNS`) are the readers' rejects of the chunk's files, in
    file order, then those of cleaning: rows of equal file and row keep that order.
    """
    table = rejects_frame(rejects, batch_id).sort_values(
        ["source_file", "source_row"], kind="stable", ignore_index=True
    )
    if table.empty:
        return RejectsPart(path, {}, {})
    files, starts = np.unique(table["source_file"].to_numpy(dtype=object), return_index=True)
    record_batch = pa.RecordBatch.from_pandas(table, preserve_index=False)
    write_staged(_sliced(record_batch, [*starts.tolist(), len(table)]), path)
    counts = table.groupby(["source_file", "reason"], sort=False).size()
    reasons: dict[str, dict[str, int]] = {}
    for file, reason, count in zip(
        counts.index.get_level_values(0), counts.index.get_level_values(1), counts, strict=True
    ):
        reasons.setdefault(str(file), {})[str(reason)] = int(count)
    return RejectsPart(path, {str(f): i for i, f in enumerate(files)}, reasons)


def rejects_frame(rejects: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """Return rejects with the contract's columns and types (no detail: empty text)."""
    frame = rejects[REJECT_COLUMNS].copy()
    frame["detail"] = frame["detail"].fillna("").astype(str)
    frame["source_row"] = frame["source_row"].astype("int64")
    frame["batch_id"] = batch_id
    return frame


def write_rejects(parts: list[RejectsPart], path: Path, batch_id: str) -> None:
    """Write the batch's ``rejects`` table from the chunks' parts, sorted by file then row."""
    blocks = sorted(
        (file, part.path, index) for part in parts for file, index in part.batch_of_file.items()
    )
    if not blocks:
        empty = rejects_frame(pd.DataFrame(columns=REJECT_COLUMNS), batch_id)
        write_in_row_groups([pa.Table.from_pandas(empty, preserve_index=False)], path, REJECTS)
        return
    tables = (pa.Table.from_batches([read_staged_batch(part, index)]) for _, part, index in blocks)
    write_in_row_groups(tables, path, REJECTS)


def stage_trips(trips: gpd.GeoDataFrame, path: Path) -> pd.DataFrame:
    """Write a chunk's trips with their lines (as GeoParquet would hold them); return summaries.

    The summaries are the trips without their geometry, all that the batch's checks need.
    """
    from geopandas.io.arrow import _geopandas_to_arrow

    table = _geopandas_to_arrow(
        trips, index=False, schema_version=GEOPARQUET_VERSION, write_covering_bbox=True
    )
    write_staged(table.combine_chunks().to_batches(), path)
    return pd.DataFrame(trips.drop(columns=trips.geometry.name))


def write_trips(parts: list[Path], flagged: pd.DataFrame, path: Path) -> None:
    """Write the batch's ``trips`` table: the parts' trips in order, with their flags.

    ``flagged`` holds the trips of all the parts, in the same order, with
    :data:`FLAG_COLUMNS`. A row group holds up to :data:`~pipeline.io.ROW_GROUP_ROWS` trips
    and about :data:`TRIPS_GROUP_BYTES` (their lines): the group of a batch's trips in
    memory at a time is bounded whatever the batch's size.
    """
    geo = merged_geo_metadata([_part_geo(part) for part in parts])

    def tables() -> Iterator[pa.Table]:
        start = 0
        for part in parts:
            table = pa.Table.from_batches([read_staged_batch(part, 0)])
            rows = flagged.iloc[start : start + table.num_rows]
            start += table.num_rows
            if table.column("trip_id").to_pylist() != rows["trip_id"].tolist():
                raise AssertionError(f"{part}: its trips are not those flagged, in order")
            flags = pa.Table.from_pandas(rows[FLAG_COLUMNS], preserve_index=False)
            for name in FLAG_COLUMNS:
                table = table.append_column(name, flags.column(name))
            yield table

    write_in_row_groups(tables(), path, TRIPS, {b"geo": geo}, TRIPS_GROUP_BYTES)


def _part_geo(part: Path) -> bytes:
    with pa.OSFile(str(part)) as source:
        return bytes(pa.ipc.open_file(source).schema.metadata[b"geo"])


def key_buckets(input_bytes: int) -> int:
    """How many buckets to split a batch's coordinate keys into: a power of two."""
    return 1 << max(0, math.ceil(math.log2(max(input_bytes, 1) / KEY_BUCKET_BYTES)))


def stage_keys(keys: pd.DataFrame, path: Path, buckets: int) -> None:
    """Write a chunk's coordinate keys, one record batch per bucket of keys."""
    bucket = _bucket_of(keys["key"].to_numpy(), buckets)
    order = np.argsort(bucket, kind="stable")
    device = pd.Categorical(keys["device"])
    trip = pd.Categorical(keys["trip_id"])
    record_batch = pa.record_batch(
        {
            "key": arrow_array(keys["key"].to_numpy()[order]),
            "device": _dictionary(device.codes[order], device.categories),
            "trip_id": _dictionary(trip.codes[order], trip.categories),
        }
    )
    bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
    write_staged(_sliced(record_batch, bounds.tolist()), path)


def _sliced(batch: pa.RecordBatch, bounds: list[int]) -> list[pa.RecordBatch]:
    """Return the rows of ``batch`` between consecutive ``bounds``, each a record batch."""
    return [batch.slice(start, stop - start) for start, stop in itertools.pairwise(bounds)]


def _dictionary(codes: np.ndarray, categories: pd.Index) -> pa.DictionaryArray:
    values = pa.array(categories.to_numpy(dtype=object), type=pa.string())
    return pa.DictionaryArray.from_arrays(arrow_array(codes.astype("int32")), values)


def _bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    if buckets == 1:
        return np.zeros(len(keys), dtype="int64")
    shift = np.uint64(64 - int(buckets).bit_length() + 1)
    return ((keys.astype("uint64") * _HASH_MULTIPLIER) >> shift).astype("int64")


def shared_keys_of_parts(parts: list[Path], buckets: int) -> pd.DataFrame:
    """Return the keys of the staged parts that two or more of their rows have.

    As :func:`~pipeline.ingest.plausibility.shared_keys` of all the chunks' keys, found one
    bucket at a time.
    """
    kept = [
        table
        for bucket in range(buckets)
        for table in _shared_in_bucket([read_staged_batch(part, bucket) for part in parts])
    ]
    if not kept:
        return empty_keys()
    frames = [batch.to_pandas() for batch in kept]
    shared = pd.concat(frames, ignore_index=True)
    return shared.astype({"device": str, "trip_id": str})


def _shared_in_bucket(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    marks = repeated_keys([numpy_values(batch.column("key")) for batch in batches])
    return [
        batch.filter(arrow_array(mark))
        for batch, mark in zip(batches, marks, strict=True)
        if mark.any()
    ]


@dataclass
class BatchTables:
    """A batch's ``trips`` and ``rejects`` tables, staged in parts, ready to be written.

    Attributes
    ----------
    trips
        The batch's trips in order, with :data:`FLAG_COLUMNS` and without their lines (an
        empty table with a geometry column when the batch has no trip).
    trips_parts
        The chunks' staged trips, in order.
    rejects
        The chunks' staged rejects.
    batch_id
        The batch.
    """

    trips: pd.DataFrame
    trips_parts: list[Path]
    rejects: list[RejectsPart]
    batch_id: str

    def write(self, trips_path: Path, rejects_path: Path) -> None:
        """Write the ``trips`` and ``rejects`` tables (each atomically)."""
        if self.trips_parts:
            write_trips(self.trips_parts, self.trips, trips_path)
        else:
            no_trips = gpd.GeoDataFrame(self.trips, geometry="geometry", crs="EPSG:4326")
            write_table(no_trips, trips_path, TRIPS)
        write_rejects(self.rejects, rejects_path, self.batch_id)
