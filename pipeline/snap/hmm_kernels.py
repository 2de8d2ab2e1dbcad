"""Compiled kernels of the matcher: Viterbi decoding with outliers and breaks, and route pieces.

States are candidates (edge, offset from u in metres). Emission: ``-0.5 (d / sigma)^2``;
transition: ``-|route - straight| / beta`` where the route distance is ``o2 - o1`` on the same
edge (a fix behind the previous one is standing still, paying ``(o1 - o2) / beta`` more),
``len(e1) - o1 + d(v1, u2) + o2`` through the graph (also back onto the same edge, for a fix
more than ``backward_tolerance_m`` behind), or a penalised mid-edge U-turn onto the reverse
twin. All in log space. The route distances ``d(v1, u2)`` of one step come from one
bounded Dijkstra (or UBODT lookups) per distinct end node ``v1`` of the previous fix's
candidates, to the distinct start nodes ``u2`` of the current fix's candidates.
"""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit
from pipeline.snap.graph_kernels import dijkstra_to_marked, new_workspace, reset_workspace
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
BETA_INDEX = _BETA  # where the transition scale is, for the callers that fit it


@cached_njit(inline="always")
def _mark_targets(
    b0: int, nb: int, cand_edge: np.ndarray, edge_u: np.ndarray, mark: np.ndarray,
    column: np.ndarray,
) -> int:  # fmt: skip
    """Mark the distinct start nodes of the candidates ``b0 .. b0 + nb - 1``; return their count.

    ``column[k]`` receives the distance column of candidate ``b0 + k`` (candidates on edges
    from the same node share one).
    """
    n_targets = 0
    for k in range(nb):
        node = edge_u[cand_edge[b0 + k]]
        if mark[node] < 0:
            mark[node] = n_targets
            n_targets += 1
        column[k] = mark[node]
    return n_targets


@cached_njit(inline="always")
def _plan_sources(
    a0: int, a1: int, limit: float, score: np.ndarray, cand_edge: np.ndarray,
    cand_off: np.ndarray, net: tuple, prm: np.ndarray, ws: tuple,
) -> int:  # fmt: skip
    """Group the previous column's live candidates by the node their edge ends at.

    ``row[a - a0]`` receives the distance row of candidate ``a`` (``-1`` when beam-pruned);
    each distinct node gets the largest route budget its candidates need. Returns the number
    of distinct nodes.
    """
    edge_v, edge_len = net[3], net[4]
    source_mark, source_node, source_budget, row = ws[2], ws[3], ws[4], ws[5]
    n_sources = 0
    for a in range(a0, a1):
        row[a - a0] = -1
        if score[a] < -prm[_BEAM]:
            continue
        ea = cand_edge[a]
        src = edge_v[ea]
        budget = limit - (edge_len[ea] - cand_off[a])
        s = source_mark[src]
        if s < 0:
            s = n_sources
            source_mark[src] = s
            source_node[s] = src
            source_budget[s] = budget
            n_sources += 1
        elif budget > source_budget[s]:
            source_budget[s] = budget
        row[a - a0] = s
    return n_sources


@cached_njit(inline="always")
def _source_distances(
    n_sources: int, n_targets: int, net: tuple, ub: tuple, ws: tuple, target_node: np.ndarray
) -> None:
    """Fill ``ws``' distance rows: each source node to each marked target within its budget.

    A distance beyond a smaller budget that shares the row is filtered by the caller's
    ``rem + d + ob <= limit``, so sharing one search per node changes no result.
    """
    out_ptr, out_edge, _edge_u, edge_v, edge_len, _edge_twin = net
    ub_keys, ub_dist, _ub_first, ub_delta = ub
    search, distances, source_mark, source_node, source_budget = ws[0], ws[1], ws[2], ws[3], ws[4]
    n_nodes = len(out_ptr) - 1
    for s in range(n_sources):
        src = source_node[s]
        source_mark[src] = -1
        budget = source_budget[s]
        if len(ub_keys) > 0 and 0.0 <= budget <= ub_delta:
            for k in range(n_targets):
                d, _ = ubodt_lookup(ub_keys, ub_dist, src, target_node[k], n_nodes)
                distances[s, k] = d if d <= budget else INF
            continue
        n_touched = dijkstra_to_marked(
            src, budget, n_targets, out_ptr, out_edge, edge_v, edge_len, search, distances[s]
        )
        reset_workspace(search, n_touched)


