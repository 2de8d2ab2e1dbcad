"""Compiled (numba) kernels of the fleet simulator's drive: speed profile, fixes, GPS error.

Each kernel does in one call the arithmetic that a trip's drive did in dozens of small numpy
calls, with the same operations in the same order, so the numbers are the same to the bit:
no fast-math, running sums accumulated in numpy's order, and ``np.interp``'s, ``np.mod``'s,
``np.round``'s and ``np.maximum``'s own formulas. Transcendental functions (``exp``,
``sin``, ``arctan2``…) stay in numpy, whose implementations differ from the C library's on
some CPUs: the kernels take their results as arguments. Every function works on plain numpy
arrays and is cached on disk (:func:`pipeline.jit.cached_njit`).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.jit import cached_njit

ACCEL_MPS2 = 1.2
DECEL_MPS2 = 1.8
END_ZONE_M = 40.0  # leaving / looking for a parking place...
END_ZONE_SPEED_MPS = 5.0  # ...is done slowly
REAL_STEP_M = 1e-6  # polyline segments at most this long have no direction
TURN_MIN_DEG = 20.0
DEGREES_PER_RADIAN = 180.0 / math.pi  # what np.degrees multiplies by
VERTICAL_NOISE_FACTOR = 1.5


@cached_njit(inline="always")
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN propagates, ``b`` when they are equal."""
    return a if (a != a or a > b) else b


@cached_njit(inline="always")
def _minimum(a: float, b: float) -> float:
    """``np.minimum`` of two floats: NaN propagates, ``b`` when they are equal."""
    return a if (a != a or a < b) else b


@cached_njit(inline="always")
def _mod_360(value: float) -> float:
    """``np.mod(value, 360.0)``: ``fmod``, moved into [0, 360) when negative."""
    mod = np.fmod(value, 360.0)
    if mod == 0.0:
        return 0.0
    return mod + 360.0 if mod < 0.0 else mod


