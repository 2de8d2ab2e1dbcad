"""Region and world summaries from a hand-made state, every number worked out by hand.

Four edges: a two-way residential road of 100 m (edges 1 and 2, edge 2 against edge 1), a
one-way primary of 50 m (edge 3) and an undriven primary of 200 m (edge 4). Pieces end
exactly on the freshness windows' bounds (and 1 ms past one), so every window is checked at
its edge.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.coverage.state import CoverageState
from pipeline.coverage.summary import combine_summaries, coverage_summary, percent
from pipeline.coverage.tables import MM_PER_KM
from pipeline.errors import ConfigError
from pipeline.export.inputs import read_cells, read_edge_coverage
from tests.builders import ROUNDING_UP_STEP_DEG, write_fully_covered_region

DAY_MS = 86_400_000
AS_OF_MS = 1_000 * DAY_MS

EDGES = pd.DataFrame(
    {
        "edge_id": [1, 2, 3, 4],
        "road_id": [10, 10, 11, 12],
        "highway": ["residential", "residential", "primary", "primary"],
        "length_m": [100.0, 100.0, 50.0, 200.0],
        "covered_m": [60.0, 30.0, 45.0, 0.0],
    }
)
CANONICAL = pd.DataFrame(
    {
        "canonical_id": [1, 1, 3, 4],
        "flip": [False, True, False, False],
        "length_mm": [100_000, 100_000, 50_000, 200_000],
    },
    index=pd.Index([1, 2, 3, 4], name="edge_id"),
)
# edge 1: 0-60 m, last seen 7 days before; edge 2: its first 30 m (the road's 70-100 m),
# 20 days before; edge 3: 0-20 m 90 days before, 25-50 m 365 days and 1 ms before
PIECES = pd.DataFrame(
    {
        "key": [1, 2, 3, 3],
        "from_mm": [0, 0, 0, 25_000],
        "to_mm": [60_000, 30_000, 20_000, 50_000],
        "first_ms": [0, 0, 0, 0],
        "last_ms": [
            AS_OF_MS - 7 * DAY_MS,
            AS_OF_MS - 20 * DAY_MS,
            AS_OF_MS - 90 * DAY_MS,
            AS_OF_MS - 365 * DAY_MS - 1,
        ],
    }
)
TRIPS = pd.DataFrame(
    {
        "edge_id": [1, 2, 3],
        "trip_id": ["t1", "t2", "t3"],
        "contributor_id": ["c", "c", "d"],
        "passes": [1, 1, 2],
        "driven_mm": [60_000, 30_000, 70_000],
        "first_ms": [0, 0, 0],
        "last_ms": [AS_OF_MS - 7 * DAY_MS, AS_OF_MS - 20 * DAY_MS, AS_OF_MS - 7 * DAY_MS - 1],
    }
)


@pytest.fixture
def summary() -> dict:
    state = CoverageState(PIECES, TRIPS, pd.DataFrame(), ["b"])
    return coverage_summary(EDGES, state, CANONICAL, AS_OF_MS, 1.35, "a hand-made world")


def test_region_totals_and_freshness_windows_include_their_bounds(summary: dict) -> None:
    expected_km = {
        "road_km": 0.35,  # 100 + 50 + 200 m, the two-way road once
        "directed_km": 0.45,
        "unique_km": 0.135,  # 0-60 and 70-100 m of road 10, 0-20 and 25-50 m of road 11
        "directed_covered_km": 0.135,
        "total_km": 0.16,
        "weekly_driven_km": 0.06,  # trip t1 exactly 7 days before; t3 1 ms earlier
        "fresh_7d_km": 0.06,
        "fresh_28d_km": 0.09,
        "fresh_90d_km": 0.11,
        "fresh_365d_km": 0.11,
    }
    for name, km in expected_km.items():
        assert summary[name] == pytest.approx(km, abs=1e-12), name
    assert summary["coverage_pct"] == pytest.approx(100 * 135 / 350)
    assert summary["directed_coverage_pct"] == pytest.approx(100 * 135 / 450)
    assert summary["fresh_7d_pct"] == pytest.approx(100 * 60 / 350)
    assert summary["fresh_28d_pct"] == pytest.approx(100 * 90 / 350)
    assert summary["fresh_90d_pct"] == pytest.approx(100 * 110 / 350)
    assert summary["fresh_365d_pct"] == pytest.approx(100 * 110 / 350)
    assert summary["region_progress_28d_pct"] == pytest.approx(100 * 90 / 350)
    assert summary["weekly_driven_ratio"] == pytest.approx(60 / 350)
    assert summary["percent_of_world"] == pytest.approx(10.0)
    assert summary["world_road_km"] == 1.35
    assert summary["world_road_km_source"] == "a hand-made world"


def test_totals_by_highway_class(summary: dict) -> None:
    assert list(summary["by_highway"]) == ["primary", "residential"]
    primary, residential = summary["by_highway"]["primary"], summary["by_highway"]["residential"]
    assert residential["road_km"] == pytest.approx(0.1)
    assert residential["directed_km"] == pytest.approx(0.2)
    assert residential["unique_km"] == pytest.approx(0.09)
    assert residential["total_km"] == pytest.approx(0.09)
    assert residential["weekly_driven_km"] == pytest.approx(0.06)
    assert residential["fresh_28d_km"] == pytest.approx(0.09)
    assert primary["road_km"] == pytest.approx(0.25)
    assert primary["unique_km"] == pytest.approx(0.045)
    assert primary["directed_covered_km"] == pytest.approx(0.045)
    assert primary["total_km"] == pytest.approx(0.07)
    assert primary["weekly_driven_km"] == 0
    assert primary["fresh_28d_km"] == 0 and primary["fresh_90d_km"] == pytest.approx(0.02)
    assert primary["coverage_pct"] == pytest.approx(100 * 45 / 250)


def test_world_share_defaults_to_the_factbook_road_length(summary: dict) -> None:
    state = CoverageState(PIECES, TRIPS, pd.DataFrame(), ["b"])
    default = coverage_summary(EDGES, state, CANONICAL, AS_OF_MS)
    assert default["world_road_km"] == 64_285_009.0
    assert default["percent_of_world"] == pytest.approx(100 * 0.135 / 64_285_009)
    assert "CIA World Factbook" in default["world_road_km_source"]


def region(road: float, unique: float, fresh: tuple[float, ...]) -> dict[str, float]:
    return {
        "road_km": road,
        "directed_km": 1.5 * road,
        "unique_km": unique,
        "directed_covered_km": 1.25 * unique,
        "total_km": 2 * unique + 1,
        "weekly_driven_km": unique / 2,
        **{f"fresh_{d}d_km": km for d, km in zip((7, 28, 90, 365), fresh, strict=True)},
        "coverage_pct": -1.0,  # a region's own shares are not combined
    }


def test_combined_regions_sum_km_and_recompute_shares() -> None:
    summaries = {"b": region(30, 8, (2, 4, 6, 8)), "a": region(10, 4, (1, 2, 3, 4))}
    combined = combine_summaries(summaries, world_road_km=120)
    assert combined["road_km"] == 40 and combined["directed_km"] == 60
    assert combined["unique_km"] == 12 and combined["directed_covered_km"] == 15
    assert combined["total_km"] == 26 and combined["weekly_driven_km"] == 6
    assert [combined[f"fresh_{d}d_km"] for d in (7, 28, 90, 365)] == [3, 6, 9, 12]
    assert combined["coverage_pct"] == pytest.approx(30.0)
    assert combined["directed_coverage_pct"] == pytest.approx(25.0)
    assert [combined[f"fresh_{d}d_pct"] for d in (7, 28, 90, 365)] == pytest.approx(
        [7.5, 15.0, 22.5, 30.0]
    )
    assert combined["region_progress_28d_pct"] == pytest.approx(15.0)
    assert combined["weekly_driven_ratio"] == pytest.approx(0.15)
    assert combined["percent_of_world"] == pytest.approx(10.0)
    assert combined["regions"] == ["a", "b"]
    default = combine_summaries(summaries)
    assert default["percent_of_world"] == pytest.approx(100 * 12 / 64_285_009)


def test_regions_without_roads_have_shares_of_zero() -> None:
    combined = combine_summaries({"empty": region(0, 0, (0, 0, 0, 0))})
    shares = ["coverage_pct", "directed_coverage_pct", "weekly_driven_ratio"]
    shares += [f"fresh_{d}d_pct" for d in (7, 28, 90, 365)]
    assert {name: combined[name] for name in shares} == dict.fromkeys(shares, 0.0)


SHARES = (
    "coverage_pct",
    "directed_coverage_pct",
    *(f"fresh_{days}d_pct" for days in (7, 28, 90, 365)),
    "region_progress_28d_pct",
)


def test_a_fully_covered_region_reads_exactly_100_percent_everywhere(tmp_path: Path) -> None:
    write_fully_covered_region(tmp_path)
    edges = read_edge_coverage(tmp_path / "coverage")
    exact_mm = edges["length_m"].to_numpy() * 1000
    assert (np.rint(exact_mm) > exact_mm).all()  # the case: every length rounds up
    summary = json.loads((tmp_path / "coverage" / "summary.json").read_text())
    for totals in (summary, *summary["by_highway"].values()):
        assert [totals[share] for share in SHARES] == [100.0] * len(SHARES)
        assert totals["unique_km"] == totals["road_km"]
        assert totals["directed_covered_km"] == totals["directed_km"]
    # along a meridian an edge is R * dlat (OSMnx's R): 100,164.53 mm, 100,165 rounded
    edge_mm = round(6_371_009 * math.radians(ROUNDING_UP_STEP_DEG) * 1000)
    assert edge_mm == 100_165
    assert summary["road_km"] == pytest.approx(10 * edge_mm / 1e6, abs=1e-12)  # 5 + 5 roads
    assert summary["directed_km"] == pytest.approx(15 * edge_mm / 1e6, abs=1e-12)
    combined = combine_summaries({"a": summary, "b": summary})
    assert [combined[share] for share in SHARES] == [100.0] * len(SHARES)
    assert (edges["covered_m"] <= edges["length_m"]).all()
    assert edges["covered_m"].to_numpy() == pytest.approx(edges["length_m"].to_numpy(), abs=5e-4)
    cells = read_cells(tmp_path / "coverage")
    assert (cells["coverage_pct"] == 100.0).all()


def test_a_share_never_exceeds_100_percent_of_its_whole() -> None:
    """Shares of km summed in mm: at most 100 %, exactly 100 for the whole, else exact to 1e-12."""
    assert 100.0 * 0.443632 / 0.443632 > 100.0  # the order of operations percent() avoids
    assert percent(0.443632, 0.443632) == 100.0
    rng = np.random.default_rng(24)
    wholes = rng.integers(1, 10**13, 20_000)
    parts = (wholes * rng.random(20_000)).astype(np.int64)
    parts[::4] = wholes[::4]  # a quarter fully covered
    for part_mm, whole_mm in zip(parts.tolist(), wholes.tolist(), strict=True):
        share = percent(part_mm / MM_PER_KM, whole_mm / MM_PER_KM)
        assert share <= 100.0
        exact = Fraction(100 * part_mm, whole_mm)
        assert abs(Fraction(share) - exact) <= Fraction(1, 10**12)
        if part_mm == whole_mm:
            assert share == 100.0
    assert percent(0.0, 0.0) == 0.0


def test_combined_regions_take_the_world_road_length_their_summaries_record() -> None:
    """Two regions run with coverage.world_road_km: 120: 12 km of 120 km is 10 % by hand."""
    summaries = {
        "a": {**region(10, 4, (1, 2, 3, 4)), "world_road_km": 120.0},
        "b": {**region(30, 8, (2, 4, 6, 8)), "world_road_km": 120.0},
    }
    combined = combine_summaries(summaries)
    assert combined["percent_of_world"] == pytest.approx(10.0)
    assert combined["world_road_km"] == 120.0


def test_combined_regions_with_different_world_road_lengths_are_refused() -> None:
    summaries = {
        "a": {**region(10, 4, (1, 2, 3, 4)), "world_road_km": 120.0},
        "b": {**region(30, 8, (2, 4, 6, 8)), "world_road_km": 240.0},
    }
    with pytest.raises(ConfigError, match=r"a: 120\.000 km, b: 240\.000 km"):
        combine_summaries(summaries)
