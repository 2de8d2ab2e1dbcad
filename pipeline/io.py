"""Reading and writing stage outputs: contract-checked GeoParquet 1.1, written atomically.

Writing goes to a temporary file in the destination folder and is renamed into place, so a
crashed or killed stage never leaves a half-written output, and readers never see one. The same
data always gives the same bytes, so re-running a stage is idempotent.

geopandas, pandas and pyproj are imported where a GeoDataFrame or a CRS is made, not with this
module: a command that reads Arrow tables alone (:func:`read_arrow`) does without them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.contracts import (
    Contract,
    check_contract_metadata,
    in_key_order,
    validate_parts,
    validate_table,
)
from pipeline.errors import ContractError, InputDataError

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import pyproj

GEOPARQUET_VERSION = "1.1.0"
COVERING_BBOX_COLUMN = "bbox"
# where a stage's tasks write their parts before the stage moves or joins them into place
STAGING_DIR = ".staging"
# a path with this suffix is written as an Arrow IPC file: a staged part for concat_tables
STAGED_SUFFIX = ".arrow"
ROW_GROUP_ROWS = 64 * 1024
OUTPUT_MODE = 0o644  # mkstemp creates 0600; outputs are meant to be shared
# ISO 19125 WKB of a 2D point: byte order (1 = little endian), geometry type (1 = Point), x, y
WKB_POINT = np.dtype([("byte_order", "u1"), ("geometry_type", "<u4"), ("x", "<f8"), ("y", "<f8")])
# ... and the head of a 2D LineString's: byte order, geometry type (2 = LineString), vertex count
WKB_LINE_HEAD = np.dtype([("byte_order", "u1"), ("geometry_type", "<u4"), ("count", "<u4")])


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Parameters
    ----------
    path
        The final destination. Its parent folder is created if needed.

    Yields
    ------
    Path
        Where to write. It is removed if the block raises.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, OUTPUT_MODE)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (replacing it); a copy where links are not supported."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in blocks (:func:`hashlib.file_digest`)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


SHA256_MEMO_SUFFIX = ".sha256.json"
RACY_S = 2.0
"""A file changed less than this long ago may change again within its timestamps' tick."""


def memoized_sha256(path: str | Path, racy_s: float = RACY_S) -> str:
    """Return the hex sha256 of a file, from a memo beside it when the file is unchanged.

    The memo (``.<name>.sha256.json`` beside the file, written atomically) holds the sha256
    with the file's size, ``mtime_ns``, ``ctime_ns``, inode and device, taken from the open
    file that was hashed; it is trusted only when every one of them is the file's now (as git
    trusts its index), so a file rewritten in place, replaced or touched is hashed again. A
    file changed less than ``racy_s`` seconds before it is hashed could change again within
    the same timestamp, so its sha256 is not memoized. A folder that cannot be written to
    gets no memo.

    Parameters
    ----------
    path
        The file.
    racy_s
        How old (seconds, by its mtime and ctime) a file must be for its sha256 to be kept.
    """
    path = Path(path)
    memo_path = path.with_name(f".{path.name}{SHA256_MEMO_SUFFIX}")
    with path.open("rb") as handle:
        keys = _stat_keys(os.fstat(handle.fileno()))
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = None
        if (
            isinstance(memo, dict)
            and memo.get("keys") == keys
            and isinstance(memo.get("sha256"), str)
        ):
            return str(memo["sha256"])
        digest = hashlib.file_digest(handle, "sha256")
        after = os.fstat(handle.fileno())
    sha256 = digest.hexdigest()
    newest_ns = max(after.st_mtime_ns, after.st_ctime_ns)
    if _stat_keys(after) == keys and time.time_ns() - newest_ns > racy_s * 1e9:
        with contextlib.suppress(OSError):  # a read-only folder: hashed again next time
            write_json({"keys": keys, "sha256": sha256}, memo_path)
    return sha256


def _stat_keys(status: os.stat_result) -> dict[str, int]:
    """Return what a memo of a file's sha256 is keyed by: a change of the file changes one."""
    return {
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "ctime_ns": status.st_ctime_ns,
        "inode": status.st_ino,
        "device": status.st_dev,
    }


def batch_of_part(path: Path) -> str:
    """Return the batch id in a traces part file's name (``part-<batch>[-<chunk>].parquet``)."""
    return path.name.removeprefix("part-").split(".")[0].split("-")[0]


def committed_batches(traces_dir: Path) -> set[str]:
    """Return the batches of a traces dataset that are applied: those with a report.

    An ingest writes a batch's report last (its commit record), so a reader that keeps to
    the parts of these batches never sees a batch while it is being written or rolled back.
    """
    return {path.stem for path in (traces_dir / "reports").glob("*.json")}