@cached_njit
def _route_cache(
    cand_ptr: np.ndarray, kmax: int, keep: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the arrays in which :func:`_step` keeps each step's route distances.

    ``(kept_prev, kept_live, kept_route)``: the fix each fix's step came from (-1: none
    kept), whether each of that fix's candidates was searched from (``kept_live[t * kmax + a
    - a0]``), and the route distance ``d(v1, u2)`` from candidate ``a`` to candidate ``b`` the
    transition uses (``kept_route[b0 * kmax + (a - a0) * nb + b - b0]``, inf when beyond the
    step's limit). Empty unless ``keep``.
    """
    n = len(cand_ptr) - 1 if keep else 0
    return (
        np.full(n, -1, dtype=np.int64), np.empty(n * kmax, dtype=np.bool_),
        np.empty(cand_ptr[n] * kmax),
    )  # fmt: skip


@cached_njit(inline="always")
def _kept_routes_apply(
    prev: int, t: int, a0: int, a1: int, score: np.ndarray, prm: np.ndarray, routes: tuple,
    row: np.ndarray,
) -> bool:  # fmt: skip
    """Whether ``routes`` holds step ``prev -> t`` for the candidates now live; fill ``row``.

    A route distance depends on the step (its limit) and, through the search budgets of the
    nodes the live candidates share, on which candidates are live (beam-pruned ones are not
    searched from): the kept ones apply when both are the same.
    """
    kept_prev, kept_live = routes[0], routes[1]
    if kept_prev[t] != prev:
        return False
    kmax = len(row)
    for a in range(a0, a1):
        live = score[a] >= -prm[_BEAM]
        if live != kept_live[t * kmax + a - a0]:
            return False
        row[a - a0] = 0 if live else -1
    return True


@cached_njit(inline="always")
def _search_routes(
    prev: int, t: int, a0: int, a1: int, b0: int, nb: int, limit: float, cand: tuple,
    net: tuple, ub: tuple, ws: tuple, prm: np.ndarray, score: np.ndarray, column: np.ndarray,
    target_node: np.ndarray, routes: tuple, keep: bool,
) -> None:  # fmt: skip
    """Search step ``prev -> t``'s route distances into ``ws``' distance rows.

    Sets ``ws``' ``row`` of every previous candidate (-1 when beam-pruned, as
    :func:`_plan_sources`) and, with ``keep``, notes the step and its live candidates in
    ``routes`` (whose distances :func:`_step` keeps as it reads them).
    """
    cand_edge, cand_off = cand[1], cand[2]
    edge_u = net[2]
    target_mark, row = ws[0][5], ws[5]
    n_targets = _mark_targets(b0, nb, cand_edge, edge_u, target_mark, column)
    for k in range(nb):
        target_node[column[k]] = edge_u[cand_edge[b0 + k]]
    n_sources = _plan_sources(a0, a1, limit, score, cand_edge, cand_off, net, prm, ws)
    _source_distances(n_sources, n_targets, net, ub, ws, target_node)
    for k in range(n_targets):
        target_mark[target_node[k]] = -1
    if keep:
        kept_prev, kept_live = routes[0], routes[1]
        kmax = len(row)
        kept_prev[t] = prev
        for a in range(a0, a1):
            kept_live[t * kmax + a - a0] = row[a - a0] >= 0


@cached_njit(inline="always")
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
    deviation: np.ndarray,
    column: np.ndarray,
    target_node: np.ndarray,
    routes: tuple,
    keep: bool,
    reuse: bool,
) -> bool:
    """Fill the Viterbi column of fix ``t`` from the column of ``prev``; False if unreachable.

    Route distances come from one bounded search per distinct node the previous candidates'
    edges end at, to the distinct nodes the current candidates' edges start from; with
    ``keep`` they are kept in ``routes`` (:func:`_route_cache`). With ``reuse``, those an
    earlier decoding kept for the same step (the same ``prev``, the same live candidates,
    hence the same searches) are read instead of searched again.
    """
    cand_ptr, cand_edge, cand_off, cand_dist = cand
    edge_len, edge_twin = net[4], net[5]
    distances, row = ws[1], ws[5]
    kept_route = routes[2]
    a0, a1 = cand_ptr[prev], cand_ptr[prev + 1]
    b0, b1 = cand_ptr[t], cand_ptr[t + 1]
    nb = b1 - b0
    gc = np.hypot(px[t] - px[prev], py[t] - py[prev])
    dt = max(ts[t] - ts[prev], 0.0)
    limit = min(prm[_MAX_ROUTE], max(prm[_VMAX] * dt, gc) + prm[_SLACK])
    beta, tol, uturn = prm[_BETA], prm[_TOL], prm[_UTURN]
    for k in range(nb):
        score[b0 + k] = -INF
        back[b0 + k] = -1
    reused = reuse and _kept_routes_apply(prev, t, a0, a1, score, prm, routes, row)
    if not reused:
        _search_routes(
            prev, t, a0, a1, b0, nb, limit, cand, net, ub, ws, prm, score, column, target_node,
            routes, keep,
        )  # fmt: skip
    kept = b0 * len(row)
    for a in range(a0, a1):
        s = row[a - a0]
        if s < 0:
            continue
        sa = score[a]
        ea = cand_edge[a]
        oa = cand_off[a]
        rem = edge_len[ea] - oa
        for k in range(nb):
            b = b0 + k
            eb = cand_edge[b]
            ob = cand_off[b]
            lp = -INF
            kd = VIA_GRAPH
            dev = INF
            if eb == ea:
                # forward, or the fix drifting backwards: standing still, paying for the step back
                dev = abs(max(ob - oa, 0.0) - gc) + max(oa - ob, 0.0)
                lp = -dev / beta
                kd = SAME_EDGE
            if eb != ea or ob < oa - tol:
                # farther back than the tolerance, a loop through the graph may explain it better
                if reused:
                    gd = kept_route[kept + (a - a0) * nb + k]
                else:
                    gd = distances[s, column[k]]
                    if not rem + gd + ob <= limit:  # inf fails too
                        gd = INF
                    if keep:
                        kept_route[kept + (a - a0) * nb + k] = gd
                if gd < INF:
                    dg = abs(rem + gd + ob - gc)
                    if -dg / beta > lp:
                        lp = -dg / beta
                        kd = VIA_GRAPH
                        dev = dg
                if uturn < INF and eb == edge_twin[ea]:
                    r2 = ob - (edge_len[eb] - oa)
                    if r2 >= -tol:
                        du = abs(max(r2, 0.0) - gc)
                        if -du / beta - uturn > lp:
                            lp = -du / beta - uturn
                            kd = UTURN
                            dev = du
            if lp > -INF and sa + lp > score[b]:
                score[b] = sa + lp
                back[b] = a
                kind[b] = kd
                deviation[b] = dev
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


@cached_njit
def _first_column(
    b0: int, b1: int, cand_dist: np.ndarray, inv2s2: float, score: np.ndarray, back: np.ndarray
) -> None:
    """Score the candidates ``b0 .. b1 - 1`` of a run's first fix by their emission alone.

    Like the columns :func:`_step` fills, the scores are relative to the fix's best state
    (which scores 0), so that the beam prunes the states far below it and never all of them.
    """
    best = -INF
    for b in range(b0, b1):
        score[b] = -cand_dist[b] * cand_dist[b] * inv2s2
        back[b] = -1
        best = max(best, score[b])
    for b in range(b0, b1):
        score[b] -= best


@cached_njit
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


def new_network_workspace(n_nodes: int, n_edges: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Return the network-sized arrays of :func:`decode_viterbi`, allocated once per worker.

    ``(search, source_mark)``: the Dijkstra workspace of
    :func:`~pipeline.snap.graph_kernels.new_workspace` and the marks of the previous fix's end
    nodes. Every kernel that uses them sets back only what it touched, so they are found as
    they were made (distances inf, predecessors and marks -1) at the start of every trip, and a
    trip costs what its own searches visit, whatever the network's size. Not to be shared by
    two threads at once. Made with numpy, as :func:`~pipeline.snap.graph_kernels.new_workspace`.
    """
    return new_workspace(n_nodes, n_edges), np.full(n_nodes, -1, dtype=np.int64)


