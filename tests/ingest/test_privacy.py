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
from tests.ingest.frames import METRES_PER_DEGREE_LAT, drive

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


# the privacy radius at HDOP 1 for both fixes, by hand: trim + 4 x sqrt(5^2 + 5^2) m
ALLOWANCE_HDOP_1_M = 4 * np.sqrt(50.0)  # 28.28 m


def expected_trip_ends(steps_by_trip: list[list[float]], trim_m: float) -> np.ndarray:
    """Per fix of northbound trips, whether it is within the privacy radius of one of its
    trip's first three or last three fixes."""
    marks = []
    for steps in steps_by_trip:
        north_m = np.r_[0.0, np.cumsum(steps)]  # northbound: distances are differences
        centres = north_m[np.r_[0:3, -3:0] % len(north_m)]
        apart_m = np.abs(north_m[:, None] - centres[None, :]).min(axis=1)
        marks.append(apart_m < trim_m + ALLOWANCE_HDOP_1_M)
    return np.concatenate(marks) if trim_m > 0 else np.zeros(sum(map(len, marks)), dtype=bool)


def northbound(steps: np.ndarray, lon: float = 24.94) -> tuple[np.ndarray, np.ndarray]:
    """Positions (lon, lat) of fixes along a meridian, ``steps`` metres apart."""
    lat = 60.17 + np.r_[0.0, np.cumsum(steps)] / METRES_PER_DEGREE_LAT
    return np.full_like(lat, lon), lat


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
    # each trip along its own meridian, 1 km apart: no trip is near another's ends
    positions = [northbound(np.array(s), 24.94 + 0.02 * i) for i, s in enumerate(steps_by_trip)]
    lon = np.concatenate([p[0] for p in positions])
    lat = np.concatenate([p[1] for p in positions])
    got = trip_end_mask(codes, lon, lat, np.ones(len(codes)), trim_m)
    expected = expected_trip_ends(steps_by_trip, trim_m)
    # whole metres from the ends, and the radius is not whole: no fix a rounding error from it
    np.testing.assert_array_equal(got, expected)


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
        # northbound at HDOP 1: straight-line distances are differences of distances along;
        # circles around the first three and the last three fixes
        radius_m = trim_m + ALLOWANCE_HDOP_1_M
        centres = travelled[np.r_[0:3, -3:0] % len(travelled)]
        apart_m = np.abs(travelled[:, None] - centres[None, :]).min(axis=1)
        expected = (apart_m < radius_m) & (trim_m > 0)
        clear = np.abs(apart_m - radius_m) > 1e-3
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
    # fixes 0, 50, ..., 500 m north; circles around 0, 50, 100 and 400, 450, 500 m
    lon, lat = northbound(np.full(10, 50.0))
    one_trip = np.zeros(11, dtype=np.int64)
    # HDOP 1: radius 50 + 28.28 = 78.28 m: 150 m (50 from 100) goes, 200 m (100 from 100) stays
    got = trip_end_mask(one_trip, lon, lat, np.ones(11), 50.0)
    assert np.flatnonzero(~got).tolist() == [4, 5, 6]
    # HDOP 0.5: 50 + 4 x sqrt(2.5^2 + 2.5^2) = 64.14 m, the same fixes
    assert np.flatnonzero(~trip_end_mask(one_trip, lon, lat, np.full(11, 0.5), 50.0)).tolist() == [
        4, 5, 6
    ]  # fmt: skip
    # unknown HDOP counts as 3: 50 + 4 x sqrt(15^2 + 15^2) = 134.85 m; only 250 m stays
    unknown = trip_end_mask(one_trip, lon, lat, np.full(11, np.nan), 50.0)
    assert np.flatnonzero(~unknown).tolist() == [5]
    # HDOP 4: 50 + 4 x sqrt(20^2 + 20^2) = 163.1 m: every fix goes
    assert trip_end_mask(one_trip, lon, lat, np.full(11, 4.0), 50.0).all()
    empty = np.zeros(0)
    assert trip_end_mask(np.zeros(0, dtype=np.int64), empty, empty, empty, 50.0).tolist() == []
    untrimmed = trip_end_mask(one_trip, lon, lat, np.ones(11), 0.0)
    assert untrimmed.dtype == bool and not untrimmed.any()  # a mask, to index rows with


def test_an_outlier_first_fix_does_not_move_the_start_circle() -> None:
    # a straight road north, a fix every 10 m (0..1000 m), HDOP 1; the first fix is logged
    # 120 m south of its true place (a multipath jump). Its circle (radius 228.28 m) reaches
    # only 108 m north, but the circle around the third fix (20 m) reaches 248.28 m: fixes up
    # to 240 m go, the first kept is 250 m from the true start. The end: circles around
    # 980-1000 m reach down to 751.7 m, so the last kept is 750 m.
    frame = drive(101, speed_mps=10.0, noise_m=0.0)
    frame.loc[0, "lat"] -= 120 / METRES_PER_DEGREE_LAT
    split_trips(frame, TRIMS[200.0])
    apply_privacy(frame, TRIMS[200.0])
    assert frame.index[frame["reason"].isna()].tolist() == list(range(25, 76))


