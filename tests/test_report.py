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
from pipeline.coverage.state import read_state
from pipeline.export.inputs import read_cells, read_edge_coverage
from pipeline.export.priorities import export_priorities
from pipeline.report import _edge_fresh_pct, _map_thumbnail, _png, weekly_history, write_report
from tests.builders import write_fully_covered_region
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
    assert page.count("<th>week ending</th>") == 2
    assert "<td>2026-10-05</td>" in page  # the first Monday after the first drive (1 October)
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
    edges = read_edge_coverage(coverage)
    cells = read_cells(coverage)
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
        driven_mm = sum(round(metres * 1000) for metres in driven["length_m"])
        expected.append(100 * driven_mm / sum(round(metres * 1000) for metres in edges["length_m"]))
    assert _edge_fresh_pct(trips, edges, days) == expected


def test_shares_over_time_of_a_fully_covered_region_end_at_100_percent(tmp_path: Path) -> None:
    write_fully_covered_region(tmp_path)
    edges = read_edge_coverage(tmp_path / "coverage")
    state = read_state(tmp_path / "coverage" / "state")
    as_of = int(state.edge_trips["last_ms"].max())
    history = weekly_history(state.edge_pieces, state.edge_trips, edges, as_of)
    covered, fresh = history["coverage_pct"], history["fresh_edge_pct"]
    assert covered.iloc[-1] == 100.0 and covered.max() == 100.0  # every length rounds up
    assert fresh.iloc[-1] == 100.0 and fresh.max() == 100.0


DAY = 86_400_000
MONDAY = int(pd.Timestamp("2026-11-02T00:00Z").value // 1_000_000)


def test_weekly_history_by_hand() -> None:
    """Road A: edges 1 and 2 (both directions, 100 m); road B: edge 3 (one-way, 60 m).

    Covered: 40 m of A on day 2 (edge 1), 30 m of A's far end on day 3 (edge 2, reversed),
    B's first 50 m on day 16, its last 10 m on day 21 at 00:00 (a week's end: counted in the
    next week). As of day 32 (Friday 4 December). Roads 160 m; directed edges 260 m.
    """
    edges = pd.DataFrame(
        {
            "edge_id": [1, 2, 3],
            "road_id": [100, 100, 200],
            "u": [10, 11, 11],
            "v": [11, 10, 12],
            "length_m": [100.0, 100.0, 60.0],
        }
    )
    pieces = pd.DataFrame(
        {
            "key": [1, 2, 3, 3],
            "from_mm": [0, 0, 0, 50_000],
            "to_mm": [40_000, 30_000, 50_000, 60_000],
            "first_ms": [MONDAY + d * DAY for d in (2, 3, 16, 21)],
            "last_ms": [MONDAY + d * DAY for d in (2, 3, 16, 21)],
        }
    )
    trip_days = [2, 3, 16, 21]
    trips = pd.DataFrame(
        {
            "edge_id": [1, 2, 3, 3],
            "first_ms": [MONDAY + d * DAY for d in trip_days],
            "last_ms": [MONDAY + d * DAY for d in trip_days],
        }
    )
    history = weekly_history(pieces, trips, edges, MONDAY + 32 * DAY)
    dates = [pd.Timestamp(t, unit="ms").strftime("%Y-%m-%d") for t in history["week_end"]]
    assert dates == ["2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30", "2026-12-04"]
    covered_m = [70, 70, 120, 130, 130]
    assert list(history["coverage_pct"]) == pytest.approx([100 * m / 160 for m in covered_m])
    # A's last trip (day 3) leaves the 28-day window on day 31; B's (day 21) stays in it
    assert list(history["fresh_km"]) == pytest.approx([0.070, 0.070, 0.120, 0.130, 0.060])
    fresh_edge_m = [200, 200, 260, 260, 60]
    assert list(history["fresh_edge_pct"]) == pytest.approx([100 * m / 260 for m in fresh_edge_m])


def test_fresh_share_is_of_lengths_rounded_to_the_millimetre() -> None:
    edges = pd.DataFrame({"edge_id": [1, 2, 3], "length_m": [0.0004, 10.0006, 20.0006]})
    trips = pd.DataFrame({"edge_id": [2, 3], "first_ms": [0, 0], "last_ms": [10, 10]})
    # 10,001 + 20,001 of 0 + 10,001 + 20,001 mm: the 0.4 mm edge rounds to nothing
    assert _edge_fresh_pct(trips, edges, np.array([5.0])) == [100.0]


def test_report_shows_the_process_trees_memory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROADCOVER_PROCESS_RECORDS", raising=False)
    coverage = helsinki_coverage(tmp_path_factory)
    shutil.copytree(coverage, tmp_path / "north" / "coverage")
    records = tmp_path / "benchmarks" / "_process_tree"
    records.mkdir(parents=True)
    figures = {
        "wall_s": 12.34, "peak_rss_mb": 1536.4, "peak_pss_mb": 1200.0, "peak_uss_mb": None,
        "own_peak_rss_mb": 400.0, "others_peak_rss_mb": 1136.4, "peak_processes": 5,
    }  # fmt: skip
    snap = {"command": ["snap", "-o", "north/matched/b1"], "output": "north/matched/b1"}
    (records / "snap-1.json").write_text(json.dumps({**snap, "cwd": str(tmp_path), **figures}))
    elsewhere = {**snap, "output": "south/matched/b1", "cwd": str(tmp_path)}
    (records / "snap-2.json").write_text(json.dumps({**elsewhere, **figures, "wall_s": 99.0}))
    run = {"command": ["run"], "output": None, "cwd": str(tmp_path), **figures}
    (records / "run.json").write_text(json.dumps({**run, "peak_rss_mb": 13824.0}))
    page = write_report({"north": tmp_path / "north"}, tmp_path / "report.html").read_text()
    assert "<th>snap → matched/b1</th><td>12.3 s</td><td>1,536 MiB</td><td>1,200 MiB</td>" in page
    assert "<td>n/a</td><td>400 MiB</td><td>1,136 MiB</td><td>5</td>" in page
    assert "99.0 s" not in page  # the south region's record is not the north's
    assert "<th>roadcover run (up to this report)</th><td>12.3 s</td><td>13,824 MiB</td>" in page
    (records / "run.json").write_text(json.dumps({**run, "finished": True}))
    page = write_report({"north": tmp_path / "north"}, tmp_path / "report.html").read_text()
    assert "<th>roadcover run</th>" in page


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
