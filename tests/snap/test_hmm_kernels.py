"""Viterbi decoding of the matcher against brute force over every candidate sequence.

``decode_viterbi`` is given small hand-made graphs and candidate lists (no geometry: the kernel
reads fix positions, candidate offsets and distances as numbers). The expected answer comes
from :func:`reference_decode`: the model of the kernel's docstring and of ``MatchParams``
written out as a plain enumeration (every candidate sequence of a run scored in full, route
distances from networkx's Dijkstra, a run's reach as sets of candidates), not a dynamic
programme over the kernel's arrays. Sequences within 1e-9 of the best score are all accepted
(the kernel and the enumeration add the same terms in another order).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pytest

from pipeline.snap import MatchParams
from pipeline.snap.hmm_kernels import (
    MATCHED,
    NO_CANDIDATE,
    OUTLIER,
    SAME_EDGE,
    UTURN,
    VIA_GRAPH,
    decode_trip,
    decode_viterbi,
    new_network_workspace,
    with_beta,
)
from pipeline.snap.ubodt_kernels import build_ubodt_table

NO_UBODT = (np.empty(0, dtype=np.int64), np.empty(0, np.float32), np.empty(0, np.int32), 0.0)


@dataclass
class Graph:
    """A directed graph: edge ``e`` runs from ``u[e]`` to ``v[e]``, ``twin[e]`` its reverse."""

    n_nodes: int
    u: list[int]
    v: list[int]
    length: list[float]
    twin: list[int]

    def routing_arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays of ``MatchNetwork.routing_arrays`` (out-edges grouped by start node)."""
        edge_u = np.array(self.u, dtype=np.int64)
        order = np.argsort(edge_u, kind="stable")
        out_ptr = np.searchsorted(edge_u[order], np.arange(self.n_nodes + 1)).astype(np.int64)
        return (
            out_ptr, order.astype(np.int64), edge_u, np.array(self.v, dtype=np.int64),
            np.array(self.length, dtype="float64"), np.array(self.twin, dtype=np.int64),
        )  # fmt: skip

    def ubodt_arrays(self, delta_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """A UBODT of every node, as ``MatchNetwork.ubodt_arrays``."""
        out_ptr, out_edge, _, edge_v, edge_len, _ = self.routing_arrays()
        keys, dist, first = build_ubodt_table(
            np.arange(self.n_nodes, dtype=np.int64), float(delta_m), out_ptr, out_edge, edge_v,
            edge_len, self.n_nodes,
        )  # fmt: skip
        return keys, dist, first, float(delta_m)

    def node_distances(self) -> dict[int, dict[int, float]]:
        """Shortest route distance between every pair of nodes (networkx)."""
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.n_nodes))
        for a, b, w in zip(self.u, self.v, self.length, strict=True):
            if not graph.has_edge(a, b) or graph[a][b]["weight"] > w:
                graph.add_edge(a, b, weight=w)
        return dict(nx.all_pairs_dijkstra_path_length(graph))


