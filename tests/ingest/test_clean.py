"""Cleaning: value checks, duplicates and kinematic outliers, each with its reason."""

from __future__ import annotations

import pandas as pd

from pipeline.config import settings_from_mapping
from pipeline.ingest.clean import (
    check_values,
    reject_acceleration_spikes,
    reject_duplicates,
    reject_speed_spikes,
)
from tests.ingest.frames import METRES_PER_DEGREE_LAT, drive, reasons

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).ingest
NOW = pd.Timestamp("2026-11-25T00:00:00Z")


def test_value_checks_reject_impossible_coordinates_times_and_accuracy() -> None:
    frame = drive(10)
    frame.loc[0, "lat"] = 91.0
    frame.loc[1, ["lon", "lat"]] = 0.0
    frame.loc[2, "lon"] = float("nan")
    frame.loc[3, "observed_at"] = pd.Timestamp("1999-12-31T23:59:59Z")
    frame.loc[4, "observed_at"] = pd.Timestamp("2027-01-01T00:00:00Z")
    frame.loc[5, "hdop"] = 25.0
    check_values(frame, SETTINGS, NOW)
    assert reasons(frame) == {
        2: "out_of_range",
        3: "null_island",
        4: "out_of_range",
        5: "time_before_2000",
        6: "time_in_future",
        7: "high_hdop",
    }
    assert frame.loc[5, "detail"] == "hdop=25.0"


def test_a_fix_within_the_future_tolerance_is_kept() -> None:
    frame = drive(3, start="2026-11-25T00:04:00Z")
    check_values(frame, SETTINGS, NOW)
    assert reasons(frame) == {}


def test_exact_duplicates_and_repeated_timestamps() -> None:
    frame = drive(10)
    copy = frame.iloc[[3]].assign(source_row=100)
    moved = frame.iloc[[5]].assign(source_row=101, lat=frame.loc[5, "lat"] + 0.0001)
    frame = pd.concat([frame, copy, moved], ignore_index=True)
    frame = frame.sort_values(["trace_id", "observed_at", "source_row"], ignore_index=True)
    reject_duplicates(frame)
    assert reasons(frame) == {100: "duplicate", 101: "repeated_timestamp"}
    assert frame.loc[frame["source_row"] == 100, "detail"].item() == "same fix as row 5"


def test_speed_spike_and_teleport_are_rejected_but_a_fast_drive_is_not() -> None:
    frame = drive(30, speed_mps=40.0)  # 144 km/h on a motorway is fine
    frame.loc[10, "lon"] += 300 / (METRES_PER_DEGREE_LAT * 0.5)  # 300 m sideways for one fix
    frame.loc[20, "lat"] += 5000 / METRES_PER_DEGREE_LAT  # 5 km away for one fix
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {12: "impossible_speed", 22: "teleport"}


def test_two_consecutive_spikes_are_both_caught() -> None:
    frame = drive(30)
    frame.loc[[10, 11], "lat"] += 2000 / METRES_PER_DEGREE_LAT
    reject_speed_spikes(frame, SETTINGS)
    assert set(reasons(frame)) == {12, 13}


def test_acceleration_spike_in_reported_speed() -> None:
    frame = drive(20, speed_mps=10.0)
    frame.loc[8, "speed_mps"] = 60.0  # 10 -> 60 -> 10 m/s within two seconds
    reject_acceleration_spikes(frame, SETTINGS)
    assert reasons(frame) == {10: "impossible_acceleration"}


def test_clean_noisy_drive_is_untouched() -> None:
    frame = drive(300, noise_m=15.0, speed_mps=15.0)
    check_values(frame, SETTINGS, NOW)
    reject_duplicates(frame)
    reject_speed_spikes(frame, SETTINGS)
    reject_acceleration_spikes(frame, SETTINGS)
    assert reasons(frame) == {}
