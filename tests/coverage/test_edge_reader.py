"""The edge coverage read back: ages computed at read time from last_seen and the as-of time."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.stage import compute_coverage
from pipeline.errors import InputDataError
from pipeline.roads import build_roads, read_edges
from tests.builders import write_matched_batch

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage
DRIVEN = {(1, 2): "2026-10-10T10:00:00Z", (2, 3): "2026-10-01T06:30:00Z"}  # (u, v): entered


@pytest.fixture(scope="module")
def roads_dir(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roads")
    build_roads(tiny_osm, folder)
    return folder


@pytest.fixture(scope="module")
def batch(roads_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two edges, each driven whole in 9 s by its own trip, on days 9 days apart."""
    edges = read_edges(roads_dir)
    by_nodes = edges.set_index(["u", "v"])
    drives = pd.DataFrame(
        [
            {
                "edge_id": by_nodes.loc[nodes, "edge_id"],
                "trip_id": f"trip-{nodes[0]}-{nodes[1]}",
                "contributor_id": "c",
                "from_offset_m": 0.0,
                "to_offset_m": by_nodes.loc[nodes, "length_m"],
                "entered_at": pd.Timestamp(entered),
                "exited_at": pd.Timestamp(entered) + pd.Timedelta(seconds=9),
            }
            for nodes, entered in DRIVEN.items()
        ]
    )
    folder = tmp_path_factory.mktemp("matched")
    return write_matched_batch(folder, edges, drives, roads_dir=roads_dir)


def days_between(later: str, earlier: str) -> float:
    """(later - earlier) in days, by hand from the ISO times."""
    seconds = (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
    return seconds / 86_400


def test_age_days_read_back_is_as_of_minus_last_seen(
    roads_dir: Path, batch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    as_of = "2026-10-20T00:00:00+00:00"
    compute_coverage(roads_dir, [batch], out, SETTINGS, as_of=pd.Timestamp(as_of))
    table = read_edge_table(out, columns=["u", "v", "last_seen", "age_days"]).to_pylist()
    rows = {(row["u"], row["v"]): row for row in table}
    assert len(rows) == len(read_edges(roads_dir))
    last = {(1, 2): "2026-10-10T10:00:09+00:00", (2, 3): "2026-10-01T06:30:09+00:00"}
    for nodes, seen in last.items():  # a drive is last seen when it leaves the edge
        assert rows[nodes]["last_seen"] == datetime.fromisoformat(seen)
        assert rows[nodes]["age_days"] == pytest.approx(days_between(as_of, seen), abs=1e-12)
    undriven = [row for nodes, row in rows.items() if nodes not in DRIVEN]
    assert undriven and all(row["age_days"] is None for row in undriven)
    assert rows[(1, 2)]["age_days"] == pytest.approx(9 + (14 * 3600 - 9) / 86_400)


def test_a_later_as_of_moves_the_ages_without_rewriting_the_edges(
    roads_dir: Path, batch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads_dir, [batch], out, SETTINGS)  # as of the latest observation
    edge_files = {p: p.stat().st_mtime_ns for p in out.rglob("edge_coverage.parquet")}
    assert edge_files
    first = read_edge_table(out, columns=["edge_id", "age_days"]).to_pydict()
    later = "2026-11-10T10:00:09+00:00"  # 31 days after the last observation
    compute_coverage(roads_dir, [batch], out, SETTINGS, as_of=pd.Timestamp(later))
    assert json.loads((out / "summary.json").read_text())["as_of"] == later
    assert {p: p.stat().st_mtime_ns for p in out.rglob("edge_coverage.parquet")} == edge_files
    second = read_edge_table(out, columns=["edge_id", "age_days"]).to_pydict()
    assert second["edge_id"] == first["edge_id"]
    for age, moved in zip(first["age_days"], second["age_days"], strict=True):
        assert (age is None and moved is None) or moved == pytest.approx(age + 31)
    assert 0.0 in first["age_days"]  # the latest observation was the as-of time


def test_a_partition_and_columns_alone(roads_dir: Path, batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "coverage"
    compute_coverage(roads_dir, [batch], out, SETTINGS)
    pointer = json.loads((out / "state" / "CURRENT.json").read_text())
    whole = read_edge_table(out, columns=["edge_id"]).column("edge_id").to_pylist()
    pieces = [
        read_edge_table(out, columns=["age_days", "edge_id"], parts=[key])
        for key in pointer["parts"]
    ]
    assert all(piece.schema.names == ["age_days", "edge_id"] for piece in pieces)
    assert sorted(e for piece in pieces for e in piece.column("edge_id").to_pylist()) == sorted(
        whole
    )
    assert read_edge_table(out, parts=["no-such-part"]).num_rows == 0


def test_a_folder_without_edge_coverage_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="holds no edge coverage.*run `roadcover coverage`"):
        read_edge_table(tmp_path)
