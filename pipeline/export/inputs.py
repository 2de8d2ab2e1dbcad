"""Reading a coverage folder for export: the edge and cell tables and the summary.

The edge and cell tables are read through :func:`pipeline.coverage.edge_reader.read_edge_table`
and :func:`pipeline.coverage.cell_reader.read_cell_table` (the folder stores them per
partition, without ``age_days``).

pandas and geopandas are imported by the functions that make their objects, so that an export
that needs the cells as Arrow alone (:func:`read_cell_table`, the web viewer) does without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.coverage import cell_reader
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.errors import InputDataError
from pipeline.io import arrow_to_geodataframe

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

SUMMARY_FILE = "summary.json"

AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("7d", 7.0),
    ("28d", 28.0),
    ("90d", 90.0),
    ("365d", 365.0),
)
"""Freshness buckets: a segment last seen at most ``days`` ago falls in the first that fits."""
OLDER_BUCKET = "older"


def read_cells(coverage_dir: Path) -> gpd.GeoDataFrame:
    """Return the ``cell_coverage`` table of a coverage folder (contract-checked)."""
    import geopandas as gpd

    cells = arrow_to_geodataframe(read_cell_table(coverage_dir))
    return gpd.GeoDataFrame(cells, geometry="geometry", crs="EPSG:4326")


def read_cell_table(coverage_dir: Path) -> pa.Table:
    """Return the ``cell_coverage`` table of a coverage folder as Arrow, geometry as WKB.

    As :func:`pipeline.coverage.cell_reader.read_cell_table` returns it, without making pandas
    or shapely objects.

    Raises
    ------
    InputDataError
        If the folder holds no cell coverage, or no cells.
    ContractError
        If a stored table breaks its contract.
    """
    cells = cell_reader.read_cell_table(coverage_dir)
    if cells.num_rows == 0:
        raise InputDataError(
            f"{Path(coverage_dir)}: holds no cells; the roads folder the coverage "
            "was computed on has no roads. Check the extract and re-run `roadcover coverage`."
        )
    return cells


def read_edge_coverage(coverage_dir: Path) -> gpd.GeoDataFrame:
    """Return the ``edge_coverage`` table of a coverage folder (contract-checked).

    As :func:`pipeline.coverage.edge_reader.read_edge_table` returns it, as a GeoDataFrame.
    """
    return edge_frame(read_edge_table(coverage_dir))


def edge_frame(table: pa.Table) -> gpd.GeoDataFrame:
    """Return an edge coverage table (Arrow, geometry as WKB) as a GeoDataFrame."""
    import geopandas as gpd

    edges = arrow_to_geodataframe(table)
    return gpd.GeoDataFrame(edges, geometry="geometry", crs="EPSG:4326")


def read_summary(coverage_dir: Path) -> dict[str, Any]:
    """Return ``summary.json`` of a coverage folder."""
    path = Path(coverage_dir) / SUMMARY_FILE
    try:
        summary: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found; run `roadcover coverage` first") from None
    except json.JSONDecodeError as exc:
        raise InputDataError(
            f"{path}: not valid JSON ({exc}); re-run `roadcover coverage`"
        ) from None
    return summary


def as_of_of(summary: dict[str, Any]) -> pd.Timestamp:
    """Return the time freshness is measured from (``summary["as_of"]``), in UTC."""
    import pandas as pd

    try:
        return pd.Timestamp(summary["as_of"]).tz_convert("UTC")
    except (KeyError, ValueError, TypeError) as exc:
        raise InputDataError(
            f"summary.json: no valid 'as_of' ({summary.get('as_of')!r}: {exc}); "
            "re-run `roadcover coverage`"
        ) from None


def age_bucket(age_days: float | None) -> str:
    """Return the freshness bucket of an age: ``7d``, ``28d``, ``90d``, ``365d`` or ``older``.

    Ages are inclusive upper bounds (a segment seen exactly 7 days ago is ``"7d"``); a missing
    age (never seen) is ``"older"``.
    """
    import pandas as pd

    if age_days is None or pd.isna(age_days):
        return OLDER_BUCKET
    for name, days in AGE_BUCKETS:
        if age_days <= days:
            return name
    return OLDER_BUCKET


def iso_utc(value: Any) -> str | None:
    """Return a timestamp as ``YYYY-MM-DDTHH:MM:SSZ``, or None if it is missing."""
    import pandas as pd

    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
