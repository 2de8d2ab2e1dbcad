"""The HTML run report and the combined summary of several regions."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import CELL_COVERAGE, EDGE_COVERAGE
from pipeline.export.priorities import export_priorities
from pipeline.io import read_table
from pipeline.report import _edge_fresh_pct, _map_thumbnail, _png, write_report
from tests.export.coverage_builder import helsinki_coverage


def test_report_embeds_plots_and_combines_regions(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    coverage = helsinki_coverage(tmp_path_factory)
    regions = {}
    for name in ("north", "south"):
        shutil.copytree(coverage, tmp_path / name / "coverage")
        regions[name] = tmp_path / name
    report = write_report(regions, tmp_path / "report.html")
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2 * 3  # map, time series, ages, per region
    assert (
        "<h2>all regions</h2>" in page and "no matched batch" in page and "no rejected rows" in page
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    one = summary["regions"]["north"]
    assert summary["all_regions"]["road_km"] == pytest.approx(2 * one["road_km"])
    assert summary["all_regions"]["coverage_pct"] == pytest.approx(one["coverage_pct"])
    assert summary["all_regions"]["regions"] == ["north", "south"]


def _plot_with_geopandas(edges: pd.DataFrame, cells: pd.DataFrame) -> str:
    """The map as GeoDataFrame.plot draws it (what the report drew before)."""
    figure, axis = plt.subplots(figsize=(7, 6))
    finest = cells[cells["resolution"] == cells["resolution"].max()]
    finest.plot(
        ax=axis, column="coverage_pct", cmap="viridis", vmin=0, vmax=100, alpha=0.5, legend=True
    )
    edges[edges["covered_m"] == 0].plot(ax=axis, color="#bbbbbb", linewidth=0.5)
    edges[edges["covered_m"] > 0].plot(ax=axis, column="age_days", cmap="autumn", linewidth=1.2)
    axis.set_axis_off()
    return _png(figure)


@pytest.mark.filterwarnings("ignore:The GeoDataFrame you are attempting to plot is empty")
def test_map_is_the_picture_geopandas_draws(tmp_path_factory: pytest.TempPathFactory) -> None:
    coverage = helsinki_coverage(tmp_path_factory)
    edges = read_table(coverage / "edges.parquet", EDGE_COVERAGE)
    cells = read_table(coverage / "cells.parquet", CELL_COVERAGE)
    assert (edges["covered_m"] == 0).any() and (edges["covered_m"] > 0).any()
    assert _map_thumbnail(edges, cells) == _plot_with_geopandas(edges, cells)
    undriven = edges[edges["covered_m"] == 0]
    assert _map_thumbnail(undriven, cells) == _plot_with_geopandas(undriven, cells)


def test_fresh_share_counts_edges_driven_in_the_28_days_before() -> None:
    day = 86_400_000
    edges = pd.DataFrame({"edge_id": [7, 3, 5], "length_m": [10.0, 30.0, 60.0]})
    trips = pd.DataFrame(
        {
            "edge_id": [3, 3, 5, 9],  # 9 is no edge of the table
            "first_ms": [0, 40 * day, 10 * day, 0],
            "last_ms": [2 * day, 41 * day, 12 * day, 100 * day],
        }
    )
    days = np.array([1, 30, 40, 41, 69, 70]) * float(day)
    fresh = _edge_fresh_pct(trips, edges, days)
    assert fresh == pytest.approx([30.0, 90.0, 90.0, 30.0, 30.0, 0.0])
    assert _edge_fresh_pct(trips.iloc[:0], edges, days) == [0.0] * len(days)


def test_fresh_share_is_the_share_of_edges_with_a_trip_in_the_window() -> None:
    day = 86_400_000
    rng = np.random.default_rng(3)
    edges = pd.DataFrame({"edge_id": rng.permutation(50) * 7, "length_m": rng.uniform(1, 99, 50)})
    first = rng.integers(0, 200, 2000) * day // 2
    trips = pd.DataFrame(
        {
            "edge_id": rng.integers(0, 60, 2000) * 7,
            "first_ms": first,
            "last_ms": first + rng.integers(0, 10 * day, 2000),
        }
    )
    days = np.linspace(0, 130 * day, 60)
    expected = []
    for as_of in days:
        window = trips[(trips["first_ms"] <= as_of) & (trips["last_ms"] >= as_of - 28 * day)]
        driven = edges[edges["edge_id"].isin(window["edge_id"])]
        expected.append(float(100 * driven["length_m"].sum() / edges["length_m"].sum()))
    assert _edge_fresh_pct(trips, edges, days) == expected


def test_report_says_where_to_drive_next(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    coverage = helsinki_coverage(tmp_path_factory)
    shutil.copytree(coverage, tmp_path / "north" / "coverage")
    shutil.copytree(coverage, tmp_path / "south" / "coverage")
    settings = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).priorities
    out = tmp_path / "north" / "export" / "priorities"
    summary = export_priorities(
        coverage, coverage.parent / "roads", out, replace(settings, tours=2)
    )
    page = write_report(
        {"north": tmp_path / "north", "south": tmp_path / "south"}, tmp_path / "r.html"
    )
    text = page.read_text()
    north, south = text.split("<h2>south</h2>")
    assert "Where to drive next" in north and f"{summary['new_km']:,.1f} km never driven" in north
    assert north.count("data:image/png;base64,") == 4  # map, time series, ages, km to gain
    for tour in summary["tours"]:
        row = (
            f"<tr><td>{tour['tour']}</td><td>{tour['h3']}</td><td>{tour['length_km']:.1f}</td>"
            f"<td>{tour['new_km']:.2f}</td>"
        )
        assert row in north
        assert tour["gain_per_km"] == pytest.approx(tour["gain_km"] / tour["length_km"], abs=1e-3)
    assert "no priorities" in south