@dataclass
class Trace:
    """Fixes (position, time) and their candidates ``(edge, offset, distance)``."""

    x: list[float]
    y: list[float]
    t: list[float]
    candidates: list[list[tuple[int, float, float]]] = field(default_factory=list)

    def kernel_arrays(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """``(cand, cand_point)`` as ``match_trip`` passes them to ``decode_viterbi``."""
        counts = [len(c) for c in self.candidates]
        flat = [c for fix in self.candidates for c in fix]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cand = (
            ptr,
            np.array([c[0] for c in flat], dtype=np.int32),
            np.array([c[1] for c in flat], dtype="float64"),
            np.array([c[2] for c in flat], dtype="float64"),
        )
        return cand, np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def params_array(**settings: float | None) -> np.ndarray:
    return MatchParams(**settings).kernel_array()  # type: ignore[arg-type]


def decode(
    graph: Graph, trace: Trace, prm: np.ndarray, ubodt_delta_m: float | None = None
) -> tuple[np.ndarray, ...]:
    """Decode twice with one network workspace, as a worker reuses it from trip to trip.

    The second decoding finds the workspace as the first left it: both must give the same
    answer, and the workspace must be back as it was made (nothing marked, no distance set).
    """
    cand, cand_point = trace.kernel_arrays()
    ub = NO_UBODT if ubodt_delta_m is None else graph.ubodt_arrays(ubodt_delta_m)
    workspace = new_network_workspace(graph.n_nodes, len(graph.u))
    results = [
        decode_viterbi(
            np.array(trace.x, dtype="float64"), np.array(trace.y, dtype="float64"),
            np.array(trace.t, dtype="float64"), cand, cand_point, graph.routing_arrays(), ub, prm,
            workspace,
        )
        for _ in range(2)
    ]  # fmt: skip
    for first, again in zip(*results, strict=True):
        np.testing.assert_array_equal(first, again)
    assert_workspace_is_clean(workspace)
    return tuple(results[1])


def assert_workspace_is_clean(workspace: tuple) -> None:
    """The network workspace is as ``new_network_workspace`` made it (but the scratch heap)."""
    (dist, pred, _touched, _heap_d, _heap_n, target_mark), source_mark = workspace
    assert np.isinf(dist).all() and (pred == -1).all()
    assert (target_mark == -1).all() and (source_mark == -1).all()


# ---------------------------------------------------------------- the model, by enumeration

Candidate = tuple[int, int]  # (fix, index among the fix's candidates)


class Model:
    """Log-probabilities of the Newson & Krumm HMM as the kernel's docstring states them."""

    def __init__(self, graph: Graph, trace: Trace, prm: np.ndarray) -> None:
        self.graph, self.trace = graph, trace
        (self.sigma, self.beta, self.vmax, self.slack, self.max_route, self.uturn, self.tol,
         self.max_out, self.beam) = (float(p) for p in prm)  # fmt: skip
        self.dist = graph.node_distances()

    def emission(self, c: Candidate) -> float:
        d = self.trace.candidates[c[0]][c[1]][2]
        return -0.5 * (d / self.sigma) ** 2

    def transition(self, a: Candidate, b: Candidate) -> tuple[float, int, float]:
        """``(log-probability, kind, metres charged)`` of moving from ``a`` to ``b``.

        The metres charged are ``|route - straight|``, plus the step back of a fix behind
        on the same edge: the log-probability is their negative over ``beta``, less the
        U-turn penalty.
        """
        tr, g = self.trace, self.graph
        ea, oa, _ = tr.candidates[a[0]][a[1]]
        eb, ob, _ = tr.candidates[b[0]][b[1]]
        straight = math.hypot(tr.x[b[0]] - tr.x[a[0]], tr.y[b[0]] - tr.y[a[0]])
        elapsed = max(tr.t[b[0]] - tr.t[a[0]], 0.0)
        limit = min(self.max_route, max(self.vmax * elapsed, straight) + self.slack)
        best, kind, charged = -math.inf, VIA_GRAPH, math.inf
        if eb == ea:  # ahead on the edge, or standing still while the fix drifts back
            charged = abs(max(ob - oa, 0.0) - straight) + max(oa - ob, 0.0)
            best, kind = -charged / self.beta, SAME_EDGE
            if ob >= oa - self.tol:  # within the tolerance, nothing else is tried
                return best, kind, charged
        route = g.length[ea] - oa + self.dist[g.v[ea]].get(g.u[eb], math.inf) + ob
        if route <= limit and -abs(route - straight) / self.beta > best:
            charged = abs(route - straight)
            best, kind = -charged / self.beta, VIA_GRAPH
        if self.uturn < math.inf and eb == g.twin[ea]:
            back = ob - (g.length[eb] - oa)  # metres driven on the twin past the turn
            if back >= -self.tol:
                turn = -abs(max(back, 0.0) - straight) / self.beta - self.uturn
                if turn > best:
                    best, kind, charged = turn, UTURN, abs(max(back, 0.0) - straight)
        return best, kind, charged

    def score(self, path: list[Candidate]) -> float:
        total = sum(self.emission(c) for c in path)
        return total + sum(self.transition(a, b)[0] for a, b in itertools.pairwise(path))

    def best_score(self, fixes: list[int]) -> float:
        options = [[(i, k) for k in range(len(self.trace.candidates[i]))] for i in fixes]
        return max(self.score(list(path)) for path in itertools.product(*options))


def reference_decode(model: Model) -> tuple[list[int], list[int], list[list[int]]]:
    """``status`` and ``segment`` per fix, and the fixes of each run, by enumeration.

    A fix joins the run when some candidate of it is reachable (finite log-probability) from
    a candidate the run can end in; otherwise it is an outlier, and more than ``max_out``
    outliers in a row end the run, which restarts at the first of them.
    """
    n = len(model.trace.x)
    cands = model.trace.candidates
    status, segment = [NO_CANDIDATE] * n, [-1] * n
    runs: list[list[int]] = []
    ends: set[Candidate] = set()
    pending: list[int] = []
    t = 0
    while t < n:
        if not cands[t]:
            status[t] = NO_CANDIDATE
        elif not ends:
            runs.append([t])
            ends = {(t, k) for k in range(len(cands[t]))}
            status[t], segment[t], pending = MATCHED, len(runs) - 1, []
        else:
            reached = {
                (t, k)
                for k in range(len(cands[t]))
                if any(model.transition(a, (t, k))[0] > -math.inf for a in ends)
            }
            if reached:
                runs[-1].append(t)
                ends, status[t], segment[t], pending = reached, MATCHED, len(runs) - 1, []
            else:
                pending.append(t)
                status[t] = OUTLIER
                if len(pending) > model.max_out:
                    t, ends, pending = pending[0], set(), []
                    continue
        t += 1
    return status, segment, runs


def check_against_reference(
    graph: Graph,
    trace: Trace,
    prm: np.ndarray,
    ubodt_delta_m: float | None = None,
    decoded: tuple[np.ndarray, ...] | None = None,
) -> None:
    """Assert that the kernel's decoding (``decoded``, else its own) is optimal in the model."""
    if decoded is None:
        decoded = decode(graph, trace, prm, ubodt_delta_m)
    chosen, status, segment, kind, charged = decoded
    model = Model(graph, trace, prm)
    want_status, want_segment, runs = reference_decode(model)
    assert status.tolist() == want_status
    assert segment.tolist() == want_segment
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in trace.candidates])])
    assert (chosen >= 0).tolist() == [s == MATCHED for s in want_status]
    for fixes in runs:
        path = [(i, int(chosen[i] - offsets[i])) for i in fixes]
        assert all(0 <= k < len(trace.candidates[i]) for i, k in path)
        assert model.score(path) == pytest.approx(model.best_score(fixes), abs=1e-9, rel=1e-12)
        for a, b in itertools.pairwise(path):
            _, want_kind, want_charged = model.transition(a, b)
            assert kind[chosen[b[0]]] == want_kind, (a, b)
            assert charged[chosen[b[0]]] == pytest.approx(want_charged, abs=1e-9), (a, b)


