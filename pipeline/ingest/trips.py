"""Splitting traces into trips, trimming trip ends for privacy, and dropping short trips.

Works on the accepted fixes of the working frame (sorted by trace, then time) and keeps the
accounting: fixes removed here get the reason ``privacy`` or ``short_trip``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings
from pipeline.geodesy import step_distances_m, step_distances_within_m
from pipeline.ingest.clean import epoch_seconds, reject, reject_at
from pipeline.ingest.privacy import privacy_zone_names, trip_end_mask


def split_trips(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Give every accepted fix a ``trip_id``; a trip ends at a time gap or a jump.

    A new trip starts where consecutive fixes of a trace are more than ``trip_gap_s`` apart in
    time or ``trip_gap_m`` in space. ``split_teleport`` is set on the first fix of a trip that
    starts with a jump faster than ``max_speed_mps`` (a teleport, flagged by plausibility).
    """
    frame["trip_id"] = None
    frame["split_teleport"] = False
    live = np.flatnonzero(frame["reason"].isna().to_numpy())
    if len(live) == 0:
        return
    sub = frame.iloc[live]
    trace = sub["trace_id"].to_numpy()
    seconds = epoch_seconds(sub["observed_at"])
    gap_m = np.r_[0.0, step_distances_m(sub["lon"].to_numpy(), sub["lat"].to_numpy())[:-1]]
    gap_s = np.r_[0.0, np.diff(seconds)]
    new_trace = np.r_[True, trace[1:] != trace[:-1]]
    starts = new_trace | (gap_s > settings.trip_gap_s) | (gap_m > settings.trip_gap_m)
    teleport = ~new_trace & (gap_m / np.maximum(gap_s, 1e-3) > settings.max_speed_mps)
    number_in_trace = pd.Series(starts.astype(int)).groupby(trace).cumsum().to_numpy()
    trip_ids = pd.Series(trace).str.cat(pd.Series(number_in_trace).map("{:03d}".format), sep="-")
    frame.loc[frame.index[live], "trip_id"] = trip_ids.to_numpy()
    frame.loc[frame.index[live], "split_teleport"] = teleport & starts


def apply_privacy(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Remove fixes inside privacy zones, then the first and last metres of every trip."""
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
    live = np.flatnonzero(frame["reason"].isna().to_numpy())
    if len(live) == 0:
        return
    sub = frame.iloc[live]
    codes = pd.factorize(sub["trip_id"])[0]
    steps = step_distances_within_m(codes, sub["lon"].to_numpy(), sub["lat"].to_numpy())
    trimmed = np.zeros(len(frame), dtype=bool)
    trimmed[live] = trip_end_mask(codes, steps, settings.privacy_trim_m)
    reject(
        frame,
        trimmed,
        "privacy",
        f"within {settings.privacy_trim_m:g} m of the trip's start or end",
    )


def reject_short_trips(frame: pd.DataFrame, settings: IngestSettings) -> None:
    """Reject every fix of trips with too few fixes or too little length to be matched."""
    live = np.flatnonzero(frame["reason"].isna().to_numpy())
    if len(live) == 0:
        return
    sub = frame.iloc[live]
    codes = pd.factorize(sub["trip_id"])[0]
    steps = step_distances_within_m(codes, sub["lon"].to_numpy(), sub["lat"].to_numpy())
    grouped = pd.Series(steps).groupby(codes)
    length_m = grouped.transform("sum").to_numpy()
    count = grouped.transform("size").to_numpy()
    short = (count < settings.min_trip_points) | (length_m < settings.min_trip_m)
    details = [
        f"trip of {n} fixes, {m:.0f} m" for n, m in zip(count[short], length_m[short], strict=True)
    ]
    reject_at(frame, live[short], "short_trip", details)
