"""Trip splitting, trip-end trimming, privacy zones and short trips."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.ingest.trips import apply_privacy, reject_short_trips, split_trips
from tests.ingest.frames import METRES_PER_DEGREE_LAT, drive, reasons


def settings(**ingest: object) -> object:
    return settings_from_mapping(
        {"regions": [{"name": "t", "osm": "t.osm"}], "ingest": ingest}
    ).ingest


def test_trips_split_at_time_gaps_and_jumps() -> None:
    first = drive(50, noise_m=0)
    later = drive(50, start="2026-10-01T08:05:00Z", noise_m=0).assign(
        source_row=lambda f: f.source_row + 100
    )
    jumped = drive(50, start="2026-10-01T08:06:00Z", lat0=60.2, noise_m=0).assign(
        source_row=lambda f: f.source_row + 200
    )
    frame = pd.concat([first, later, jumped], ignore_index=True)
    split_trips(frame, settings())
    assert (
        frame["trip_id"].tolist()
        == ["trace-a-001"] * 50 + ["trace-a-002"] * 50 + ["trace-a-003"] * 50
    )
    # 60.17 -> 60.2 in ten seconds is 3.3 km at 330 m/s: a teleport, flagged on the new trip
    assert frame.loc[frame["split_teleport"], "source_row"].tolist() == [202]


def test_trip_ends_are_trimmed_for_privacy() -> None:
    frame = drive(100, speed_mps=10.0, noise_m=0)  # 990 m
    split_trips(frame, settings())
    apply_privacy(frame, settings(privacy_trim_m=200))
    trimmed = frame.loc[frame["reason"] == "privacy", "source_row"] - 2
    # fixes 0..19 are < 200 m from the start, 80..99 < 200 m from the end
    assert sorted(trimmed) == [*range(20), *range(80, 100)]


def test_privacy_zones_remove_fixes_inside_the_circle() -> None:
    frame = drive(100, speed_mps=10.0, noise_m=0)
    centre_lat = 60.17 + 500 / METRES_PER_DEGREE_LAT
    zone = {"name": "home", "lon": 24.94, "lat": centre_lat, "radius_m": 55.0}
    split_trips(frame, settings())
    apply_privacy(frame, settings(privacy_trim_m=0, privacy_zones=[zone]))
    inside = frame.loc[frame["reason"] == "privacy"]
    assert sorted(inside["source_row"] - 2) == list(range(45, 56))
    assert set(inside["detail"]) == {"privacy zone home"}


@pytest.mark.parametrize(
    ("n", "speed", "short"), [(4, 50.0, True), (20, 1.0, True), (20, 10.0, False)]
)
def test_short_trips_are_rejected(n: int, speed: float, short: bool) -> None:
    frame = drive(n, speed_mps=speed, noise_m=0)
    split_trips(frame, settings())
    reject_short_trips(frame, settings(min_trip_points=5, min_trip_m=100))
    assert (set(reasons(frame).values()) == {"short_trip"}) is short
    assert bool(frame["reason"].notna().all()) is short


def test_every_step_copes_with_a_trace_whose_fixes_are_all_rejected() -> None:
    frame = drive(3)
    frame["reason"] = "high_hdop"
    split_trips(frame, settings())
    apply_privacy(frame, settings())
    reject_short_trips(frame, settings())
    assert set(frame["reason"]) == {"high_hdop"} and frame["trip_id"].isna().all()
