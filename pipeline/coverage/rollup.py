"""The region's rollup: tables the coverage outputs are computed from, kept up to date.

The edge, cell and summary tables need, for every edge and cell of the region, figures that
the state's partitions hold. Rather than reading every partition, an update keeps these
region-level tables, each of them small beside the state (they grow with the roads driven,
the cells and the contributors, not with the number of trips):

``part_highway``
    Per partition (``part``) and ``highway``, the ``covered_m`` of its edges in integer mm
    (``covered_mm``), summed: what the summary's directed covered km are summed from. An
    update recomputes the rows of the partitions it touches from their edges
    (:func:`part_rows`' ``edge_totals``, one row per driven edge of these partitions alone).
``road_cover`` (not in the rollup)
    One row per covered piece of a road cut at H3 cell boundaries (``key``, ``cell``,
    ``length_mm``, ``last_ms``, with the ``part`` of its edge and its ``highway``), kept per
    partition of its *cell* (:func:`~pipeline.coverage.state.write_cell_rows`), beside that
    partition's cells: an update reads and rewrites those of the partitions whose cells it
    changes, replacing the rows of the edges' partitions it touched (a road's edges are in
    one partition, and a road's covered pieces only grow, so the rows of a road the batch did
    not drive are the same before and after).
``driven_total``
    Driven mm by ``highway``, summed over batches (a trip is applied with one batch only). The
    summary's driven km of the last week are the rows of the updates' ``driven`` tables
    (:data:`~pipeline.coverage.state.TRIP_TABLES`) of that week alone
    (:func:`summary_driven`).
``cell_total``, ``cell_passes``
    Driven mm per finest cell, distinct trips per cell at every resolution
    (:class:`~pipeline.coverage.tables.CellTrips`). A trip is applied with one batch only, so
    they are sums over batches: a batch's figures are added to them; no partition is read.
    The distinct (finest cell, ``contributor_id``) pairs, the union over batches, are kept per
    partition of their cell (:func:`~pipeline.coverage.state.write_cell_rows`): an update
    reads those of the partitions whose cells it changes, and ``cell_contributors`` in the
    rollup it computes holds these pairs alone.
``trips``
    The id of every trip applied, so that a trip matched again in another batch counts once.
``part_covered``, ``part_total``, ``part_contributors``
    What each partition contributes to the cells coarser than the partitions, by the
    partition's H3 cell (``cell``, at the partition resolution): its covered road mm by
    ``highway`` and ``last_ms`` (the summary's unique and fresh km are their sums too), its
    driven mm, its distinct contributors (:func:`part_cell_rows`). The coarse cells are
    summed from them (and from ``cell_passes`` at their resolutions), so an update
    recomputes the rows of the partitions whose cells it changed and no finest cell of the
    others. Sums in integer mm and the union of contributor sets make them exactly the figures
    of the whole region's finest cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.coverage.edges import road_pieces
from pipeline.coverage.grouping import aggregate_groups
from pipeline.coverage.intervals import overlap_with_runs, to_mm
from pipeline.coverage.partitions import Network, parent_array
from pipeline.coverage.region_tables import covered_metres
from pipeline.coverage.tables import CellTrips, cell_trip_counts, edge_totals

PART_ROW_TABLES = ("edge_totals", "road_cover")  # of the edges of the partitions an update touches
CELL_TABLES = ("cell_total", "cell_passes", "cell_contributors")
PART_CELL_TABLES = ("part_covered", "part_total", "part_contributors")
ROLLUP_TABLES = ("part_highway", *CELL_TABLES[:2], "trips", "driven_total", *PART_CELL_TABLES)
OLD_ROLLUP_TABLES = PART_ROW_TABLES
"""The rollup tables of a state written before ``road_cover`` was kept by partition (read once,
by the update that migrates it, :func:`migrated_rollup`)."""
OLDEST_MS = np.iinfo("int64").min  # the ``last_ms`` of the driven mm summed before a week


def part_rows(
    edge_pieces: pd.DataFrame,
    totals: pd.DataFrame,
    network: Network,
    runs: pd.DataFrame,
    edges: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Return the rows of :data:`PART_ROW_TABLES` of the edges of some whole partitions.

    Parameters
    ----------
    edge_pieces
        The covered pieces of the partitions' edges.
    totals
        :func:`~pipeline.coverage.tables.edge_totals` of the partitions' edges.
    network
        The network's cache (the partitions' canonical edges).
    runs
        H3 runs of at least the partitions' edges.
    edges
        :func:`edge_info` of the partitions (``highway``, ``length_m``, ``part`` of their
        edges, indexed by ``edge_id``).
    """
    covered_mm = (
        (edge_pieces["to_mm"] - edge_pieces["from_mm"]).groupby(edge_pieces["key"].to_numpy()).sum()
    )
    length_m = edges["length_m"].loc[totals.index].to_numpy()
    covered = covered_metres(covered_mm.reindex(totals.index, fill_value=0).to_numpy(), length_m)
    totals = totals.assign(covered_mm=to_mm(covered)).reset_index()
    roads = road_pieces(edge_pieces, network.canonical_of(set(edges["part"])))
    cover = overlap_with_runs(roads, runs)[["key", "cell", "length_mm", "last_ms"]]
    tables = {}
    for name, frame, edge in (("edge_totals", totals, "edge_id"), ("road_cover", cover, "key")):
        ids = frame[edge].to_numpy()
        tables[name] = frame.assign(
            part=edges["part"].loc[ids].to_numpy().astype(str),
            highway=edges["highway"].loc[ids].to_numpy().astype(str),
        )
    return tables


