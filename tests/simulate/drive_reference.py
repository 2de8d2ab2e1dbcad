"""The simulator's drive as numpy computed it before its kernels (pipeline.simulate.drive_kernels).

Kept verbatim as the tests' oracle: the kernels must give the same numbers to the bit. What the
kernels did not replace (the trip's record, the AR(1) block powers, the dropout mask, the
constants) is imported from the simulator itself.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import SimulateSettings
from pipeline.simulate.drive import (
    GRID_STEP_M,
    NOISE_CORRELATION_1S,
    TripDrive,
    _ar1_powers,
    _kept_fixes,
)
from pipeline.simulate.drive_kernels import (
    ACCEL_MPS2,
    DECEL_MPS2,
    END_ZONE_M,
    END_ZONE_SPEED_MPS,
    TURN_MIN_DEG,
    VERTICAL_NOISE_FACTOR,
)
from pipeline.simulate.network import DrivingNetwork, Route


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
    stop_at_m = np.sort(rng.uniform(0.05 * length_m, 0.95 * length_m, n_stops))
    dwell_s = params.stop_duration_s * rng.uniform(0.5, 1.5, n_stops)
    knot_t, knot_s, knot_v, boundary_t = _speed_profile(route, edge_speed, stop_at_m, dwell_s)
    duration_s = float(knot_t[-1])

    step_s = params.sample_interval_s
    t_s = np.round(np.arange(int(duration_s // step_s) + 1) * step_s, 3)
    s_m = np.interp(t_s, knot_t, knot_s)
    true_speed = np.interp(t_s, knot_t, knot_v)
    true_xy, heading = _position_along(route, s_m)
    n = len(t_s)

    rho = NOISE_CORRELATION_1S**step_s
    # the white noise of the four AR(1) series is drawn in turn with the other draws, and
    # the four are filtered together
    white_x, white_y = rng.standard_normal(n), rng.standard_normal(n)
    outlier = rng.random(n) < params.outlier_rate
    angle = rng.uniform(0.0, 2 * np.pi, n)
    jump = params.outlier_distance_m * rng.uniform(0.7, 1.3, n) * outlier
    white_vertical, white_hdop = rng.standard_normal(n), rng.standard_normal(n)
    error_x, error_y, error_vertical, error_hdop = ar1_filter(
        np.stack([white_x, white_y, white_vertical, white_hdop]), rho
    )
    noise = np.column_stack([error_x, error_y]) * noise_sigma_m
    noise += np.column_stack([np.sin(angle), np.cos(angle)]) * jump[:, None]
    vertical = error_vertical * noise_sigma_m * VERTICAL_NOISE_FACTOR
    hdop_base = min(max(noise_sigma_m / 5.0, 0.6), 5.0)  # np.clip of a scalar, without numpy
    hdop = np.minimum(np.maximum(hdop_base * np.exp(0.15 * error_hdop), 0.6), 5.0)
    speed = np.maximum(0.0, true_speed + rng.normal(0.0, 0.1, n) * (1 + 0.02 * true_speed))
    heading_noise = rng.normal(0.0, 2.0, n) + rng.normal(0.0, 15.0, n) * (true_speed < 0.5)

    n_dropouts = rng.poisson(length_m / 1000.0 * params.dropout_rate_per_km)
    dropout_start = rng.uniform(0.0, duration_s, n_dropouts)
    dropout_end = dropout_start + params.dropout_duration_s * rng.uniform(0.75, 1.25, n_dropouts)
    keep = _kept_fixes(t_s, dropout_start, dropout_end)
    return TripDrive(
        t_s=t_s[keep],
        true_xy=true_xy[keep],
        noisy_xy=(true_xy + noise)[keep],
        elevation_m=(_terrain_m(true_xy) + vertical)[keep],
        hdop=hdop[keep],
        speed_mps=speed[keep],
        true_speed_mps=true_speed[keep],
        heading_deg=np.mod(heading + heading_noise, 360.0)[keep],
        outlier=outlier[keep],
        entered_s=boundary_t[:-1],
        exited_s=boundary_t[1:],
        duration_s=duration_s,
        stops=n_stops,
        dropouts=n_dropouts,
    )


def ar1_filter(white: np.ndarray, rho: float) -> np.ndarray:
    """NumPy's ``drive.ar1_filter``: block-wise cumulative sums along the rows."""
    n = white.shape[1]
    if n == 0 or rho <= 0.0:
        return white
    innovations = white * math.sqrt(1.0 - rho * rho)
    innovations[:, 0] = white[:, 0]
    all_powers = _ar1_powers(rho)
    block = len(all_powers)
    out = np.empty_like(innovations)
    carry = np.zeros((len(white), 1))
    for start in range(0, n, block):
        stop = min(start + block, n)
        powers = all_powers[: stop - start]
        cumulative = np.cumsum(innovations[:, start:stop] / powers, axis=1)
        out[:, start:stop] = powers * (carry * rho + cumulative)
        carry = out[:, stop - 1 : stop]
    return out