# ---------------------------------------------------------------- random small problems


def random_graph(rng: np.random.Generator, whole: bool) -> Graph:
    """4-6 nodes, 5-9 roads, half of them two-way (a twin each); whole-metre lengths if asked."""
    n_nodes = int(rng.integers(4, 7))
    pairs = [(a, b) for a in range(n_nodes) for b in range(a + 1, n_nodes)]
    roads = rng.choice(len(pairs), size=min(len(pairs), int(rng.integers(5, 10))), replace=False)
    u: list[int] = []
    v: list[int] = []
    length: list[float] = []
    twin: list[int] = []
    for r in roads:
        a, b = pairs[r] if rng.random() < 0.5 else pairs[r][::-1]
        metres = float(rng.integers(20, 200)) if whole else float(rng.uniform(20.0, 200.0))
        if rng.random() < 0.5:
            twin += [len(u) + 1, len(u)]
            u += [a, b]
            v += [b, a]
            length += [metres, metres]
        else:
            twin.append(-1)
            u.append(a)
            v.append(b)
            length.append(metres)
    return Graph(n_nodes, u, v, length, twin)


def random_trace(rng: np.random.Generator, graph: Graph, whole: bool) -> Trace:
    """2-6 fixes, 0-3 candidates each on distinct edges (few edges: many share one)."""
    n = int(rng.integers(2, 7))

    def number(low: float, high: float) -> float:
        return float(rng.integers(low, high)) if whole else float(rng.uniform(low, high))

    x = np.cumsum([number(-60, 60) for _ in range(n)]).tolist()
    y = np.cumsum([number(-60, 60) for _ in range(n)]).tolist()
    t = np.cumsum([0.0] + [number(0, 8) for _ in range(n - 1)]).tolist()
    edges = rng.choice(len(graph.u), size=min(4, len(graph.u)), replace=False)
    candidates = []
    for _ in range(n):
        k = int(rng.choice([0, 1, 2, 2, 3, 3])) if n > 2 else int(rng.integers(1, 4))
        picked = rng.choice(edges, size=k, replace=False)
        candidates.append(
            [(int(e), min(number(0, graph.length[e] + 1), graph.length[e]), number(0, 40))
             for e in picked]
        )  # fmt: skip
    return Trace(x, y, t, candidates)


