"""Per-trip anti-spoofing and plausibility: flags with reasons and a trust score.

Flags (a trip may carry several); each lowers the trust score by its weight,
``trust = prod(1 - weight)``:

``teleport`` (0.3)
    The trip starts or ends at a jump faster than ``max_speed_mps`` within a trace.
``robot_perfect`` (0.7)
    Perfectly regular sampling and no GPS noise: the second differences of the positions are
    below 5 cm, which no real receiver produces.
``replay`` (0.8)
    Same geometry fingerprint (the fix sequence rounded to about 1 m) as an earlier trip, from
    another contributor or at another time: a copied trace.
``device_in_two_places`` (0.6)
    The same device has another trip at overlapping times more than ``trip_gap_m`` away.
``shared_coordinates`` (0.6)
    Fixes at coordinates identical to 1e-7 degrees (about 1 cm) to those of at least two other
    devices: real receivers never agree that exactly.

Flagged trips are kept, marked ``plausible = False``, and excluded from coverage by default.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.config import IngestSettings
from pipeline.geodesy import distances_m, step_distances_within_m
from pipeline.ingest.clean import epoch_seconds

FLAG_WEIGHTS = {
    "teleport": 0.3,
    "robot_perfect": 0.7,
    "replay": 0.8,
    "device_in_two_places": 0.6,
    "shared_coordinates": 0.6,
}
ROBOT_MAX_SECOND_DIFFERENCE_M = 0.05
FINGERPRINT_DECIMALS = 5
SHARED_COORDINATE_DECIMALS = 7
SHARED_COORDINATE_MIN_DEVICES = 3
METRES_PER_DEGREE = 111_320.0


def summarize_trips(points: pd.DataFrame) -> pd.DataFrame:
    """Return one row per trip: ids, times, fix count, length and geometry fingerprint.

    ``points`` are sorted by trip, then time (a trip's fixes are consecutive); fixes without
    a trip are left out.

    Raises
    ------
    ValueError
        If a trip's fixes are not consecutive.
    """
    has_trip = points["trip_id"].notna().to_numpy()
    if not has_trip.all():  # the stage's accepted fixes all have one: no copy then
        points = points[has_trip]
    codes, trip_ids = pd.factorize(points["trip_id"])
    starts = np.flatnonzero(np.diff(codes, prepend=-1))  # where each trip's run begins
    if len(starts) != len(trip_ids):
        raise ValueError("summarize_trips: the fixes of each trip must be consecutive")
    lon, lat = points["lon"].to_numpy(), points["lat"].to_numpy()
    times = _naive_utc(points["observed_at"])
    steps = step_distances_within_m(codes, lon, lat)
    trips = pd.DataFrame(
        {
            **{name: _text(points[name].to_numpy(dtype=object)[starts]) for name in _TRIP_IDS},
            "started_at": _utc(_per_run(np.minimum, times, starts)),
            "ended_at": _utc(_per_run(np.maximum, times, starts)),
            "points": np.diff(np.r_[starts, len(codes)]).astype("int64"),
            "length_m": _per_run(np.add, steps, starts),
        }
    )
    rounded = np.round(np.column_stack([lon, lat]), FINGERPRINT_DECIMALS)
    trips["fingerprint"] = _text(_fingerprints(rounded, starts))
    return trips


_TRIP_IDS = ("trip_id", "trace_id", "contributor_id", "device_id")


def _text(values: np.ndarray | list[str]) -> pd.Series:
    return pd.Series(values, dtype="str")


def _naive_utc(times: pd.Series) -> np.ndarray:
    return times.dt.tz_convert(None).to_numpy()


def _utc(naive: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(naive).tz_localize("UTC"), copy=False)


def _per_run(reduce: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``reduce`` over each run of ``values``; the runs begin at ``starts``."""
    return reduce.reduceat(values, starts) if len(starts) else values[:0]


def _fingerprints(rounded: np.ndarray, starts: np.ndarray) -> list[str]:
    """Return the geometry fingerprints: a hash of each run of rounded coordinates."""
    return [_hash(part) for part in np.split(rounded, starts[1:])] if len(starts) else []


def _hash(rounded: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rounded).tobytes()).hexdigest()[:32]