@cached_njit
def _workspace(network_ws: tuple, kmax: int) -> tuple:
    """Return the search arrays of :func:`_step`, reused from fix to fix.

    ``(search, distances, source_mark, source_node, source_budget, row)``: the Dijkstra
    workspace (whose marks are the current candidates' start nodes) and the previous
    candidates' end nodes' marks (all -1 between steps), both from ``network_ws``
    (:func:`new_network_workspace`); the per-step rows of route distances from those nodes,
    and each previous candidate's row, sized by the trip's most candidates per fix.
    """
    return (
        network_ws[0], np.empty((kmax, kmax)), network_ws[1], np.empty(kmax, dtype=np.int64),
        np.empty(kmax), np.empty(kmax, dtype=np.int64),
    )  # fmt: skip


@cached_njit
def fitted_beta_m(
    prior_m: float, chosen: np.ndarray, segment: np.ndarray, deviation_m: np.ndarray
) -> float:
    """Fit the transition scale to a decoded trip (maximum likelihood, with a prior).

    The transition's log-probability is ``-deviation / beta``, an exponential of scale
    ``beta``, whose maximum-likelihood scale is the mean deviation. ``prior_m`` counts as one
    more transition, so that a trip of few fixes keeps close to it and the scale is never 0.

    Parameters
    ----------
    prior_m
        The configured scale (``MatchParams.beta_m``).
    chosen, segment, deviation_m
        Outputs of :func:`decode_viterbi`: the metres charged by the transition into each
        chosen candidate are ``deviation_m[chosen[t]]``, for every matched fix ``t`` but the
        first of its run.
    """
    total, count, previous = prior_m, 1, -1
    for t in range(len(chosen)):
        if chosen[t] < 0:
            continue
        if previous >= 0 and segment[t] == segment[previous]:
            total += deviation_m[chosen[t]]
            count += 1
        previous = t
    return total / count


