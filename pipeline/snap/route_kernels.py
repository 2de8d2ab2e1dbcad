"""Compiled kernels that turn decoded candidates into the traversed route and its geometry."""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit
from pipeline.snap.graph_kernels import dijkstra_to_marked, reset_workspace
from pipeline.snap.hmm_kernels import SAME_EDGE, UTURN
from pipeline.snap.ubodt_kernels import ubodt_lookup

INF = np.inf
# columns of the piece table
EDGE, FROM, TO, T0, T1, SEG = range(6)


@cached_njit(inline="always")
def _append(
    buf: np.ndarray, m: int, edge: int, lo: float, hi: float, t0: float, t1: float, seg: int
) -> np.ndarray:
    if m == len(buf):
        bigger = np.empty((2 * len(buf), 6))
        bigger[:m] = buf
        buf = bigger
    buf[m, EDGE] = edge
    buf[m, FROM] = lo
    buf[m, TO] = hi
    buf[m, T0] = t0
    buf[m, T1] = t1
    buf[m, SEG] = seg
    return buf


@cached_njit
def _shortest_path(
    src: int,
    tgt: int,
    net: tuple,
    ub: tuple,
    ws: tuple,
    max_route: float,
) -> np.ndarray:
    """Return the edges of the shortest path ``src -> tgt`` (empty if src == tgt)."""
    out_ptr, out_edge, edge_u, edge_v, edge_len, _ = net
    ub_keys, ub_dist, ub_first, _ = ub
    n_nodes = len(out_ptr) - 1
    if src == tgt:
        return np.empty(0, dtype=np.int64)
    if len(ub_keys) > 0:
        _d, slot = ubodt_lookup(ub_keys, ub_dist, src, tgt, n_nodes)
        if slot >= 0:
            path = []
            node = src
            while node != tgt:
                _, s = ubodt_lookup(ub_keys, ub_dist, node, tgt, n_nodes)
                e = ub_first[s]
                path.append(np.int64(e))
                node = edge_v[e]
            return np.array(path, dtype=np.int64)
    search, row = ws
    pred, mark = search[1], search[5]
    mark[tgt] = 0
    n_touched = dijkstra_to_marked(
        src, max_route, 1, out_ptr, out_edge, edge_v, edge_len, search, row
    )
    mark[tgt] = -1
    back = []
    node = tgt
    while node != src and pred[node] >= 0:
        e = pred[node]
        back.append(np.int64(e))
        node = edge_u[e]
    reset_workspace(search, n_touched)
    n = len(back)
    path_arr = np.empty(n, dtype=np.int64)
    for i in range(n):
        path_arr[i] = back[n - 1 - i]
    return path_arr


@cached_njit
def build_route_pieces(
    chosen: np.ndarray,
    segment: np.ndarray,
    ts: np.ndarray,
    cand_edge: np.ndarray,
    cand_off: np.ndarray,
    kind: np.ndarray,
    net: tuple,
    ub: tuple,
    max_route: float,
    search: tuple,
) -> np.ndarray:
    """Return the traversed pieces ``[edge, from_m, to_m, t0, t1, segment]``, merged per edge.

    Between two consecutive matched fixes the vehicle stays on its edge (never moving
    backwards: jitter within the backward tolerance is treated as standing still), turns on
    the reverse twin (U-turn), or follows the shortest path through the graph. ``search`` is
    a Dijkstra workspace of the network (:func:`~pipeline.snap.graph_kernels.new_workspace`,
    e.g. the worker's, reused from trip to trip), found and left with nothing marked.
    """
    _out_ptr, _out_edge, edge_u, edge_v, edge_len, _ = net
    ws = (search, np.empty(1))
    buf = np.empty((max(16, 2 * len(chosen)), 6))
    m = 0
    cur_e = -1
    pos = 0.0
    start = 0.0
    t_in = 0.0
    prev = -1
    for t in range(len(chosen)):
        c = chosen[t]
        if c < 0:
            continue
        e = cand_edge[c]
        o = cand_off[c]
        if prev < 0 or segment[t] != segment[prev]:
            if cur_e >= 0:
                buf = _append(buf, m, cur_e, start, pos, t_in, ts[prev], segment[prev])
                m += 1
            cur_e, start, pos, t_in = e, o, o, ts[t]
            prev = t
            continue
        t0, t1 = ts[prev], ts[t]
        if kind[c] == SAME_EDGE:
            pos = max(pos, o)
        elif kind[c] == UTURN:
            buf = _append(buf, m, cur_e, start, pos, t_in, t0, segment[t])
            m += 1
            turn = max(edge_len[e] - pos, 0.0)
            cur_e, start, pos, t_in = e, turn, max(turn, o), t0
        else:
            path = _shortest_path(edge_v[cur_e], edge_u[e], net, ub, ws, max_route)
            total = edge_len[cur_e] - pos + o
            for p in path:
                total += edge_len[p]
            span = t1 - t0
            done = edge_len[cur_e] - pos
            t_cut = t0 + span * (done / total if total > 0 else 1.0)
            buf = _append(buf, m, cur_e, start, edge_len[cur_e], t_in, t_cut, segment[t])
            m += 1
            for p in path:
                t_from = t_cut
                done += edge_len[p]
                t_cut = t0 + span * (done / total if total > 0 else 1.0)
                buf = _append(buf, m, p, 0.0, edge_len[p], t_from, t_cut, segment[t])
                m += 1
            cur_e, start, pos, t_in = e, 0.0, o, t_cut
        prev = t
    if cur_e >= 0:
        buf = _append(buf, m, cur_e, start, pos, t_in, ts[prev], segment[prev])
        m += 1
    return buf[:m]


