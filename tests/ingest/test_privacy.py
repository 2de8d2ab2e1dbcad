"""Keyed pseudonyms (stable under one key, unlinkable without it) and per-trip end trimming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from pipeline.config import PrivacyZone, settings_from_mapping
from pipeline.errors import ConfigError
from pipeline.geodesy import distances_m
from pipeline.ingest.privacy import (
    key_fingerprint,
    load_pseudonym_key,
    privacy_zone_names,
    pseudonym,
    pseudonymize,
    trip_end_mask,
)
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


@settings(max_examples=200, deadline=None, derandomize=True)  # the same examples every run
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


@settings(max_examples=25, deadline=None, derandomize=True)
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


# HMAC-SHA256 under KEY, computed with openssl (`printf '%s' TEXT | openssl dgst -sha256 -hmac KEY`)
HMAC_OF_FINGERPRINT_TEXT = "8ec3b1500ed836a66302c688a9a200a06d25750c1c677f03c91c8bab6f2e47fd"
HMAC_OF_ALICE = "e574d7c57c8410187a6670283e42082eadbde939af32ed594e533d32ac85ad45"
HMAC_OF_PREFIXED_DEVICE = "ac55e30fb974c80bff61bf6c769d3a45e679a0dd8a286729145fa3d67d1b9000"


def test_key_fingerprint_and_pseudonyms_are_the_published_hmacs() -> None:
    assert key_fingerprint(KEY) == HMAC_OF_FINGERPRINT_TEXT
    assert pseudonym(KEY, "alice") == HMAC_OF_ALICE[:16]
    prefixed = pseudonymize(KEY, np.array(["dev-1"], dtype=object), 1, prefix="trace:abc:")
    assert prefixed.tolist() == [HMAC_OF_PREFIXED_DEVICE[:16]]


def test_a_row_without_identifier_does_not_take_another_rows_pseudonym() -> None:
    got = pseudonymize(KEY, np.array(["alice", None], dtype=object), 2)
    assert got[0] == HMAC_OF_ALICE[:16] != got[1]


def test_a_key_of_exactly_16_bytes_is_accepted_and_15_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "k" * 16)
    assert load_pseudonym_key(ingest_settings()) == b"k" * 16
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "k" * 15)
    with pytest.raises(
        ConfigError,
        match="^the pseudonym key from environment variable ROADCOVER_PSEUDONYM_KEY is shorter "
        "than 16 bytes$",
    ):
        load_pseudonym_key(ingest_settings())


def test_key_file_errors_name_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("ROADCOVER_PSEUDONYM_KEY", raising=False)
    short = tmp_path / "short.key"
    short.write_text("short\n")
    with pytest.raises(ConfigError, match=f"^the pseudonym key from key file {short} is shorter"):
        load_pseudonym_key(ingest_settings(pseudonym_key_file=str(short)))
    missing = tmp_path / "missing.key"
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read the pseudonym key file: "):
        load_pseudonym_key(ingest_settings(pseudonym_key_file=str(missing)))


def test_the_missing_key_message_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROADCOVER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError) as error:
        load_pseudonym_key(ingest_settings())
    assert str(error.value) == (
        "no pseudonym key: set the environment variable ROADCOVER_PSEUDONYM_KEY to a secret of "
        "at least 16 characters (e.g. `export ROADCOVER_PSEUDONYM_KEY=$(openssl rand -hex 32)`), "
        "or name a key file in ingest.pseudonym_key_file; keep the same key for every batch"
    )


def test_trip_end_mask_limits_and_empty_input() -> None:
    # fixes 0, 50, 100, 150, 200 m along one trip: only those less than 50 m from an end go
    got = trip_end_mask(np.zeros(5, dtype=np.int64), np.array([50.0, 50, 50, 50, 0]), 50.0)
    assert got.tolist() == [True, False, False, False, True]
    assert trip_end_mask(np.zeros(0, dtype=np.int64), np.zeros(0), 50.0).tolist() == []
    one_metre = trip_end_mask(np.zeros(4, dtype=np.int64), np.array([1.0, 1, 1, 0]), 1.0)
    assert one_metre.tolist() == [True, False, False, True]  # a trim of 1 m trims too
    untrimmed = trip_end_mask(np.zeros(3, dtype=np.int64), np.array([1.0, 1, 0]), 0.0)
    assert untrimmed.dtype == bool and not untrimmed.any()  # a mask, to index rows with
    # a trim of 0 trims nothing, also where the second trip's distance along the whole array
    # (a running sum) exceeds its own total by a rounding error
    steps = np.array([51.18216247002567, 95.04636963259352, 14.415961271963374, 0.0])
    steps = np.r_[steps, 94.86494471372438, 31.183145201048546, 42.332644897257566, 0.0]
    assert not trip_end_mask(np.repeat([0, 1], 4), steps, 0.0).any()


def test_a_fix_in_two_zones_gets_the_first_zones_name_and_the_edge_is_inside() -> None:
    lon, lat = np.array([24.94, 24.95, 25.5]), np.array([60.17, 60.17, 60.17])
    edge_m = float(distances_m(lon[:1], lat[:1], lon[1:2], lat[1:2])[0])  # about 554 m
    zones = (
        PrivacyZone("home", 24.94, 60.17, edge_m),  # holds fix 0 and, on its edge, fix 1
        PrivacyZone("work", 24.94, 60.17, 1000.0),  # holds both too, but comes second
    )
    assert privacy_zone_names(lon, lat, zones).tolist() == ["home", "home", None]