def remove_leftover_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of killed writes (:func:`atomic_path`'s) under ``folder``.

    Call it only while holding the folder's lock (:func:`pipeline.locking.folder_lock`): then
    no write into the folder is under way, and every temporary file is a dead writer's.
    Symbolic links are neither followed nor removed.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for temp in sorted(folder.rglob(".*.tmp")):
        if temp.is_file() and not temp.is_symlink():
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_table(frame: pd.DataFrame | pa.Table, path: str | Path, contract: Contract) -> None:
    """Write a stage output after checking its contract.

    A contract with a geometry column is written as GeoParquet 1.1 (WKB, covering bbox) from a
    GeoDataFrame; one without as plain Parquet, from a DataFrame or an Arrow table. Columns are
    put in contract order and safely cast to the contract's types (e.g. pandas'
    ``large_string`` to ``string``); a column that cannot be cast is a contract problem.

    Raises
    ------
    ContractError
        If the frame does not satisfy ``contract``.
    """
    if isinstance(frame, pa.Table) and contract.geometry_column is None:
        table = frame
    elif contract.geometry_column is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        from geopandas.io.arrow import _geopandas_to_arrow

        table = _geopandas_to_arrow(
            frame, index=False, schema_version=GEOPARQUET_VERSION, write_covering_bbox=True
        )
    _write_conformed(table, path, contract)


def write_arrow(table: pa.Table, path: str | Path, contract: Contract) -> None:
    """Write an Arrow table as a stage output after checking its contract.

    With a geometry column, ``table`` holds it as WKB with the covering bbox column and the
    GeoParquet ``geo`` schema metadata, as :func:`write_table` makes them from a GeoDataFrame;
    the same table gives the same file. Columns are put in contract order and cast as by
    :func:`write_table`.

    Raises
    ------
    ContractError
        If the table does not satisfy ``contract``.
    """
    _write_conformed(table, path, contract)


def write_points(
    frame: pd.DataFrame | pa.Table,
    lon: np.ndarray,
    lat: np.ndarray,
    path: str | Path,
    contract: Contract,
    crs: str = "EPSG:4326",
) -> None:
    """Write a table of points, its geometry encoded straight from the coordinates.

    The file is the same GeoParquet 1.1 as :func:`write_table` writes for a GeoDataFrame of
    those points (WKB, covering bbox, contract checks), without making a shapely object per
    point: for the millions of fixes of the points tables that is most of the writing time.

    Parameters
    ----------
    frame
        Every column of ``contract`` but its geometry (a DataFrame, or an Arrow table).
    lon, lat
        The points' coordinates, one per row of ``frame``.
    path
        Where to write (atomically); a path ending in :data:`STAGED_SUFFIX` gets an Arrow
        IPC file, a staged part for :func:`concat_tables` (see :func:`_write_conformed`).
    contract
        The table's contract; it must have a geometry column.
    crs
        The coordinates' reference system.

    Raises
    ------
    ContractError
        If the frame does not satisfy ``contract``.
    """
    lon = np.ascontiguousarray(lon, dtype="float64")
    lat = np.ascontiguousarray(lat, dtype="float64")
    bounds = (lon, lat, lon, lat)
    _write_geometry(frame, wkb_points(lon, lat), bounds, "Point", path, contract, crs)


def write_lines(
    frame: pd.DataFrame | pa.Table,
    coords: np.ndarray,
    offsets: np.ndarray,
    path: str | Path,
    contract: Contract,
    crs: str = "EPSG:4326",
    index: np.ndarray | None = None,
) -> None:
    """Write a table of LineStrings, their geometry encoded straight from the vertices.

    The file is the same GeoParquet 1.1 as :func:`write_table` writes for a GeoDataFrame of
    those lines, without making a shapely object per line (see :func:`write_points`, whose
    ``frame``, ``path``, ``contract`` and ``crs`` these are; :func:`lines_table` for
    ``coords``, ``offsets`` and ``index``).

    Raises
    ------
    ContractError
        If the frame does not satisfy ``contract``.
    ValueError
        If ``offsets`` does not describe lines of at least two vertices each, or the lines
        (by ``index``) do not give one per row.
    """
    table = lines_table(frame, coords, offsets, contract, crs, index, source=str(path))
    _write_conformed(table, path, contract)


def lines_table(
    frame: pd.DataFrame | pa.Table,
    coords: np.ndarray,
    offsets: np.ndarray,
    contract: Contract,
    crs: str = "EPSG:4326",
    index: np.ndarray | None = None,
    source: str = "<table>",
) -> pa.Table:
    """Return a table of LineStrings as :func:`write_lines` writes it, not yet conformed.

    ``frame`` with the WKB geometry column, its covering bbox column and the GeoParquet
    ``geo`` schema metadata: a part that :func:`write_in_row_groups` can write with others
    (their ``geo`` metadata merged by :func:`merged_geo_metadata`).

    Parameters
    ----------
    frame
        Every column of ``contract`` but its geometry (a DataFrame, or an Arrow table).
    coords
        The vertices of all the lines, ``(n, 2)`` x/y, line after line.
    offsets
        Line ``i`` is ``coords[offsets[i]:offsets[i + 1]]``; one more than there are lines.
    contract
        The table's contract; it must have a geometry column.
    crs
        The coordinates' reference system.
    index
        Row ``i`` has line ``index[i]``, for tables that repeat a few lines over many rows
        (one row per driven edge): each line is encoded once. Default: row ``i`` has line
        ``i``.
    source
        What the table is (a path), for error messages.

    Raises
    ------
    ContractError
        If ``contract`` has no geometry column.
    ValueError
        As :func:`write_lines`.
    """
    coords = np.ascontiguousarray(coords, dtype="<f8").reshape(-1, 2)
    offsets = np.asarray(offsets, dtype="int64")
    rows = frame.num_rows if isinstance(frame, pa.Table) else len(frame)
    lines = len(offsets) - 1
    if (lines if index is None else len(index)) != rows:
        raise ValueError(f"{source}: give one line per row ({rows}), or an index of one per row")
    if lines < 0 or offsets[-1] != len(coords) or (np.diff(offsets) < 2).any():
        raise ValueError(
            f"{source}: offsets must give lines of 2 or more of the {len(coords)} vertices"
        )
    if index is not None and len(index) and not 0 <= index.min() <= index.max() < lines:
        raise ValueError(f"{source}: the index must name lines 0 to {lines - 1}")
    low = np.minimum.reduceat(coords, offsets[:-1]) if lines else np.empty((0, 2))
    high = np.maximum.reduceat(coords, offsets[:-1]) if lines else np.empty((0, 2))
    geometry = wkb_linestrings(coords, offsets)
    if index is not None:
        geometry, low, high = geometry.take(arrow_array(index)), low[index], high[index]
    bounds = (low[:, 0], low[:, 1], high[:, 0], high[:, 1])
    corners = np.concatenate([low, high])  # the file's bbox: that of all the vertices
    return _with_geometry(frame, geometry, bounds, "LineString", source, contract, crs, corners)


def _write_geometry(
    frame: pd.DataFrame | pa.Table,
    geometry: pa.BinaryArray,
    bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    geometry_type: str,
    path: str | Path,
    contract: Contract,
    crs: str,
) -> None:
    """Write ``frame`` with a WKB ``geometry`` column of one type and its covering bbox.

    ``bounds`` are the rows' xmin, ymin, xmax, ymax, whose lower corners (the points
    themselves) give the file's bbox.
    """
    table = _with_geometry(frame, geometry, bounds, geometry_type, str(path), contract, crs)
    _write_conformed(table, path, contract)


def _with_geometry(
    frame: pd.DataFrame | pa.Table,
    geometry: pa.BinaryArray,
    bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    geometry_type: str,
    source: str,
    contract: Contract,
    crs: str,
    vertices: np.ndarray | None = None,
) -> pa.Table:
    """Return ``frame`` with a WKB ``geometry`` column, its covering bbox and ``geo`` metadata.

    ``bounds`` are the rows' xmin, ymin, xmax, ymax; ``vertices`` (default: the bounds' lower
    corners, which are the points themselves) give the table's bbox.
    """
    if contract.geometry_column is None:
        raise ContractError(f"{source}: {contract.name!r} has no geometry column to write to")
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    table = table.append_column(contract.geometry_column, geometry)
    table = table.append_column(
        COVERING_BBOX_COLUMN,
        pa.StructArray.from_arrays(
            [arrow_array(np.asarray(b, dtype="float64")) for b in bounds],
            names=["xmin", "ymin", "xmax", "ymax"],
        ),
    )
    x, y = (vertices[:, 0], vertices[:, 1]) if vertices is not None else bounds[:2]
    geo = _geo_metadata(contract.geometry_column, geometry_type, x, y, crs)
    metadata = {**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()}
    return table.replace_schema_metadata(metadata)


def arrow_array(
    values: np.ndarray, valid: np.ndarray | None = None, type: pa.DataType | None = None
) -> pa.Array:
    """Return an Arrow array of a numeric or boolean numpy array, built from its buffers.

    The same array as ``pyarrow.array(values, mask=~valid)``, without the pandas import that
    ``pyarrow.array`` makes on its first call (a quarter of a second at a stage's start).

    Parameters
    ----------
    values
        One-dimensional numbers or booleans.
    valid
        False where the value is null; default: none is.
    type
        The Arrow type of the values' bytes (e.g. a timestamp of int64s); default: that of
        their numpy dtype.
    """
    values = np.ascontiguousarray(values)
    count = len(values)
    validity, nulls = None, 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = count - int(np.count_nonzero(valid))
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        arrow_type = type or pa.bool_()
    else:
        data = pa.py_buffer(values)
        arrow_type = type or pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(arrow_type, count, [validity, data], null_count=nulls)


def arrow_strings(values: list[str]) -> pa.Array:
    """Return an Arrow string array of ``values``, built from its buffers (see arrow_array)."""
    encoded = [value.encode() for value in values]
    offsets = np.r_[0, np.cumsum([len(value) for value in encoded])].astype("int32")
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float64(): np.float64}


