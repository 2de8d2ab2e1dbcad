"""Splitting traces into trips, trimming trip ends for privacy, and dropping short trips.

Works on the accepted fixes of the working frame (sorted by trace, then time) and keeps the
accounting: fixes removed here get the reason ``privacy`` or ``short_trip``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings
from pipeline.geodesy import step_distances_m, step_distances_within_m
from pipeline.ingest.clean import epoch_seconds, live_positions, reject, reject_at
from pipeline.ingest.privacy import privacy_zone_names, trip_end_mask


def split_trips(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Give every accepted fix a ``trip_id``; a trip ends at a time gap or a jump.

    A new trip starts where consecutive fixes of a trace are more than ``trip_gap_s`` apart in
    time or ``trip_gap_m`` in space. ``split_teleport`` is set on the first fix of a trip that
    starts with a jump faster than ``max_speed_mps`` (a teleport, flagged by plausibility).
    Trip ids are ``<trace_id>-<number of the trip in its trace, from 001>`` (a categorical
    column; rejected fixes have none).
    """
    trip_codes = np.full(len(frame), -1, dtype=np.int64)  # -1: no trip (rejected)
    names: list[str] = []
    split_teleport = np.zeros(len(frame), dtype=bool)
    live = live_positions(frame)
    if len(live):
        trace = frame["trace_id"].to_numpy()[live]
        seconds = epoch_seconds(frame["observed_at"])[live]
        lon, lat = frame["lon"].to_numpy()[live], frame["lat"].to_numpy()[live]
        gap_m = np.r_[0.0, step_distances_m(lon, lat)[:-1]]
        gap_s = np.r_[0.0, np.diff(seconds)]
        new_trace = np.r_[True, trace[1:] != trace[:-1]]
        starts = new_trace | (gap_s > settings.trip_gap_s) | (gap_m > settings.trip_gap_m)
        teleport = ~new_trace & (gap_m / np.maximum(gap_s, 1e-3) > settings.max_speed_mps)
        trip_index = np.cumsum(starts) - 1
        trace_first_trip = trip_index[new_trace][np.cumsum(new_trace) - 1]
        number_in_trace = trip_index - trace_first_trip + 1
        first_fixes = np.flatnonzero(starts)
        names = [
            f"{trace_id}-{number:03d}"
            for trace_id, number in zip(
                trace[first_fixes], number_in_trace[first_fixes].tolist(), strict=True
            )
        ]
        trip_codes[live] = trip_index
        split_teleport[live] = teleport & starts
    # categorical: each trip's name is stored once, and every later step's grouping by trip
    # (pandas.factorize, groupby) reads the codes instead of hashing a string per fix
    categories = pd.Index(names, dtype=object)
    frame["trip_id"] = pd.Categorical.from_codes(trip_codes, categories=categories)
    frame["split_teleport"] = split_teleport


def apply_privacy(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Remove fixes inside privacy zones, then every trip's ends (:func:`trip_end_mask`)."""
    zones = privacy_zone_names(
        frame["lon"].to_numpy(), frame["lat"].to_numpy(), settings.privacy_zones
    )
    in_zone = pd.notna(zones)
    reject(
        frame,
        in_zone,
        "privacy",
        lambda: pd.Series(zones, index=frame.index).map("privacy zone {}".format),
    )
    live = live_positions(frame)
    if len(live) == 0:
        return
    codes = _trip_codes(frame, live)
    lon, lat = frame["lon"].to_numpy()[live], frame["lat"].to_numpy()[live]
    hdop = frame["hdop"].to_numpy(dtype="float64", na_value=np.nan)[live]
    trimmed = np.zeros(len(frame), dtype=bool)
    trimmed[live] = trip_end_mask(codes, lon, lat, hdop, settings.privacy_trim_m)
    reject(
        frame,
        trimmed,
        "privacy",
        f"within {settings.privacy_trim_m:g} m and its GPS error of the trip's start or end",
    )


def reject_short_trips(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Reject every fix of trips with too few fixes or too little length to be matched."""
    live = live_positions(frame)
    if len(live) == 0:
        return
    codes, steps = _trip_steps(frame, live)
    length_m = np.bincount(codes, weights=steps)[codes]
    count = np.bincount(codes)[codes]
    short = (count < settings.min_trip_points) | (length_m < settings.min_trip_m)
    details = [
        f"trip of {n} fixes, {m:.0f} m" for n, m in zip(count[short], length_m[short], strict=True)
    ]
    reject_at(frame, live[short], "short_trip", details)


def _trip_codes(frame: pd.DataFrame, live: np.ndarray) -> np.ndarray:
    """Trip codes (0, 1, ... in order) of the fixes at ``live``.

    A trip's fixes are consecutive (the frame is sorted by trace and time), so its code is the
    number of trip changes before it.
    """
    trip = pd.factorize(frame["trip_id"])[0][live]
    return np.cumsum(np.r_[False, trip[1:] != trip[:-1]])


def _trip_steps(frame: pd.DataFrame, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trip codes of the fixes at ``live`` (:func:`_trip_codes`), and each one's next step."""
    codes = _trip_codes(frame, live)
    lon, lat = frame["lon"].to_numpy()[live], frame["lat"].to_numpy()[live]
    return codes, step_distances_within_m(codes, lon, lat)
