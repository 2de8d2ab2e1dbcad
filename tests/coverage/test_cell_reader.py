"""The cell coverage read back: ages and freshness computed at read time from the as-of time."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.contracts import CELL_COVERAGE
from pipeline.coverage.cell_reader import read_cell_table
from pipeline.coverage.stage import compute_coverage
from pipeline.errors import InputDataError
from pipeline.roads import read_edges
from tests.coverage.test_edge_reader import DRIVEN, SETTINGS, batch, days_between, roads_dir

__all__ = ["batch", "roads_dir"]  # the fixtures of test_edge_reader, used here

LAST_SEEN = {(1, 2): "2026-10-10T10:00:09+00:00", (2, 3): "2026-10-01T06:30:09+00:00"}


def test_age_days_read_back_is_as_of_minus_last_seen(
    roads_dir: Path, batch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    as_of = "2026-10-20T00:00:00+00:00"
    compute_coverage(roads_dir, [batch], out, SETTINGS, as_of=pd.Timestamp(as_of))
    table = read_cell_table(out)
    assert table.schema.names == CELL_COVERAGE.schema.names
    seen = [row for row in table.to_pylist() if row["last_seen"] is not None]
    assert seen and len(seen) < table.num_rows  # cells of roads never driven have no age
    for row in seen:
        by_hand = days_between(as_of, row["last_seen"].isoformat())
        assert row["age_days"] == pytest.approx(by_hand, abs=1e-12)
    assert all(row["age_days"] is None for row in table.to_pylist() if row["last_seen"] is None)
    newest = min(row["age_days"] for row in seen)  # the cell of the edge driven last
    assert newest == pytest.approx(days_between(as_of, LAST_SEEN[(1, 2)]), abs=1e-12)


def test_freshness_moves_with_the_as_of_time_without_rewriting_the_cells(
    roads_dir: Path, batch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads_dir, [batch], out, SETTINGS, as_of=pd.Timestamp("2026-10-20T00:00Z"))
    cell_files = {p: p.stat().st_mtime_ns for p in out.rglob("cell_*.parquet")}
    assert cell_files
    finest = SETTINGS.h3_resolution
    length = read_edges(roads_dir).set_index(["u", "v"])["length_m"]

    def fresh_m(column: str) -> float:
        rows = read_cell_table(out).to_pandas()
        return float(rows.loc[rows["resolution"] == finest, column].sum()) * 1000

    # 9.6 and 18.7 days before: neither within 7 days, both within 28
    assert fresh_m("fresh_7d_km") == 0.0
    driven = sum(length[nodes] for nodes in DRIVEN)
    assert fresh_m("fresh_28d_km") == pytest.approx(driven, abs=0.01)
    later = "2026-10-15T00:00:00+00:00"  # (1, 2) 4.6 days before, (2, 3) 13.7
    compute_coverage(roads_dir, [batch], out, SETTINGS, as_of=pd.Timestamp(later))
    assert json.loads((out / "summary.json").read_text())["as_of"] == later
    assert {p: p.stat().st_mtime_ns for p in out.rglob("cell_*.parquet")} == cell_files
    assert fresh_m("fresh_7d_km") == pytest.approx(length[(1, 2)], abs=0.01)
    assert fresh_m("fresh_28d_km") == pytest.approx(driven, abs=0.01)


def test_a_folder_without_cell_coverage_is_refused_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"as_of": "2026-10-20T00:00:00+00:00"}))
    with pytest.raises(InputDataError, match="holds no cell coverage.*run `roadcover coverage`"):
        read_cell_table(tmp_path)