def random_params(rng: np.random.Generator, whole: bool, beam_log: float = 1e9) -> np.ndarray:
    def number(low: float, high: float) -> float:
        return float(rng.integers(low, high)) if whole else float(rng.uniform(low, high))

    return params_array(
        sigma_m=number(4, 15),
        beta_m=number(2, 20),
        max_speed_mps=number(3, 30),
        route_slack_m=number(0, 30),
        max_route_m=number(60, 600),
        uturn_penalty=None if rng.random() < 0.25 else number(0, 15),
        backward_tolerance_m=number(0, 10),
        max_outlier_points=int(rng.integers(0, 3)),
        beam_log=beam_log,
    )


@pytest.mark.parametrize("whole", [False, True], ids=["any-numbers", "whole-metres"])
def test_decoding_is_an_optimal_sequence_of_the_model(whole: bool) -> None:
    # whole metres and seconds make ties and limits met exactly (route == limit)
    rng = np.random.default_rng(26 + whole)
    for _ in range(150):
        graph = random_graph(rng, whole)
        check_against_reference(graph, random_trace(rng, graph, whole), random_params(rng, whole))


def decode_twice(graph: Graph, trace: Trace, prm: np.ndarray) -> tuple[tuple, float, tuple]:
    """``decode_trip``'s two decodings, the scale it fitted, and the first decoding alone."""
    cand, cand_point = trace.kernel_arrays()
    x, y, t = (np.array(v, dtype="float64") for v in (trace.x, trace.y, trace.t))
    workspace = new_network_workspace(graph.n_nodes, len(graph.u))
    args = (x, y, t, cand, cand_point, graph.routing_arrays(), NO_UBODT, prm, workspace)
    first = decode_viterbi(*args)
    decoded, beta_m = decode_trip(*args, True)
    assert_workspace_is_clean(workspace)
    return tuple(decoded), beta_m, tuple(first)


def fitted_scale(
    prior_m: float, chosen: np.ndarray, segment: np.ndarray, charged: np.ndarray
) -> float:
    """The mean of the metres charged by each run's transitions, the prior counting as one."""
    steps = [
        charged[chosen[t]]
        for previous, t in itertools.pairwise(np.flatnonzero(chosen >= 0))
        if segment[t] == segment[previous]
    ]
    return (prior_m + sum(steps)) / (1 + len(steps))