@cached_njit
def bearing_changes(
    bearing: np.ndarray, step_m: np.ndarray, cum_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return where the direction of a polyline may change and by how much.

    Parameters
    ----------
    bearing
        Each segment's bearing, radians.
    step_m
        Each segment's length, metres; those longer than REAL_STEP_M have a direction.
    cum_m
        Distance along the polyline at each vertex.

    Returns
    -------
    at_m
        Where each segment with a direction but the first starts.
    change
        Its bearing minus the previous such segment's, radians.
    """
    real = np.flatnonzero(step_m > REAL_STEP_M)
    turns = max(len(real) - 1, 0)
    at_m = np.empty(turns)
    change = np.empty(turns)
    for k in range(turns):
        at_m[k] = cum_m[real[k + 1]]
        change[k] = bearing[real[k + 1]] - bearing[real[k]]
    return at_m, change


@cached_njit
def speed_profile(
    edge_start_m: np.ndarray,
    edge_speed: np.ndarray,
    stop_at_m: np.ndarray,
    dwell_s: np.ndarray,
    turn_at_m: np.ndarray,
    turn_angle: np.ndarray,
    grid_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the time, distance and speed knots of a drive and the time at edge boundaries.

    Speeds are capped by each edge's speed, by sharp turns, near the trip ends and to 0 at
    stops, then limited by acceleration and braking (running minima of ``v² ∓ 2 a s``); the
    vehicle stands ``dwell_s`` at each stop (a second knot where it leaves).

    Parameters
    ----------
    edge_start_m
        Distance where each edge starts, and the route's length last.
    edge_speed
        Each edge's speed, m/s.
    stop_at_m, dwell_s
        Where the vehicle stops (sorted) and for how long, seconds.
    turn_at_m, turn_angle
        Where the route may turn (sorted) and by how much, radians (signed; a turn by more
        than TURN_MIN_DEG caps the speed).
    grid_points
        Points of the evenly spaced grid of the profile along the route (at least 2).

    Returns
    -------
    knot_t, knot_s, knot_v
        The knots: seconds from the start, metres along the route, m/s.
    boundary_t
        The time at each of ``edge_start_m``.
    """
    length_m = edge_start_m[-1]
    turn_deg = np.abs(turn_angle) * DEGREES_PER_RADIAN
    sharp = turn_deg > TURN_MIN_DEG
    sharp_at_m = turn_at_m[sharp]
    s = np.concatenate((_grid(length_m, grid_points), edge_start_m, stop_at_m, sharp_at_m))
    s = _sorted_unique(s)
    cap = _edge_caps(s, edge_start_m, edge_speed)
    turn_index = np.searchsorted(s, sharp_at_m)
    turn_cap = np.empty(len(turn_index))
    for k, deg in enumerate(turn_deg[sharp]):  # from the caps before any turn's
        turn_cap[k] = _minimum(cap[turn_index[k]], _maximum(2.5, 14.0 * (1.0 - deg / 150.0)))
    for k in range(len(turn_index)):  # the last one wins
        cap[turn_index[k]] = turn_cap[k]
    stop_index = np.searchsorted(s, stop_at_m)
    for k in range(len(stop_index)):
        cap[stop_index[k]] = 0.0
    cap[0] = 0.0
    cap[-1] = 0.0
    v = _reachable_speeds(s, cap)
    dwell = np.zeros(len(s))
    for k in range(len(stop_index)):  # np.bincount's order
        dwell[stop_index[k]] += dwell_s[k]
    arrival = _arrival_times(s, v, dwell)
    boundary_t = arrival[np.searchsorted(s, edge_start_m)]
    knot_t, knot_s, knot_v = _with_departures(arrival, s, v, dwell)
    return knot_t, knot_s, knot_v, boundary_t


@cached_njit
def _grid(length_m: float, points: int) -> np.ndarray:
    """Return ``np.linspace(0.0, length_m, points)`` (``points >= 2``): its arithmetic."""
    div = points - 1
    step = length_m / div
    grid = np.empty(points)
    for k in range(points):
        grid[k] = (k * step if step != 0.0 else k / div * length_m) + 0.0
    grid[-1] = length_m
    return grid


@cached_njit
def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of floats without NaN or signed zeros."""
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=np.bool_)
    for i in range(1, len(ordered)):
        first[i] = ordered[i] != ordered[i - 1]
    return ordered[first]


@cached_njit
def _edge_caps(s: np.ndarray, edge_start_m: np.ndarray, edge_speed: np.ndarray) -> np.ndarray:
    """Speed cap at each of ``s``: its edge's speed, END_ZONE_SPEED_MPS near the ends."""
    length_m = edge_start_m[-1]
    last_edge = len(edge_speed) - 1
    edge_of = np.searchsorted(edge_start_m, s, side="right") - 1
    cap = np.empty(len(s))
    for i in range(len(s)):
        cap[i] = edge_speed[min(edge_of[i], last_edge)]
        if s[i] < END_ZONE_M or s[i] > length_m - END_ZONE_M:
            cap[i] = _minimum(cap[i], END_ZONE_SPEED_MPS)
    return cap


@cached_njit
def _reachable_speeds(s: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Speeds within ``cap`` reached accelerating forwards and braking (running minima)."""
    n = len(s)
    forward = np.empty(n)
    running = 0.0
    for i in range(n):
        term = cap[i] * cap[i] - 2 * ACCEL_MPS2 * s[i]
        running = term if i == 0 else _minimum(running, term)
        forward[i] = 2 * ACCEL_MPS2 * s[i] + running
    v = np.empty(n)
    for i in range(n - 1, -1, -1):
        term = cap[i] * cap[i] + 2 * DECEL_MPS2 * s[i]
        running = term if i == n - 1 else _minimum(running, term)
        backward = -2 * DECEL_MPS2 * s[i] + running
        v[i] = math.sqrt(_maximum(_minimum(forward[i], backward), 0.0))
    return v


@cached_njit
def _arrival_times(s: np.ndarray, v: np.ndarray, dwell: np.ndarray) -> np.ndarray:
    """Time of arrival at each point: the driving time to it plus the earlier stops' dwell.

    ``concatenate([[0], cumsum(step_t)]) + cumsum(dwell) - dwell`` added in numpy's order.
    """
    arrival = np.empty(len(s))
    driving = 0.0
    stood = dwell[0]
    arrival[0] = 0.0 + stood - dwell[0]
    for i in range(1, len(s)):
        step_t = 2 * (s[i] - s[i - 1]) / _maximum(v[i - 1] + v[i], 1e-3)
        driving = step_t if i == 1 else driving + step_t
        stood += dwell[i]
        arrival[i] = driving + stood - dwell[i]
    return arrival


@cached_njit
def _with_departures(
    arrival: np.ndarray, s: np.ndarray, v: np.ndarray, dwell: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add a knot after each stop: where the vehicle leaves it, ``dwell`` later at speed 0."""
    n = len(s) + np.count_nonzero(dwell > 0)
    knot_t, knot_s, knot_v = np.empty(n), np.empty(n), np.empty(n)
    k = 0
    for i in range(len(s)):
        knot_t[k], knot_s[k], knot_v[k] = arrival[i], s[i], v[i]
        k += 1
        if dwell[i] > 0:
            knot_t[k], knot_s[k], knot_v[k] = arrival[i] + dwell[i], s[i], 0.0
            k += 1
    return knot_t, knot_s, knot_v


@cached_njit
def fixes_along(
    knot_t: np.ndarray,
    knot_s: np.ndarray,
    knot_v: np.ndarray,
    count: int,
    step_s: float,
    xy: np.ndarray,
    cum_m: np.ndarray,
    bearing: np.ndarray,
    step_m: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the true fixes of a drive, one every ``step_s`` seconds.

    Parameters
    ----------
    knot_t, knot_s, knot_v
        The drive's speed profile (:func:`speed_profile`).
    count
        Number of fixes.
    step_s
        Seconds between fixes (fix times are rounded to milliseconds).
    xy, cum_m
        The route polyline (metres) and the distance along it at each vertex.
    bearing, step_m
        Each polyline segment's bearing (radians) and length (metres).

    Returns
    -------
    t_s
        Fix times from the start, seconds.
    speed_mps
        True speed at each fix.
    fix_xy
        True position at each fix, metres (shape ``(count, 2)``).
    heading_deg
        Heading at each fix, degrees clockwise from north: the bearing of its segment, or
        of the last one before it with a direction (else the first one with a direction).
    """
    t_s = np.empty(count)
    for k in range(count):
        t_s[k] = np.rint(k * step_s * 1000.0) / 1000.0  # np.round(…, 3)
    s_m = _interp(t_s, knot_t, knot_s)
    speed_mps = _interp(t_s, knot_t, knot_v)
    segment_heading = _segment_headings(bearing, step_m)
    last = len(step_m) - 1
    segment = np.minimum(np.searchsorted(cum_m, s_m, side="right") - 1, last)
    fix_xy = np.empty((count, 2))
    heading_deg = np.empty(count)
    for k in range(count):
        seg = segment[k]
        length = step_m[seg] if step_m[seg] > 0 else 1.0
        fraction = _minimum(_maximum((s_m[k] - cum_m[seg]) / length, 0.0), 1.0)  # np.clip
        for axis in range(2):
            fix_xy[k, axis] = xy[seg, axis] + (xy[seg + 1, axis] - xy[seg, axis]) * fraction
        heading_deg[k] = segment_heading[seg]
    return t_s, speed_mps, fix_xy, heading_deg


@cached_njit
def _segment_headings(bearing: np.ndarray, step_m: np.ndarray) -> np.ndarray:
    """Heading (degrees in [0, 360)) along each segment; see :func:`fixes_along`."""
    first_real = 0
    for i in range(len(step_m)):
        if step_m[i] > REAL_STEP_M:
            first_real = i
            break
    heading = np.empty(len(step_m))
    source = -1
    for i in range(len(step_m)):
        if step_m[i] > REAL_STEP_M:
            source = i
        heading[i] = _mod_360(bearing[source if source >= 0 else first_real] * DEGREES_PER_RADIAN)
    return heading


@cached_njit
def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, xp, fp)``, with numpy's arithmetic (``xp`` non-decreasing)."""
    last = len(xp) - 1
    out = np.empty(len(x))
    for i in range(len(x)):
        value = x[i]
        j = np.searchsorted(xp, value, side="right") - 1
        if last == 0:  # one knot: its value unless beyond it (even at NaN)
            out[i] = fp[0]
        elif value != value:
            out[i] = value
        elif value > xp[last]:
            out[i] = fp[last]
        elif j < 0:
            out[i] = fp[0]
        elif j == last or xp[j] == value:
            out[i] = fp[j]
        else:
            slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
            out[i] = slope * (value - xp[j]) + fp[j]
            if out[i] != out[i]:  # NaN one way: the other way
                out[i] = slope * (value - xp[j + 1]) + fp[j + 1]
                if out[i] != out[i] and fp[j] == fp[j + 1]:
                    out[i] = fp[j]
    return out


@cached_njit
def ar1_series(white: np.ndarray, rho: float, powers: np.ndarray) -> np.ndarray:
    """Turn rows of white noise into AR(1) series: the arithmetic of ``ar1_filter``.

    ``e[0] = w[0]``, then block by block of ``len(powers)`` samples ``e = powers * (carry rho
    + cumsum(innovations / powers))``, ``carry`` the block before's last value and the
    innovations ``w sqrt(1 - rho²)``.

    Parameters
    ----------
    white
        Standard normal draws, one series per row.
    rho
        Lag-1 correlation, in (0, 1).
    powers
        ``rho ** k`` for the ``k`` of one block.
    """
    scale = math.sqrt(1.0 - rho * rho)
    block = len(powers)
    series, n = white.shape
    out = np.empty_like(white)
    for row in range(series):
        carry = 0.0
        for start in range(0, n, block):
            total = 0.0
            for k in range(min(block, n - start)):
                i = start + k
                innovation = white[row, i] if i == 0 else white[row, i] * scale
                total = innovation / powers[k] if k == 0 else total + innovation / powers[k]
                out[row, i] = powers[k] * (carry * rho + total)
            carry = out[row, min(start + block, n) - 1]
    return out


@cached_njit
def logged_fixes(
    true_xy: np.ndarray,
    true_speed: np.ndarray,
    true_heading_deg: np.ndarray,
    error: np.ndarray,
    hdop_growth: np.ndarray,
    noise_sigma_m: float,
    jump: np.ndarray,
    jump_sin: np.ndarray,
    jump_cos: np.ndarray,
    terrain_sin: np.ndarray,
    terrain_cos: np.ndarray,
    speed_error: np.ndarray,
    heading_error: np.ndarray,
    stopped_heading_error: np.ndarray,
    hdop_base: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return what a receiver logs at true fixes: position, height, HDOP, speed and heading.

    Parameters
    ----------
    true_xy, true_speed, true_heading_deg
        True positions (metres, shape ``(n, 2)``), speeds (m/s) and headings (degrees).
    error
        AR(1) errors of unit variance of x, y and height, one row each (more rows unused).
    hdop_growth
        ``exp(0.15 e)`` of the HDOP's AR(1) error ``e``.
    noise_sigma_m
        The receiver's horizontal error, metres.
    jump, jump_sin, jump_cos
        Outlier jumps (metres, zero but at outliers) and the sines and cosines of their
        directions.
    terrain_sin, terrain_cos
        ``sin(x / 1700)`` and ``cos(y / 1100)`` of the true positions (the terrain's waves).
    speed_error
        Speed errors (m/s) at low speed.
    heading_error, stopped_heading_error
        Heading errors (degrees), and more of them when slower than 0.5 m/s.
    hdop_base
        The receiver's typical HDOP.

    Returns
    -------
    noisy_xy, elevation_m, hdop, speed_mps, heading_deg
        The logged positions (metres), heights, HDOP, speeds (not negative) and headings
        (in [0, 360)).
    """
    n = len(true_speed)
    noisy_xy = np.empty((n, 2))
    elevation_m, hdop, speed_mps, heading_deg = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        noisy_xy[i, 0] = true_xy[i, 0] + (error[0, i] * noise_sigma_m + jump_sin[i] * jump[i])
        noisy_xy[i, 1] = true_xy[i, 1] + (error[1, i] * noise_sigma_m + jump_cos[i] * jump[i])
        terrain = 25.0 + 12.0 * terrain_sin[i] + 8.0 * terrain_cos[i]
        elevation_m[i] = terrain + error[2, i] * noise_sigma_m * VERTICAL_NOISE_FACTOR
        hdop[i] = _minimum(_maximum(hdop_base * hdop_growth[i], 0.6), 5.0)
        speed = true_speed[i] + speed_error[i] * (1 + 0.02 * true_speed[i])
        speed_mps[i] = _maximum(0.0, speed)
        stopped = 1.0 if true_speed[i] < 0.5 else 0.0
        heading = true_heading_deg[i] + (heading_error[i] + stopped_heading_error[i] * stopped)
        heading_deg[i] = _mod_360(heading)
    return noisy_xy, elevation_m, hdop, speed_mps, heading_deg


@cached_njit
def walk_back(
    via_edge: np.ndarray, edge_u: np.ndarray, origin: int, destination: int
) -> tuple[np.ndarray, bool]:
    """Return the edges of a shortest path tree's path from ``origin`` to ``destination``.

    Parameters
    ----------
    via_edge
        The edge by which each node is reached (-1: none), from a search from ``origin``.
    edge_u
        Each edge's start node.
    origin, destination
        Node indexes.

    Returns
    -------
    edges
        The path's edges in driving order (empty if there is none).
    reached
        Whether the tree reaches ``destination``.
    """
    count = 0
    node = destination
    while node != origin:
        edge = via_edge[node]
        if edge < 0:
            return np.empty(0, dtype=np.int64), False
        count += 1
        node = edge_u[edge]
    edges = np.empty(count, dtype=np.int64)
    node = destination
    for k in range(count - 1, -1, -1):
        edges[k] = via_edge[node]
        node = edge_u[edges[k]]
    return edges, True


@cached_njit
def route_vertices(
    coords: np.ndarray, coord_start: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the polyline of consecutive edges, its segments and where each edge ends.

    Each edge after the first leaves out its first vertex (the previous edge's last).

    Parameters
    ----------
    coords
        Every edge's vertices, edge after edge (metres, shape ``(n, 2)``).
    coord_start
        Where each edge's vertices start in ``coords``, and their count last.
    edges
        The edges, in driving order (at least one).

    Returns
    -------
    xy
        The polyline's vertices.
    step
        Its segments as vectors (``np.diff(xy, axis=0)``).
    edge_end
        The index in ``xy`` of each edge's last vertex.
    """
    edge_end = np.empty(len(edges), dtype=np.int64)
    count = 0
    for k in range(len(edges)):
        count += coord_start[edges[k] + 1] - coord_start[edges[k]] - (1 if k else 0)
        edge_end[k] = count - 1
    xy = np.empty((count, 2))
    row = 0
    for k in range(len(edges)):
        for source in range(coord_start[edges[k]] + (1 if k else 0), coord_start[edges[k] + 1]):
            xy[row, 0], xy[row, 1] = coords[source, 0], coords[source, 1]
            row += 1
    step = np.empty((count - 1, 2))
    for i in range(count - 1):
        step[i, 0] = xy[i + 1, 0] - xy[i, 0]
        step[i, 1] = xy[i + 1, 1] - xy[i, 1]
    return xy, step, edge_end


@cached_njit
def route_distances(step_m: np.ndarray, edge_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distance along a polyline at each vertex and where each edge starts.

    Parameters
    ----------
    step_m
        The segments' lengths.
    edge_end
        The index of each edge's last vertex (:func:`route_vertices`).

    Returns
    -------
    cum_m
        ``concatenate([[0], cumsum(step_m)])``.
    edge_start_m
        0, then the distance at each edge's last vertex.
    """
    cum_m = np.empty(len(step_m) + 1)
    cum_m[0] = 0.0
    for i in range(len(step_m)):
        cum_m[i + 1] = step_m[i] if i == 0 else cum_m[i] + step_m[i]
    edge_start_m = np.empty(len(edge_end) + 1)
    edge_start_m[0] = 0.0
    for k in range(len(edge_end)):
        edge_start_m[k + 1] = cum_m[edge_end[k]]
    return cum_m, edge_start_m
