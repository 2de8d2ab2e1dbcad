"""Region and world summary of coverage: the numbers a mapping network publishes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.coverage.edges import road_pieces
from pipeline.coverage.intervals import to_mm
from pipeline.coverage.state import CoverageState
from pipeline.coverage.tables import FRESHNESS_DAYS, MM_PER_KM, MS_PER_DAY
from pipeline.coverage.world import (  # noqa: F401 (check_world_road_km: named here too)
    WORLD_ROAD_KM,
    WORLD_ROAD_KM_SOURCE,
    check_world_road_km,
)
from pipeline.errors import ConfigError

SUMMED_KM = (
    "road_km",
    "directed_km",
    "unique_km",
    "directed_covered_km",
    "total_km",
    "weekly_driven_km",
)


def coverage_summary(
    edge_table: pd.DataFrame,
    state: CoverageState,
    canonical: pd.DataFrame,
    as_of_ms: int,
    world_road_km: float = WORLD_ROAD_KM,
    world_road_km_source: str = WORLD_ROAD_KM_SOURCE,
) -> dict[str, Any]:
    """Totals in km, shares and freshness, overall and by highway class.

    ``road_km`` counts each physical road once and ``directed_km`` each drivable direction;
    ``unique_km`` is road length covered at least once in either direction,
    ``directed_covered_km`` covered length per direction, ``total_km`` all driven length with
    repetition, ``weekly_driven_km`` what was driven in the 7 days before ``as_of``.
    ``fresh_{N}d_km`` is unique length last observed within N days; the Region-Progress
    indicator is the share of road km refreshed in the last 28 days.

    Every length is summed in integer millimetres, road and directed lengths too (each edge's
    ``length_m`` rounded to the millimetre, a road's being its canonical edge's), so a share
    is a covered part of the very figure it is divided by: a fully covered region reads
    exactly 100 %, never more.
    """
    roads = road_pieces(state.edge_pieces, canonical)
    covered = pd.DataFrame(
        {
            "key": roads["key"].to_numpy(),
            "length_mm": (roads["to_mm"] - roads["from_mm"]).to_numpy(),
            "last_ms": roads["last_ms"].to_numpy(),
        }
    )
    driven = state.edge_trips[["edge_id", "driven_mm", "last_ms"]]
    highway = edge_table.set_index("edge_id")["highway"]
    lengths = highway_lengths(edge_table, canonical)
    return summary_by_highway(
        lengths,
        covered.assign(highway=highway.loc[covered["key"].to_numpy()].to_numpy()),
        driven.assign(highway=highway.loc[driven["edge_id"].to_numpy()].to_numpy()),
        as_of_ms, world_road_km, world_road_km_source,
    )  # fmt: skip


def highway_lengths(edges: pd.DataFrame, canonical: pd.DataFrame) -> pd.DataFrame:
    """Return the road and directed mm of every ``highway`` class of ``edges`` (the index).

    Each edge's ``length_m`` in integer mm, a road's being its canonical edge's; with
    ``covered_mm`` too (``covered_m`` in integer mm, summed) when ``edges`` has ``covered_m``.
    """
    ids = edges["edge_id"].to_numpy()
    length_mm = to_mm(edges["length_m"])
    is_road = canonical.loc[ids, "canonical_id"].to_numpy() == ids
    lengths = {"road_mm": np.where(is_road, length_mm, 0), "directed_mm": length_mm}
    if "covered_m" in edges.columns:
        lengths["covered_mm"] = to_mm(edges["covered_m"])
    frame = pd.DataFrame(lengths, index=pd.Index(edges["highway"].to_numpy(), name="highway"))
    return frame.groupby(level=0, sort=True).sum()


def summary_by_highway(
    lengths: pd.DataFrame,
    covered: pd.DataFrame,
    driven: pd.DataFrame,
    as_of_ms: int,
    world_road_km: float = WORLD_ROAD_KM,
    world_road_km_source: str = WORLD_ROAD_KM_SOURCE,
) -> dict[str, Any]:
    """Return :func:`coverage_summary` from lengths by highway class and covered, driven rows.

    Parameters
    ----------
    lengths
        Indexed by every ``highway`` class of the roads: ``road_mm``, ``directed_mm`` and
        ``covered_mm`` (the edges' ``covered_m`` in integer mm, summed).
    covered
        Covered pieces of roads (any cut of them): ``key`` (canonical edge), ``length_mm``,
        ``last_ms``, ``highway``.
    driven
        Driven length by edge and time: ``edge_id``, ``driven_mm``, ``last_ms`` (the rows of
        ``edge_trips``, or their sums by edge and ``last_ms``), ``highway``.
    as_of_ms, world_road_km, world_road_km_source
        As for :func:`coverage_summary`.
    """
    totals = _totals(lengths.sum(), covered, driven, as_of_ms)
    totals["by_highway"] = {
        str(name): _totals(
            lengths.loc[name],
            covered[covered["highway"] == name],
            driven[driven["highway"] == name],
            as_of_ms,
        )
        for name in lengths.index
    }
    totals["percent_of_world"] = percent(totals["unique_km"], world_road_km)
    totals["world_road_km"] = world_road_km
    totals["world_road_km_source"] = world_road_km_source
    return totals


def combine_summaries(
    summaries: dict[str, dict[str, Any]], world_road_km: float | None = None
) -> dict[str, Any]:
    """Coverage of several regions together, from their summaries (km summed, shares recomputed).

    Parameters
    ----------
    summaries
        Region name -> its coverage summary.
    world_road_km
        The world's road length the combined share is of; default: the one the summaries
        record (``coverage.world_road_km`` of their runs), else ``WORLD_ROAD_KM``.

    Raises
    ------
    ConfigError
        If no length is given and the summaries record different world road lengths.
    """
    keys = [*SUMMED_KM, *(f"fresh_{days}d_km" for days in FRESHNESS_DAYS)]
    combined: dict[str, Any] = {k: sum(s[k] for s in summaries.values()) for k in keys}
    _add_shares(combined)
    world_km = world_road_km if world_road_km is not None else recorded_world_road_km(summaries)
    combined["percent_of_world"] = percent(combined["unique_km"], world_km)
    combined["world_road_km"] = world_km
    combined["regions"] = sorted(summaries)
    return combined


def recorded_world_road_km(summaries: dict[str, dict[str, Any]]) -> float:
    """Return the world road length the summaries record (``WORLD_ROAD_KM`` if none does).

    Raises
    ------
    ConfigError
        If the summaries record different lengths (their shares of the world do not add up).
    """
    recorded = {name: s["world_road_km"] for name, s in summaries.items() if "world_road_km" in s}
    lengths = set(recorded.values())
    if len(lengths) > 1:
        listed = ", ".join(f"{name}: {km:,.3f} km" for name, km in sorted(recorded.items()))
        raise ConfigError(
            f"the regions' coverage summaries record different coverage.world_road_km ({listed}); "
            "run their coverage with one coverage.world_road_km"
        )
    return float(lengths.pop()) if lengths else WORLD_ROAD_KM


def _totals(
    lengths: pd.Series, roads: pd.DataFrame, trips: pd.DataFrame, as_of_ms: int
) -> dict[str, Any]:
    covered_mm = roads["length_mm"]
    recent = trips["last_ms"] >= as_of_ms - 7 * MS_PER_DAY
    totals: dict[str, Any] = {
        "road_km": int(lengths["road_mm"]) / MM_PER_KM,
        "directed_km": int(lengths["directed_mm"]) / MM_PER_KM,
        "unique_km": int(covered_mm.sum()) / MM_PER_KM,
        "directed_covered_km": int(lengths["covered_mm"]) / MM_PER_KM,
        "total_km": int(trips["driven_mm"].sum()) / MM_PER_KM,
        "weekly_driven_km": int(trips.loc[recent, "driven_mm"].sum()) / MM_PER_KM,
    }
    for days in FRESHNESS_DAYS:
        fresh = roads["last_ms"] >= as_of_ms - days * MS_PER_DAY
        totals[f"fresh_{days}d_km"] = int(covered_mm[fresh].sum()) / MM_PER_KM
    _add_shares(totals)
    return totals


def percent(part: float, whole: float) -> float:
    """Return ``part`` as a percentage of ``whole`` (0 for a whole of 0), never above 100 % of it.

    The quotient is taken first: a rounded ``part / whole`` is at most 1 whenever ``part`` is at
    most ``whole``, and 100 times at most 1 is at most 100. (``100 * part / whole`` can read
    100.00000000000001 for a part equal to the whole, e.g. 0.443632 km.)
    """
    return 100.0 * (part / whole) if whole else 0.0


def _add_shares(totals: dict[str, Any]) -> None:
    road_km, directed_km = totals["road_km"], totals["directed_km"]
    totals["coverage_pct"] = percent(totals["unique_km"], road_km)
    totals["directed_coverage_pct"] = percent(totals["directed_covered_km"], directed_km)
    for days in FRESHNESS_DAYS:
        totals[f"fresh_{days}d_pct"] = percent(totals[f"fresh_{days}d_km"], road_km)
    totals["region_progress_28d_pct"] = totals["fresh_28d_pct"]
    totals["weekly_driven_ratio"] = totals["weekly_driven_km"] / road_km if road_km else 0.0