@pytest.mark.parametrize("whole", [False, True], ids=["any-numbers", "whole-metres"])
def test_the_second_decoding_is_an_optimal_sequence_with_the_fitted_scale(whole: bool) -> None:
    # decode_trip's second decoding reads the route distances its first one searched: it must
    # still be an optimal decoding of the model with the scale fitted to the first, also where
    # outliers make a step start from another fix in one decoding than in the other
    rng = np.random.default_rng(41 + whole)
    for _ in range(150):
        graph = random_graph(rng, whole)
        trace = random_trace(rng, graph, whole)
        prm = random_params(rng, whole)
        decoded, beta_m, (chosen, _, segment, _, charged) = decode_twice(graph, trace, prm)
        assert beta_m == pytest.approx(fitted_scale(prm[1], chosen, segment, charged), rel=1e-12)
        check_against_reference(graph, trace, with_beta(prm, beta_m), decoded=decoded)


def test_the_second_decoding_with_a_beam_is_a_decoding_of_its_own() -> None:
    # with a narrow beam the fitted scale prunes other states than the first decoding did: a
    # step whose live states differ must search its routes again (the enumeration of the
    # reference has no beam, so the answer is the kernel's own decoding without the first's);
    # where a state is pruned in one decoding only, a fix can be an outlier in one and not in
    # the other, and the next step start from another fix (about 1 in 300 of these problems)
    rng = np.random.default_rng(48)
    for _ in range(1000):
        graph = random_graph(rng, whole=False)
        trace = random_trace(rng, graph, whole=False)
        prm = random_params(rng, whole=False, beam_log=float(rng.uniform(0.5, 8.0)))
        decoded, beta_m, _ = decode_twice(graph, trace, prm)
        alone = decode(graph, trace, with_beta(prm, beta_m))
        for got, want in zip(decoded, alone, strict=True):
            np.testing.assert_array_equal(got, want)


def test_route_distances_from_the_ubodt_give_the_same_decoding() -> None:
    # whole metres: the table's float32 distances are exact; a small delta so that some
    # budgets are within it (table look-ups) and others not (Dijkstra)
    rng = np.random.default_rng(7)
    for _ in range(100):
        graph = random_graph(rng, whole=True)
        trace = random_trace(rng, graph, whole=True)
        delta = float(rng.integers(50, 400))
        check_against_reference(graph, trace, random_params(rng, whole=True), delta)


# ---------------------------------------------------------------- beam pruning, by hand

# edge 0: node 0 -> 1, 100 m; edge 2: node 1 -> 2, 10 m; edge 1: node 2 -> 3, 100 m
CHAIN = Graph(4, u=[0, 2, 1], v=[1, 3, 2], length=[100.0, 100.0, 10.0], twin=[-1, -1, -1])
# edge 0: node 0 -> 1, 10 m; edge 1: node 1 -> 2, 100 m
CHAIN_OF_TWO = Graph(3, u=[0, 1], v=[1, 2], length=[10.0, 100.0], twin=[-1, -1])