def numpy_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return the values of a column of int32, int64, float64, timestamps (int64) or booleans.

    Read from the column's buffers: ``to_numpy`` would import pandas (see
    :func:`arrow_array`). Null slots give whatever their buffer holds.

    Raises
    ------
    TypeError
        If the column is of another type.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    start, stop = array.offset, array.offset + len(array)
    if pa.types.is_boolean(array.type):
        bits = np.frombuffer(array.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, count=stop, bitorder="little")[start:].astype(bool)
    value_type = pa.int64() if pa.types.is_timestamp(array.type) else array.type
    if value_type not in _NUMPY_TYPES:
        raise TypeError(f"numpy_values reads numbers, timestamps and booleans, not {array.type}")
    if len(array) == 0:
        return np.empty(0, dtype=_NUMPY_TYPES[value_type])
    return np.frombuffer(array.buffers()[1], dtype=_NUMPY_TYPES[value_type])[start:stop]


def wkb_points(lon: np.ndarray, lat: np.ndarray) -> pa.BinaryArray:
    """Encode coordinates as an Arrow array of WKB points (what ``shapely.to_wkb`` gives)."""
    records = np.empty(len(lon), dtype=WKB_POINT)
    records["byte_order"] = 1
    records["geometry_type"] = 1
    records["x"] = lon
    records["y"] = lat
    offsets = np.arange(len(lon) + 1, dtype="int32") * WKB_POINT.itemsize
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(lon), [None, pa.py_buffer(offsets), pa.py_buffer(records.tobytes())]
    )