def driven_rows(edge_trips: pd.DataFrame, highway: pd.Series) -> pd.DataFrame:
    """Return driven mm by edge and ``last_ms`` of ``edge_trips`` rows, with the edge's ``highway``.

    ``highway``: by ``edge_id``, of at least the rows' edges.
    """
    driven = aggregate_groups(
        edge_trips[["edge_id", "last_ms", "driven_mm"]],
        ["edge_id", "last_ms"],
        driven_mm=("driven_mm", "sum"),
    )
    return driven.assign(highway=highway.loc[driven["edge_id"].to_numpy()].to_numpy().astype(str))


def summary_driven(driven_total: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
    """Return driven rows for the summary: ``recent`` rows, and the rest summed by highway.

    Parameters
    ----------
    driven_total
        The rollup's ``driven_total`` (driven mm of every batch by ``highway``).
    recent
        :func:`driven_rows` of the updates of the week before the summary's ``as_of`` (and of
        any other).

    Returns
    -------
    pandas.DataFrame
        ``highway``, ``last_ms``, ``driven_mm``: ``recent``'s rows, and per highway the mm
        not in them at ``last_ms`` :data:`OLDEST_MS`, so that the sums of every row and of
        those of the last week are those of every trip's rows, in integer mm.
    """
    recent_mm = recent.groupby("highway")["driven_mm"].sum()
    total = driven_total.set_index("highway")["driven_mm"]
    older = total.sub(recent_mm.reindex(total.index, fill_value=0))
    columns = ["highway", "last_ms", "driven_mm"]
    rows = pd.DataFrame(
        {"highway": older.index.to_numpy().astype(str), "last_ms": OLDEST_MS,
         "driven_mm": older.to_numpy(dtype="int64")}
    )  # fmt: skip
    return _concat(rows, recent[columns].astype({"last_ms": "int64", "driven_mm": "int64"}))


def edge_info(fixed: dict[str, pa.Table]) -> pd.DataFrame:
    """Return ``highway``, ``length_m`` and ``part`` by ``edge_id`` of partitions' edges.

    ``fixed``: by partition key, its table of :meth:`Network.fixed_edges
    <pipeline.coverage.partitions.Network.fixed_edges>`, as :func:`part_rows` takes them.
    """
    columns = ["edge_id", "highway", "length_m"]
    if not fixed:
        return pd.DataFrame(
            {"highway": pd.Series(dtype=str), "length_m": pd.Series(dtype="float64"),
             "part": pd.Series(dtype=str)},
            index=pd.Index([], dtype="int64", name="edge_id"),
        )  # fmt: skip
    frames = [table.select(columns).to_pandas().assign(part=key) for key, table in fixed.items()]
    return pd.concat(frames).set_index("edge_id")


def cell_rows(cell_trips: pd.DataFrame, network: Network) -> dict[str, pd.DataFrame]:
    """Return the rows of :data:`CELL_TABLES` of ``cell_trips`` (of new trips only)."""
    counts = cell_trip_counts(cell_trips, network.resolution, network.parents)
    return {
        "cell_total": counts.total_mm,
        "cell_passes": counts.passes,
        "cell_contributors": counts.contributors,
    }


def updated_rollup(
    rollup: dict[str, pd.DataFrame],
    touched: set[str],
    new_part_rows: dict[str, pd.DataFrame],
    new_cell_rows: dict[str, pd.DataFrame],
    new_trips: np.ndarray,
    new_driven: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Return the rollup with the rows of partitions ``touched`` replaced and a batch added.

    Its ``cell_contributors`` are the batch's pairs alone (see :data:`CELL_TABLES`).

    Parameters
    ----------
    rollup
        The rollup before the update (every table of :data:`ROLLUP_TABLES`).
    touched
        The partitions whose ``part_highway`` rows ``new_part_rows`` replaces.
    new_part_rows
        :func:`part_rows` of the partitions ``touched``, as they are after the update.
    new_cell_rows
        :func:`cell_rows` of the batch's trips.
    new_trips
        The ids of the batch's trips.
    new_driven
        :func:`driven_rows` of the batch's trips.
    """
    updated: dict[str, pd.DataFrame] = {}
    kept = rollup["part_highway"][~rollup["part_highway"]["part"].isin(list(touched))]
    updated["part_highway"] = _concat(kept, highway_rows(new_part_rows["edge_totals"]))
    total = _concat(rollup["cell_total"], new_cell_rows["cell_total"])
    updated["cell_total"] = total.groupby("cell", as_index=False, sort=True).agg(
        total_mm=("total_mm", "sum")
    )
    passes = _concat(rollup["cell_passes"], new_cell_rows["cell_passes"])
    by_cell = passes.groupby(["resolution", "cell"], as_index=False, sort=True)
    updated["cell_passes"] = by_cell.agg(passes=("passes", "sum"))
    updated["cell_contributors"] = new_cell_rows["cell_contributors"]  # the batch's alone
    trips = pd.DataFrame({"trip_id": np.asarray(new_trips, dtype=object).astype(str)})
    updated["trips"] = _concat(rollup["trips"], trips)
    driven = _concat(rollup["driven_total"], new_driven[["highway", "driven_mm"]])
    updated["driven_total"] = driven.groupby("highway", as_index=False, sort=True).agg(
        driven_mm=("driven_mm", "sum")
    )
    return updated


def highway_rows(totals: pd.DataFrame) -> pd.DataFrame:
    """Return ``covered_mm`` by ``part`` and ``highway`` of :func:`part_rows`' ``edge_totals``."""
    return totals.groupby(["part", "highway"], as_index=False, sort=True).agg(
        covered_mm=("covered_mm", "sum")
    )


def updated_road_cover(
    old: list[pd.DataFrame], touched: set[str], new_rows: pd.DataFrame, level: int,
    part_cells: np.ndarray,
) -> pd.DataFrame:  # fmt: skip
    """Return the ``road_cover`` rows of the cells of partitions ``part_cells`` after an update.

    Parameters
    ----------
    old
        The rows of these partitions' cells before the update (of any partitions' edges).
    touched
        The partitions of the edges whose rows ``new_rows`` replaces.
    new_rows
        :func:`part_rows`' ``road_cover`` of the partitions ``touched`` (of every cell).
    level
        The partition resolution.
    part_cells
        The H3 cells (at ``level``) of the partitions whose cells' rows are returned.
    """
    kept = [frame[~frame["part"].isin(list(touched))] for frame in old]
    in_parts = np.isin(parent_array(new_rows["cell"].to_numpy(dtype="int64"), level), part_cells)
    rows = pd.concat([*kept, new_rows[in_parts]], ignore_index=True)
    return rows.sort_values(["key", "cell", "last_ms"], ignore_index=True, kind="stable")


def migrated_rollup(old: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Return ``part_highway`` and ``road_cover`` (of every cell) of a rollup of the old layout.

    ``old``: its :data:`OLD_ROLLUP_TABLES` (one row per driven edge, per covered road piece).
    """
    return {"part_highway": highway_rows(old["edge_totals"]), "road_cover": old["road_cover"]}


def empty_rollup(network: Network) -> dict[str, pd.DataFrame]:
    """Return the rollup of the empty state (with the empty ``road_cover``)."""
    from pipeline.coverage.state import empty_state

    empty = empty_state()
    totals = edge_totals(empty.edge_trips)
    rows = part_rows(empty.edge_pieces, totals, network, network.runs_of(set()), edge_info({}))
    rollup = {
        "part_highway": highway_rows(rows["edge_totals"]),
        "road_cover": rows["road_cover"],
        **cell_rows(empty.cell_trips, network),
        "trips": pd.DataFrame({"trip_id": pd.Series(dtype=str)}),
        "driven_total": pd.DataFrame(
            {"highway": pd.Series(dtype=str), "driven_mm": pd.Series(dtype="int64")}
        ),
    }
    return {**rollup, **part_cell_rows(rollup, network.partition_resolution, np.empty(0, "int64"))}


def part_cell_rows(
    rollup: dict[str, pd.DataFrame], level: int, part_cells: np.ndarray
) -> dict[str, pd.DataFrame]:
    """Return the rows of :data:`PART_CELL_TABLES` of the partitions of cells ``part_cells``.

    What each partition (its H3 cell at the partition resolution ``level``) contributes to
    the cells coarser than it, from the rollup's finest-cell tables (``road_cover`` of at
    least these partitions' cells): its covered road by highway and the time it was last
    seen, its driven mm, its distinct contributors.
    """

    def in_parts(cells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        parents = parent_array(cells.to_numpy(dtype="int64"), level)
        keep = np.isin(parents, part_cells)
        return parents[keep], keep

    cover = rollup["road_cover"]
    cell, keep = in_parts(cover["cell"])
    covered = pd.DataFrame(
        {"cell": cell, "highway": cover["highway"].to_numpy()[keep].astype(str),
         "last_ms": cover["last_ms"].to_numpy(dtype="int64")[keep],
         "length_mm": cover["length_mm"].to_numpy(dtype="int64")[keep]}
    ).groupby(["cell", "highway", "last_ms"], as_index=False, sort=True).sum()  # fmt: skip
    total = rollup["cell_total"]
    cell, keep = in_parts(total["cell"])
    driven = pd.DataFrame(
        {"cell": cell, "total_mm": total["total_mm"].to_numpy(dtype="int64")[keep]}
    )
    pairs = rollup["cell_contributors"]
    cell, keep = in_parts(pairs["cell"])
    who = pd.DataFrame({"cell": cell, "contributor_id": pairs["contributor_id"].to_numpy()[keep]})
    return {
        "part_covered": covered,
        "part_total": driven.groupby("cell", as_index=False, sort=True).sum(),
        "part_contributors": who.drop_duplicates(ignore_index=True).astype({"contributor_id": str}),
    }


def updated_part_cells(
    rollup: dict[str, pd.DataFrame], level: int, part_cells: np.ndarray
) -> dict[str, pd.DataFrame]:
    """Return the rollup with the :data:`PART_CELL_TABLES` rows of ``part_cells`` recomputed.

    The rows of the other partitions are kept (a rollup without these tables gets them of
    ``part_cells`` alone: pass every partition's cell): a partition's rows are computed from its own
    finest cells alone (:func:`part_cell_rows`), so after an update they change only for
    the partitions of the cells it changed.
    """
    new_rows = part_cell_rows(rollup, level, part_cells)
    updated = dict(rollup)
    for name in PART_CELL_TABLES:
        if name not in rollup:  # a rollup written before they were kept: all of them anew
            updated[name] = new_rows[name]
            continue
        if name == "part_covered" and "highway" not in rollup[name]:  # kept without highway
            updated[name] = new_rows[name]  # (then ``part_cells`` is every partition's)
            continue
        old = rollup[name]
        kept = old[~np.isin(old["cell"].to_numpy(dtype="int64"), part_cells)]
        updated[name] = _concat(kept, new_rows[name])
    return updated


def coarse_cell_trips(rollup: dict[str, pd.DataFrame]) -> CellTrips:
    """Return the :class:`CellTrips` of the partitions' cells (:data:`PART_CELL_TABLES`).

    ``passes`` are the rollup's (they are kept at every resolution).
    """
    return CellTrips(rollup["part_total"], rollup["cell_passes"], rollup["part_contributors"])


def cell_trips_of(rollup: dict[str, pd.DataFrame]) -> CellTrips:
    """Return the :class:`CellTrips` the rollup holds."""
    return CellTrips(rollup["cell_total"], rollup["cell_passes"], rollup["cell_contributors"])


def _concat(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Rows of both frames; the dtypes of ``first`` when ``second`` has no rows."""
    if second.empty:
        return first.reset_index(drop=True)
    if first.empty:
        return second.reset_index(drop=True)
    return pd.concat([first, second], ignore_index=True)