@pytest.mark.parametrize(("beam_log", "extended"), [(12.4, False), (12.5, True), (14.0, True)])
def test_a_state_more_than_the_beam_below_its_fixs_best_is_not_extended(
    beam_log: float, extended: bool
) -> None:
    # fix 1: A on edge 0 at 10 m, exactly where the fix drove, 8 m from the fix (emission
    # -0.5 (8/8)^2 = -0.5); B on edge 1 at 10 m, 16 m from the fix (-0.5 (16/8)^2 = -2) by a
    # route of 90 + 10 + 10 m for 10 m straight (-(120 - 10) / 10 = -11): B is 12.5 below A.
    # Fix 2 is on edge 1 at 20 m, 1 s later: from B 10 m along its edge; from A
    # 90 + 10 + 20 = 120 m, beyond the bound of 40 m/s * 1 s + 30 m = 70 m. So fix 2 is
    # reached only if B is extended.
    trace = Trace(
        x=[0.0, 10.0, 20.0],
        y=[0.0, 0.0, 0.0],
        t=[0.0, 5.0, 6.0],
        candidates=[[(0, 0.0, 0.0)], [(0, 10.0, 8.0), (1, 10.0, 16.0)], [(1, 20.0, 0.0)]],
    )
    chosen, status, segment, kind, _ = decode(
        CHAIN, trace, params_array(sigma_m=8.0, beta_m=10.0, beam_log=beam_log)
    )
    if extended:
        assert chosen.tolist() == [0, 2, 3]
        assert status.tolist() == [MATCHED] * 3 and segment.tolist() == [0, 0, 0]
        assert kind[2] == VIA_GRAPH and kind[3] == SAME_EDGE
    else:
        assert chosen.tolist() == [0, 1, -1]
        assert status.tolist() == [MATCHED, MATCHED, OUTLIER] and segment.tolist() == [0, 0, -1]


def test_the_first_fixs_states_are_pruned_against_its_own_best() -> None:
    # the first fix's only candidate is 40 m from it: emission -0.5 (40/8)^2 = -12.5, more
    # than the beam of 10 below 0, but it is the best state of its fix, so it is extended
    trace = Trace(
        x=[0.0, 10.0], y=[0.0, 0.0], t=[0.0, 1.0], candidates=[[(0, 0.0, 40.0)], [(0, 10.0, 0.0)]]
    )
    chosen, status, segment, _, _ = decode(CHAIN, trace, params_array(sigma_m=8.0, beam_log=10.0))
    assert chosen.tolist() == [0, 1]
    assert status.tolist() == [MATCHED, MATCHED] and segment.tolist() == [0, 0]


def test_a_run_after_a_break_is_pruned_against_its_own_first_fix() -> None:
    # two roads no route joins: edge 0 (node 0 -> 1) and edge 1 (node 2 -> 3). Fix 1 cannot
    # follow fix 0, and with no outlier allowed it starts a run; its only candidate is 40 m
    # away (-12.5, beyond the beam of 10), but the best of its fix: fix 2 follows it
    graph = Graph(4, u=[0, 2], v=[1, 3], length=[100.0, 100.0], twin=[-1, -1])
    trace = Trace(
        x=[0.0, 1000.0, 1010.0],
        y=[0.0, 0.0, 0.0],
        t=[0.0, 1.0, 2.0],
        candidates=[[(0, 10.0, 0.0)], [(1, 10.0, 40.0)], [(1, 20.0, 0.0)]],
    )
    prm = params_array(sigma_m=8.0, beam_log=10.0, max_outlier_points=0)
    chosen, status, segment, _, _ = decode(graph, trace, prm)
    assert chosen.tolist() == [0, 1, 2] and status.tolist() == [MATCHED] * 3
    assert segment.tolist() == [0, 1, 1]