def wkb_linestrings(coords: np.ndarray, offsets: np.ndarray) -> pa.BinaryArray:
    """Encode lines (vertices ``coords[offsets[i]:offsets[i + 1]]``) as WKB LineStrings.

    What ``shapely.to_wkb`` gives for ``shapely.linestrings(coords, indices=...)``.
    """
    counts = np.diff(offsets)
    heads = np.empty(len(counts), dtype=WKB_LINE_HEAD)
    heads["byte_order"] = 1
    heads["geometry_type"] = 2
    heads["count"] = counts
    value_offsets = WKB_LINE_HEAD.itemsize * np.arange(len(offsets)) + 16 * offsets
    data = np.empty(int(value_offsets[-1]), dtype=np.uint8)
    head_bytes = (value_offsets[:-1, None] + np.arange(WKB_LINE_HEAD.itemsize)).ravel()
    is_head = np.zeros(len(data), dtype=bool)
    is_head[head_bytes] = True
    data[head_bytes] = heads.view(np.uint8)
    data[~is_head] = np.ascontiguousarray(coords, dtype="<f8").view(np.uint8).ravel()
    return pa.BinaryArray.from_buffers(
        pa.binary(),
        len(counts),
        [None, pa.py_buffer(value_offsets.astype("int32")), pa.py_buffer(data)],
    )


def _geo_metadata(
    column: str, geometry_type: str, x: np.ndarray, y: np.ndarray, crs: str
) -> dict[str, Any]:
    """Return the GeoParquet 1.1 ``geo`` metadata of a column of lines or points, as geopandas."""
    description: dict[str, Any] = {
        "encoding": "WKB",
        "crs": _projjson(crs),
        "geometry_types": [geometry_type] if len(x) else [],
    }
    bbox = [np.min(x), np.min(y), np.max(x), np.max(y)] if len(x) else []
    if bbox and np.isfinite(bbox).all():
        description["bbox"] = [float(value) for value in bbox]
    description["covering"] = {
        "bbox": {name: [COVERING_BBOX_COLUMN, name] for name in ("xmin", "ymin", "xmax", "ymax")}
    }
    return {
        "primary_column": column,
        "columns": {column: description},
        "version": GEOPARQUET_VERSION,
        "creator": {"library": "roadcover", "version": __version__},
    }


@functools.lru_cache(maxsize=32)
def _parsed_crs(document: str) -> pyproj.CRS | None:
    """Return the CRS a GeoParquet column's ``crs`` (JSON text) names; None for ``null``."""
    import pyproj

    value = json.loads(document)
    if value is None:
        return None
    if isinstance(value, dict):
        _drop_ensemble_member_ids(value)
    return pyproj.CRS.from_user_input(value)


@functools.cache
def _projjson(crs: str) -> dict[str, Any]:
    import pyproj

    document: dict[str, Any] = pyproj.CRS.from_user_input(crs).to_json_dict()
    _drop_ensemble_member_ids(document)
    return document