class TripFixes(NamedTuple):
    """A trip's fixes in time order: ``times`` (naive UTC ``datetime64``), ``lon``, ``lat``."""

    times: np.ndarray
    lon: np.ndarray
    lat: np.ndarray

    def rows(self, rows: np.ndarray) -> TripFixes:
        """Return the fixes at positions ``rows``."""
        return TripFixes(self.times[rows], self.lon[rows], self.lat[rows])


Positions = Callable[[str], TripFixes]
"""A trip's fixes by trip id, read when a check needs them."""


def positions_in(points: pd.DataFrame) -> Positions:
    """Return the :data:`Positions` of the trips in ``points`` (indexed by trip when first asked).

    ``points`` have ``trip_id``, ``observed_at``, ``lon`` and ``lat``, a trip's fixes in time
    order.
    """
    fixes = TripFixes(
        _naive_utc(points["observed_at"]), points["lon"].to_numpy(), points["lat"].to_numpy()
    )
    rows_of_trip: dict[Any, Any] = {}

    def positions(trip: str) -> TripFixes:
        if not rows_of_trip:
            rows_of_trip.update(points.groupby("trip_id", sort=False).indices)
        return fixes.rows(rows_of_trip[trip])

    return positions


def flag_trips(
    trips: pd.DataFrame,
    points: pd.DataFrame,
    earlier_trips: pd.DataFrame,
    settings: IngestSettings,
) -> pd.DataFrame:
    """Add ``flags``, ``trust_score`` and ``plausible`` to the trips of a batch held in memory.

    The same as the ingest stage does chunk by chunk: :func:`trace_flags` and
    :func:`coordinate_keys` per chunk of fixes, then :func:`batch_flags` and :func:`score`.

    Parameters
    ----------
    trips
        From :func:`summarize_trips`, for the batch's accepted points.
    points
        The batch's accepted points (with ``split_teleport``), sorted by trip then time.
    earlier_trips
        Trips of earlier batches (``trip_id``, ``contributor_id``, ``started_at``,
        ``fingerprint``), to find replays of them.
    settings
        Ingest thresholds.
    """
    positions = positions_in(points)
    later = batch_flags(trips, earlier_trips, coordinate_keys(points), positions, settings)
    return score(trips, trace_flags(points), later)


def trace_flags(points: pd.DataFrame) -> dict[str, set[str]]:
    """Find the flags that need only one trace's fixes: flag -> trip ids (teleports, robots)."""
    return {"teleport": _teleport_trips(points), "robot_perfect": _robot_perfect_trips(points)}


def coordinate_keys(points: pd.DataFrame) -> pd.DataFrame:
    """Return each trip's distinct coordinate keys (1e-7 degrees), for shared coordinates.

    Returns
    -------
    pandas.DataFrame
        ``key`` (int64: rounded lon and lat in one number), ``device`` and ``trip_id``
        (categorical): about 20 bytes per fix, compact enough to gather for a whole batch.
    """
    scale = 10.0**SHARED_COORDINATE_DECIMALS
    lon_key = np.round(points["lon"].to_numpy() * scale).astype("int64") + 1_800_000_000
    lat_key = np.round(points["lat"].to_numpy() * scale).astype("int64") + 900_000_000
    keys = pd.DataFrame(
        {
            "key": (lon_key << 31) | lat_key,  # lon_key < 2**32, lat_key < 2**31
            "device": pd.Categorical(points["device_id"]),  # each id stored once
            "trip_id": pd.Categorical(points["trip_id"]),
        }
    )
    return keys.drop_duplicates(["key", "trip_id"], ignore_index=True)


def empty_keys() -> pd.DataFrame:
    """Return a :func:`coordinate_keys` table of no fixes."""
    return pd.DataFrame({"key": pd.Series(dtype="int64"), "device": [], "trip_id": []})


