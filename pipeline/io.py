"""Reading and writing stage outputs: contract-checked GeoParquet 1.1, written atomically.

Writing goes to a temporary file in the destination folder and is renamed into place, so a
crashed or killed stage never leaves a half-written output, and readers never see one. The same
data always gives the same bytes, so re-running a stage is idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from geopandas.io.arrow import _arrow_to_geopandas, _geopandas_to_arrow

from pipeline.contracts import Contract, check_contract_metadata, validate_table
from pipeline.errors import ContractError, InputDataError

GEOPARQUET_VERSION = "1.1.0"
COVERING_BBOX_COLUMN = "bbox"
OUTPUT_MODE = 0o644  # mkstemp creates 0600; outputs are meant to be shared


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


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_table(frame: pd.DataFrame, path: str | Path, contract: Contract) -> None:
    """Write a stage output after checking its contract.

    A contract with a geometry column is written as GeoParquet 1.1 (WKB, covering bbox) from a
    GeoDataFrame; one without as plain Parquet. Columns are put in contract order and safely
    cast to the contract's types (e.g. pandas' ``large_string`` to ``string``); a column that
    cannot be cast is a contract problem.

    Raises
    ------
    ContractError
        If the frame does not satisfy ``contract``.
    """
    if contract.geometry_column is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        table = _geopandas_to_arrow(
            frame, index=False, schema_version=GEOPARQUET_VERSION, write_covering_bbox=True
        )
    table = _conform_to_contract(table, contract, str(path))
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd", row_group_size=64 * 1024)


def read_table(
    path: str | Path, contract: Contract, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read a stage output, checking its contract metadata, schema, nulls and keys.

    Parameters
    ----------
    path
        A file written by :func:`write_table`.
    contract
        The contract the file must satisfy.
    columns
        Read only these columns (then only their types are checked).

    Raises
    ------
    InputDataError
        If the file is missing or not Parquet.
    ContractError
        If it was not written for ``contract`` or does not satisfy it.
    """
    source = str(path)
    try:
        parquet_file = pq.ParquetFile(path)
    except FileNotFoundError:
        raise InputDataError(f"{source}: file not found; run the stage that writes it") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{source}: not a readable Parquet file ({exc})") from None
    schema = parquet_file.schema_arrow
    check_contract_metadata(schema, contract, source)
    table = parquet_file.read(columns=columns)
    if COVERING_BBOX_COLUMN in table.column_names:
        table = table.drop_columns([COVERING_BBOX_COLUMN])
    if columns is None:
        validate_table(table, contract, source)
    if contract.geometry_column is None or contract.geometry_column not in table.column_names:
        return table.to_pandas()
    return _arrow_to_geopandas(table)


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