def _drop_ensemble_member_ids(document: dict[str, Any]) -> None:
    """Remove the ids of datum ensemble members from PROJJSON, in place, as geopandas does.

    Older PROJ versions do not know the ids of members added later (GDAL does the same;
    https://github.com/opengeospatial/geoparquet/discussions/110). Kept here so that writing
    a table does not import geopandas.
    """
    for key, value in document.items():
        if isinstance(value, dict):
            _drop_ensemble_member_ids(value)
        elif key == "members" and isinstance(value, list):
            for member in value:
                member.pop("id", None)


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Return how roadcover writes Parquet: zstd, with dictionaries for text columns only.

    Dictionary encoding pays for ids and names (few distinct values, many rows); for
    coordinates, times and WKB it only costs: writing the points tables takes half the time
    without it, and the files are smaller.
    """
    text = [
        field.name
        for field in schema
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    ]
    return {"compression": "zstd", "use_dictionary": text}


def write_frame(frame: pd.DataFrame, path: Path, row_group_size: int | None = None) -> None:
    """Write a DataFrame with no contract (a cache's or a state's table) as Parquet, atomically.

    With :func:`parquet_options`, in row groups of ``row_group_size`` rows (default: one).
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, row_group_size=row_group_size, **parquet_options(table.schema))


class RowGroupWriter:
    """A Parquet file of ``schema`` in row groups of ``rows`` rows (the last fewer).

    As :func:`~pipeline.io.write_table` cuts a table into row groups, whatever the sizes of the
    tables given to :meth:`write`; each row group is one chunk per column, as there. With
    ``group_bytes``, a group also ends before a table that would take it over that many bytes
    (a table over it alone is a group of its own, or several of ``rows`` rows). A file of no
    rows holds one empty row group, as :func:`write_table` writes it.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        rows: int = ROW_GROUP_ROWS,
        group_bytes: int | None = None,
    ) -> None:
        self.rows = rows
        self.schema = schema
        self.group_bytes = group_bytes
        self._writer = pq.ParquetWriter(path, schema, **parquet_options(schema))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._groups = 0

    def __enter__(self) -> RowGroupWriter:
        return self

    def write(self, table: pa.Table) -> None:
        """Queue ``table``'s rows; write every full row group."""
        if self._pending_rows and self._over_group_bytes(table):
            self._flush(self._pending_rows)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.rows:
            self._flush(self.rows)

    def _over_group_bytes(self, table: pa.Table) -> bool:
        """Whether ``table`` would take the rows queued over ``group_bytes``."""
        queued = sum(pending.nbytes for pending in self._pending)
        return self.group_bytes is not None and queued + table.nbytes > self.group_bytes

    def _flush(self, rows: int) -> None:
        plain = [table.replace_schema_metadata(None) for table in self._pending]
        queued = pa.concat_tables(plain).replace_schema_metadata(self.schema.metadata)
        group = queued.slice(0, rows).combine_chunks()
        self._writer.write_table(group, row_group_size=self.rows)
        self._groups += 1
        rest = queued.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            if error is None and (self._pending_rows or not self._groups):
                self._pending = self._pending or [self.schema.empty_table()]
                self._flush(self._pending_rows)
        finally:
            self._writer.close()


def _write_conformed(table: pa.Table, path: str | Path, contract: Contract) -> None:
    """Write a table after conforming it to its contract: as Parquet, or as Arrow IPC.

    A path ending in :data:`STAGED_SUFFIX` gets an uncompressed Arrow IPC file of one record
    batch: a staged part, for :func:`concat_tables` to write into the final Parquet file. It
    costs next to nothing to write and to read, where a Parquet part would be encoded twice.
    """
    table = _conform_to_contract(table, contract, str(path))
    with atomic_path(path) as temp:
        if Path(path).suffix == STAGED_SUFFIX:
            with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
                ipc.write_table(table.combine_chunks())
        else:
            options = parquet_options(table.schema)
            pq.write_table(table, temp, row_group_size=ROW_GROUP_ROWS, **options)


def concat_tables(parts: list[Path], path: str | Path, contract: Contract) -> None:
    """Write the files ``parts`` (from :func:`write_table`, same contract) as one, in order.

    Parts are Parquet files, or Arrow IPC files (staged parts, see :func:`write_table`), which
    give the same file as the Parquet parts of the same rows would. Row groups are copied one
    at a time (an IPC part is memory-mapped), so memory stays at one row group whatever the
    total; the GeoParquet metadata's bounding box and geometry types are those of all the parts.

    Raises
    ------
    ContractError
        If a part was not written for ``contract`` or its columns differ from the first's.
    """
    schemas = [_part_schema(part) for part in parts]
    if not schemas:
        raise ContractError(f"{path}: no parts to concatenate")
    schema = schemas[0]
    for part, part_schema in zip(parts, schemas, strict=True):
        check_contract_metadata(part_schema, contract, str(part))
        if not part_schema.remove_metadata().equals(schema.remove_metadata()):
            raise ContractError(f"{part}: its columns differ from those of {parts[0]}")
    metadata = dict(schema.metadata or {})
    if b"geo" in metadata:
        metadata[b"geo"] = merged_geo_metadata([s.metadata[b"geo"] for s in schemas])
    schema = schema.with_metadata(metadata)
    options = parquet_options(schema)  # the parts' row groups are copied as they are
    with atomic_path(path) as temp, pq.ParquetWriter(temp, schema, **options) as writer:
        for part in parts:
            for row_group in _part_row_groups(part):
                writer.write_table(row_group.cast(schema))


