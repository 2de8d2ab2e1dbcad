"""Coverage tables computed from the state: per edge, per H3 cell (with rollups), and totals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.coverage.cell_reader import FRESHNESS_DAYS, MM_PER_KM
from pipeline.coverage.cells import cell_polygons, parent_cells
from pipeline.coverage.edge_reader import MS_PER_DAY
from pipeline.coverage.edges import road_pieces
from pipeline.coverage.grouping import count_distinct
from pipeline.coverage.intervals import overlap_with_runs
from pipeline.coverage.state import CoverageState


def edge_coverage(edges: gpd.GeoDataFrame, state: CoverageState, as_of_ms: int) -> gpd.GeoDataFrame:
    """One row per directed edge: covered length, passes, contributors, times, intervals.

    ``covered_m`` is never more than ``length_m``.
    """
    return edge_table(edges, state.edge_pieces, edge_totals(state.edge_trips), as_of_ms)


def edge_totals(edge_trips: pd.DataFrame) -> pd.DataFrame:
    """Per edge driven (indexed by ``edge_id``): passes, contributors, driven_mm, first/last_ms.

    Each edge's figures come from its own rows alone, so the totals of a partition's edges
    are those of the whole state.
    """
    return edge_trips.groupby("edge_id").agg(
        passes=("passes", "sum"),
        contributors=("contributor_id", "nunique"),
        driven_mm=("driven_mm", "sum"),
        first_ms=("first_ms", "min"),
        last_ms=("last_ms", "max"),
    )


def edge_table(
    edges: gpd.GeoDataFrame, pieces: pd.DataFrame, trips: pd.DataFrame, as_of_ms: int
) -> gpd.GeoDataFrame:
    """Return the edge coverage table from the covered pieces and :func:`edge_totals`."""
    covered_mm = (pieces["to_mm"] - pieces["from_mm"]).groupby(pieces["key"]).sum()
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


ParentsOf = Callable[[np.ndarray, int], np.ndarray]
"""Maps finest cells to their parents at a resolution (:func:`parent_cells`, or a cache's)."""
PolygonsOf = Callable[[np.ndarray], np.ndarray]
"""Maps cells to their shapely polygons (:func:`cell_polygons`, or a cache's)."""


@dataclass
class CellTrips:
    """What the cell table needs of ``cell_trips``; each adds up over batches of other trips.

    Attributes
    ----------
    total_mm
        Per finest ``cell``: ``total_mm`` driven (summed over batches).
    passes
        Per ``resolution`` and ``cell`` at it: ``passes``, the distinct trips (a trip is in one
        batch only, so the counts of batches add up).
    contributors
        The distinct (finest ``cell``, ``contributor_id``) pairs (the union over batches).
    """

    total_mm: pd.DataFrame
    passes: pd.DataFrame
    contributors: pd.DataFrame


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
    road_mm = (road_runs["to_mm"] - road_runs["from_mm"]).groupby(road_runs["cell"]).sum()
    covered = overlap_with_runs(road_pieces(state.edge_pieces, canonical), runs)
    trips = cell_trip_counts(state.cell_trips, resolution, parent_cells)
    return cells_table(road_mm, covered, trips, as_of_ms, resolution, parent_cells)


def cell_trip_counts(cell_trips: pd.DataFrame, resolution: int, parents: ParentsOf) -> CellTrips:
    """Return the :class:`CellTrips` of ``cell_trips`` rows (of one batch, or of all)."""
    total = cell_trips["driven_mm"].groupby(cell_trips["cell"].to_numpy()).sum()
    trip_codes = pd.factorize(cell_trips["trip_id"])[0]
    passes = []
    for level in range(resolution, -1, -1):
        cells = cell_trips["cell"].to_numpy()
        at_level = cells if level == resolution else parents(cells, level)
        counts = count_distinct(at_level, trip_codes)
        passes.append(
            pd.DataFrame(
                {"resolution": level, "cell": counts.index.to_numpy(), "passes": counts.to_numpy()}
            )
        )
    pairs = cell_trips[["cell", "contributor_id"]].drop_duplicates(ignore_index=True)
    return CellTrips(
        pd.DataFrame({"cell": total.index.to_numpy(), "total_mm": total.to_numpy("int64")}),
        pd.concat(passes, ignore_index=True),
        pairs.astype({"contributor_id": str}),
    )


def cells_table(
    road_mm: pd.Series,
    covered: pd.DataFrame,
    trips: CellTrips,
    as_of_ms: int,
    resolution: int,
    parents: ParentsOf,
    polygons: PolygonsOf = cell_polygons,
    levels: range | None = None,
) -> gpd.GeoDataFrame:
    """Return the cell coverage table of every resolution from finest-cell figures.

    Parameters
    ----------
    road_mm
        Road length (the canonical edges') in every finest cell that has roads.
    covered
        Covered road pieces cut at cell boundaries: ``cell``, ``length_mm``, ``last_ms``.
    trips
        What the table counts of ``cell_trips``.
    as_of_ms
        The time freshness is measured from.
    resolution
        The finest resolution.
    parents
        Maps finest cells to their parents.
    polygons
        Maps cells (of any resolution) to their polygons.
    levels
        The resolutions of the rows returned (default: ``resolution`` down to 0). A resolution
        finer than 0 needs the figures of the finest cells under its cells alone.
    """
    finest = road_mm.rename("road_mm").to_frame()
    finest.index.name = "cell"
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
    contributors = _contributors_by_level(trips.contributors, resolution, parents)
    rows = [
        _rollup(finest, trips, contributors[level], resolution, level, parents)
        for level in (range(resolution, -1, -1) if levels is None else levels)
    ]
    cells = pd.concat(rows, ignore_index=True)
    return _finish_cells(cells, as_of_ms, polygons)


def _contributors_by_level(
    pairs: pd.DataFrame, resolution: int, parents: ParentsOf
) -> dict[int, pd.Series]:
    """Return the distinct contributors of every cell at ``resolution`` and each coarser level.

    ``pairs`` are (finest ``cell``, ``contributor_id``) rows. Each level counts the distinct
    (cell, contributor) pairs of the level below it, each kept with one finest cell of its own
    (whose parent at the next level is its cell's), so a coarser level reads fewer rows.
    """
    finest = pairs["cell"].to_numpy(dtype="int64")
    who = pd.factorize(pairs["contributor_id"])[0].astype("int64")
    width = int(who.max(initial=-1)) + 1
    counts = {}
    for level in range(resolution, -1, -1):
        cells = finest if level == resolution else parents(finest, level)
        codes, uniques = pd.factorize(cells, sort=True)
        _, first = np.unique(codes.astype("int64") * width + who, return_index=True)
        finest, who = finest[first], who[first]
        distinct = np.bincount(codes[first], minlength=len(uniques)).astype("int64")
        counts[level] = pd.Series(distinct, index=pd.Index(uniques, dtype="int64"))
    return counts


def _rollup(
    finest: pd.DataFrame,
    trips: CellTrips,
    contributors: pd.Series,
    finest_res: int,
    level: int,
    parents: ParentsOf,
) -> pd.DataFrame:
    def at_level(cells: np.ndarray) -> np.ndarray:
        return cells if level == finest_res else parents(cells, level)

    parent_of = at_level(finest["cell"].to_numpy())
    sums = finest.drop(columns=["cell", "last_ms"]).groupby(parent_of).sum()
    sums["last_ms"] = finest["last_ms"].groupby(parent_of).max()
    total_mm = trips.total_mm["total_mm"].groupby(at_level(trips.total_mm["cell"].to_numpy())).sum()
    sums = sums.join(total_mm.rename("total_mm"), how="outer")
    passes = trips.passes[trips.passes["resolution"] == level].set_index("cell")["passes"]
    sums = sums.join(passes.rename("passes"), how="outer")
    sums = sums.join(contributors.rename("contributors"), how="outer")
    sums.index.name = "cell"
    return sums.reset_index().assign(resolution=level)


def _finish_cells(cells: pd.DataFrame, as_of_ms: int, polygons: PolygonsOf) -> gpd.GeoDataFrame:
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
    return gpd.GeoDataFrame(table, geometry=polygons(table["cell"].to_numpy()), crs="EPSG:4326")


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