@cached_njit(aot=True)
def substring_coords(
    piece_edge: np.ndarray,
    piece_from: np.ndarray,
    piece_to: np.ndarray,
    edge_vert_ptr: np.ndarray,
    vert_off: np.ndarray,
    vert_lon: np.ndarray,
    vert_lat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the lon/lat vertices of each piece of edge and their line index.

    Each piece becomes the part of its edge between the two offsets (metric), with
    interpolated end points; a zero-length piece gets two identical points.
    """
    n = len(piece_edge)
    count = 0
    for i in range(n):
        e = piece_edge[i]
        count += 2 + (edge_vert_ptr[e + 1] - edge_vert_ptr[e])
    coords = np.empty((count, 2))
    index = np.empty(count, dtype=np.int64)
    k = 0
    for i in range(n):
        e = piece_edge[i]
        v0, v1 = edge_vert_ptr[e], edge_vert_ptr[e + 1]
        lo, hi = piece_from[i], piece_to[i]
        coords[k, 0], coords[k, 1] = _interpolate(v0, v1, lo, vert_off, vert_lon, vert_lat)
        index[k] = i
        k += 1
        for v in range(v0 + 1, v1 - 1):
            if lo < vert_off[v] < hi:
                coords[k, 0], coords[k, 1] = vert_lon[v], vert_lat[v]
                index[k] = i
                k += 1
        coords[k, 0], coords[k, 1] = _interpolate(v0, v1, hi, vert_off, vert_lon, vert_lat)
        index[k] = i
        k += 1
    return coords[:k], index[:k]


@cached_njit(inline="always")
def _interpolate(
    v0: int, v1: int, off: float, vert_off: np.ndarray, vert_lon: np.ndarray,
    vert_lat: np.ndarray,
) -> tuple[float, float]:  # fmt: skip
    """Return lon/lat at metric offset ``off`` along the polyline of vertices v0..v1-1."""
    for v in range(v0, v1 - 1):
        if off <= vert_off[v + 1] or v == v1 - 2:
            span = vert_off[v + 1] - vert_off[v]
            f = 0.0 if span <= 0 else min(max((off - vert_off[v]) / span, 0.0), 1.0)
            return (
                vert_lon[v] + f * (vert_lon[v + 1] - vert_lon[v]),
                vert_lat[v] + f * (vert_lat[v + 1] - vert_lat[v]),
            )
    return vert_lon[v0], vert_lat[v0]


@cached_njit
def matched_fixes(
    chosen: np.ndarray,
    segment: np.ndarray,
    cand_edge: np.ndarray,
    cand_off: np.ndarray,
    cand_dist: np.ndarray,
    edge_length_m: np.ndarray,
    edge_len_m: np.ndarray,
    edge_vert_ptr: np.ndarray,
    vert_off: np.ndarray,
    vert_lon: np.ndarray,
    vert_lat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return each fix's edge, offset (``length_m`` scale), distance, lon, lat and break flag.

    From its chosen candidate (``-1``: unmatched, giving edge ``-1``, NaN and no break). A
    break is the first matched fix of a run (``segment``) after the first run.
    """
    n = len(chosen)
    edge = np.full(n, -1, dtype=np.int64)
    offset = np.full(n, np.nan)
    dist = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    is_break = np.zeros(n, dtype=np.bool_)
    last_segment = -1
    for i in range(n):
        c = chosen[i]
        if c < 0:
            continue
        e = np.int64(cand_edge[c])
        edge[i] = e
        metric = edge_len_m[e]
        offset[i] = cand_off[c] * (edge_length_m[e] / metric if metric > 0 else 1.0)
        dist[i] = cand_dist[c]
        v0, v1 = edge_vert_ptr[e], edge_vert_ptr[e + 1]
        lon[i], lat[i] = _interpolate(v0, v1, cand_off[c], vert_off, vert_lon, vert_lat)
        is_break[i] = segment[i] > 0 and segment[i] != last_segment
        last_segment = segment[i]
    return edge, offset, dist, lon, lat, is_break
