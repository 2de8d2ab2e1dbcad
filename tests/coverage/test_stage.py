"""The coverage stage end to end on the tiny network, from matched batch folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import shapely

from pipeline.config import settings_from_mapping
from pipeline.coverage.stage import compute_coverage
from pipeline.export.inputs import read_cells, read_edge_coverage
from pipeline.roads import build_roads, read_edges
from tests.builders import write_matched_batch

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage


@pytest.fixture(scope="module")
def roads_dir(tiny_osm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roads")
    build_roads(tiny_osm, folder)
    return folder


def write_batch(
    folder: Path, roads_dir: Path, trips: dict[str, tuple[int, int, float, bool]]
) -> Path:
    """trips: trip_id -> (u, v, confidence, plausible); each drives its edge fully."""
    edges = read_edges(roads_dir)
    by_nodes = edges.set_index(["u", "v"])
    when = pd.Timestamp("2026-10-10T10:00:00Z")
    drives = pd.DataFrame(
        [
            {
                "edge_id": by_nodes.loc[(u, v), "edge_id"],
                "trip_id": trip,
                "contributor_id": "c",
                "from_offset_m": 0.0,
                "to_offset_m": by_nodes.loc[(u, v), "length_m"] + 0.004,  # a hair past: clamped
                "entered_at": when,
                "exited_at": when + pd.Timedelta(seconds=9),
            }
            for trip, (u, v, _, _) in trips.items()
        ]
    )
    quality = {
        trip: (confidence, plausible) for trip, (_, _, confidence, plausible) in trips.items()
    }
    return write_matched_batch(folder, edges, drives, quality, roads_dir=roads_dir)


def test_stage_counts_confident_plausible_trips_and_is_idempotent(
    roads_dir: Path, tmp_path: Path
) -> None:
    batch = write_batch(
        tmp_path / "m1",
        roads_dir,
        {"good": (1, 2, 0.9, True), "unsure": (2, 3, 0.1, True), "spoofed": (5, 9, 0.9, False)},
    )
    out = tmp_path / "coverage"
    summary = compute_coverage(roads_dir, [batch], out, SETTINGS)
    edges = read_edge_coverage(out).set_index(["u", "v"])
    assert edges.loc[(1, 2), "covered_m"] == pytest.approx(edges.loc[(1, 2), "length_m"], abs=1e-3)
    assert edges.loc[(2, 3), "covered_m"] == 0 and edges.loc[(5, 9), "covered_m"] == 0
    assert summary["unique_km"] == pytest.approx(edges.loc[(1, 2), "length_m"] / 1000, abs=1e-5)
    assert summary["criteria"] == {
        "min_match_confidence": 0.5,
        "include_flagged_trips": False,
        "h3_resolution": 9,
    }
    assert summary["as_of"] == "2026-10-10T10:00:09+00:00"
    cells = read_cells(out)
    assert shapely.contains(cells.geometry, shapely.Point(24.9405, 60.17)).any()
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    again = compute_coverage(roads_dir, [batch], out, SETTINGS)
    assert again == summary
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before
    assert json.loads((out / "state" / "CURRENT.json").read_text())["batches"] == summary["batches"]


def test_flagged_trips_count_when_configured(roads_dir: Path, tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "m1", roads_dir, {"spoofed": (5, 9, 0.9, False)})
    settings = settings_from_mapping(
        {"regions": [{"name": "t", "osm": "t.osm"}], "coverage": {"include_flagged_trips": True}}
    ).coverage
    summary = compute_coverage(roads_dir, [batch], tmp_path / "coverage", settings)
    assert summary["unique_km"] > 0


def test_a_second_batch_adds_to_the_first(roads_dir: Path, tmp_path: Path) -> None:
    first = write_batch(tmp_path / "m1", roads_dir, {"a": (1, 2, 0.9, True)})
    second = write_batch(
        tmp_path / "m2", roads_dir, {"b": (2, 1, 0.9, True), "c": (2, 3, 0.9, True)}
    )
    out = tmp_path / "coverage"
    compute_coverage(roads_dir, [first], out, SETTINGS)
    incremental = compute_coverage(roads_dir, [second], out, SETTINGS)
    together = compute_coverage(roads_dir, [first, second], tmp_path / "together", SETTINGS)
    assert incremental == together
    assert incremental["directed_covered_km"] > incremental["unique_km"]  # 1-2 both ways


def test_a_stage_in_from_storage_downloads_what_a_sharded_network_cache_reads() -> None:
    """The roads files coverage downloads name the shards' plan, edges, owners and metadata."""
    from fnmatch import fnmatchcase

    from pipeline.coverage.stage import ROADS_INPUTS
    from pipeline.roads.shards import OWNERS_FILE, PLAN_FILE, SHARDS_DIR

    cell = "863969a47ffffff"
    wanted = [
        "meta.json", "edges.parquet", f"{SHARDS_DIR}/{PLAN_FILE}",
        *(f"{SHARDS_DIR}/{cell}/{name}" for name in ("meta.json", "edges.parquet", OWNERS_FILE)),
    ]  # fmt: skip
    not_wanted = ["nodes.parquet", f"{SHARDS_DIR}/{cell}/match_network.npz", "shard-networks/a/b"]
    assert all(any(fnmatchcase(path, pattern) for pattern in ROADS_INPUTS) for path in wanted)
    assert not any(fnmatchcase(path, pattern) for pattern in ROADS_INPUTS for path in not_wanted)