def test_a_route_that_needs_the_whole_bound_is_found() -> None:
    # edge 0: node 0 -> 1, 10 m, whose reverse is edge 40 (edges 3-39 join other nodes);
    # edge 1: node 1 -> 2, 100 m; edge 2: node 2 -> 3, 10 m. From 0 m on edge 0 to 5 m on
    # edge 2 is 10 + 100 + 5 = 115 m, exactly the bound 115 m/s * 1 s + 0 m: the search from
    # node 1 must reach 115 - 10 = 105 m (100 m are needed), whatever the edges' indices.
    dummies = range(3, 40)
    graph = Graph(
        n_nodes=4 + 2 * len(dummies),
        u=[0, 1, 2, *(4 + 2 * i for i in range(len(dummies))), 1],
        v=[1, 2, 3, *(5 + 2 * i for i in range(len(dummies))), 0],
        length=[10.0, 100.0, 10.0, *(50.0 for _ in dummies), 10.0],
        twin=[40, -1, -1, *(-1 for _ in dummies), 0],
    )
    trace = Trace(
        x=[0.0, 100.0], y=[0.0, 0.0], t=[0.0, 1.0], candidates=[[(0, 0.0, 0.0)], [(2, 5.0, 0.0)]]
    )
    prm = params_array(max_speed_mps=115.0, route_slack_m=0.0)
    chosen, status, _, kind, _ = decode(graph, trace, prm)
    assert chosen.tolist() == [0, 1] and status.tolist() == [MATCHED, MATCHED]
    assert kind[1] == VIA_GRAPH
    check_against_reference(graph, trace, prm)


@pytest.mark.parametrize(("seconds", "reached"), [(0.5, False), (0.75, True), (1.0, True)])
def test_the_speed_bound_of_a_step_shorter_than_a_second(seconds: float, reached: bool) -> None:
    # from 0 m on edge 0 (10 m) to 20 m on edge 1: a route of 30 m for 25 m straight; at
    # 40 m/s without slack the bound is max(40 m/s * dt, 25 m): 25 m for half a second (too
    # short), 30 m for 0.75 s
    trace = Trace(
        x=[0.0, 25.0],
        y=[0.0, 0.0],
        t=[0.0, seconds],
        candidates=[[(0, 0.0, 0.0)], [(1, 20.0, 0.0)]],
    )
    prm = params_array(max_speed_mps=40.0, route_slack_m=0.0)
    chosen, status, _, _, _ = decode(CHAIN_OF_TWO, trace, prm)
    assert status.tolist() == [MATCHED, MATCHED if reached else OUTLIER]
    assert chosen.tolist() == [0, 1 if reached else -1]


# a two-way road: edge 0 from node 0 to node 1 and edge 1 back, 100 m each
TWO_WAY = Graph(2, u=[0, 1], v=[1, 0], length=[100.0, 100.0], twin=[1, 0])


@pytest.mark.parametrize(
    ("offset", "uturn", "chosen"),
    [
        (50.0, 0.05, 1),  # standing still: 0, above the U-turn's -0.05
        (46.0, 0.3, 2),  # 4 m back (tolerance 5 m): standing still, -4 / 10 for the step back
        (54.0, 0.3, 2),  # 4 m ahead of a fix that did not move: -4 / 10
        (54.0, 0.5, 1),
        (44.0, 0.5, 2),  # 6 m back (beyond the tolerance) standing still: -6 / 10, below -0.5
        (40.0, 1.5, 1),  # 10 m back standing still, -10 / 10, beats a U-turn of -1.5
    ],
)
def test_standing_still_and_jitter_on_one_edge_against_a_u_turn(
    offset: float, uturn: float, chosen: int
) -> None:
    # the fix does not move (straight distance 0); its candidates are on edge 0 at ``offset``
    # and on the reverse edge 1 at 50 m, the same place: a U-turn on the spot, scoring
    # -|0 - 0| / 10 - uturn. Both are on the road (no emission cost)
    trace = Trace(
        x=[0.0, 0.0],
        y=[0.0, 0.0],
        t=[0.0, 1.0],
        candidates=[[(0, 50.0, 0.0)], [(0, offset, 0.0), (1, 50.0, 0.0)]],
    )
    got, status, _, kind, _ = decode(TWO_WAY, trace, params_array(beta_m=10.0, uturn_penalty=uturn))
    assert got.tolist() == [0, chosen] and status.tolist() == [MATCHED, MATCHED]
    assert kind[chosen] == (SAME_EDGE if chosen == 1 else UTURN)


