"""Coverage on the hand-written network: known lengths, directions, repeats, cells and rollups."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edges import canonical_edges, merge_edge_trips, pair_totals
from pipeline.coverage.intervals import union_pieces
from pipeline.coverage.state import (
    empty_state,
    merge_cell_trips,
    merge_states,
    read_state,
    state_of_batch,
    write_state,
)
from pipeline.coverage.summary import coverage_summary
from pipeline.coverage.tables import cell_coverage, edge_coverage
from pipeline.roads import build_roads, read_edges

AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
AS_OF_MS = int(AS_OF.value // 1_000_000)


@pytest.fixture(scope="module")
def edges(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    roads_dir = tmp_path_factory.mktemp("roads")
    build_roads(tiny_osm, roads_dir)
    return read_edges(roads_dir)


def edge(edges: gpd.GeoDataFrame, u: int, v: int) -> pd.Series:
    return edges[(edges["u"] == u) & (edges["v"] == v)].iloc[0]


def segments(
    edges: gpd.GeoDataFrame, drives: list[tuple[str, int, int, float, float, str]]
) -> pd.DataFrame:
    """drives: (trip, u, v, from fraction, to fraction, day)."""
    rows = []
    for seq, (trip, u, v, start, stop, day) in enumerate(drives):
        e = edge(edges, u, v)
        when = pd.Timestamp(day, tz="UTC")
        rows.append(
            {
                "trip_id": trip, "contributor_id": f"c-{trip[0]}", "seq": seq, "edge_id": e.edge_id,
                "from_offset_m": start * e.length_m, "to_offset_m": stop * e.length_m,
                "entered_at": when, "exited_at": when + pd.Timedelta(seconds=10),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


DRIVES = [
    ("a1", 2, 5, 0.0, 0.5, "2026-10-30"),  # half of a one-way primary
    ("a1", 1, 2, 0.0, 1.0, "2026-10-30"),  # a two-way road, one direction only
    ("b1", 2, 3, 0.0, 1.0, "2026-09-01"),  # driven twice, by two trips
    ("b2", 2, 3, 0.0, 1.0, "2026-10-31"),
]


@pytest.fixture(scope="module")
def computed(edges: gpd.GeoDataFrame) -> dict[str, object]:
    runs = edge_cell_runs(edges, 9)
    state = state_of_batch(segments(edges, DRIVES), runs, "batch-1")
    canonical = canonical_edges(edges)
    table = edge_coverage(edges, state, AS_OF_MS)
    return {
        "runs": runs,
        "state": state,
        "edges": table,
        "cells": cell_coverage(edges, canonical, runs, state, AS_OF_MS, 9),
        "summary": coverage_summary(table, state, canonical, AS_OF_MS),
    }


def test_half_driven_edge_covers_half_its_length(edges: gpd.GeoDataFrame, computed: dict) -> None:
    table = computed["edges"].set_index(["u", "v"])
    assert table.loc[(2, 5), "covered_m"] == pytest.approx(edge(edges, 2, 5).length_m / 2, abs=1e-3)
    assert table.loc[(2, 5), "passes"] == 1
    assert table.loc[(5, 9), "covered_m"] == 0 and pd.isna(table.loc[(5, 9), "last_seen"])


def test_two_way_road_driven_one_way_is_unique_covered_and_half_directed(
    edges: gpd.GeoDataFrame, computed: dict
) -> None:
    summary = computed["summary"]
    road_12 = edge(edges, 1, 2).length_m
    road_23 = edge(edges, 2, 3).length_m
    half_25 = edge(edges, 2, 5).length_m / 2
    assert summary["unique_km"] == pytest.approx((road_12 + road_23 + half_25) / 1000, abs=1e-5)
    assert summary["directed_covered_km"] == pytest.approx(
        (road_12 + road_23 + half_25) / 1000, abs=1e-5
    )
    residential = summary["by_highway"]["residential"]
    assert residential["unique_km"] == pytest.approx((road_12 + road_23) / 1000, abs=1e-5)
    assert residential["directed_coverage_pct"] < residential["coverage_pct"]


def test_total_km_counts_repeats_and_fresh_km_only_recent_passes(
    edges: gpd.GeoDataFrame, computed: dict
) -> None:
    summary = computed["summary"]
    road_12, road_23 = edge(edges, 1, 2).length_m, edge(edges, 2, 3).length_m
    half_25 = edge(edges, 2, 5).length_m / 2
    assert summary["total_km"] == pytest.approx((road_12 + 2 * road_23 + half_25) / 1000, abs=1e-5)
    # all three roads were driven within 7 days of AS_OF (2-3 again on 10-31)
    assert summary["fresh_7d_km"] == pytest.approx(summary["unique_km"], abs=1e-9)
    assert summary["weekly_driven_km"] == pytest.approx(
        (road_12 + road_23 + half_25) / 1000, abs=1e-5
    )
    assert summary["percent_of_world"] == pytest.approx(100 * summary["unique_km"] / 64_285_009)


def test_cells_conserve_road_and_covered_length_at_every_resolution(computed: dict) -> None:
    cells, summary = computed["cells"], computed["summary"]
    assert set(cells["resolution"]) == set(range(10))
    for _, level in cells.groupby("resolution"):
        assert level["road_km"].sum() == pytest.approx(summary["road_km"], abs=1e-5)
        assert level["unique_km"].sum() == pytest.approx(summary["unique_km"], abs=1e-5)
        assert level["total_km"].sum() == pytest.approx(summary["total_km"], abs=1e-5)
        assert (level["unique_km"] <= level["road_km"] + 1e-9).all()
    top = cells[cells["resolution"] == 0].iloc[0]
    assert top["coverage_pct"] == pytest.approx(100 * top["unique_km"] / top["road_km"])
    assert top["passes"] == 3 and top["contributors"] == 2


def test_runs_tile_every_edge_exactly(edges: gpd.GeoDataFrame, computed: dict) -> None:
    runs = computed["runs"]
    lengths = (runs["to_mm"] - runs["from_mm"]).groupby(runs["key"]).sum()
    expected = (edges.set_index("edge_id")["length_m"] * 1000).round().astype("int64")
    assert lengths.sort_index().equals(
        expected.loc[lengths.sort_index().index].rename(None).rename_axis("key")
    )


def test_batches_applied_one_by_one_in_any_order_equal_one_computation(
    edges: gpd.GeoDataFrame, computed: dict, tmp_path: Path
) -> None:
    runs = computed["runs"]
    one = [state_of_batch(segments(edges, [d]), runs, f"b{i}") for i, d in enumerate(DRIVES)]
    forward = one[0]
    for part in one[1:]:
        forward = merge_states(forward, part)
    backward = one[-1]
    for part in reversed(one[:-1]):
        write_state(backward, tmp_path)
        backward = merge_states(read_state(tmp_path), part)
    full = computed["state"]
    for name in ("edge_pieces", "edge_trips", "cell_trips"):
        expected = getattr(full, name).reset_index(drop=True)
        assert getattr(forward, name).reset_index(drop=True).equals(expected)
        assert getattr(backward, name).reset_index(drop=True).equals(expected)


def test_merging_into_a_state_without_rows_equals_the_full_merge(
    edges: gpd.GeoDataFrame, computed: dict, tmp_path: Path
) -> None:
    runs = computed["runs"]
    batch = computed["state"]
    no_rows = state_of_batch(segments(edges, DRIVES).iloc[:0], runs, "nothing-counted")
    write_state(empty_state(), tmp_path)
    merges = {
        "edge_pieces": union_pieces,
        "edge_trips": merge_edge_trips,
        "cell_trips": merge_cell_trips,
    }
    for first in (empty_state(), read_state(tmp_path), no_rows):
        for second in (batch, no_rows):
            merged = merge_states(first, second)
            assert merged.batches == sorted(set(first.batches) | set(second.batches))
            for name, merge in merges.items():
                expected = merge(pd.concat([getattr(first, name), getattr(second, name)]))
                got = getattr(merged, name)
                assert got.dtypes.to_dict() == expected.dtypes.to_dict()
                assert got.reset_index(drop=True).equals(expected.reset_index(drop=True))


def test_reading_some_columns_of_the_state(computed: dict, tmp_path: Path) -> None:
    full = computed["state"]
    columns = {"edge_trips": ["edge_id", "last_ms"], "cell_trips": []}
    write_state(full, tmp_path)
    for root in (tmp_path, tmp_path / "none yet"):
        state = read_state(root, columns=columns)
        assert list(state.edge_trips.columns) == ["edge_id", "last_ms"]
        assert list(state.cell_trips.columns) == []
        assert list(state.edge_pieces.columns) == list(full.edge_pieces.columns)
    state = read_state(tmp_path, columns=columns)
    assert len(state.cell_trips) == len(full.cell_trips)
    expected = full.edge_trips[["edge_id", "last_ms"]].reset_index(drop=True)
    assert state.edge_trips.equals(expected)
    assert state.edge_pieces.equals(full.edge_pieces.reset_index(drop=True))


def test_the_totals_of_edge_contributor_pairs_count_an_edges_rows() -> None:
    columns = ["edge_id", "contributor_id", "passes", "driven_mm", "first_ms", "last_ms"]
    pairs = pd.DataFrame(
        [(1, "a", 2, 15, 1, 30), (1, "b", 2, 20, 6, 9), (2, "a", 3, 30, 7, 9),
         (3, "c", 4, 40, 8, 9), (3, "d", 1, 5, 20, 30)],
        columns=columns,
    )  # fmt: skip
    totals = pair_totals(pairs)
    assert totals.index.name == "edge_id"
    assert list(totals.reset_index().itertuples(index=False, name=None)) == [
        (1, 4, 2, 35, 1, 30), (2, 3, 1, 30, 7, 9), (3, 5, 2, 45, 8, 30)
    ]  # fmt: skip
    assert list(totals.columns) == ["passes", "contributors", "driven_mm", "first_ms", "last_ms"]
