"""Keyed pseudonyms (stable under one key, unlinkable without it) and per-trip end trimming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from pipeline.config import settings_from_mapping
from pipeline.errors import ConfigError
from pipeline.ingest.privacy import load_pseudonym_key, pseudonym, pseudonymize, trip_end_mask
from pipeline.ingest.trips import apply_privacy, split_trips
from tests.ingest.frames import drive

KEY = b"0123456789abcdef-test-key"


def ingest_settings(**ingest: object) -> object:
    return settings_from_mapping(
        {"regions": [{"name": "t", "osm": "t.osm"}], "ingest": ingest}
    ).ingest


def test_pseudonyms_are_stable_per_key_and_hide_the_raw_value() -> None:
    values = np.array(["alice", "bob", "alice"], dtype=object)
    first = pseudonymize(KEY, values, 3)
    assert first[0] == first[2] != first[1]
    assert first.tolist() == pseudonymize(KEY, values, 3).tolist()
    assert pseudonymize(b"another-secret-key-123", values, 3)[0] != first[0]
    assert all(len(p) == 16 and "alice" not in p for p in first)
    assert first[0] == pseudonym(KEY, "alice")
    assert pseudonymize(KEY, "alice", 2).tolist() == [first[0]] * 2  # one id for every row


def test_key_from_environment_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MY_KEY", "a-secret-from-the-env")
    assert (
        load_pseudonym_key(ingest_settings(pseudonym_key_env="MY_KEY")) == b"a-secret-from-the-env"
    )
    key_file = tmp_path / "key"
    key_file.write_text("a-secret-from-a-file\n")
    monkeypatch.delenv("MY_KEY")
    settings = ingest_settings(pseudonym_key_env="MY_KEY", pseudonym_key_file=str(key_file))
    assert load_pseudonym_key(settings) == b"a-secret-from-a-file"


def test_missing_or_short_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROADCOVER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable ROADCOVER_PSEUDONYM_KEY"):
        load_pseudonym_key(ingest_settings())
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        load_pseudonym_key(ingest_settings())


def expected_trip_ends(steps_by_trip: list[list[float]], trim_m: float) -> np.ndarray:
    """Per fix, whether it is within trim_m of its trip's start or end, one trip at a time."""
    marks = []
    for steps in steps_by_trip:
        travelled = np.r_[0.0, np.cumsum(steps)]
        marks.append((travelled < trim_m) | (travelled[-1] - travelled < trim_m))
    return np.concatenate(marks) if trim_m > 0 else np.zeros(sum(map(len, marks)), dtype=bool)


@settings(max_examples=200, deadline=None)
@given(
    steps_by_trip=st.lists(
        st.lists(st.integers(0, 60).map(float), max_size=25), min_size=1, max_size=6
    ),
    trim_m=st.integers(0, 400).map(float),
    data=st.data(),
)
def test_every_trip_of_a_chunk_is_trimmed_at_its_own_ends(
    steps_by_trip: list[list[float]], trim_m: float, data: st.DataObject
) -> None:
    # trips in any order: their codes are any distinct integers, not rising
    codes_of_trips = data.draw(st.permutations(range(len(steps_by_trip))))
    codes = np.concatenate(
        [np.full(len(s) + 1, c) for s, c in zip(steps_by_trip, codes_of_trips, strict=True)]
    )
    step_m = np.concatenate([np.r_[s, 0.0] for s in steps_by_trip])  # 0 at each trip's last fix
    # whole metres: sums are exact, so no fix sits a rounding error from the limit
    got = trip_end_mask(codes, step_m, trim_m)
    np.testing.assert_array_equal(got, expected_trip_ends(steps_by_trip, trim_m))


SPHERE = Geod(a=6_371_009.0, f=0.0)
TRIMS = {trim_m: ingest_settings(privacy_trim_m=trim_m) for trim_m in (0.0, 50.0, 200.0)}


@settings(max_examples=25, deadline=None)
@given(
    trips=st.lists(
        st.tuples(st.integers(1, 60), st.floats(3.0, 25.0), st.integers(0, 2)),
        min_size=1,
        max_size=5,
    ),
    trim_m=st.sampled_from(sorted(TRIMS)),
)
def test_apply_privacy_trims_the_ends_of_every_trip_of_several_traces(
    trips: list[tuple[int, float, int]], trim_m: float
) -> None:
    """trips: (fixes, speed m/s, trace); a trace's trips are 5 minutes apart."""
    parts = []
    for number, (fixes, speed, trace) in enumerate(trips):
        start = pd.Timestamp("2026-10-01T08:00:00Z") + pd.Timedelta(minutes=5 * number)
        part = drive(fixes, speed, str(start), f"trace-{trace}", f"dev-{trace}", noise_m=0.0)
        parts.append(part.assign(lon=part["lon"] + 0.01 * number, trip=number))
    frame = pd.concat(parts, ignore_index=True)
    frame["source_row"] = np.arange(len(frame))
    frame = frame.sort_values(["trace_id", "observed_at"], ignore_index=True)
    split_trips(frame, TRIMS[trim_m])
    assert frame.groupby("trip")["trip_id"].nunique().eq(1).all()  # one trip per drive
    apply_privacy(frame, TRIMS[trim_m])
    for _, trip in frame.groupby("trip"):
        _, _, step_m = SPHERE.inv(
            trip["lon"].to_numpy()[:-1],
            trip["lat"].to_numpy()[:-1],
            trip["lon"].to_numpy()[1:],
            trip["lat"].to_numpy()[1:],
        )
        travelled = np.r_[0.0, np.cumsum(step_m)]
        remaining = travelled[-1] - travelled
        expected = ((travelled < trim_m) | (remaining < trim_m)) & (trim_m > 0)
        clear = (np.abs(travelled - trim_m) > 1e-3) & (np.abs(remaining - trim_m) > 1e-3)
        got = (trip["reason"] == "privacy").to_numpy()
        np.testing.assert_array_equal(got[clear], expected[clear])