def write_in_row_groups(
    tables: Iterable[pa.Table],
    path: str | Path,
    contract: Contract,
    metadata: dict[bytes, bytes] | None = None,
    group_bytes: int | None = None,
) -> None:
    """Write ``tables``, one after the other, as :func:`write_table` writes their concatenation.

    The same file, holding one row group (:data:`ROW_GROUP_ROWS` rows) in memory at a time:
    the rows are cut into row groups where the whole table would be cut, each conformed to
    ``contract`` (and checked) on its own. ``tables`` hold the contract's columns (with the
    covering bbox column if it has a geometry) and must not be empty; ``metadata`` is the
    file's schema metadata besides the contract's (e.g. the GeoParquet ``geo`` metadata of
    all the rows).

    ``group_bytes`` bounds a row group of large rows (e.g. long lines) in bytes too: a group
    also ends before a table that would take it over ``group_bytes`` (a table over it alone is
    a group of its own, or several of :data:`ROW_GROUP_ROWS` rows). Files with no group over
    ``group_bytes`` are those of :func:`write_table`.

    Raises
    ------
    ContractError
        If a row group does not satisfy ``contract``.
    ValueError
        If ``tables`` is empty.
    """
    conformed = (
        _conform_to_contract(table.replace_schema_metadata(metadata), contract, str(path))
        for table in tables
    )
    first = next(conformed, None)
    if first is None:
        raise ValueError("write_in_row_groups: no tables to write")
    with (
        atomic_path(path) as temp,
        RowGroupWriter(temp, first.schema, ROW_GROUP_ROWS, group_bytes) as out,
    ):
        for table in itertools.chain([first], conformed):
            out.write(table)


def write_staged(batches: list[pa.RecordBatch], path: str | Path) -> None:
    """Write record batches of one schema as an uncompressed Arrow IPC file, atomically.

    A worker's staged part, for the stage process to read back one batch at a time
    (:func:`read_staged_batch`) without holding the rest.
    """
    with (
        atomic_path(path) as temp,
        pa.OSFile(str(temp), "wb") as sink,
        pa.ipc.new_file(sink, batches[0].schema) as ipc,
    ):
        for batch in batches:
            ipc.write_batch(batch)


def read_staged_batch(path: str | Path, index: int) -> pa.RecordBatch:
    """Return record batch ``index`` of a staged Arrow IPC file, read into memory alone."""
    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).get_batch(index)


def _part_schema(part: Path) -> pa.Schema:
    """Return the Arrow schema of a part: a Parquet file, or an Arrow IPC file (staged part)."""
    if part.suffix == STAGED_SUFFIX:
        with pa.memory_map(str(part)) as source:
            return pa.ipc.open_file(source).schema
    return pq.read_schema(part)


def _part_row_groups(part: Path) -> Iterator[pa.Table]:
    """Yield a part's row groups: a Parquet file's own, or an IPC file's rows cut as Parquet.

    An Arrow IPC part's rows are cut as :func:`write_table` would cut them into row groups
    (:data:`ROW_GROUP_ROWS` rows; one empty row group if there are none).
    """
    if part.suffix != STAGED_SUFFIX:
        parquet_file = pq.ParquetFile(part)
        for index in range(parquet_file.num_row_groups):
            yield parquet_file.read_row_group(index)
        return
    with pa.memory_map(str(part)) as source:
        table = pa.ipc.open_file(source).read_all().combine_chunks()
        for start in range(0, max(table.num_rows, 1), ROW_GROUP_ROWS):
            yield table.slice(start, ROW_GROUP_ROWS)