def shared_keys(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Return the rows of several :func:`coordinate_keys` tables whose key is in two or more.

    All that :func:`batch_flags` needs of a batch's keys, found from the key columns alone:
    most keys belong to one trip, and their devices and trips are never joined.
    """
    if not parts:
        return empty_keys()
    marks = repeated_keys([part["key"].to_numpy() for part in parts])
    return pd.concat(
        [part[mark] for part, mark in zip(parts, marks, strict=True)], ignore_index=True
    )


def repeated_keys(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Mark, in each of several arrays of keys, the keys found twice or more in all of them."""
    if not parts:
        return []
    repeated = _repeated(np.concatenate(parts))
    bounds = np.cumsum([0, *(len(part) for part in parts)]).tolist()
    return [repeated[start:stop] for start, stop in itertools.pairwise(bounds)]


def _repeated(values: np.ndarray) -> np.ndarray:
    """Mark every value that occurs more than once (pandas' ``duplicated(keep=False)``).

    By sorting: a third less CPU than hashing for the millions of int64 keys of a batch.
    """
    order = np.argsort(values)  # which of equal values comes first does not matter
    ordered = values[order]
    equal_next = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(values), dtype=bool)
    repeated[order[1:][equal_next]] = True
    repeated[order[:-1][equal_next]] = True
    return repeated


def batch_flags(
    trips: pd.DataFrame,
    earlier_trips: pd.DataFrame,
    keys: pd.DataFrame,
    positions: Positions,
    settings: IngestSettings,
) -> dict[str, set[str]]:
    """Find the flags that compare trips across the batch and with earlier batches.

    Parameters
    ----------
    trips
        The batch's trip summaries (:func:`summarize_trips`).
    earlier_trips
        Trips of earlier batches, for replays.
    keys
        :func:`coordinate_keys` of the whole batch, or only its rows whose key repeats
        (:func:`shared_keys`).
    positions
        A trip's fixes, asked for only for the trips of one device that overlap in time.
    settings
        Ingest thresholds.
    """
    return {
        "replay": _replayed_trips(trips, earlier_trips),
        "device_in_two_places": _trips_of_devices_in_two_places(trips, positions, settings),
        "shared_coordinates": _trips_with_shared_coordinates(keys),
    }


def score(trips: pd.DataFrame, *found: dict[str, set[str]]) -> pd.DataFrame:
    """Return ``trips`` with their sorted ``flags``, ``trust_score`` and ``plausible``.

    ``found`` are the checks' results (flag -> trip ids), e.g. :func:`trace_flags` of every
    chunk and :func:`batch_flags`; a flag may come from several of them.
    """
    of_trip: dict[str, set[str]] = {trip: set() for trip in trips["trip_id"]}
    for flags in found:
        for flag, flagged in flags.items():
            for trip in flagged:
                of_trip[trip].add(flag)
    flagged_trips = trips.copy()
    flagged_trips["flags"] = pd.Series(
        [sorted(of_trip[trip]) for trip in trips["trip_id"]], index=trips.index, dtype=object
    )
    flagged_trips["trust_score"] = [
        math.prod((1.0 - FLAG_WEIGHTS[f] for f in names), start=1.0)
        for names in flagged_trips["flags"]
    ]
    flagged_trips["plausible"] = flagged_trips["flags"].map(len) == 0
    return flagged_trips


def _teleport_trips(points: pd.DataFrame) -> set[str]:
    starts = points.loc[points["split_teleport"].astype(bool), ["trace_id", "trip_id"]]
    flagged = set(starts["trip_id"])
    for trace, trip in starts.itertuples(index=False):  # the trip before the jump too
        same_trace = points.loc[points["trace_id"] == trace, "trip_id"].drop_duplicates().tolist()
        position = same_trace.index(trip)
        if position > 0:
            flagged.add(same_trace[position - 1])
    return flagged


