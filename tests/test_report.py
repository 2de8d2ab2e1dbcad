"""The HTML run report and the combined summary of several regions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.report import write_report
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