def concat_geo_tables(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables of one schema read from GeoParquet parts, their ``geo`` metadata merged.

    The result's GeoParquet metadata has the bounding box and geometry types of all the parts
    (:func:`merged_geo_metadata`); none if no part has any. ``tables`` must not be empty.
    """
    geo = [t.schema.metadata[b"geo"] for t in tables if b"geo" in (t.schema.metadata or {})]
    joined = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    return joined.replace_schema_metadata({b"geo": merged_geo_metadata(geo)} if geo else None)


def merged_geo_metadata(documents: list[bytes]) -> bytes:
    """GeoParquet ``geo`` metadata covering every part: union of bounding boxes and types."""
    geo = json.loads(documents[0])
    for name, column in geo["columns"].items():
        parts = [json.loads(document)["columns"][name] for document in documents]
        boxes = [
            part["bbox"]
            for part in parts
            if part.get("bbox") and all(math.isfinite(value) for value in part["bbox"])
        ]
        if boxes:
            column["bbox"] = [
                min(box[0] for box in boxes),
                min(box[1] for box in boxes),
                max(box[2] for box in boxes),
                max(box[3] for box in boxes),
            ]
        column["geometry_types"] = sorted({t for part in parts for t in part["geometry_types"]})
    return json.dumps(geo).encode()


def read_table(
    path: str | Path,
    contract: Contract,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    decode_geometry: bool = True,
    check_all: bool = False,
) -> pd.DataFrame:
    """Read a stage output, checking its contract metadata, schema, nulls and keys.

    The checks and parameters are those of :func:`read_arrow`; the table is returned as a
    GeoDataFrame if it has its contract's geometry column, else as a DataFrame.

    Parameters
    ----------
    path, contract, columns, filters, check_all
        As for :func:`read_arrow`.
    decode_geometry
        False: leave the geometry column out of the result, a plain DataFrame, after the same
        checks (decoding WKB into shapely objects is most of the time of a full read).

    Raises
    ------
    InputDataError
        If the file is missing or not Parquet.
    ContractError
        If it was not written for ``contract`` or does not satisfy it.
    """
    table = read_arrow(path, contract, columns, filters, check_all)
    if not decode_geometry and contract.geometry_column in table.column_names:
        table = table.drop_columns([contract.geometry_column])
    if contract.geometry_column is None or contract.geometry_column not in table.column_names:
        return table.to_pandas()
    return arrow_to_geodataframe(table)


def read_arrow(
    path: str | Path,
    contract: Contract,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    check_all: bool = False,
) -> pa.Table:
    """Read a stage output as an Arrow table (geometry as WKB), checking its contract.

    Parameters
    ----------
    path
        A file written by :func:`write_table`.
    contract
        The contract the file must satisfy.
    columns
        Read only these columns (then only their types are checked).
    filters
        Read only the rows that pass these pyarrow filters, e.g. ``[("trip_id", "in", ids)]``
        (row groups whose statistics exclude them are skipped; keys are then not checked).
    check_all
        With ``columns`` (and no ``filters``): check the whole file all the same, as if read
        whole: every column's type, the nulls of the columns not read (counted in the row
        groups' statistics, or read where the file has none) and the key (its columns are
        read for the check).

    Returns
    -------
    pyarrow.Table
        The file's columns but the covering bbox, with the file's schema metadata.

    Raises
    ------
    InputDataError
        If the file is missing or not Parquet.
    ContractError
        If it was not written for ``contract`` or does not satisfy it.
    """
    source = str(path)
    parquet_file = _opened_output(path, contract)
    schema = parquet_file.schema_arrow
    if check_all and columns is not None and filters is None:
        return _read_checked_columns(parquet_file, contract, columns, source)
    if filters is None:
        table = parquet_file.read(columns=columns)
    else:
        table = pq.read_table(path, columns=columns, filters=filters, schema=schema)
    if COVERING_BBOX_COLUMN in table.column_names:
        table = table.drop_columns([COVERING_BBOX_COLUMN])
    if columns is None and filters is None:
        validate_table(table, contract, source)
    return table


def distinct_texts(path: str | Path, contract: Contract, column: str) -> pa.Array:
    """Return the distinct values of a text column of a stage output, in order of appearance.

    The column is read as the dictionary it is written with (:func:`parquet_options`): no
    string is made per row, only per distinct value (a third of the CPU of reading the strings
    and taking their distinct values, on the ``trip_id`` of a points partition).

    Raises
    ------
    InputDataError, ContractError
        As :func:`read_arrow`.
    """
    values = _opened_output(path, contract, dictionary=[column]).read(columns=[column])[column]
    distinct = pc.unique(values)
    return distinct.dictionary_decode() if pa.types.is_dictionary(distinct.type) else distinct


def _read_checked_columns(
    parquet_file: pq.ParquetFile, contract: Contract, columns: list[str], source: str
) -> pa.Table:
    """Read some columns of a file and check the whole file against its contract."""
    schema = _contract_schema(parquet_file)
    names = schema.names
    wanted = [name for name in dict.fromkeys([*columns, *contract.key]) if name in names]
    table = parquet_file.read(columns=wanted)
    null_counts = _null_counts(parquet_file, [n for n in names if n not in wanted])
    null_counts.update({name: table.column(name).null_count for name in wanted})
    validate_parts(schema, null_counts, table, contract, source)
    return table.select(columns)


def _contract_schema(parquet_file: pq.ParquetFile) -> pa.Schema:
    """Return a file's schema without the GeoParquet covering column (not in contracts)."""
    schema = parquet_file.schema_arrow
    if COVERING_BBOX_COLUMN in schema.names:
        schema = schema.remove(schema.get_field_index(COVERING_BBOX_COLUMN))
    return schema


def _null_counts(parquet_file: pq.ParquetFile, names: list[str]) -> dict[str, int]:
    """Return the nulls of columns ``names``: from the row groups' statistics, else read."""
    null_counts = _statistics_null_counts(parquet_file, names)
    for name in names:
        if name not in null_counts:  # no statistics to count them in
            null_counts[name] = parquet_file.read(columns=[name]).column(name).null_count
    return null_counts