def _speed_profile(
    route: Route, edge_speed: np.ndarray, stop_at_m: np.ndarray, dwell_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy's ``drive_kernels.speed_profile``: knots and edge-boundary times of a drive."""
    length_m = route.length_m
    turn_at_m, turn_cap = _turn_caps(route)
    grid = _grid(length_m, max(2, math.ceil(length_m / GRID_STEP_M) + 1))
    s = _sorted_unique(np.concatenate([grid, route.edge_start_m, stop_at_m, turn_at_m]))
    edge_of = np.searchsorted(route.edge_start_m, s, side="right") - 1  # >= 0: s >= 0
    cap = edge_speed[np.minimum(edge_of, len(edge_speed) - 1)]
    cap = np.where(
        (s < END_ZONE_M) | (s > length_m - END_ZONE_M), np.minimum(cap, END_ZONE_SPEED_MPS), cap
    )
    turn_index = np.searchsorted(s, turn_at_m)
    cap[turn_index] = np.minimum(cap[turn_index], turn_cap)
    stop_index = np.searchsorted(s, stop_at_m)
    cap[stop_index] = 0.0
    cap[[0, -1]] = 0.0
    forward = 2 * ACCEL_MPS2 * s + np.minimum.accumulate(cap**2 - 2 * ACCEL_MPS2 * s)
    backward = (
        -2 * DECEL_MPS2 * s + np.minimum.accumulate((cap**2 + 2 * DECEL_MPS2 * s)[::-1])[::-1]
    )
    v = np.sqrt(np.maximum(np.minimum(forward, backward), 0.0))
    # differences by slicing: np.diff's arithmetic without its Python overhead
    step_t = 2 * (s[1:] - s[:-1]) / np.maximum(v[:-1] + v[1:], 1e-3)
    dwell = np.bincount(stop_index, weights=dwell_s, minlength=len(s))  # summed in order
    arrival = np.concatenate([[0.0], np.cumsum(step_t)]) + np.cumsum(dwell) - dwell
    knot_t, knot_s, knot_v = _with_departures(arrival, s, v, dwell)
    boundary_t = arrival[np.searchsorted(s, route.edge_start_m)]
    return knot_t, knot_s, knot_v, boundary_t


def _grid(length_m: float, points: int) -> np.ndarray:
    """Return ``np.linspace(0.0, length_m, points)`` (``points >= 2``) with less overhead.

    The same arithmetic: ``k * step`` with ``step = length_m / (points - 1)``, the last point
    set to ``length_m``; numpy's own when the step is 0 (it divides first then).
    """
    step = length_m / (points - 1)
    if step == 0.0:
        return np.linspace(0.0, length_m, points)
    grid = np.arange(points, dtype="float64") * step
    grid[-1] = length_m
    return grid


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of floats without NaN or signed zeros, with less overhead."""
    ordered = np.sort(values)
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def _with_departures(
    arrival: np.ndarray, s: np.ndarray, v: np.ndarray, dwell: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy's ``drive_kernels._with_departures``: a knot after each stop."""
    stopped = np.flatnonzero(dwell > 0)
    if len(stopped) == 0:
        return arrival, s, v
    source = np.repeat(np.arange(len(s)), np.where(dwell > 0, 2, 1))
    departure = stopped + np.arange(1, len(stopped) + 1)  # each stop's second knot
    knot_t = arrival[source]
    knot_t[departure] += dwell[stopped]
    knot_v = v[source]
    knot_v[departure] = 0.0
    return knot_t, s[source], knot_v


def _turn_caps(route: Route) -> tuple[np.ndarray, np.ndarray]:
    """Where the route turns by more than TURN_MIN_DEG, and the speed cap there (m/s)."""
    real = np.flatnonzero(route.step_m > 1e-6)
    if len(real) < 2:
        return np.empty(0), np.empty(0)
    bearing = np.arctan2(route.step[real, 0], route.step[real, 1])
    # np.diff and np.angle's arithmetic without their Python overhead
    turn = np.exp(1j * (bearing[1:] - bearing[:-1]))
    turn_deg = np.degrees(np.abs(np.arctan2(turn.imag, turn.real)))
    sharp = turn_deg > TURN_MIN_DEG
    at_m = route.cum_m[real[1:][sharp]]
    cap = np.maximum(2.5, 14.0 * (1.0 - turn_deg[sharp] / 150.0))
    return at_m, cap


def _position_along(route: Route, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position (metres) and bearing (degrees clockwise from north) at distances ``s_m``."""
    step, seg_len = route.step, route.step_m
    seg = np.searchsorted(route.cum_m, s_m, side="right") - 1  # >= 0: s_m >= 0
    seg = np.minimum(seg, len(step) - 1)
    fraction = np.clip(
        (s_m - route.cum_m[seg]) / np.where(seg_len[seg] > 0, seg_len[seg], 1.0), 0, 1
    )
    xy = route.xy[seg] + step[seg] * fraction[:, None]
    real = seg_len > 1e-6
    last_real = np.maximum.accumulate(np.where(real, np.arange(len(step)), -1))
    first_real = int(np.argmax(real)) if real.any() else 0
    source = np.where(last_real >= 0, last_real, first_real)
    heading = np.mod(np.degrees(np.arctan2(step[source, 0], step[source, 1])), 360.0)
    return xy, heading[seg]


def _terrain_m(xy: np.ndarray) -> np.ndarray:
    """Return a smooth, fixed terrain height (m) for the ``ele`` fields (no DEM is used)."""
    return 25.0 + 12.0 * np.sin(xy[:, 0] / 1700.0) + 8.0 * np.cos(xy[:, 1] / 1100.0)


# --- DrivingNetwork.path_edges and DrivingNetwork.route, on the network's arrays ----------


def path_edges(
    via_edge: np.ndarray, edge_u: np.ndarray, origin: int, destination: int
) -> np.ndarray:
    """Walk ``via_edge`` back from ``destination`` to ``origin``; edges in driving order."""
    via, edge_u_list = via_edge.tolist(), edge_u.tolist()
    edges: list[int] = []
    node = destination
    while node != origin:
        edge = via[node]
        if edge < 0:
            raise ValueError(f"node index {destination} is not reachable from {origin}")
        edges.append(edge)
        node = edge_u_list[edge]
    return np.array(edges[::-1], dtype="int64")


def route(coords: np.ndarray, coord_start: np.ndarray, edges: np.ndarray) -> Route:
    """Build the metric polyline of consecutive edges."""
    first = coord_start[edges]
    first[1:] += 1
    counts = coord_start[edges + 1] - first
    ends = np.cumsum(counts)
    xy = coords[np.repeat(first - (ends - counts), counts) + np.arange(ends[-1])]
    step = np.diff(xy, axis=0)
    step_m = np.hypot(step[:, 0], step[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(step_m)])
    edge_start = np.concatenate([[0.0], cum[ends - 1]])
    return Route(edges=edges, xy=xy, cum_m=cum, edge_start_m=edge_start, step=step, step_m=step_m)
