"""One compiled call that matches many trips: the snap stage's loop over a task's trips.

:func:`match_trips_kernel` runs, trip after trip, the same kernels as
:func:`pipeline.snap.match.match_trip` (candidate search, Viterbi decoding, route pieces and
the matched fixes) and returns their results concatenated. A trip's result is the same as
when it is matched alone (each kernel sees only the trip's own arrays); what it saves is the
Python work and the kernel dispatches of every trip, which cost as much as matching a short
trip.
"""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit
from pipeline.snap.graph_kernels import search_candidates
from pipeline.snap.hmm_kernels import decode_trip
from pipeline.snap.route_kernels import build_route_pieces, matched_fixes

# the modules whose kernels match_trips_kernel compiles into its own machine code: its cache is
# renewed when one of them changes (pipeline.jit)
KERNELS_CALLED = (
    "pipeline.snap.graph_kernels",
    "pipeline.snap.hmm_kernels",
    "pipeline.snap.route_kernels",
    "pipeline.snap.ubodt_kernels",
)


@cached_njit
def _candidate_points(ptr: np.ndarray) -> np.ndarray:
    """Return the fix of every candidate (CSR offsets ``ptr`` per fix)."""
    point = np.empty(ptr[-1], dtype=np.int64)
    for i in range(len(ptr) - 1):
        point[ptr[i] : ptr[i + 1]] = i
    return point


@cached_njit
def _grow(pieces: np.ndarray, used: int, extra: int) -> np.ndarray:
    """Return ``pieces`` with room for ``extra`` more rows after its ``used`` ones."""
    if used + extra <= len(pieces):
        return pieces
    bigger = np.empty((max(2 * len(pieces), used + extra), pieces.shape[1]))
    bigger[:used] = pieces[:used]
    return bigger


@cached_njit(depends_on=KERNELS_CALLED, aot=True)
def match_trips_kernel(
    x: np.ndarray,
    y: np.ndarray,
    ts: np.ndarray,
    bounds: np.ndarray,
    radius: np.ndarray,
    search: tuple,
    geometry: tuple,
    net: tuple,
    ub: tuple,
    prm: np.ndarray,
    estimate_beta: bool,
    max_route: float,
    network_ws: tuple,
) -> tuple[tuple, np.ndarray, np.ndarray]:
    """Match the trips ``[bounds[i], bounds[i + 1])`` of the fixes, one after the other.

    Parameters
    ----------
    x, y, ts
        The fixes in the network's metric projection, and their times (s), trip after trip.
    bounds
        Trip ``i`` is fixes ``bounds[i]:bounds[i + 1]``.
    radius
        Each fix's search radius (m).
    search
        ``(max_radius_m, max_candidates, vert_x, vert_y, vert_off, seg_vert, seg_edge,
        grid_keys, grid_ptr, grid_seg, origin_x, origin_y, cell_m, ncols)``: the arguments of
        :func:`~pipeline.snap.graph_kernels.search_candidates` after the radius.
    geometry
        ``(edge_length_m, edge_len_m, edge_vert_ptr, vert_lon, vert_lat)``, for
        :func:`~pipeline.snap.route_kernels.matched_fixes` (with ``search``'s ``vert_off``).
    net, ub, prm, network_ws
        The routing arrays, the UBODT arrays, the settings' kernel array and the worker's
        network workspace, as :func:`~pipeline.snap.hmm_kernels.decode_viterbi` takes them.
    estimate_beta
        ``MatchParams.estimate_beta``: decode each trip again with the transition scale
        fitted to its first decoding, as :func:`~pipeline.snap.match.match_trip` does.
    max_route
        ``MatchParams.max_route_m``, for the route pieces.

    Returns
    -------
    tuple
        ``fixes``: per fix, as :func:`~pipeline.snap.route_kernels.matched_fixes` and
        :func:`~pipeline.snap.hmm_kernels.decode_viterbi` give them, ``(edge, offset_m,
        distance_m, lon, lat, is_break, status, segment)``; ``pieces``: the route pieces
        ``[edge, from_m, to_m, t0, t1, segment]`` of every trip, trip after trip (as
        :func:`~pipeline.snap.route_kernels.build_route_pieces` gives them); and
        ``piece_bounds``: trip ``i``'s pieces are ``piece_bounds[i]:piece_bounds[i + 1]``.
    """
    n = len(x)
    n_trips = len(bounds) - 1
    fix_edge = np.empty(n, dtype=np.int64)
    fix_offset, fix_dist, fix_lon, fix_lat = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    fix_break = np.empty(n, dtype=np.bool_)
    fix_status = np.empty(n, dtype=np.int8)
    fix_segment = np.empty(n, dtype=np.int32)
    pieces = np.empty((max(16, 2 * n), 6))
    piece_bounds = np.zeros(n_trips + 1, dtype=np.int64)
    used = 0
    (max_radius, max_cand, vert_x, vert_y, vert_off, seg_vert, seg_edge, grid_keys, grid_ptr,
     grid_seg, origin_x, origin_y, cell_m, ncols) = search  # fmt: skip
    edge_length_m, edge_len_m, edge_vert_ptr, vert_lon, vert_lat = geometry
    for i in range(n_trips):
        a, b = bounds[i], bounds[i + 1]
        px, py, pt = x[a:b], y[a:b], ts[a:b]
        cand = search_candidates(
            px, py, radius[a:b], max_radius, max_cand, vert_x, vert_y, vert_off, seg_vert,
            seg_edge, grid_keys, grid_ptr, grid_seg, origin_x, origin_y, cell_m, ncols,
        )  # fmt: skip
        cand_point = _candidate_points(cand[0])
        (chosen, status, segment, kind, _), _ = decode_trip(
            px, py, pt, cand, cand_point, net, ub, prm, network_ws, estimate_beta
        )
        trip_pieces = build_route_pieces(
            chosen, segment, pt, cand[1], cand[2], kind, net, ub, max_route, network_ws[0]
        )
        edge, offset, dist, lon, lat, is_break = matched_fixes(
            chosen, segment, cand[1], cand[2], cand[3], edge_length_m, edge_len_m,
            edge_vert_ptr, vert_off, vert_lon, vert_lat,
        )  # fmt: skip
        fix_edge[a:b] = edge
        fix_offset[a:b] = offset
        fix_dist[a:b] = dist
        fix_lon[a:b] = lon
        fix_lat[a:b] = lat
        fix_break[a:b] = is_break
        fix_status[a:b] = status
        fix_segment[a:b] = segment
        m = len(trip_pieces)
        pieces = _grow(pieces, used, m)
        pieces[used : used + m] = trip_pieces
        used += m
        piece_bounds[i + 1] = used
    fixes = (fix_edge, fix_offset, fix_dist, fix_lon, fix_lat, fix_break, fix_status, fix_segment)
    return fixes, pieces[:used], piece_bounds
