"""Per-trip plausibility flags: teleports, robots, replays, two places at once, shared fixes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import settings_from_mapping
from pipeline.ingest.plausibility import (
    FLAG_WEIGHTS,
    _repeated,
    coordinate_keys,
    flag_trips,
    shared_keys,
    summarize_trips,
)
from pipeline.ingest.trips import split_trips
from tests.ingest.frames import drive

SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).ingest
NO_HISTORY = pd.DataFrame(columns=["trip_id", "contributor_id", "started_at", "fingerprint"])


def flagged(frame: pd.DataFrame, history: pd.DataFrame = NO_HISTORY) -> dict[str, list[str]]:
    frame = frame.sort_values(["trace_id", "observed_at"], ignore_index=True)
    split_trips(frame, SETTINGS)
    trips = flag_trips(summarize_trips(frame), frame, history, SETTINGS)
    return dict(zip(trips["trip_id"], trips["flags"], strict=True))


def test_honest_noisy_drives_are_plausible() -> None:
    frame = pd.concat([drive(seed=1), drive(trace_id="b", device_id="dev-b", seed=2)])
    assert flagged(frame) == {"b-001": [], "trace-a-001": []}


def test_robot_perfect_trace_is_flagged() -> None:
    assert flagged(drive(noise_m=0.0)) == {"trace-a-001": ["robot_perfect"]}


def test_replay_by_another_contributor_or_later_is_flagged_but_not_the_original() -> None:
    original = drive(seed=5)
    copy = original.assign(trace_id="copy", device_id="dev-copy", contributor_id="mallory")
    copy["observed_at"] = copy["observed_at"] + pd.Timedelta(days=3)
    assert flagged(pd.concat([original, copy])) == {"copy-001": ["replay"], "trace-a-001": []}


def test_replay_of_an_earlier_batch_is_flagged() -> None:
    original = drive(seed=5)
    split_trips(original, SETTINGS)
    history = summarize_trips(original)
    copy = original.drop(columns=["trip_id", "split_teleport"]).assign(
        trace_id="copy", contributor_id="mallory"
    )
    assert flagged(copy, history) == {"copy-001": ["replay"]}


def test_one_device_in_two_places_at_once() -> None:
    here = drive(seed=1, trace_id="file-1", device_id="cam")
    there = drive(seed=2, trace_id="file-2", device_id="cam", lat0=60.3)
    assert flagged(pd.concat([here, there])) == {
        "file-1-001": ["device_in_two_places"],
        "file-2-001": ["device_in_two_places"],
    }


def test_many_devices_at_identical_coordinates() -> None:
    base = drive(seed=3)
    farm = [base.assign(trace_id=f"t{i}", device_id=f"d{i}") for i in range(3)]
    for i, fake in enumerate(farm):
        fake["observed_at"] = fake["observed_at"] + pd.Timedelta(hours=i)
        fake["contributor_id"] = "same"
    flags = flagged(pd.concat(farm))
    assert all("shared_coordinates" in names for names in flags.values())


def test_trust_score_falls_with_each_flag() -> None:
    frame = drive(noise_m=0.0)
    split_trips(frame, SETTINGS)
    trips = flag_trips(summarize_trips(frame), frame, NO_HISTORY, SETTINGS)
    assert trips["trust_score"].item() == 1 - FLAG_WEIGHTS["robot_perfect"]
    assert not trips["plausible"].item()


def test_shared_keys_keep_only_the_keys_of_several_rows() -> None:
    frames = [drive(trace_id=f"t{i}", device_id=f"dev-{i}", seed=i) for i in range(3)]
    frames[2][["lon", "lat"]] = frames[0][["lon", "lat"]].to_numpy()  # a copy of t0's positions
    parts = []
    for frame in frames:
        split_trips(frame, SETTINGS)
        parts.append(coordinate_keys(frame))
    everything = pd.concat(parts, ignore_index=True)
    shared = shared_keys(parts)
    repeated = everything["key"].duplicated(keep=False)
    assert len(shared) == repeated.sum() > 0
    assert set(shared["trip_id"]) == {"t0-001", "t2-001"}
    assert shared["key"].tolist() == everything.loc[repeated, "key"].tolist()
    assert shared_keys([]).empty and list(shared_keys([]).columns) == list(everything.columns)


@given(st.lists(st.integers(-3, 3) | st.integers(-(2**62), 2**62), max_size=60))
def test_repeated_values_are_marked_as_pandas_marks_duplicates(values: list[int]) -> None:
    keys = np.array(values, dtype="int64")
    expected = pd.Series(keys, dtype="int64").duplicated(keep=False).to_numpy()
    np.testing.assert_array_equal(_repeated(keys), expected)