@pytest.mark.parametrize(("offset", "reached"), [(45.0, True), (44.5, False)])
def test_a_u_turn_may_land_up_to_the_tolerance_behind_the_turn(
    offset: float, reached: bool
) -> None:
    # turning at 50 m on edge 0 puts a car at 50 m on edge 1; 45 m is 5 m behind the turn,
    # exactly the tolerance, 44.5 m beyond it (and no route goes round: 50 + 0 + 44.5 m is
    # more than the bound of 40 m/s * 1 s + 30 m)
    trace = Trace(
        x=[0.0, 0.0], y=[0.0, 0.0], t=[0.0, 1.0], candidates=[[(0, 50.0, 0.0)], [(1, offset, 0.0)]]
    )
    chosen, status, _, kind, _ = decode(TWO_WAY, trace, params_array(backward_tolerance_m=5.0))
    assert status.tolist() == [MATCHED, MATCHED if reached else OUTLIER]
    if reached:
        assert chosen.tolist() == [0, 1] and kind[1] == UTURN


def test_turning_at_the_end_node_is_a_route_through_the_graph_not_a_u_turn() -> None:
    # from the end of edge 0 (100 m, at node 1) to 20 m on its reverse edge 1: through node 1
    # the route is 0 + 0 + 20 m; as a U-turn 20 m past the turn. With no U-turn penalty both
    # score -|20 - 20| / 10 = 0: a U-turn is taken only when it scores better (mid-edge)
    trace = Trace(
        x=[0.0, 20.0], y=[0.0, 0.0], t=[0.0, 1.0], candidates=[[(0, 100.0, 0.0)], [(1, 20.0, 0.0)]]
    )
    chosen, _, _, kind, _ = decode(TWO_WAY, trace, params_array(uturn_penalty=0.0))
    assert chosen.tolist() == [0, 1] and kind[1] == VIA_GRAPH


def test_a_fix_drifting_back_farther_than_the_tolerance_is_standing_still_not_a_break() -> None:
    # a one-way road (no twin, no way round): a stopped car's fixes drift 20 m back, four
    # times the tolerance. Standing still costs -(20 + 20) / 10 for the step back; nothing
    # else reaches the fix, which would otherwise start a new run (no outlier allowed)
    trace = Trace(
        x=[0.0, -20.0, -20.0],
        y=[0.0, 0.0, 0.0],
        t=[0.0, 1.0, 2.0],
        candidates=[[(0, 50.0, 0.0)], [(0, 30.0, 0.0)], [(0, 30.0, 0.0)]],
    )
    prm = params_array(beta_m=10.0, backward_tolerance_m=5.0, max_outlier_points=0)
    chosen, status, segment, kind, _ = decode(CHAIN, trace, prm)
    assert chosen.tolist() == [0, 1, 2] and status.tolist() == [MATCHED] * 3
    assert segment.tolist() == [0, 0, 0] and kind[1] == SAME_EDGE
    check_against_reference(CHAIN, trace, prm)


def test_a_loop_back_onto_the_same_edge_beats_standing_still_when_it_fits_the_fixes() -> None:
    # a ring of two one-way edges, 20 m each: from 15 m on edge 0 round the ring to 10 m on
    # edge 0 is 5 + 20 + 10 = 35 m, the straight distance between the fixes: it scores 0,
    # standing still -(35 + 5) / 10
    ring = Graph(2, u=[0, 1], v=[1, 0], length=[20.0, 20.0], twin=[-1, -1])
    trace = Trace(
        x=[0.0, 35.0], y=[0.0, 0.0], t=[0.0, 1.0], candidates=[[(0, 15.0, 0.0)], [(0, 10.0, 0.0)]]
    )
    prm = params_array(beta_m=10.0, backward_tolerance_m=1.0)
    chosen, status, _, kind, _ = decode(ring, trace, prm)
    assert chosen.tolist() == [0, 1] and status.tolist() == [MATCHED, MATCHED]
    assert kind[1] == VIA_GRAPH
    check_against_reference(ring, trace, prm)
