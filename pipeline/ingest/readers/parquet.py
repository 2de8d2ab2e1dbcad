"""Parquet and GeoParquet traces: one fix per row.

Coordinates come from the geometry (GeoParquet ``geo`` metadata, read as geopandas reads it and
reprojected to EPSG:4326 if needed; or, without it, a binary ``geometry``/``geom`` column of
WKB Points), else from latitude/longitude columns found by name as in CSV files
(:mod:`pipeline.ingest.readers.columns`). A geometry that is not a Point is
``unparseable_coordinates``; a null or empty one is ``missing_coordinates``.

Rows and ``source_row``
    Each table row is a row; ``source_row`` is its 0-based row index + 1.
Time
    A timestamp column (tz-aware -> UTC; naive = UTC), or strings (ISO-8601) or epoch numbers
    (seconds or milliseconds by magnitude, or as the column name says, e.g. ``timestamp_ms``).
Values and identities
    As in CSV files: columns found by name; speeds in m/s unless named ``speed_kmh`` etc.
    ``ReaderOptions.csv_columns`` does not apply to Parquet.

Whole-file errors: not Parquet or corrupt, or no geometry/latitude/longitude or time column.

Limits (``ReaderOptions``): the row count and the stored (uncompressed) size of the values are
read from the file's metadata first, and a file over ``max_file_rows`` or
``max_decoded_bytes`` is refused before any value is read. The values are then read in
record batches of :data:`BATCH_ROWS` rows, text and binary columns as dictionaries, so that
what each batch decodes to (a dictionary's values repeated by its indices) is counted before
it is decoded: a small file of a few long values repeated many times is refused as soon as
its values would pass ``max_decoded_bytes``. Text nested in list or struct columns is counted
once a batch is decoded (at most :data:`BATCH_ROWS` rows past the limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyproj
import shapely

from pipeline.ingest.readers.base import (
    IDENTITIES,
    MISSING_COORDINATES,
    OPTIONAL_FLOATS,
    TIME_DTYPE,
    UNPARSEABLE_COORDINATES,
    Candidates,
    FileTooLargeError,
    ReaderOptions,
    ReadResult,
    finish,
    to_optional_float,
    unreadable,
)
from pipeline.ingest.readers.columns import describe_header, find_columns
from pipeline.io import arrow_to_geodataframe

FORMAT = "parquet"
FIX_HINT = "re-export the trace as GeoParquet with Point geometry and a timestamp column"
GEOMETRY_COLUMNS = ("geometry", "geom", "wkb_geometry", "the_geom")
BATCH_ROWS = 65_536  # rows decoded at a time


def read_parquet(path: Path, source: str, options: ReaderOptions) -> ReadResult:
    """Read a (Geo)Parquet trace (see the module docstring for the rules)."""
    _refuse_missing_or_empty(path, source)
    try:
        table = _read_table(path, source, options)
        table.validate(full=True)  # e.g. text that is not UTF-8, which pages do not check
    except FileTooLargeError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(source, f"not a readable Parquet file ({exc})", FIX_HINT) from None
    # pandas' metadata only restores an index and dtypes; a damaged one must not stop the read
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    table = table.replace_schema_metadata(metadata)
    geometry: np.ndarray | None = None
    if b"geo" in metadata:
        frame, geometry = _geoparquet(table, source)
    else:
        frame = table.to_pandas()
        name = next((c for c in GEOMETRY_COLUMNS if c in frame.columns), None)
        if name is not None and pa.types.is_binary(table.schema.field(name).type):
            geometry = shapely.from_wkb(frame.pop(name).to_numpy(), on_invalid="ignore")
    found = find_columns([str(c) for c in frame.columns])
    no_position = geometry is None and not {"lat", "lon"} <= found.keys()
    if "time" not in found or no_position:
        missing = [
            n for n, gone in [("time", "time" not in found), ("lat/lon", no_position)] if gone
        ]
        raise unreadable(
            source,
            f"no {' or '.join(missing)} column ({describe_header(found, len(frame.columns))})",
            "name them observed_at and geometry (or lat, lon), as in GeoParquet traces",
        )
    candidates = Candidates(np.arange(1, len(frame) + 1, dtype="int64"))
    if geometry is not None:
        _set_geometry(candidates, geometry)
    else:
        candidates.set_coordinates(
            frame[found["lon"].name].to_numpy(dtype=object),
            frame[found["lat"].name].to_numpy(dtype=object),
        )
    _set_times(candidates, frame[found["time"].name], found["time"].scale)
    for field in OPTIONAL_FLOATS:
        if field in found:
            scale = found[field].scale
            factor = scale if isinstance(scale, float) else 1.0
            candidates.columns[field] = to_optional_float(frame[found[field].name]) * factor
    if geometry is not None and "elevation_m" not in found:
        has_z = shapely.has_z(geometry)
        if has_z.any():
            candidates.columns["elevation_m"] = np.where(has_z, shapely.get_z(geometry), np.nan)
    for field in IDENTITIES:
        if field in found:
            candidates.set(field, frame[found[field].name].to_numpy(dtype=object))
    return finish(source, FORMAT, candidates)


def _refuse_missing_or_empty(path: Path, source: str) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise unreadable(
            source, f"cannot be read ({exc.strerror or exc})", "check the path"
        ) from None
    if size == 0:
        raise unreadable(source, "empty file, no trace data", "upload the trace file again")


def _read_table(path: Path, source: str, options: ReaderOptions) -> pa.Table:
    """Read the whole table, within the limits (see the module docstring).

    Raises
    ------
    FileTooLargeError
        If the file has too many rows, or its values take or decode to too many bytes.
    """
    metadata = pq.read_metadata(path)
    if metadata.num_rows > options.max_file_rows:
        raise FileTooLargeError.rows(source, metadata.num_rows, options.max_file_rows)
    stored = sum(
        metadata.row_group(g).column(c).total_uncompressed_size
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    )
    if stored > options.max_decoded_bytes:
        raise FileTooLargeError.decoded(source, "values stored in", options.max_decoded_bytes)
    schema = metadata.schema.to_arrow_schema()
    texts = [field.name for field in schema if _is_text(field.type)]
    batches: list[pa.RecordBatch] = []
    decoded = rows = 0
    parquet_file = pq.ParquetFile(path, read_dictionary=texts)
    for batch in parquet_file.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
        decoded += sum(_decoded_size(column) for column in batch.columns)
        rows += batch.num_rows
        if decoded > options.max_decoded_bytes:
            raise FileTooLargeError.decoded(source, "values decoding to", options.max_decoded_bytes)
        if rows > options.max_file_rows:
            raise FileTooLargeError.rows(source, rows, options.max_file_rows)
        batches.append(_decoded(batch, schema))
    return pa.Table.from_batches(batches, schema=schema)


def _decoded_size(column: pa.Array) -> int:
    """Return how many bytes ``column`` takes once its dictionary (if any) is decoded."""
    if not isinstance(column, pa.DictionaryArray):
        return int(column.nbytes)
    lengths = pc.binary_length(column.dictionary).take(column.indices)
    value_bytes = pc.sum(lengths).as_py() or 0
    return int(value_bytes) + 4 * (len(column) + 1) + len(column) // 8 + 1


def _decoded(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Return ``batch`` with its dictionary columns decoded, as ``schema`` types them."""
    columns = [
        column.dictionary_decode().cast(field.type)
        if isinstance(column, pa.DictionaryArray)
        else column
        for column, field in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _is_text(kind: pa.DataType) -> bool:
    """Whether a column of this type is read as a dictionary (text and binary, also large)."""
    return any(
        check(kind)
        for check in (
            pa.types.is_string,
            pa.types.is_binary,
            pa.types.is_large_string,
            pa.types.is_large_binary,
        )
    )


def _geoparquet(table: pa.Table, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        frame = arrow_to_geodataframe(table)
    except (ValueError, TypeError, pa.ArrowException, pyproj.exceptions.CRSError) as exc:
        raise unreadable(source, f"not a readable GeoParquet file ({exc})", FIX_HINT) from None
    if (
        frame.crs is not None
        and not frame.crs.equals("EPSG:4326")
        and not frame.crs.equals("OGC:CRS84")
    ):
        frame = frame.to_crs("EPSG:4326")
    geometry = frame.geometry.to_numpy()
    return pd.DataFrame(frame.drop(columns=frame.geometry.name)), geometry


def _set_geometry(candidates: Candidates, geometry: np.ndarray) -> None:
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    kinds = shapely.get_type_id(geometry)
    not_point = ~missing & (kinds != shapely.GeometryType.POINT)
    candidates.reject(missing, MISSING_COORDINATES, "no geometry")
    if not_point.any():
        names = np.array([None if g is None else g.geom_type for g in geometry], dtype=object)
        candidates.reject(not_point, UNPARSEABLE_COORDINATES, "geometry is a " + names.astype(str))
    points = ~missing & ~not_point
    lon = np.full(len(geometry), np.nan)
    lat = np.full(len(geometry), np.nan)
    lon[points] = shapely.get_x(geometry[points])
    lat[points] = shapely.get_y(geometry[points])
    candidates.columns["lon"], candidates.columns["lat"] = lon, lat


def _set_times(candidates: Candidates, column: pd.Series, scale: Any) -> None:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        times = column.dt.tz_convert("UTC").astype(TIME_DTYPE)
    elif pd.api.types.is_datetime64_dtype(column.dtype):
        times = column.dt.tz_localize("UTC").astype(TIME_DTYPE)
    else:
        candidates.set_times(
            column.to_numpy(dtype=object), scale if isinstance(scale, str) else None
        )
        return
    times = times.reset_index(drop=True)
    candidates.columns["observed_at"] = times
    candidates.reject(times.isna().to_numpy(), "missing_time", "no time")
