"""Reading a coverage folder's cell coverage: the one way every reader gets it.

A coverage folder stores the cells at the resolutions no coarser than the partition
resolution per partition of its state (``state/parts/<key>/<generation>/cell_coverage.parquet``,
contract ``cell_coverage_part``, with the covered road of its cells by the time it was last
seen beside it, ``cell_freshness.parquet``), each written when an update changes a cell of the
partition and committed with the state's pointer (``state/CURRENT.json``, ``cell_parts``). The
coarser cells, a few a partition, are one table of the rollup that every update rewrites
(``state/rollup/<generation>/coarse_cells.parquet``, contract ``cell_coverage_coarse``).
``age_days`` and a partition's ``fresh_*_km`` are not stored: they move with the time they are
read at. The reader computes them from ``last_seen``, the freshness rows and the summary's
``as_of``, so the table it returns is the ``cell_coverage`` table, by ``resolution``
(finest first) and ``cell``. No pandas: the result is Arrow, geometry as WKB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contracts import (
    CELL_COVERAGE,
    CELL_COVERAGE_COARSE,
    CELL_COVERAGE_PART,
    CELL_FRESHNESS,
)
from pipeline.coverage.edge_reader import AGE, MS_PER_DAY, SUMMARY_FILE, age_days, as_of_ms
from pipeline.coverage.pointer import (
    CELL_LAYOUT,
    CELL_TABLE,
    COARSE_CELLS,
    FRESHNESS_TABLE,
    pointer_with,
    read_in_force,
)
from pipeline.io import concat_geo_tables, read_arrow

FRESHNESS_DAYS = (7, 28, 90, 365)
MM_PER_KM = 1_000_000
CELL_ORDER = [("resolution", "descending"), ("cell", "ascending")]


def read_cell_table(coverage_dir: str | Path) -> pa.Table:
    """Return the cell coverage table of a coverage folder (contract ``cell_coverage``).

    Parameters
    ----------
    coverage_dir
        Output folder of ``roadcover coverage``.

    Returns
    -------
    pyarrow.Table
        One row per cell of every resolution, finest first, by ``cell``; ``age_days`` is the
        days from ``last_seen`` to the summary's ``as_of`` (null for a cell never driven),
        ``fresh_<d>d_km`` the road last seen at most ``d`` days before it.

    Raises
    ------
    InputDataError
        If the folder holds no cell coverage (``roadcover coverage`` has not written it).
    ContractError
        If a stored table breaks its contract.
    """
    coverage_dir = Path(coverage_dir)
    as_of = as_of_ms(coverage_dir / SUMMARY_FILE)
    table = read_in_force(lambda: _read_stored(coverage_dir, as_of))
    table = table.append_column(AGE, age_days(table.column("last_seen"), as_of))
    table = table.sort_by(CELL_ORDER)
    return table.select(CELL_COVERAGE.schema.names)


def _read_stored(coverage_dir: Path, as_of: int) -> pa.Table:
    """Read the coarse table and the partitions' cells the pointer in force names."""
    state_root = coverage_dir / "state"
    pointer = pointer_with(coverage_dir, "cell_layout", CELL_LAYOUT, "cell coverage")
    coarse = read_arrow(
        state_root / "rollup" / str(pointer["rollup"]) / COARSE_CELLS, CELL_COVERAGE_COARSE
    )
    fine, freshness = [], []
    for key, generation in sorted(dict(pointer["cell_parts"]).items()):
        folder = state_root / "parts" / key / generation
        fine.append(read_arrow(folder / CELL_TABLE, CELL_COVERAGE_PART))
        freshness.append(read_arrow(folder / FRESHNESS_TABLE, CELL_FRESHNESS))
    tables = [coarse]
    if fine:  # the partitions' cells as one table, with their freshness
        tables.append(_with_freshness(concat_geo_tables(fine), freshness, as_of))
    names = CELL_COVERAGE_COARSE.schema.names
    return concat_geo_tables([table.select(names) for table in tables])


def _with_freshness(cells: pa.Table, freshness: list[pa.Table], as_of: int) -> pa.Table:
    """Append ``fresh_<d>d_km`` to cells: their road last seen at most d days before ``as_of``."""
    rows = pa.concat_tables(freshness) if freshness else CELL_FRESHNESS.schema.empty_table()
    at = pc.index_in(rows.column("cell"), value_set=cells.column("cell")).to_numpy()
    last_ms = pc.cast(rows.column("last_seen"), pa.int64()).to_numpy()
    length_mm = rows.column("length_mm").to_numpy()
    for days in FRESHNESS_DAYS:
        fresh = last_ms >= as_of - days * MS_PER_DAY
        mm = np.bincount(at[fresh], weights=length_mm[fresh], minlength=cells.num_rows)
        field = CELL_COVERAGE.schema.field(f"fresh_{days}d_km")
        cells = cells.append_column(field, pa.chunked_array([pa.array(mm / MM_PER_KM)]))
    return cells
