"""Driving one route: speed profile, stops, fix times, GPS noise, outliers and dropouts.

Speeds are capped by each edge's speed, by turns, near the trip ends and to 0 at stops, then
limited by acceleration and braking. Fixes are logged every ``sample_interval_s`` along the
route polyline with temporally correlated (AR(1)) GPS error. The random draws are numpy's;
the arithmetic of a trip runs in a few compiled kernels (:mod:`pipeline.simulate.drive_kernels`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import SimulateSettings
from pipeline.simulate.drive_kernels import (
    ar1_series,
    bearing_changes,
    fixes_along,
    logged_fixes,
    speed_profile,
)
from pipeline.simulate.network import DrivingNetwork, Route

GRID_STEP_M = 5.0  # resolution of the speed profile along the route
NOISE_CORRELATION_1S = 0.9  # AR(1) correlation of GPS error between fixes 1 s apart


@dataclass
class TripDrive:
    """One simulated trip: the fixes the camera kept (metric positions), edge times, counts."""

    t_s: np.ndarray  # fix times from the trip start, kept fixes only
    true_xy: np.ndarray
    noisy_xy: np.ndarray
    elevation_m: np.ndarray
    hdop: np.ndarray
    speed_mps: np.ndarray
    true_speed_mps: np.ndarray
    heading_deg: np.ndarray
    outlier: np.ndarray
    entered_s: np.ndarray
    exited_s: np.ndarray
    duration_s: float
    stops: int
    dropouts: int


def drive_route(
    network: DrivingNetwork,
    route: Route,
    params: SimulateSettings,
    noise_sigma_m: float,
    rng: np.random.Generator,
) -> TripDrive:
    """Drive one route: speed profile, stops, fixes, GPS noise, outliers and dropouts."""
    length_m = route.length_m
    trip_factor = rng.uniform(0.85, 1.1)
    edge_speed = network.edge_speed_mps[route.edges] * trip_factor
    edge_speed *= np.exp(rng.normal(0.0, 0.07, len(edge_speed)))
    n_stops = rng.poisson(length_m / 1000.0 * params.stop_rate_per_km) if length_m > 100 else 0
    stop_at_m = np.sort(_uniform(rng, 0.05 * length_m, 0.95 * length_m, n_stops))
    dwell_s = params.stop_duration_s * _uniform(rng, 0.5, 1.5, n_stops)
    step_x, step_y = route.step.T.copy()  # contiguous, as numpy's fastest loops take them
    bearing = np.arctan2(step_x, step_y)
    knot_t, knot_s, knot_v, boundary_t = speed_profile(
        route.edge_start_m, edge_speed, stop_at_m, dwell_s, *_turns(route, bearing),
        max(2, math.ceil(length_m / GRID_STEP_M) + 1),
    )  # fmt: skip
    duration_s = float(knot_t[-1])

    step_s = params.sample_interval_s
    t_s, true_speed, true_xy, true_heading = fixes_along(
        knot_t, knot_s, knot_v, int(duration_s // step_s) + 1, step_s,
        route.xy, route.cum_m, bearing, route.step_m,
    )  # fmt: skip
    n = len(t_s)

    rho = NOISE_CORRELATION_1S**step_s
    # the white noise of the four AR(1) series (x, y, height, HDOP) is drawn in turn with
    # the other draws, and the four are filtered together
    white = np.empty((4, n))
    rng.standard_normal(out=white[:2])  # the same numbers as two draws of n
    outlier = rng.random(n) < params.outlier_rate
    angle = rng.uniform(0.0, 2 * np.pi, n)
    jump = params.outlier_distance_m * rng.uniform(0.7, 1.3, n) * outlier
    rng.standard_normal(out=white[2:])
    error = ar1_filter(white, rho)
    hdop_base = min(max(noise_sigma_m / 5.0, 0.6), 5.0)  # np.clip of a scalar, without numpy
    speed_error = rng.normal(0.0, 0.1, n)
    heading_error, stopped_heading_error = rng.normal(0.0, 2.0, n), rng.normal(0.0, 15.0, n)
    noisy_xy, elevation_m, hdop, speed, heading = logged_fixes(
        true_xy, true_speed, true_heading, error, np.exp(0.15 * error[3]), noise_sigma_m,
        jump, np.sin(angle), np.cos(angle), *_terrain_waves(true_xy),
        speed_error, heading_error, stopped_heading_error, hdop_base,
    )  # fmt: skip

    n_dropouts = rng.poisson(length_m / 1000.0 * params.dropout_rate_per_km)
    dropout_start = _uniform(rng, 0.0, duration_s, n_dropouts)
    dropout_end = dropout_start + params.dropout_duration_s * _uniform(rng, 0.75, 1.25, n_dropouts)
    keep = _kept_fixes(t_s, dropout_start, dropout_end)
    return TripDrive(
        t_s=t_s[keep],
        true_xy=true_xy[keep],
        noisy_xy=noisy_xy[keep],
        elevation_m=elevation_m[keep],
        hdop=hdop[keep],
        speed_mps=speed[keep],
        true_speed_mps=true_speed[keep],
        heading_deg=heading[keep],
        outlier=outlier[keep],
        entered_s=boundary_t[:-1],
        exited_s=boundary_t[1:],
        duration_s=duration_s,
        stops=n_stops,
        dropouts=n_dropouts,
    )


def _turns(route: Route, bearing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the route may turn and by how much (radians in [-pi, pi], signed).

    Parameters
    ----------
    route
        The route.
    bearing
        Its segments' bearings, radians.
    """
    at_m, change = bearing_changes(bearing, route.step_m, route.cum_m)
    turn = np.exp(1j * change)  # np.angle of it, without np.angle's overhead
    return at_m, np.arctan2(turn.imag, turn.real)