@cached_njit
def with_beta(prm: np.ndarray, beta_m: float) -> np.ndarray:
    """Return the kernel settings ``prm`` with the transition scale ``beta_m``.

    A transition's log-probability is its metres charged over beta, less the U-turn penalty
    for a U-turn: the penalty is scaled by the configured scale over ``beta_m`` so that a
    U-turn still costs as many metres charged as ``uturn_penalty * beta`` configured. (Kept in
    log units, a smaller fitted scale would make turning around cheaper than standing still
    while a stopped car's fixes drift back.) A forbidden U-turn (infinite penalty) stays so.
    """
    fitted = prm.copy()
    fitted[_UTURN] = prm[_UTURN] * (prm[_BETA] / beta_m)
    fitted[_BETA] = beta_m
    return fitted


@cached_njit
def decode_viterbi(
    px: np.ndarray,
    py: np.ndarray,
    ts: np.ndarray,
    cand: tuple,
    cand_point: np.ndarray,
    net: tuple,
    ub: tuple,
    prm: np.ndarray,
    network_ws: tuple,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the most likely candidate sequence, skipping outliers and splitting at breaks.

    ``network_ws`` is the worker's :func:`new_network_workspace` of ``net``: nothing sized to
    the network is allocated or cleared per trip.

    Returns
    -------
    tuple
        ``chosen`` (global candidate index per fix, -1 if unmatched), ``status`` per fix
        (MATCHED, NO_CANDIDATE, OUTLIER), ``segment`` per fix (HMM run, -1 if unmatched),
        ``kind`` per candidate (how it was reached from its predecessor) and ``deviation``
        per candidate (the metres that transition charges: ``|route - straight|`` plus any
        step back, its log-probability being ``-deviation / beta``, less the U-turn
        penalty; meaningful for the candidates chosen after a run's first fix).
    """
    return decode_trip(px, py, ts, cand, cand_point, net, ub, prm, network_ws, False)[0]


@cached_njit
def decode_trip(
    px: np.ndarray,
    py: np.ndarray,
    ts: np.ndarray,
    cand: tuple,
    cand_point: np.ndarray,
    net: tuple,
    ub: tuple,
    prm: np.ndarray,
    network_ws: tuple,
    estimate_beta: bool,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]:
    """Decode a trip as :func:`decode_viterbi`, twice with ``estimate_beta``.

    With ``estimate_beta`` the trip is decoded again with the transition scale fitted to its
    first decoding (:func:`fitted_beta_m`, :func:`with_beta`); the second decoding reads the
    route distances the first one searched wherever its step and live candidates are the same
    (the scale changes the scores, not the routes), so it gives what a decoding of its own
    gives.

    Returns
    -------
    tuple
        The last decoding's :func:`decode_viterbi` outputs, and the transition scale it used.
    """
    kmax = _most_candidates(cand[0])
    routes = _route_cache(cand[0], kmax, estimate_beta)
    first = _decode(
        px, py, ts, cand, cand_point, net, ub, prm, network_ws, kmax, routes, estimate_beta
    )
    if not estimate_beta:
        return first, prm[_BETA]
    beta_m = fitted_beta_m(prm[_BETA], first[0], first[2], first[4])
    fitted = with_beta(prm, beta_m)
    return _decode(
        px, py, ts, cand, cand_point, net, ub, fitted, network_ws, kmax, routes, False, True
    ), beta_m


@cached_njit
def _most_candidates(cand_ptr: np.ndarray) -> int:
    """Return the most candidates a fix has (at least 1)."""
    kmax = 1
    for i in range(len(cand_ptr) - 1):
        kmax = max(kmax, cand_ptr[i + 1] - cand_ptr[i])
    return kmax


@cached_njit
def _decode(
    px: np.ndarray,
    py: np.ndarray,
    ts: np.ndarray,
    cand: tuple,
    cand_point: np.ndarray,
    net: tuple,
    ub: tuple,
    prm: np.ndarray,
    network_ws: tuple,
    kmax: int,
    routes: tuple,
    keep: bool,
    reuse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode as :func:`decode_viterbi` (``kmax``: the most candidates of a fix).

    With ``keep``, the route distances are kept in ``routes`` (:func:`_route_cache`); with
    ``reuse``, ``routes`` holds an earlier decoding's of the same trip (see :func:`_step`).
    """
    cand_ptr = cand[0]
    n = len(px)
    ncand = cand_ptr[n]
    ws = _workspace(network_ws, kmax)
    column = np.empty(kmax, dtype=np.int64)
    target_node = np.empty(kmax, dtype=np.int64)
    score = np.full(ncand, -INF)
    back = np.full(ncand, -1, dtype=np.int64)
    kind = np.zeros(ncand, dtype=np.int8)
    deviation = np.zeros(ncand)
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
            _first_column(b0, b1, cand[3], inv2s2, score, back)
            status[t] = MATCHED
            segment[t] = seg
            prev = t
            pending = 0
            t += 1
            continue
        if _step(
            prev, t, px, py, ts, cand, net, ub, ws, prm, score, back, kind, deviation, column,
            target_node, routes, keep, reuse,
        ):  # fmt: skip
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
    return chosen, status, segment, kind, deviation
