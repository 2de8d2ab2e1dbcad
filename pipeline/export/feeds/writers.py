"""Writing and reading feed tables: Hive-partitioned GeoParquet, CSV (WKT) and GeoJSONSeq.

Every file is written through :func:`pipeline.io.atomic_path` and its bytes depend only on
the data: rows are sorted by key, text formats use fixed formatting (ISO 8601 UTC times with
milliseconds, full double precision coordinates), and no wall-clock time is written.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely

from pipeline.contracts import Contract
from pipeline.io import atomic_path, file_sha256, read_table, write_table

PARTITION_COLUMN = "h3_parent"
PART_STEM = "part-0"
RECORD_SEPARATOR = "\x1e"  # RFC 8142: every GeoJSON text starts with RS and ends with LF
FORMATS: dict[str, str] = {"geoparquet": "parquet", "csv": "csv", "geojsonseq": "geojsonl"}
MEDIA_TYPES: dict[str, str] = {
    "geoparquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "geojsonseq": "application/geo+json-seq",
}


def file_record(root: Path, path: Path, **extra: Any) -> dict[str, Any]:
    """Return the manifest entry of one file: relative path, size, sha256, plus ``extra``."""
    return {
        "path": path.relative_to(root).as_posix(),
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        **extra,
    }


def count_rows(path: Path, fmt: str) -> int:
    """Return the number of rows of a feed file written in format ``fmt``.

    GeoParquet from its footer; CSV by parsing it (quoted fields may hold line breaks), less the
    header; a GeoJSON text sequence by its record separators.
    """
    if fmt == "geoparquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open(encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
        return sum(line.startswith(RECORD_SEPARATOR) for line in handle)


def write_partitioned(
    frame: gpd.GeoDataFrame,
    contract: Contract,
    root: Path,
    table_dir: str,
    formats: Iterable[str],
) -> list[dict[str, Any]]:
    """Write a feed table as one folder per ``h3_parent`` value, in each requested format.

    Parameters
    ----------
    frame
        The table with an ``h3_parent`` column, sorted by partition and key.
    contract
        The contract of the files (without ``h3_parent``).
    root
        The release folder; paths in the returned records are relative to it.
    table_dir
        The table's folder inside ``root``, e.g. ``"segments"``.
    formats
        Any of ``geoparquet``, ``csv``, ``geojsonseq``.

    Returns
    -------
    list of dict
        One manifest record per file written.
    """
    records = []
    for parent, part in frame.groupby(PARTITION_COLUMN, sort=True):
        folder = root / table_dir / f"{PARTITION_COLUMN}={parent}"
        data = part.drop(columns=[PARTITION_COLUMN]).reset_index(drop=True)
        records += write_formats(data, contract, root, folder / PART_STEM, formats, str(parent))
    return records


def write_formats(
    frame: gpd.GeoDataFrame,
    contract: Contract,
    root: Path,
    stem: Path,
    formats: Iterable[str],
    partition: str | None = None,
) -> list[dict[str, Any]]:
    """Write one table in each requested format beside ``stem`` and return their records."""
    records = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{FORMATS[fmt]}")
        if fmt == "geoparquet":
            write_table(frame, path, contract)
        elif fmt == "csv":
            write_csv(frame, contract, path)
        else:
            write_geojsonseq(frame, contract, path)
        records.append(
            file_record(
                root,
                path,
                table=contract.name,
                format=fmt,
                media_type=MEDIA_TYPES[fmt],
                rows=len(frame),
                **({PARTITION_COLUMN: partition} if partition is not None else {}),
            )
        )
    return records


def write_csv(frame: gpd.GeoDataFrame, contract: Contract, path: Path) -> None:
    """Write a table as CSV: contract column order, geometry as WKT, times as ISO 8601 UTC."""
    text = _text_columns(frame, contract)
    text["geometry"] = shapely.to_wkt(
        np.asarray(frame.geometry.to_numpy()), rounding_precision=-1, trim=True
    )
    with atomic_path(path) as temp:
        text.to_csv(temp, index=False, lineterminator="\n", encoding="utf-8")


def write_geojsonseq(frame: gpd.GeoDataFrame, contract: Contract, path: Path) -> None:
    """Write a table as a GeoJSON text sequence (RFC 8142): RS, one Feature, LF per row."""
    text = _text_columns(frame, contract)
    key = contract.key[0]
    geometries = shapely.to_geojson(np.asarray(frame.geometry.to_numpy()))
    names = list(text.columns)
    with atomic_path(path) as temp, temp.open("w", encoding="utf-8", newline="\n") as handle:
        for values, geometry in zip(text.itertuples(index=False), geometries, strict=True):
            properties = {
                name: _json_value(value) for name, value in zip(names, values, strict=True)
            }
            feature = (
                '{"type":"Feature","id":'
                + json.dumps(properties[key])
                + ',"geometry":'
                + str(geometry)
                + ',"properties":'
                + json.dumps(properties, separators=(",", ":"), ensure_ascii=False)
                + "}"
            )
            handle.write(RECORD_SEPARATOR + feature + "\n")


def read_partitioned(
    root: Path, table_dir: str, contract: Contract, partitions: Iterable[str] | None = None
) -> gpd.GeoDataFrame:
    """Read a partitioned feed table back (GeoParquet files), ``h3_parent`` from the paths.

    Parameters
    ----------
    root
        The release folder.
    table_dir
        The table's folder, e.g. ``"segments"``.
    contract
        The contract every file must satisfy.
    partitions
        Read only these ``h3_parent`` values; default all.

    Returns
    -------
    geopandas.GeoDataFrame
        All rows with an ``h3_parent`` column, sorted by partition and key.
    """
    folder = root / table_dir
    wanted = None if partitions is None else set(partitions)
    frames = []
    for path in sorted(folder.glob(f"{PARTITION_COLUMN}=*/{PART_STEM}.parquet")):
        parent = path.parent.name.split("=", 1)[1]
        if wanted is not None and parent not in wanted:
            continue
        frames.append(read_table(path, contract).assign(**{PARTITION_COLUMN: parent}))
    if not frames:
        return empty_frame(contract).assign(**{PARTITION_COLUMN: pd.Series([], dtype="str")})
    frame = pd.concat(frames, ignore_index=True)
    frame = gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")
    return frame.sort_values([PARTITION_COLUMN, *contract.key], ignore_index=True)


def empty_frame(contract: Contract) -> gpd.GeoDataFrame:
    """Return an empty GeoDataFrame with the contract's columns."""
    table = contract.schema.empty_table().to_pandas()
    table = table.drop(columns=["geometry"])
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries([], crs="EPSG:4326"))


def _text_columns(frame: gpd.GeoDataFrame, contract: Contract) -> pd.DataFrame:
    names = [f.name for f in contract.schema if f.name != contract.geometry_column]
    columns: dict[str, Any] = {}
    for name in names:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            iso = column.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
            columns[name] = iso.str.slice(0, -3) + "Z"
        else:
            columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str | int | bool):
        return value
    if pd.isna(value):
        return None
    return value
