"""Trip splitting, trip-end trimming, privacy zones and short trips."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.geodesy import step_distances_m
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
    # privacy radius at HDOP 1: 200 + 4 x sqrt(5^2 + 5^2) = 228.3 m around the first three
    # fixes (0-20 m) and the last three (970-990 m): fixes 0..24 are less than that from the
    # third (240 - 20 m), 75..99 from the third last
    assert sorted(trimmed) == [*range(25), *range(75, 100)]


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


def two_trips_per_trace(trace_id: str) -> pd.DataFrame:
    """Two 10-fix drives of one trace, five minutes apart (a time gap: two trips)."""
    first = drive(10, trace_id=trace_id, noise_m=0)
    later = drive(10, start="2026-10-01T08:05:00Z", trace_id=trace_id, noise_m=0)
    return pd.concat([first, later], ignore_index=True)


def test_trips_are_numbered_within_their_own_trace() -> None:
    frame = pd.concat([two_trips_per_trace("a"), two_trips_per_trace("b")], ignore_index=True)
    split_trips(frame, settings())
    expected = [f"{trace}-{number:03d}" for trace in "ab" for number in (1, 2) for _ in range(10)]
    assert frame["trip_id"].tolist() == expected


def at_seconds(frame: pd.DataFrame, seconds: list[float]) -> pd.DataFrame:
    """The frame with its fixes at these seconds after 08:00."""
    start = pd.Timestamp("2026-10-01T08:00:00Z")
    times = [start + pd.Timedelta(seconds=s) for s in seconds]
    return frame.assign(observed_at=pd.DatetimeIndex(times).as_unit("ms"))


def test_a_time_gap_of_exactly_trip_gap_s_does_not_split() -> None:
    # fixes 10 m apart; gaps of 120 s (= trip_gap_s, same trip) and 120.5 s (a new trip)
    frame = at_seconds(drive(6, noise_m=0), [0, 1, 121, 122, 242.5, 243.5])
    split_trips(frame, settings(trip_gap_s=120))
    assert frame["trip_id"].tolist() == ["trace-a-001"] * 4 + ["trace-a-002"] * 2


def test_split_and_teleport_limits_are_exclusive() -> None:
    """A jump of exactly trip_gap_m keeps the trip; exactly max_speed_mps is no teleport."""
    frame = drive(2, speed_mps=400.0, noise_m=0)  # one step of about 400 m in 1 s
    lon, lat = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    step_m = float(step_distances_m(lon, lat)[0])  # as ingest measures it
    split_trips(frame, settings(trip_gap_m=step_m, max_speed_mps=1.0))
    assert frame["trip_id"].tolist() == ["trace-a-001"] * 2
    split_trips(frame, settings(trip_gap_m=step_m / 2, max_speed_mps=step_m))
    assert frame["trip_id"].tolist() == ["trace-a-001", "trace-a-002"]
    assert not frame["split_teleport"].any()  # step_m in 1 s is step_m m/s: possible


def test_a_jump_in_half_a_second_is_judged_at_its_own_speed() -> None:
    # 50 m in 0.5 s is 100 m/s (> 70: a teleport); 50 m in 1 s is 50 m/s (a new trip only)
    frame = at_seconds(drive(3, speed_mps=50.0, noise_m=0), [0, 0.5, 1.5])
    split_trips(frame, settings(trip_gap_m=40, max_speed_mps=70))
    assert frame["trip_id"].tolist() == ["trace-a-001", "trace-a-002", "trace-a-003"]
    assert frame["split_teleport"].tolist() == [False, True, False]


def test_short_trip_limits_are_exclusive_and_the_detail_says_why() -> None:
    kept = drive(5, speed_mps=50.0, noise_m=0)  # 5 fixes, 200 m: exactly min_trip_points
    split_trips(kept, settings())
    reject_short_trips(kept, settings(min_trip_points=5, min_trip_m=100))
    assert reasons(kept) == {}
    parked = drive(5, speed_mps=0.0, noise_m=0)  # 0 m long, with no length limit
    split_trips(parked, settings())
    reject_short_trips(parked, settings(min_trip_points=5, min_trip_m=0))
    assert reasons(parked) == {}
    short = drive(4, speed_mps=50.0, noise_m=0)  # 4 fixes, 150 m
    split_trips(short, settings())
    reject_short_trips(short, settings(min_trip_points=5, min_trip_m=100))
    assert set(short["detail"]) == {"trip of 4 fixes, 150 m"}
