"""Cleaning's limits, details and trace boundaries, each checked at the value where it turns.

Written for the mutants of ``pipeline/ingest/clean.py`` that the cleaning tests let through
(docs/testing.md, "Mutation testing"); expected answers are worked out by hand, or by a plain
loop over the documented rule.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import settings_from_mapping
from pipeline.geodesy import distances_m, step_distances_m
from pipeline.ingest.clean import (
    check_values,
    reject_acceleration_spikes,
    reject_duplicates,
    reject_speed_spikes,
)
from tests.ingest.frames import METRES_PER_DEGREE_LAT, drive, reasons

NOW = pd.Timestamp("2026-11-25T00:00:00Z")
START = pd.Timestamp("2026-10-01T08:00:00Z")
EAST_M_PER_DEGREE = METRES_PER_DEGREE_LAT * math.cos(math.radians(60.17))


def ingest_settings(**ingest: object) -> object:
    return settings_from_mapping(
        {"regions": [{"name": "t", "osm": "t.osm"}], "ingest": ingest}
    ).ingest


SETTINGS = ingest_settings()  # max_speed_mps 70, max_accel_mps2 12, max_hdop 10, trip_gap_m 500


def at_seconds(frame: pd.DataFrame, seconds: list[float]) -> pd.DataFrame:
    """The frame with its fixes at these seconds after START."""
    times = [START + pd.Timedelta(seconds=s) for s in seconds]
    return frame.assign(observed_at=pd.DatetimeIndex(times).as_unit("ms"))


def test_value_details_name_the_bad_values() -> None:
    frame = drive(4, noise_m=0)
    frame.loc[0, "lat"] = 91.0
    frame.loc[1, "observed_at"] = pd.Timestamp("1999-12-31T23:59:59Z")
    frame.loc[2, "observed_at"] = pd.Timestamp("2027-01-01T00:00:00Z")
    check_values(frame, SETTINGS, NOW)
    assert frame["detail"].tolist()[:3] == [
        "lon=24.94 lat=91.0",
        "observed_at=1999-12-31 23:59:59+00:00",
        "observed_at=2027-01-01 00:00:00+00:00 > 2026-11-25 00:05:00+00:00",
    ]


def test_values_at_their_limits_are_kept() -> None:
    frame = drive(8, noise_m=0)
    frame.loc[0, "lat"] = 90.0
    frame.loc[1, "lat"] = -90.0
    frame.loc[2, "lon"] = 180.0
    frame.loc[3, "lon"] = -180.0
    frame.loc[4, "lat"] = 0.0  # on the equator, not null island
    frame.loc[5, "lon"] = 0.0  # on the prime meridian, not null island
    frame.loc[6, ["observed_at", "hdop"]] = [pd.Timestamp("2000-01-01T00:00:00Z"), 10.0]
    frame.loc[7, "observed_at"] = NOW + pd.Timedelta(seconds=300)  # the future tolerance
    check_values(frame, SETTINGS, NOW)
    assert reasons(frame) == {}
    beyond = drive(1, noise_m=0).assign(lon=180.5)
    check_values(beyond, SETTINGS, NOW)
    assert reasons(beyond) == {2: "out_of_range"}


def test_a_repeated_time_names_the_first_row() -> None:
    frame = drive(6, noise_m=0)
    moved = frame.iloc[[3]].assign(source_row=100, lat=frame.loc[3, "lat"] + 0.0001)
    frame = pd.concat([frame, moved], ignore_index=True)
    frame = frame.sort_values(["trace_id", "observed_at", "source_row"], ignore_index=True)
    reject_duplicates(frame)
    assert reasons(frame) == {100: "repeated_timestamp"}
    assert frame.loc[frame["source_row"] == 100, "detail"].item() == "same time as row 5"


def test_a_trace_of_two_identical_fixes_has_one_duplicate() -> None:
    frame = drive(1, noise_m=0)
    frame = pd.concat([frame, frame.assign(source_row=3)], ignore_index=True)
    reject_duplicates(frame)
    assert reasons(frame) == {3: "duplicate"}


def test_a_copy_of_a_rejected_fix_is_a_duplicate_with_or_without_a_third_copy() -> None:
    # docs/ingest.md: `duplicate` is "the same time and position as an earlier row of the trace"
    for copies in (2, 3):
        first = drive(1, noise_m=0)
        frame = pd.concat(
            [first.assign(source_row=2 + i) for i in range(copies)], ignore_index=True
        )
        frame.loc[0, "reason"] = "high_hdop"
        reject_duplicates(frame)
        assert reasons(frame) == {2: "high_hdop"} | dict.fromkeys(range(3, 2 + copies), "duplicate")


def test_a_drive_sampled_every_two_seconds_at_40_mps_is_untouched() -> None:
    frame = at_seconds(drive(20, speed_mps=80.0, noise_m=0), [2.0 * i for i in range(20)])
    reject_speed_spikes(frame, SETTINGS)  # 80 m every 2 s is 40 m/s
    assert reasons(frame) == {}


def test_a_spike_between_fixes_half_a_second_apart_is_caught() -> None:
    # 2 Hz at 10 m/s (5 m steps); fix 10 is 50 m east: 50 m in 0.5 s is 100 m/s
    frame = at_seconds(drive(20, speed_mps=5.0, noise_m=0), [0.5 * i for i in range(20)])
    frame.loc[10, "lon"] += 50 / EAST_M_PER_DEGREE
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {12: "impossible_speed"}


def test_spike_details_and_a_spike_next_to_the_trace_end() -> None:
    frame = drive(10, noise_m=0)  # 10 m steps, 1 s apart
    frame.loc[3, "lon"] += 300 / EAST_M_PER_DEGREE  # sqrt(300² + 10²) = 300.2 m away and back
    frame.loc[8, "lon"] += 2000 / EAST_M_PER_DEGREE  # 2 km: farther than trip_gap_m
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {5: "impossible_speed", 10: "teleport"}
    assert frame["detail"].dropna().tolist() == [
        "jump of 300 m at 300 m/s and back",
        "jump of 2000 m at 2000 m/s and back",
    ]


def test_a_jump_of_exactly_trip_gap_m_is_not_a_teleport() -> None:
    frame = drive(5, noise_m=0)
    frame.loc[2, "lon"] += 800 / EAST_M_PER_DEGREE
    lon, lat = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    jump_m = float(step_distances_m(lon, lat)[1])  # as ingest measures it
    reject_speed_spikes(frame, ingest_settings(trip_gap_m=jump_m))
    assert reasons(frame) == {4: "impossible_speed"}


def test_two_jumps_the_same_way_are_no_spike() -> None:
    # fix 10 is 5 km north, fixes 11... 10 km: the neighbours of fix 10 are 10 km apart in 2 s
    frame = drive(20, noise_m=0)
    frame.loc[10, "lat"] += 5000 / METRES_PER_DEGREE_LAT
    frame.loc[11:, "lat"] += 10_000 / METRES_PER_DEGREE_LAT
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {}


def test_a_run_of_four_fixes_away_is_not_a_spike() -> None:
    frame = drive(20, noise_m=0)
    frame.loc[10:13, "lat"] += 2000 / METRES_PER_DEGREE_LAT  # MAX_SPIKE_RUN is 3
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {}


def test_neighbours_too_far_apart_for_their_half_second_are_no_spike() -> None:
    # fix 1 is 100 m east; fixes 0 and 2 are 50 m apart in 0.5 s: 100 m/s, also impossible
    frame = at_seconds(drive(3, speed_mps=25.0, noise_m=0), [0.0, 0.25, 0.5])
    frame.loc[1, "lon"] += 100 / EAST_M_PER_DEGREE
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {}


def test_a_spike_never_spans_two_traces() -> None:
    # trace a's last fix and trace b's first are 5 km north; a's fix 8 and b's fix 1 are close
    a = drive(10, trace_id="a", noise_m=0)
    b = drive(10, trace_id="b", start="2026-10-01T08:00:10Z", noise_m=0).assign(
        lat=lambda f: f["lat"] + 100 / METRES_PER_DEGREE_LAT,
        source_row=lambda f: f.source_row + 100,
    )
    frame = pd.concat([a, b], ignore_index=True)
    frame.loc[[9, 10], "lat"] += 5000 / METRES_PER_DEGREE_LAT
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == {}


def test_a_spike_whose_neighbours_connect_at_exactly_max_speed_is_caught() -> None:
    frame = drive(5, noise_m=0)
    frame.loc[3:, "lat"] += 90 / METRES_PER_DEGREE_LAT  # fix 1 to fix 3: about 110 m in 2 s
    frame.loc[2, "lon"] += 2000 / EAST_M_PER_DEGREE
    lon, lat = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    bridge_m = float(distances_m(lon[1:2], lat[1:2], lon[3:4], lat[3:4])[0])
    reject_speed_spikes(frame, ingest_settings(max_speed_mps=bridge_m / 2))
    assert reasons(frame) == {4: "teleport"}


def test_a_drive_at_exactly_max_speed_is_untouched() -> None:
    frame = drive(20, speed_mps=30.0, noise_m=0)
    fastest = float(step_distances_m(frame["lon"].to_numpy(), frame["lat"].to_numpy()).max())
    reject_speed_spikes(frame, ingest_settings(max_speed_mps=fastest))  # steps 1 s apart
    assert reasons(frame) == {}


# ---- reported-speed spikes against a plain loop over the documented rule


def expected_acceleration_rejects(frame: pd.DataFrame, limit: float) -> dict[int, str]:
    """Source row -> detail of each fix whose reported speed jumps away and back.

    Among the fixes not yet rejected and with a speed, a fix with such a fix before and after
    it in its trace is a spike when both accelerations exceed ``limit`` with opposite signs.
    """
    rows = [r for r in frame.itertuples() if pd.isna(r.reason) and not math.isnan(r.speed_mps)]
    found = {}
    for before, fix, after in zip(rows, rows[1:], rows[2:], strict=False):
        if not before.trace_id == fix.trace_id == after.trace_id:
            continue
        seconds_in = max((fix.observed_at - before.observed_at).total_seconds(), 1e-3)
        seconds_out = max((after.observed_at - fix.observed_at).total_seconds(), 1e-3)
        a_in = (fix.speed_mps - before.speed_mps) / seconds_in
        a_out = (after.speed_mps - fix.speed_mps) / seconds_out
        if abs(a_in) > limit and abs(a_out) > limit and a_in * a_out < 0:
            found[fix.source_row] = (
                f"speed {fix.speed_mps:.1f} m/s between {before.speed_mps:.1f} "
                f"and {after.speed_mps:.1f}"
            )
    return found


FIX = st.tuples(
    st.sampled_from([0.5, 1.0, 2.0]),  # seconds since the trace's previous fix
    st.one_of(st.integers(0, 40).map(float), st.just(math.nan)),  # reported speed
    st.booleans(),  # already rejected
)


@settings(max_examples=300, deadline=None, derandomize=True)  # the same examples every run
@given(traces=st.lists(st.lists(FIX, min_size=1, max_size=8), min_size=1, max_size=3))
def test_acceleration_spikes_follow_the_rule(
    traces: list[list[tuple[float, float, bool]]],
) -> None:
    # whole m/s over 0.5, 1 or 2 s: accelerations are exact, so some sit on the 12 m/s² limit
    parts = []
    for number, fixes in enumerate(traces):
        part = drive(len(fixes), trace_id=f"t{number}", noise_m=0)
        seconds = np.cumsum([gap for gap, _, _ in fixes])
        part = at_seconds(part, seconds.tolist())
        part["speed_mps"] = [speed for _, speed, _ in fixes]
        part["reason"] = [("high_hdop" if gone else None) for _, _, gone in fixes]
        parts.append(part.assign(source_row=part["source_row"] + 100 * number))
    frame = pd.concat(parts, ignore_index=True)
    expected = expected_acceleration_rejects(frame, SETTINGS.max_accel_mps2)
    before = reasons(frame)
    reject_acceleration_spikes(frame, SETTINGS)
    got = {
        row: detail
        for row, reason, detail in zip(
            frame["source_row"], frame["reason"], frame["detail"], strict=True
        )
        if reason == "impossible_acceleration"
    }
    assert got == expected
    assert {row: reasons(frame)[row] for row in before} == before  # earlier reasons stay


def test_a_zigzag_of_four_spikes_is_caught_in_a_second_pass() -> None:
    # fixes 10 and 12 are 2 km east, 11 and 13 are 2 km west: the first pass finds 11 and 12
    # (their neighbours meet), the second then sees 10 and 13 as a run of two
    frame = drive(20, noise_m=0)
    frame.loc[[10, 12], "lon"] += 2000 / EAST_M_PER_DEGREE
    frame.loc[[11, 13], "lon"] -= 2000 / EAST_M_PER_DEGREE
    reject_speed_spikes(frame, SETTINGS)
    assert reasons(frame) == dict.fromkeys(range(12, 16), "teleport")


def test_a_fix_away_and_back_at_exactly_max_speed_is_kept() -> None:
    frame = drive(3, noise_m=0)
    frame.loc[1, "lon"] += 100 / EAST_M_PER_DEGREE
    frame.loc[2, ["lon", "lat"]] = frame.loc[0, ["lon", "lat"]]  # back where it started
    out_m, back_m = step_distances_m(frame["lon"].to_numpy(), frame["lat"].to_numpy())[:2]
    assert out_m == back_m  # the same pair of points both ways
    reject_speed_spikes(frame, ingest_settings(max_speed_mps=float(out_m)))  # 1 s apart
    assert reasons(frame) == {}


@pytest.mark.parametrize(
    ("speeds", "seconds", "spikes"),
    [
        ([10, 20, 10], [0, 0.5, 1.0], [3]),  # ±20 m/s² over half seconds
        ([10, 22, 9], [0, 1, 2], []),  # +12 (not above the limit), then -13
        ([10, 23, 11], [0, 1, 2], []),  # +13, then -12
        ([40, 10, 30, 10], [0, 1, 2, 3], [3, 4]),  # -30/+20 at fix 1, +20/-20 at fix 2
    ],
)
def test_reported_speed_spikes_by_hand(
    speeds: list[float], seconds: list[float], spikes: list[int]
) -> None:
    frame = at_seconds(drive(len(speeds), noise_m=0), seconds).assign(speed_mps=speeds)
    reject_acceleration_spikes(frame, SETTINGS)
    assert reasons(frame) == dict.fromkeys(spikes, "impossible_acceleration")


def test_a_reported_speed_spike_at_a_later_traces_second_fix() -> None:
    a = drive(3, trace_id="a", noise_m=0)
    b = drive(4, trace_id="b", start="2026-10-01T08:00:10Z", noise_m=0).assign(
        speed_mps=[10.0, 40.0, 10.0, 10.0], source_row=lambda f: f.source_row + 100
    )
    frame = pd.concat([a, b], ignore_index=True)
    reject_acceleration_spikes(frame, SETTINGS)
    assert reasons(frame) == {103: "impossible_acceleration"}


def test_a_reported_speed_spike_names_its_speed_and_its_neighbours() -> None:
    frame = drive(4, noise_m=0).assign(speed_mps=[40.0, 10.0, 30.0, 10.0])
    reject_acceleration_spikes(frame, SETTINGS)
    assert frame["detail"].tolist()[1:3] == [
        "speed 10.0 m/s between 40.0 and 30.0",
        "speed 30.0 m/s between 10.0 and 10.0",
    ]