def _robot_perfect_trips(points: pd.DataFrame) -> set[str]:
    """Trips sampled at perfectly regular times whose positions have no noise at all."""
    codes, trip_ids = pd.factorize(points["trip_id"], sort=False)
    x = points["lon"].to_numpy() * np.cos(np.radians(points["lat"].to_numpy())) * METRES_PER_DEGREE
    y = points["lat"].to_numpy() * METRES_PER_DEGREE
    t = epoch_seconds(points["observed_at"])
    # first and second differences within a trip (fixes of a trip are consecutive)
    same_1 = np.r_[False, codes[1:] == codes[:-1]]
    same_2 = same_1 & np.r_[False, same_1[:-1]]
    dt = np.where(same_1, np.r_[np.nan, np.diff(t)], np.nan)
    second_x = np.r_[np.nan, np.nan, np.diff(x, 2)]
    second_y = np.r_[np.nan, np.nan, np.diff(y, 2)]
    second_m = np.where(same_2, np.hypot(second_x, second_y), np.nan)
    stats = pd.DataFrame({"dt": dt, "second_m": second_m}).groupby(codes, sort=False)
    spread = stats["dt"].max() - stats["dt"].min()
    robotic = (spread == 0) & (stats["second_m"].median() < ROBOT_MAX_SECOND_DIFFERENCE_M)
    return {str(trip_ids[code]) for code in robotic.index[robotic.to_numpy()]}


def _replayed_trips(trips: pd.DataFrame, earlier_trips: pd.DataFrame) -> set[str]:
    columns = ["trip_id", "contributor_id", "started_at", "fingerprint"]
    history = pd.concat(
        [earlier_trips[columns].assign(batch_order=0), trips[columns].assign(batch_order=1)],
        ignore_index=True,
    )  # the original is the trip ingested first, then the one that started first
    history = history.sort_values(["batch_order", "started_at", "trip_id"], kind="stable")
    first = history.groupby("fingerprint").head(1).set_index("fingerprint")
    candidates = history[history.duplicated("fingerprint")]
    original = first.loc[candidates["fingerprint"]]
    copied = (candidates["contributor_id"].to_numpy() != original["contributor_id"].to_numpy()) | (
        candidates["started_at"].to_numpy() != original["started_at"].to_numpy()
    )
    return set(candidates["trip_id"][copied]) & set(trips["trip_id"])


def _trips_of_devices_in_two_places(
    trips: pd.DataFrame, positions: Positions, settings: IngestSettings
) -> set[str]:
    """Trips of one device, from different traces, overlapping in time and far apart."""
    if len(trips) < 2:
        return set()
    by_device = trips.sort_values(["device_id", "started_at"], kind="stable", ignore_index=True)
    device = by_device["device_id"].to_numpy()
    trace = by_device["trace_id"].to_numpy()
    starts, ends = _naive_utc(by_device["started_at"]), _naive_utc(by_device["ended_at"])
    # each trip against the one before it of the same device (sorted by start)
    overlaps = (device[1:] == device[:-1]) & (starts[1:] <= ends[:-1]) & (trace[1:] != trace[:-1])
    trip_ids = by_device["trip_id"].to_numpy()
    flagged: set[str] = set()
    for later in (np.flatnonzero(overlaps) + 1).tolist():
        pair = (str(trip_ids[later - 1]), str(trip_ids[later]))
        if _apart_at(positions, pair, starts[later]) > settings.trip_gap_m:
            flagged |= set(pair)
    return flagged


def _apart_at(positions: Positions, trips: tuple[str, str], when: np.datetime64) -> float:
    """Distance (m) between two trips' fixes nearest in time to ``when`` (naive UTC)."""
    lon, lat = np.empty(2), np.empty(2)
    for i, trip in enumerate(trips):
        fixes = positions(trip)
        row = int(np.argmin(np.abs(fixes.times - when)))
        lon[i], lat[i] = fixes.lon[row], fixes.lat[row]
    return float(distances_m(lon[:1], lat[:1], lon[1:], lat[1:])[0])


def _trips_with_shared_coordinates(keys: pd.DataFrame) -> set[str]:
    repeated = keys[keys.duplicated("key", keep=False)]  # most keys belong to one trip
    devices = repeated.groupby("key")["device"].transform("nunique")
    return set(repeated.loc[devices >= SHARED_COORDINATE_MIN_DEVICES, "trip_id"])