def zigzag_trip(fixes: int, zag_m: float) -> pd.DataFrame:
    """A trip north along a straight road, a fix every 10 m, logged alternately ``zag_m`` east
    and west of the road (true positions in ``true_north_m``, on the road)."""
    frame = drive(fixes, speed_mps=10.0, noise_m=0.0)
    east_m = np.where(np.arange(fixes) % 2 == 0, zag_m, -zag_m)
    frame["lon"] += east_m / (METRES_PER_DEGREE_LAT * np.cos(np.radians(60.17)))
    frame["true_north_m"] = np.arange(fixes) * 10.0
    return frame


def test_a_zigzag_trace_keeps_no_fix_near_the_true_ends() -> None:
    # 101 fixes, 1,000 m of road, logged 20 m east and west in turn: each logged step is
    # sqrt(10^2 + 40^2) = 41.2 m, so 200 m along the fixes is only 50 m of road. Privacy
    # radius at HDOP 1: 200 + 28.28 = 228.28 m around fixes 0, 1, 2 and 98, 99, 100. Fix k
    # (k even, east) is 10(k - 2) m from fix 2: within it up to k = 24 (220 m; k = 26: 240 m).
    # Fix k (k odd, west) is 10(k - 1) m from fix 1: up to k = 23; k = 25 is 240 m from fix 1
    # and sqrt(40^2 + 230^2) = 233.5 m from fix 2. By symmetry fixes 76 to 100 go. Kept:
    # fixes 25 to 75, 250 m or more from either true end.
    frame = zigzag_trip(101, 20.0)
    split_trips(frame, TRIMS[200.0])
    apply_privacy(frame, TRIMS[200.0])
    kept = frame[frame["reason"].isna()]
    assert kept.index.tolist() == list(range(25, 76))
    true_m = kept["true_north_m"]
    assert true_m.min() >= 200 and (1000 - true_m).min() >= 200


def simulated_trip(rng: np.random.Generator, sigma_m: float) -> pd.DataFrame:
    """A 1 Hz trip on a winding road with AR(1) GPS noise (correlation 0.9 a second, as the
    fleet simulator's) and outliers at its ends, logged HDOP sigma / 5; true positions in
    ``true_x_m``, ``true_y_m``."""
    n = int(rng.integers(80, 400))
    speed = rng.uniform(3.0, 15.0) * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, rng.uniform(0.02, 0.4), n))
    true_x = np.r_[0.0, np.cumsum(speed * np.sin(heading))[:-1]]
    true_y = np.r_[0.0, np.cumsum(speed * np.cos(heading))[:-1]]
    error = np.empty((2, n))
    error[:, 0] = rng.normal(0, 1, 2)
    for i in range(1, n):
        error[:, i] = 0.9 * error[:, i - 1] + np.sqrt(1 - 0.81) * rng.normal(0, 1, 2)
    # a multipath jump of 84-156 m (the simulator's outliers) at either end, one time in three
    jump = np.zeros((2, n))
    for end in (0, n - 1):
        if rng.random() < 1 / 3:
            angle = rng.uniform(0, 2 * np.pi)
            jump[:, end] = 120 * rng.uniform(0.7, 1.3) * np.array([np.sin(angle), np.cos(angle)])
    error = sigma_m * error + jump
    frame = drive(n, noise_m=0.0)
    frame["lon"] = 24.94 + (true_x + error[0]) / (METRES_PER_DEGREE_LAT * np.cos(np.radians(60.17)))
    frame["lat"] = 60.17 + (true_y + error[1]) / METRES_PER_DEGREE_LAT
    frame["hdop"] = sigma_m / 5.0
    frame["true_x_m"], frame["true_y_m"] = true_x, true_y
    return frame


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    sigma_m=st.floats(5.0, 15.0),
    trim_m=st.sampled_from([50.0, 200.0]),
)
def test_no_kept_fix_is_truly_within_the_trim_of_a_true_end(
    seed: int, sigma_m: float, trim_m: float
) -> None:
    frame = simulated_trip(np.random.default_rng(seed), sigma_m)
    split_trips(frame, TRIMS[trim_m])
    assert frame["trip_id"].nunique() == 1
    apply_privacy(frame, TRIMS[trim_m])
    kept = frame["reason"].isna().to_numpy()
    x, y = frame["true_x_m"].to_numpy(), frame["true_y_m"].to_numpy()
    for end in (0, len(frame) - 1):
        true_crow_m = np.hypot(x[kept] - x[end], y[kept] - y[end])
        assert (true_crow_m >= trim_m).all()


def test_a_fix_in_two_zones_gets_the_first_zones_name_and_the_edge_is_inside() -> None:
    lon, lat = np.array([24.94, 24.95, 25.5]), np.array([60.17, 60.17, 60.17])
    edge_m = float(distances_m(lon[:1], lat[:1], lon[1:2], lat[1:2])[0])  # about 554 m
    zones = (
        PrivacyZone("home", 24.94, 60.17, edge_m),  # holds fix 0 and, on its edge, fix 1
        PrivacyZone("work", 24.94, 60.17, 1000.0),  # holds both too, but comes second
    )
    assert privacy_zone_names(lon, lat, zones).tolist() == ["home", "home", None]
