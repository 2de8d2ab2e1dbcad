"""Cleaning fixes, vectorized: value checks, duplicates, and kinematic outliers.

Every function takes the working frame of one or more traces, sorted by ``trace_id`` then
``observed_at``, and fills the ``reason``/``detail`` columns of the rows it rejects; a row
whose ``reason`` is null is still accepted. Nothing is dropped here, so the accounting
"rows read = accepted + rejected" holds by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings
from pipeline.geodesy import distances_m, step_distances_m
from pipeline.ingest.readers import repeated

EARLIEST_TIME = pd.Timestamp("2000-01-01", tz="UTC")
SPIKE_PASSES = 3
MAX_SPIKE_RUN = 3


Detail = pd.Series | np.ndarray | str  # one per row of the frame, or one for all


def live_positions(frame: pd.DataFrame) -> np.ndarray:
    """Return the positions of the rows that no step has rejected yet."""
    return np.flatnonzero(frame["reason"].isna().to_numpy())


def reject(
    frame: pd.DataFrame,
    mask: np.ndarray | pd.Series,
    reason: str,
    detail: Detail | Callable[[], Detail],
) -> None:
    """Set ``reason`` and ``detail`` on the still-accepted rows selected by ``mask``.

    ``detail`` may be a function returning the details of every row: it is called only when
    some row is rejected (formatting every row's values is most of the cost otherwise).
    """
    chosen = np.flatnonzero(np.asarray(mask, dtype=bool))  # usually few: only they are read
    selected = chosen[pd.isna(frame["reason"].to_numpy()[chosen])]
    if not len(selected):
        return
    rows = frame.index[selected]
    frame.loc[rows, "reason"] = reason
    if callable(detail):
        detail = detail()
    details = np.asarray(detail, dtype=object)[selected] if not isinstance(detail, str) else detail
    frame.loc[rows, "detail"] = details


def reject_at(frame: pd.DataFrame, positions: np.ndarray, reason: str, details: list[str]) -> None:
    """Reject the still-accepted rows at integer ``positions``, each with its own detail."""
    mask = np.zeros(len(frame), dtype=bool)
    mask[positions] = True
    detail = repeated("", len(frame))
    detail[positions] = details
    reject(frame, mask, reason, detail)


def check_values(frame: pd.DataFrame, settings: IngestSettings, now: pd.Timestamp) -> None:
    """Reject fixes with impossible coordinates, times or accuracy."""
    lon, lat = frame["lon"], frame["lat"]

    def coords() -> pd.Series:
        return "lon=" + lon.astype(str) + " lat=" + lat.astype(str)

    def times() -> pd.Series:  # formatted as a whole: pandas picks one format per column
        return "observed_at=" + frame["observed_at"].astype(str)

    finite = np.isfinite(lon) & np.isfinite(lat)
    reject(frame, ~finite | (lat.abs() > 90) | (lon.abs() > 180), "out_of_range", coords)
    reject(frame, (lon == 0) & (lat == 0), "null_island", coords)
    reject(frame, frame["observed_at"] < EARLIEST_TIME, "time_before_2000", times)
    latest = now + pd.Timedelta(seconds=settings.future_tolerance_s)
    reject(frame, frame["observed_at"] > latest, "time_in_future", lambda: times() + f" > {latest}")
    hdop = frame["hdop"]
    reject(frame, hdop > settings.max_hdop, "high_hdop", lambda: "hdop=" + hdop.astype(str))


def reject_duplicates(frame: pd.DataFrame) -> None:
    """Reject exact repeats of a fix, and other fixes of a trace at an already-seen time.

    Only fixes of a trace at a time that another fix of it has can be either; as the frame is
    sorted by trace and time, they are found by comparing each fix with the next, and only
    they are compared and grouped.
    """
    shared = _sharing_a_time(frame, np.ones(len(frame), dtype=bool))
    if not frame["reason"].iloc[shared].isna().any():  # the common case: nothing to reject
        return
    fix = ["trace_id", "observed_at", "lon", "lat"]
    group = frame.iloc[shared]
    exact = group.duplicated(fix).to_numpy()
    if exact.any():  # reject_at keeps only the rows still accepted
        first = group.groupby(fix)["source_row"].transform("first")[exact]
        reject_at(
            frame, shared[exact], "duplicate", ("same fix as row " + first.astype(str)).tolist()
        )
    shared = _sharing_a_time(frame, frame["reason"].isna().to_numpy())
    group = frame.iloc[shared]
    repeats = group.duplicated(["trace_id", "observed_at"]).to_numpy()
    if repeats.any():
        first = group.groupby(["trace_id", "observed_at"])["source_row"].transform("first")[repeats]
        details = ("same time as row " + first.astype(str)).tolist()
        reject_at(frame, shared[repeats], "repeated_timestamp", details)


def _sharing_a_time(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Positions of the ``rows`` (a mask) whose trace and time another of those rows has.

    The frame is sorted by trace and time, so such rows are next to each other.
    """
    positions = np.flatnonzero(rows)
    if len(positions) < 2:
        return positions[:0]
    trace = frame["trace_id"].to_numpy()[positions]
    times = epoch_seconds(frame["observed_at"])[positions]
    same = (trace[1:] == trace[:-1]) & (times[1:] == times[:-1])
    return positions[np.r_[same, False] | np.r_[False, same]]


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """Seconds since 1970 of a UTC timestamp column, as float64."""
    return times.dt.as_unit("ms").astype("int64").to_numpy() / 1000.0


def reject_speed_spikes(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Reject short runs of fixes that jump away from the trace and back.

    A step between consecutive fixes is impossible when it implies a speed above
    ``max_speed_mps``. A run of up to ``MAX_SPIKE_RUN`` fixes entered and left by impossible
    steps, whose neighbours connect at a possible speed, is an outlier: a ``teleport`` when it
    lies farther than ``trip_gap_m`` from the fix before it, an ``impossible_speed`` otherwise.
    Repeated a few times, so that a spike hidden behind another is caught too.
    """
    all_seconds = epoch_seconds(frame["observed_at"])
    for _ in range(SPIKE_PASSES):
        live = live_positions(frame)
        trace = frame["trace_id"].to_numpy()[live]
        seconds = all_seconds[live]
        lon, lat = frame["lon"].to_numpy()[live], frame["lat"].to_numpy()[live]
        step_m = step_distances_m(lon, lat)[:-1]
        step_speed = step_m / np.maximum(np.diff(seconds), 1e-3)
        bad = np.flatnonzero((step_speed > settings.max_speed_mps) & (trace[1:] == trace[:-1]))
        found = False
        for run in range(1, MAX_SPIKE_RUN + 1):
            enter = bad[np.isin(bad + run, bad)]  # steps enter -> enter+1 and enter+run -> +run+1
            if len(enter) == 0:
                continue
            before, after = enter, enter + run + 1
            same = trace[before] == trace[after]
            bridge_m = distances_m(lon[before], lat[before], lon[after], lat[after])
            bridge_speed = bridge_m / np.maximum(seconds[after] - seconds[before], 1e-3)
            outlier = same & (bridge_speed <= settings.max_speed_mps)
            firsts = enter[outlier]
            if len(firsts):
                _reject_spike_runs(frame, live, firsts, run, step_m, step_speed, settings)
                found = True
        if not found:
            return


def _reject_spike_runs(
    frame: pd.DataFrame,
    live: np.ndarray,
    firsts: np.ndarray,
    run: int,
    step_m: np.ndarray,
    step_speed: np.ndarray,
    settings: IngestSettings,
) -> None:
    """Reject the ``run`` fixes after each live position in ``firsts`` (all at once).

    Where runs overlap, a fix takes the reason and detail of the first run that holds it.
    """
    positions = (firsts[:, None] + np.arange(1, run + 1)).ravel()
    jump_m = np.repeat(step_m[firsts], run)
    speed = np.repeat(step_speed[firsts], run)
    positions, first_seen = np.unique(positions, return_index=True)
    jump_m, speed = jump_m[first_seen], speed[first_seen]
    teleport = jump_m > settings.trip_gap_m
    for reason, chosen in (("teleport", teleport), ("impossible_speed", ~teleport)):
        details = [
            f"jump of {j:.0f} m at {v:.0f} m/s and back"
            for j, v in zip(jump_m[chosen], speed[chosen], strict=True)
        ]
        reject_at(frame, live[positions[chosen]], reason, details)


def reject_acceleration_spikes(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Reject fixes whose reported speed jumps away and back faster than ``max_accel_mps2``."""
    live = np.flatnonzero(frame["reason"].isna().to_numpy() & frame["speed_mps"].notna().to_numpy())
    if len(live) < 3:
        return
    trace = frame["trace_id"].to_numpy()[live]
    seconds = epoch_seconds(frame["observed_at"])[live]
    speed = frame["speed_mps"].to_numpy()[live]
    inner = np.arange(1, len(live) - 1)
    inner = inner[(trace[inner - 1] == trace[inner]) & (trace[inner + 1] == trace[inner])]
    a_in = (speed[inner] - speed[inner - 1]) / np.maximum(seconds[inner] - seconds[inner - 1], 1e-3)
    a_out = (speed[inner + 1] - speed[inner]) / np.maximum(
        seconds[inner + 1] - seconds[inner], 1e-3
    )
    limit = settings.max_accel_mps2
    spike = (np.abs(a_in) > limit) & (np.abs(a_out) > limit) & (np.sign(a_in) != np.sign(a_out))
    details = [
        f"speed {speed[i]:.1f} m/s between {speed[i - 1]:.1f} and {speed[i + 1]:.1f}"
        for i in inner[spike]
    ]
    reject_at(frame, live[inner[spike]], "impossible_acceleration", details)