def _opened_output(
    path: str | Path, contract: Contract, dictionary: list[str] | None = None
) -> pq.ParquetFile:
    """Open a stage output's Parquet file, checking its contract metadata.

    The columns named in ``dictionary`` are read as dictionary arrays.

    Raises
    ------
    InputDataError
        If the file is missing or not Parquet.
    ContractError
        If it was not written for ``contract``.
    """
    try:
        parquet_file = pq.ParquetFile(path, read_dictionary=dictionary)
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found; run the stage that writes it") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{path}: not a readable Parquet file ({exc})") from None
    check_contract_metadata(parquet_file.schema_arrow, contract, str(path))
    return parquet_file


def read_checked_chunks(
    path: str | Path, contract: Contract, columns: list[str], rows: int
) -> Iterator[pa.Table]:
    """Read ``columns`` of a stage output about ``rows`` rows at a time, checking it whole.

    The checks of :func:`read_arrow` with ``check_all``, holding one chunk at a time: the
    schema and the nulls (from the row groups' statistics) before the first chunk, the key
    after the last. Rows in strict key order across the chunks settle the key's uniqueness
    (stages write their tables so); otherwise the key columns are read whole and grouped.

    Raises
    ------
    InputDataError
        If the file is missing or not Parquet.
    ContractError
        If it was not written for ``contract`` or does not satisfy it (a repeated key: once
        every chunk is read).
    """
    source = str(path)
    parquet_file = _opened_output(path, contract)
    schema = _contract_schema(parquet_file)
    null_counts = _null_counts(parquet_file, schema.names)
    key = list(contract.key)
    validate_parts(schema, null_counts, schema.empty_table().select(key), contract, source)
    wanted = list(dict.fromkeys([*columns, *key]))
    ordered, last = True, None
    for batch in parquet_file.iter_batches(batch_size=rows, columns=wanted):
        chunk = pa.Table.from_batches([batch])
        keys = chunk.select(key)
        if ordered and chunk.num_rows:
            ahead = keys if last is None else pa.concat_tables([last, keys.slice(0, 1)])
            ordered = in_key_order(ahead, key, strict=True) and in_key_order(keys, key, True)
            last = keys.slice(chunk.num_rows - 1)
        yield chunk.select(columns)
    if not ordered:
        validate_parts(schema, null_counts, parquet_file.read(columns=key), contract, source)


def _statistics_null_counts(parquet_file: pq.ParquetFile, names: list[str]) -> dict[str, int]:
    """Nulls of the flat columns ``names``, from the row groups' statistics where all have them."""
    metadata = parquet_file.metadata
    paths = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    counts = {}
    for name in names:
        if name not in paths:  # a nested column: not counted here
            continue
        statistics = [
            metadata.row_group(group).column(paths[name]).statistics
            for group in range(metadata.num_row_groups)
        ]
        if all(s is not None and s.has_null_count for s in statistics):
            counts[name] = sum(s.null_count for s in statistics if s is not None)
    return counts


def arrow_to_geodataframe(table: pa.Table) -> gpd.GeoDataFrame:
    """Convert a GeoParquet table (``geo`` metadata, WKB) to a GeoDataFrame.

    As geopandas does, except that each distinct CRS is parsed once per process: parsing a
    PROJJSON CRS takes pyproj about 25 ms, more than decoding the geometries of a small file.

    Raises
    ------
    ValueError
        If the ``geo`` metadata is missing or invalid.
    """
    from geopandas.io.arrow import _arrow_to_geopandas, _validate_and_decode_metadata

    geo = _validate_and_decode_metadata(table.schema.metadata)
    for column in geo["columns"].values():
        column["crs"] = _parsed_crs(json.dumps(column.get("crs", "OGC:CRS84"), sort_keys=True))
    return _arrow_to_geopandas(table, geo_metadata=geo)


def _conform_to_contract(table: pa.Table, contract: Contract, source: str) -> pa.Table:
    data = table.drop_columns([c for c in [COVERING_BBOX_COLUMN] if c in table.column_names])
    problems: list[str] = []
    columns = []
    for field in contract.schema:
        if field.name not in data.column_names:
            continue
        column = data.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problems.append(
                    f"column {field.name!r} ({column.type}) cannot be {field.type}: {exc}"
                )
        columns.append(column)
    if problems:
        raise ContractError(
            f"{source}: cannot write {contract.name!r}:\n  - " + "\n  - ".join(problems)
        )
    present = [f for f in contract.schema if f.name in data.column_names]
    extra = [name for name in data.column_names if contract.schema.get_field_index(name) < 0]
    conformed = pa.Table.from_arrays(columns, schema=pa.schema(present))
    for name in extra:  # kept so that validate_table reports them
        conformed = conformed.append_column(name, data.column(name))
    validate_table(conformed, contract, source)
    metadata = {**(table.schema.metadata or {}), **contract.metadata()}
    metadata.pop(b"pandas", None)
    if COVERING_BBOX_COLUMN in table.column_names:
        bbox = table.column(COVERING_BBOX_COLUMN)
        conformed = conformed.append_column(COVERING_BBOX_COLUMN, bbox)
    return conformed.replace_schema_metadata(metadata)
