"""Compiled kernels of the matcher: Viterbi decoding with outliers and breaks, and route pieces.

States are candidates (edge, offset from u in metres). Emission: ``-0.5 (d / sigma)^2``;
transition: ``-|route - straight| / beta`` where the route distance is ``o2 - o1`` on the same
edge, ``len(e1) - o1 + d(v1, u2) + o2`` through the graph (bounded Dijkstra or UBODT lookup),
or a penalised mid-edge U-turn onto the reverse twin. All in log space.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.snap.graph_kernels import dijkstra_to_targets, new_workspace, reset_workspace
from pipeline.snap.ubodt_kernels import ubodt_lookup

INF = np.inf
MATCHED = 0
NO_CANDIDATE = 1
OUTLIER = 2

SAME_EDGE = 0
UTURN = 1
VIA_GRAPH = 2

# indices into MatchParams.kernel_array()
_SIGMA, _BETA, _VMAX, _SLACK, _MAX_ROUTE, _UTURN, _TOL, _MAX_OUT, _BEAM = range(9)


@njit(cache=True)
def _graph_distances(
    src: int,
    tgt: np.ndarray,
    nb: int,
    budget: float,
    net: tuple,
    ub: tuple,
    ws: tuple,
    gd: np.ndarray,
) -> None:
    """Fill ``gd[:nb]`` with the route distance ``src -> tgt[k]`` (inf beyond ``budget``)."""
    out_ptr, out_edge, _edge_u, edge_v, edge_len, _edge_twin = net
    ub_keys, ub_dist, _ub_first, ub_delta = ub
    dist, pred, touched, heap_d, heap_n, result = ws
    if budget < 0.0:
        for k in range(nb):
            gd[k] = INF
        return
    if len(ub_keys) > 0 and budget <= ub_delta:
        n_nodes = len(out_ptr) - 1
        for k in range(nb):
            d, _ = ubodt_lookup(ub_keys, ub_dist, src, tgt[k], n_nodes)
            gd[k] = d if d <= budget else INF
        return
    n_touched = dijkstra_to_targets(
        src, tgt, nb, budget, out_ptr, out_edge, edge_v, edge_len,
        dist, pred, touched, heap_d, heap_n, result,
    )  # fmt: skip
    reset_workspace(dist, pred, touched, n_touched)
    for k in range(nb):
        gd[k] = result[k]


@njit(cache=True)
def _step(
    prev: int,
    t: int,
    px: np.ndarray,
    py: np.ndarray,
    ts: np.ndarray,
    cand: tuple,
    net: tuple,
    ub: tuple,
    ws: tuple,
    prm: np.ndarray,
    score: np.ndarray,
    back: np.ndarray,
    kind: np.ndarray,
    tgt: np.ndarray,
    gd: np.ndarray,
) -> bool:
    """Fill the Viterbi column of fix ``t`` from the column of ``prev``; False if unreachable."""
    cand_ptr, cand_edge, cand_off, cand_dist = cand
    edge_u, edge_v, edge_len, edge_twin = net[2], net[3], net[4], net[5]
    a0, a1 = cand_ptr[prev], cand_ptr[prev + 1]
    b0, b1 = cand_ptr[t], cand_ptr[t + 1]
    nb = b1 - b0
    gc = np.hypot(px[t] - px[prev], py[t] - py[prev])
    dt = max(ts[t] - ts[prev], 0.0)
    limit = min(prm[_MAX_ROUTE], max(prm[_VMAX] * dt, gc) + prm[_SLACK])
    beta, tol, uturn = prm[_BETA], prm[_TOL], prm[_UTURN]
    for k in range(nb):
        tgt[k] = edge_u[cand_edge[b0 + k]]
        score[b0 + k] = -INF
        back[b0 + k] = -1
    last_src = -1
    last_budget = -INF
    for a in range(a0, a1):
        sa = score[a]
        if sa < -prm[_BEAM]:
            continue
        ea = cand_edge[a]
        oa = cand_off[a]
        rem = edge_len[ea] - oa
        src = edge_v[ea]
        if src != last_src or limit - rem > last_budget:
            _graph_distances(src, tgt, nb, limit - rem, net, ub, ws, gd)
            last_src = src
            last_budget = limit - rem
        for k in range(nb):
            b = b0 + k
            eb = cand_edge[b]
            ob = cand_off[b]
            lp = -INF
            kd = VIA_GRAPH
            if eb == ea and ob >= oa - tol:
                # forward, or jitter backwards: standing still, paying for the step back
                lp = -(abs(max(ob - oa, 0.0) - gc) + max(oa - ob, 0.0)) / beta
                kd = SAME_EDGE
            else:
                if gd[k] < INF and rem + gd[k] + ob <= limit:
                    lp = -abs(rem + gd[k] + ob - gc) / beta
                if uturn < INF and eb == edge_twin[ea]:
                    r2 = ob - (edge_len[eb] - oa)
                    if r2 >= -tol:
                        lp2 = -abs(max(r2, 0.0) - gc) / beta - uturn
                        if lp2 > lp:
                            lp = lp2
                            kd = UTURN
            if lp > -INF and sa + lp > score[b]:
                score[b] = sa + lp
                back[b] = a
                kind[b] = kd
    best = -INF
    inv2s2 = 0.5 / (prm[_SIGMA] * prm[_SIGMA])
    for b in range(b0, b1):
        if score[b] > -INF:
            score[b] -= cand_dist[b] * cand_dist[b] * inv2s2
            best = max(best, score[b])
    if best == -INF:
        return False
    for b in range(b0, b1):
        score[b] -= best
    return True


@njit(cache=True)
def _backtrack(
    last: int, cand_ptr: np.ndarray, cand_point: np.ndarray, score: np.ndarray,
    back: np.ndarray, chosen: np.ndarray,
) -> None:  # fmt: skip
    c = -1
    best = -INF
    for b in range(cand_ptr[last], cand_ptr[last + 1]):
        if score[b] > best:
            best = score[b]
            c = b
    while c >= 0:
        chosen[cand_point[c]] = c
        c = back[c]


@njit(cache=True)
def decode_viterbi(
    px: np.ndarray,
    py: np.ndarray,
    ts: np.ndarray,
    cand: tuple,
    cand_point: np.ndarray,
    net: tuple,
    ub: tuple,
    prm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the most likely candidate sequence, skipping outliers and splitting at breaks.

    Returns
    -------
    tuple
        ``chosen`` (global candidate index per fix, -1 if unmatched), ``status`` per fix
        (MATCHED, NO_CANDIDATE, OUTLIER), ``segment`` per fix (HMM run, -1 if unmatched) and
        ``kind`` per candidate (how it was reached from its predecessor).
    """
    cand_ptr = cand[0]
    n = len(px)
    ncand = cand_ptr[n]
    n_nodes = len(net[0]) - 1
    dist, pred, touched = new_workspace(n_nodes, len(net[3]))
    kmax = 1
    for i in range(n):
        kmax = max(kmax, cand_ptr[i + 1] - cand_ptr[i])
    ws = (
        dist, pred, touched, np.empty(len(net[3]) + 1), np.empty(len(net[3]) + 1, dtype=np.int64),
        np.empty(kmax),
    )  # fmt: skip
    tgt = np.empty(kmax, dtype=np.int64)
    gd = np.empty(kmax)
    score = np.full(ncand, -INF)
    back = np.full(ncand, -1, dtype=np.int64)
    kind = np.zeros(ncand, dtype=np.int8)
    chosen = np.full(n, -1, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    segment = np.full(n, -1, dtype=np.int32)
    inv2s2 = 0.5 / (prm[_SIGMA] * prm[_SIGMA])
    max_out = int(prm[_MAX_OUT])
    prev = -1
    pending = 0
    pending_start = -1
    seg = -1
    t = 0
    while t < n:
        b0, b1 = cand_ptr[t], cand_ptr[t + 1]
        if b1 == b0:
            status[t] = NO_CANDIDATE
            t += 1
            continue
        if prev < 0:
            seg += 1
            for b in range(b0, b1):
                score[b] = -cand[3][b] * cand[3][b] * inv2s2
                back[b] = -1
            status[t] = MATCHED
            segment[t] = seg
            prev = t
            pending = 0
            t += 1
            continue
        if _step(prev, t, px, py, ts, cand, net, ub, ws, prm, score, back, kind, tgt, gd):
            status[t] = MATCHED
            segment[t] = seg
            prev = t
            pending = 0
            t += 1
            continue
        if pending == 0:
            pending_start = t
        pending += 1
        status[t] = OUTLIER
        if pending > max_out:
            _backtrack(prev, cand_ptr, cand_point, score, back, chosen)
            prev = -1
            pending = 0
            t = pending_start
            continue
        t += 1
    if prev >= 0:
        _backtrack(prev, cand_ptr, cand_point, score, back, chosen)
    for i in range(n):
        if chosen[i] < 0:
            segment[i] = -1
            if status[i] == MATCHED:
                status[i] = OUTLIER
    return chosen, status, segment, kind