def _terrain_waves(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the two waves of the terrain height at ``xy`` (see ``logged_fixes``).

    The terrain is smooth and fixed, for the ``ele`` fields (no DEM is used).
    """
    return np.sin(xy[:, 0] / 1700.0), np.cos(xy[:, 1] / 1100.0)


def _uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """Return ``rng.uniform(low, high, size)``; no call for no draw (it draws nothing)."""
    return rng.uniform(low, high, size) if size else np.empty(0)


def ar1_filter(white: np.ndarray, rho: float) -> np.ndarray:
    """Turn rows of white noise into AR(1) series of lag-1 correlation ``rho``.

    Each row ``w`` gives ``e[0] = w[0]`` and ``e[k] = rho e[k-1] + sqrt(1 - rho²) w[k]``,
    computed block-wise with cumulative sums along the rows (in a kernel,
    :func:`~pipeline.simulate.drive_kernels.ar1_series`); a row gives the same numbers whatever
    rows it is filtered with.

    Parameters
    ----------
    white
        Standard normal draws, one series per row (shape ``(series, samples)``).
    rho
        Lag-1 correlation; at most 0 returns ``white`` itself.

    Returns
    -------
    numpy.ndarray
        The series, shaped like ``white``.
    """
    n = white.shape[1]
    if n == 0 or rho <= 0.0:
        return white
    series: np.ndarray = ar1_series(white, rho, _ar1_powers(rho))
    return series


@functools.lru_cache(maxsize=8)
def _ar1_powers(rho: float) -> np.ndarray:
    """Return ``rho ** k`` for the ``k`` of one block of :func:`ar1_filter` (read-only).

    Blocks are short enough to keep ``rho ** -k`` below 1e12.
    """
    block = max(1, int(12.0 / -math.log10(rho)))
    powers = rho ** np.arange(block)
    powers.flags.writeable = False
    return powers


def _kept_fixes(
    t_s: np.ndarray, dropout_start: np.ndarray, dropout_end: np.ndarray
) -> slice | np.ndarray:
    """Select the fixes the camera keeps: all but those in dropouts, always the first and last.

    Returns
    -------
    slice or numpy.ndarray
        A slice of every fix when there is no dropout, else a boolean mask.
    """
    if len(dropout_start) == 0:
        return slice(None)
    inside = (t_s[:, None] >= dropout_start) & (t_s[:, None] < dropout_end)
    lost: np.ndarray = np.asarray(inside.any(axis=1))
    lost[[0, -1]] = False  # the camera logs the start and the end of every trip
    return ~lost
