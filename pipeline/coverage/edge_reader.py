"""Reading a coverage folder's edge coverage: the one way every reader gets it.

A coverage folder stores the edge coverage per partition of its state
(``state/parts/<key>/<generation>/edge_coverage.parquet``, contract ``edge_coverage_part``),
each written when an update touches the partition and committed with the state's pointer
(``state/CURRENT.json``). ``age_days`` is not stored: it is wrong the moment it is read. The
reader computes it from ``last_seen`` and the summary's ``as_of``, so the table it returns is
the ``edge_coverage`` table: one row per directed edge of the roads, in the roads' order
(by ``u``, ``v``, ``key``).
It reads the partitions the pointer names at one moment, so it never mixes two updates. No
pandas: the result is Arrow, geometry as WKB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import EDGE_COVERAGE, EDGE_COVERAGE_PART
from pipeline.coverage.pointer import EDGE_LAYOUT, EDGE_TABLE, pointer_with, read_in_force
from pipeline.errors import InputDataError
from pipeline.io import concat_geo_tables, read_arrow

AGE = "age_days"
ROADS_ORDER = ("u", "v", "key")  # the roads' edge table is in this order
SUMMARY_FILE = "summary.json"
MS_PER_DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_edge_table(
    coverage_dir: str | Path,
    columns: list[str] | None = None,
    parts: Iterable[str] | None = None,
) -> pa.Table:
    """Return the edge coverage table of a coverage folder (contract ``edge_coverage``).

    Parameters
    ----------
    coverage_dir
        Output folder of ``roadcover coverage``.
    columns
        These columns alone, in this order (default: every column of the contract).
    parts
        The edges of these partitions alone (keys of the state's partitions); default: all.

    Returns
    -------
    pyarrow.Table
        One row per edge, by ``u``, ``v`` and ``key`` (the roads' order); ``age_days`` is
        the days from ``last_seen`` to the summary's ``as_of`` (null for an edge never
        driven).

    Raises
    ------
    InputDataError
        If the folder holds no edge coverage (``roadcover coverage`` has not written it).
    ContractError
        If a stored table breaks its contract.
    """
    coverage_dir = Path(coverage_dir)
    names = list(columns) if columns is not None else EDGE_COVERAGE.schema.names
    stored = [name for name in names if name != AGE]
    if AGE in names and "last_seen" not in stored:
        stored.append("last_seen")
    table = read_in_force(lambda: _read_parts(coverage_dir, stored, parts))
    if AGE in names:
        table = table.append_column(
            AGE, age_days(table.column("last_seen"), as_of_ms(coverage_dir / SUMMARY_FILE))
        )
    return table.select(names)


def _read_parts(coverage_dir: Path, columns: list[str], parts: Iterable[str] | None) -> pa.Table:
    """Read and join the stored tables of the partitions the pointer in force names."""
    state_root = coverage_dir / "state"
    pointer = pointer_with(coverage_dir, "edge_layout", EDGE_LAYOUT, "edge coverage")
    named = dict(pointer["parts"])
    keys = sorted(named if parts is None else set(parts) & set(named))
    wanted = list(dict.fromkeys([*columns, *ROADS_ORDER]))
    tables = [
        read_arrow(
            state_root / "parts" / key / named[key] / EDGE_TABLE,
            EDGE_COVERAGE_PART,
            wanted if columns != EDGE_COVERAGE_PART.schema.names else None,
        )
        for key in keys
    ]
    if not tables:
        return _empty(wanted)
    table = concat_geo_tables(tables).sort_by([(name, "ascending") for name in ROADS_ORDER])
    return table.select(columns).combine_chunks()


def _empty(columns: list[str]) -> pa.Table:
    schema = EDGE_COVERAGE_PART.schema
    return pa.schema([schema.field(name) for name in columns]).empty_table()


def age_days(last_seen: pa.ChunkedArray, as_of: int) -> pa.ChunkedArray:
    """Return the days from ``last_seen`` to ``as_of`` (ms; float64, null where not seen)."""
    last_ms = pc.cast(last_seen, pa.int64())
    return pc.divide(pc.cast(pc.subtract(as_of, last_ms), pa.float64()), float(MS_PER_DAY))


def as_of_ms(path: Path) -> int:
    """Return the summary's ``as_of`` in ms since the epoch (UTC)."""
    try:
        as_of = json.loads(path.read_text(encoding="utf-8"))["as_of"]
        return (datetime.fromisoformat(as_of) - EPOCH) // timedelta(milliseconds=1)
    except (OSError, ValueError, KeyError, TypeError):
        raise InputDataError(
            f"{path}: no summary with a valid 'as_of' (the time ages are measured from); "
            "run `roadcover coverage` into this folder"
        ) from None
