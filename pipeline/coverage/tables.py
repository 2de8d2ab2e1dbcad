"""Coverage tables computed from the state: per edge, per H3 cell (with rollups), and totals."""

from __future__ import annotations

from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.coverage.cells import cell_polygons, parent_cells
from pipeline.coverage.edges import road_pieces
from pipeline.coverage.grouping import count_distinct
from pipeline.coverage.intervals import overlap_with_runs
from pipeline.coverage.state import CoverageState

FRESHNESS_DAYS = (7, 28, 90, 365)
MS_PER_DAY = 86_400_000
MM_PER_KM = 1_000_000


def edge_coverage(edges: gpd.GeoDataFrame, state: CoverageState, as_of_ms: int) -> gpd.GeoDataFrame:
    """One row per directed edge: covered length, passes, contributors, times, intervals.

    ``covered_m`` is never more than ``length_m``.
    """
    pieces = state.edge_pieces
    covered_mm = (pieces["to_mm"] - pieces["from_mm"]).groupby(pieces["key"]).sum()
    trips = state.edge_trips.groupby("edge_id").agg(
        passes=("passes", "sum"),
        contributors=("contributor_id", "nunique"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )
    intervals = _interval_lists(pieces)
    ids = edges["edge_id"]
    table = edges[["edge_id", "u", "v", "key", "osmid", "road_id", "highway", "length_m"]].copy()
    # never longer than the edge: its pieces end at its length rounded to the millimetre
    table["covered_m"] = np.minimum(
        ids.map(covered_mm).fillna(0).to_numpy() / 1000.0, table["length_m"].to_numpy()
    )
    table["passes"] = ids.map(trips["passes"]).fillna(0).astype("int64").to_numpy()
    table["contributors"] = ids.map(trips["contributors"]).fillna(0).astype("int64").to_numpy()
    table["total_m"] = ids.map(trips["driven_mm"]).fillna(0).to_numpy() / 1000.0
    table["first_seen"] = _timestamps(ids.map(trips["first_ms"]))
    table["last_seen"] = _timestamps(ids.map(trips["last_ms"]))
    table["age_days"] = (
        as_of_ms - ids.map(trips["last_ms"]).to_numpy(dtype="float64")
    ) / MS_PER_DAY
    table["intervals"] = [intervals.get(edge_id, []) for edge_id in ids]
    return gpd.GeoDataFrame(table, geometry=edges.geometry.to_numpy(), crs=edges.crs)


def cell_coverage(
    edges: gpd.GeoDataFrame,
    canonical: pd.DataFrame,
    runs: pd.DataFrame,
    state: CoverageState,
    as_of_ms: int,
    resolution: int,
) -> gpd.GeoDataFrame:
    """Per H3 cell at ``resolution`` and every coarser one: road, coverage and freshness.

    Sums are computed at the finest resolution in integer millimetres and rolled up by
    summing, so each parent's totals equal the sum of its children's exactly;
    ``coverage_pct`` and ``age_days`` are recomputed from the sums, never averaged.
    """
    is_canonical = canonical["canonical_id"].to_numpy() == canonical.index.to_numpy()
    road_runs = runs[runs["key"].isin(canonical.index[is_canonical])]
    roads = road_pieces(state.edge_pieces, canonical)
    covered = overlap_with_runs(roads, runs)
    finest = pd.DataFrame(
        {"cell": road_runs["cell"], "road_mm": road_runs["to_mm"] - road_runs["from_mm"]}
    )
    finest = finest.groupby("cell").sum()
    finest = finest.join(
        covered.groupby("cell")["length_mm"].sum().rename("unique_mm"), how="outer"
    )
    for days in FRESHNESS_DAYS:
        fresh = covered[covered["last_ms"] >= as_of_ms - days * MS_PER_DAY]
        finest = finest.join(
            fresh.groupby("cell")["length_mm"].sum().rename(f"fresh_{days}d_mm"), how="outer"
        )
    finest = finest.join(covered.groupby("cell")["last_ms"].max(), how="outer")
    finest = finest.fillna({c: 0 for c in finest.columns if c.endswith("_mm")}).reset_index()
    cell_trips = state.cell_trips.assign(  # distinct counts need codes, not the ids
        trip_id=pd.factorize(state.cell_trips["trip_id"])[0],
        contributor_id=pd.factorize(state.cell_trips["contributor_id"])[0],
    )
    levels = [_rollup(finest, cell_trips, resolution, level) for level in range(resolution, -1, -1)]
    cells = pd.concat(levels, ignore_index=True)
    return _finish_cells(cells, as_of_ms)


def _rollup(
    finest: pd.DataFrame, cell_trips: pd.DataFrame, finest_res: int, level: int
) -> pd.DataFrame:
    parents = (
        finest["cell"].to_numpy()
        if level == finest_res
        else parent_cells(finest["cell"].to_numpy(), level)
    )
    sums = finest.drop(columns=["cell", "last_ms"]).groupby(parents).sum()
    sums["last_ms"] = finest["last_ms"].groupby(parents).max()
    trip_parents = (
        cell_trips["cell"].to_numpy()
        if level == finest_res
        else parent_cells(cell_trips["cell"].to_numpy(), level)
    )
    total_mm = cell_trips["driven_mm"].groupby(trip_parents).sum()
    sums = sums.join(total_mm.rename("total_mm"), how="outer")
    passes = count_distinct(trip_parents, cell_trips["trip_id"].to_numpy())
    sums = sums.join(passes.rename("passes"), how="outer")
    contributors = count_distinct(trip_parents, cell_trips["contributor_id"].to_numpy())
    sums = sums.join(contributors.rename("contributors"), how="outer")
    sums.index.name = "cell"
    return sums.reset_index().assign(resolution=level)


def _finish_cells(cells: pd.DataFrame, as_of_ms: int) -> gpd.GeoDataFrame:
    counts = ["passes", "contributors"]
    lengths = [c for c in cells.columns if c.endswith("_mm")]
    cells[counts + lengths] = cells[counts + lengths].fillna(0).astype("int64")
    table = pd.DataFrame(
        {
            "resolution": cells["resolution"].astype("int32"),
            "cell": cells["cell"].astype("int64"),
            "road_km": cells["road_mm"] / MM_PER_KM,
            "unique_km": cells["unique_mm"] / MM_PER_KM,
            "coverage_pct": np.where(
                cells["road_mm"] > 0,
                100.0 * cells["unique_mm"] / cells["road_mm"].clip(lower=1),
                0.0,
            ),
            "total_km": cells["total_mm"] / MM_PER_KM,
            "passes": cells["passes"],
            "contributors": cells["contributors"],
            "last_seen": _timestamps(cells["last_ms"]),
            "age_days": (as_of_ms - cells["last_ms"].to_numpy(dtype="float64")) / MS_PER_DAY,
            **{f"fresh_{d}d_km": cells[f"fresh_{d}d_mm"] / MM_PER_KM for d in FRESHNESS_DAYS},
        }
    ).sort_values(["resolution", "cell"], ascending=[False, True], ignore_index=True)
    return gpd.GeoDataFrame(
        table, geometry=cell_polygons(table["cell"].to_numpy()), crs="EPSG:4326"
    )


def _interval_lists(pieces: pd.DataFrame) -> dict[int, list[dict[str, object]]]:
    """Covered intervals of each edge as records, in metres and UTC times."""
    frame = pd.DataFrame(
        {
            "from_m": pieces["from_mm"].to_numpy() / 1000.0,
            "to_m": pieces["to_mm"].to_numpy() / 1000.0,
            "first_seen": _timestamps(pieces["first_ms"]),
            "last_seen": _timestamps(pieces["last_ms"]),
        }
    )
    records = cast(list[dict[str, object]], frame.to_dict("records"))
    by_edge: dict[int, list[dict[str, object]]] = {}
    for key, record in zip(pieces["key"].tolist(), records, strict=True):
        by_edge.setdefault(key, []).append(record)
    return by_edge


def _timestamps(epoch_ms: pd.Series) -> pd.Series:
    return pd.to_datetime(epoch_ms.astype("float64"), unit="ms", utc=True).dt.as_unit("ms")
