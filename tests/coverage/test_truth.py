"""Truth test: coverage of a simulated fleet on Monaco equals the road length it really drove.

The expected answer comes from the simulator's true routes, with shapely and pyproj only
(tests/truth.py).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import SIMULATED_ROUTES, TRIPS
from pipeline.coverage.stage import compute_coverage
from pipeline.ingest.stage import ingest_traces
from pipeline.io import read_table
from pipeline.roads import build_roads
from pipeline.simulate.fleet import simulate_fleet
from pipeline.snap.stage import snap_traces
from tests.truth import (
    RoadRaster,
    driven_truth_km,
    masked_km,
    true_fixes,
    true_pieces,
    true_routes,
)

KEY = "truth-test-key-0123456789"


@pytest.mark.shared_data
def test_unique_km_matches_the_driven_road_length_on_monaco(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)
    settings = settings_from_mapping(
        {
            "regions": [{"name": "monaco", "osm": "monaco-2016.osm.pbf"}],
            "ingest": {"workers": 1},
            "snap": {"workers": 1},
            "simulate": {"devices": 6, "days": 2, "seed": 5, "formats": ["csv"]},
        }
    )
    roads = tmp_path / "roads"
    build_roads(shared_data / "osm/monaco-2016.osm.pbf", roads)
    simulate_fleet(roads, tmp_path / "fleet", settings.simulate)
    ingest_traces([tmp_path / "fleet/traces"], tmp_path / "traces", settings.ingest)
    snap_traces(roads, tmp_path / "traces", tmp_path / "matched", settings.snap)
    summary = compute_coverage(
        roads, [tmp_path / "matched"], tmp_path / "coverage", settings.coverage
    )
    truth = read_table(tmp_path / "fleet/truth.parquet", SIMULATED_ROUTES)
    trips = pd.concat(
        [pd.DataFrame(read_table(p, TRIPS)) for p in (tmp_path / "traces/trips").glob("*.parquet")]
    )
    true_km = driven_truth_km(truth, trips, KEY)
    assert true_km > 30
    # measured 50.099 of 50.100 km (-0.002 %: the matcher's pieces beside the true route and
    # what it missed nearly cancel); with a fixed transition scale (no estimate_beta) 50.251
    # km, +0.30 %. The limit is under that (docs/testing.md)
    assert summary["unique_km"] == pytest.approx(true_km, rel=0.002)


def _covered_on_truth(
    roads: Path,
    matched: Path,
    truth: pd.DataFrame,
    trips: pd.DataFrame,
    fixes: pd.DataFrame,
    min_confidence: float,
) -> tuple[float, float]:
    """Recall and precision of the counted trips' matched segments against the true routes."""
    raster = RoadRaster(gpd.read_parquet(roads / "edges.parquet"))
    windows = trips[["trip_id", "device_id", "started_at", "ended_at"]].set_axis(
        ["trip_id", "device", "start", "stop"], axis=1
    )
    pieces = true_pieces(true_routes(truth, KEY).drop(columns="trip_id"), windows, fixes)
    quality = pd.read_parquet(matched / "match_quality.parquet")
    counted = quality.loc[(quality["confidence"] >= min_confidence) & quality["plausible"]]
    segments = pd.read_parquet(matched / "matched_segments.parquet")
    segments = segments[segments["trip_id"].isin(counted["trip_id"])]
    true_mask = raster.mask(pieces["edge_id"], pieces["from_m"], pieces["to_m"])
    covered = raster.mask(segments["edge_id"], segments["from_offset_m"], segments["to_offset_m"])
    return (
        masked_km(true_mask & covered) / masked_km(true_mask),
        masked_km(true_mask & covered) / masked_km(covered),
    )


@pytest.mark.shared_data
def test_sixty_drives_unique_km_recall_and_precision_against_the_road_truly_driven(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bench_truth.py's fleet (1 Hz, sigma 5-15 m, 1 trip a day), 6 devices for 10 days: 60
    # drives. The trips' ends are cut where the vehicles truly were (tests/truth.py)
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", KEY)
    simulate = {"devices": 6, "days": 10, "seed": 2460, "trips_per_device_day": 1.0,
                "noise_sigma_m": [5.0, 15.0], "formats": ["csv"]}  # fmt: skip
    settings = settings_from_mapping(
        {
            "regions": [{"name": "monaco", "osm": "monaco-2016.osm.pbf"}],
            "ingest": {"workers": 1},
            "snap": {"workers": 1},
            "simulate": simulate,
        }
    )
    roads = tmp_path / "roads"
    build_roads(shared_data / "osm/monaco-2016.osm.pbf", roads)
    simulate_fleet(roads, tmp_path / "fleet", settings.simulate, workers=1)
    ingest_traces([tmp_path / "fleet/traces"], tmp_path / "traces", settings.ingest)
    snap_traces(roads, tmp_path / "traces", tmp_path / "matched", settings.snap)
    summary = compute_coverage(
        roads, [tmp_path / "matched"], tmp_path / "coverage", settings.coverage
    )
    truth = read_table(tmp_path / "fleet/truth.parquet", SIMULATED_ROUTES)
    trips = pd.concat(
        [pd.DataFrame(read_table(p, TRIPS)) for p in (tmp_path / "traces/trips").glob("*.parquet")]
    )
    fixes = true_fixes(roads, settings.simulate, KEY)
    true_km = driven_truth_km(truth, trips, KEY, fixes)
    recall, precision = _covered_on_truth(
        roads, tmp_path / "matched", truth, trips, fixes, settings.coverage.min_match_confidence
    )
    assert len(trips) == 55
    # measured 82.206 of 81.542 km (+0.81 %), recall 0.9969, precision 0.9871; with a fixed
    # transition scale (no estimate_beta) +0.93 %, recall 0.9969, precision 0.9860, and with
    # the scale fitted but the U-turn penalty not scaled with it +0.81 %, 0.9963, 0.9866. The
    # excess is road matched beside the true route (paths a few metres apart), which other
    # drives' truth does not cover
    assert summary["unique_km"] == pytest.approx(true_km, rel=0.0122)  # 1.5 times the measured
    assert recall >= 0.9954  # 1.5 times the road missed
    assert precision >= 0.9868
