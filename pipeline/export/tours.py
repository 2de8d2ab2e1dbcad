"""Drivable tours: a closed route on the road graph that drives every required road.

This is the directed rural postman problem with a choice of direction: each required road is
served by driving any one of its directed edges (both directions of a two-way road count, as
coverage counts a road once whichever way it was driven; a one-way road has one edge). The
heuristic builds a tour after Frederickson's rural postman heuristic, then improves it:

1. **orient** each two-way road, in two ways: greedily, so that it evens out the in- and
   out-degrees of its ends (one-way roads first); and the way an undirected tour of the
   roads drives it (pieces joined by a minimum spanning tree, odd-degree nodes paired by a
   minimum-weight matching, an Euler circuit);
2. **connect** the pieces the chosen edges form (a minimum spanning tree over the pieces,
   whose cost is the shortest route between them in either direction) and **balance** every
   node (as many ways in as out) by a minimum-cost flow from the nodes with more ways in to
   those with more ways out, each unit of flow a shortest route; both orders (connect then
   balance, balance then connect and balance again) are tried and the shorter kept;
3. walk the balanced, connected multigraph by an **Euler circuit**;
4. **improve** the circuit, seen as its services in order (each required road with the
   direction it is driven) joined by shortest routes: move one service, in either direction,
   or a run of two or three, elsewhere in the order (or-opt); drive a run of services
   backwards, two-way roads turned round (2-opt); drop a service whose road the routes
   between the others drive anyway; repeated while the tour gets shorter.

The shorter of the two tours (one per orientation) is kept. Routes between nodes are shortest
by length on the whole graph (so a connecting route may leave the required roads' area). The
measured gap to the optimum on small graphs is in ``docs/priorities.md``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pyproj
import shapely

from pipeline.snap.graph_kernels import shortest_path_tree

EdgeKey = tuple[int, int, int]
"""A directed edge of the road graph: ``(u, v, key)``."""
INF = float("inf")
LENGTH = "length_m"
"""The edge attribute tours are measured by, metres."""
_FLOW_SCALE = 1000  # min-cost flow needs integer costs: millimetres
MAX_MOVE_ROUNDS = 5
"""Rounds of moves (each tries every service, run and reversal once) before each drop pass.

Small tours settle in fewer; a tour of a few hundred roads keeps improving a little for many
more rounds, each costing about a second (docs/priorities.md)."""
MAX_DROP_PASSES = 3
"""Passes of drops (each followed by rounds of moves) before the tour is kept as it is.

With ``MAX_MOVE_ROUNDS`` it bounds the local search of a tour of n roads to a fixed number of
passes over its moves, each pass of order n squared; ``priorities.max_tour_roads`` bounds n."""


@dataclass(frozen=True)
class Tour:
    """A closed drive over the road graph.

    Attributes
    ----------
    edges
        The directed edges in driving order; the last ends where the first starts.
    length_m
        Their summed length, metres.
    served
        The required roads driven (road id -> the edge that served it first).
    way_in, way_out
        How many of the first and last edges are the way in from, and out to, a start clear of
        the tour's roads (:func:`approach_from_clear_node`); 0 for a bare circuit.
    """

    edges: tuple[EdgeKey, ...]
    length_m: float
    served: Mapping[int, EdgeKey]
    way_in: int = 0
    way_out: int = 0

    @property
    def circuit(self) -> tuple[EdgeKey, ...]:
        """Return the edges of the closed drive without the way in and out."""
        return self.edges[self.way_in : len(self.edges) - self.way_out]


def plan_tour(
    graph: nx.MultiDiGraph,
    required: Mapping[int, Sequence[EdgeKey]],
    routes: RouteFinder | None = None,
) -> Tour:
    """Return a closed tour that drives at least one edge of every required road.

    Parameters
    ----------
    graph
        The directed road graph; every edge has a ``length_m`` attribute.
    required
        Road id -> the directed edges that serve it (one for a one-way road, its two
        directions for a two-way road). The roads must lie in one strongly connected part
        of ``graph`` (:func:`reachable_roads` keeps those that do).
    routes
        Shortest routes on ``graph``, shared between tours; default: a new finder.

    Returns
    -------
    Tour
        Empty (no edges) when nothing is required.

    Raises
    ------
    ValueError
        If the required roads cannot all be reached from one another.
    """
    if not required:
        return Tour(edges=(), length_m=0.0, served={})
    routes = routes if routes is not None else RouteFinder(graph)
    serving = {edge: road for road, options in required.items() for edge in options}
    best: list[EdgeKey] = []
    orientations = [orient_roads(required)]
    if any(len(options) > 1 for options in required.values()):  # one-way roads: one way only
        orientations.append(orient_along_circuit(required, routes))
    for orientation in orientations:
        walk: Counter[EdgeKey] = Counter(orientation.values())
        walk.update(edge for path in _deadhead_routes(walk, routes)[0] for edge in path)
        circuit = _euler_circuit(walk, start=next(iter(orientation.values()))[0])
        services = list(_served(circuit, serving).items())
        backwards = [(road, _other_way(road, edge, required)) for road, edge in services[::-1]]
        for start in (services, backwards):
            drive = _expand(improve_services(list(start), required, routes), routes)
            if not best or _length_of(drive, graph) < _length_of(best, graph):
                best = drive
    return Tour(edges=tuple(best), length_m=_length_of(best, graph), served=_served(best, serving))


def _other_way(road: int, edge: EdgeKey, required: Mapping[int, Sequence[EdgeKey]]) -> EdgeKey:
    """Return the road's edge in the other direction, or ``edge`` for a one-way road."""
    return next((e for e in required[road] if e != edge), edge)


def _length_of(edges: Sequence[EdgeKey], graph: nx.MultiDiGraph) -> float:
    return float(sum(graph.edges[edge][LENGTH] for edge in edges))


def _served(circuit: Sequence[EdgeKey], serving: Mapping[EdgeKey, int]) -> dict[int, EdgeKey]:
    """Road id -> the first edge of the circuit that drives it, in driving order."""
    served: dict[int, EdgeKey] = {}
    for edge in circuit:
        road = serving.get(edge)
        if road is not None and road not in served:
            served[road] = edge
    return served


def improve_services(
    services: list[tuple[int, EdgeKey]],
    required: Mapping[int, Sequence[EdgeKey]],
    routes: RouteFinder,
) -> list[tuple[int, EdgeKey]]:
    """Improve a tour given as its services in order (road, edge driven), shortest routes between.

    While the tour gets shorter, at most ``MAX_MOVE_ROUNDS`` rounds: move one service
    elsewhere in the order, in either direction of its road, or a run of two or three
    services (or-opt); drive a run of services backwards (2-opt). Then drop each service
    whose road the routes between the others drive anyway, if the tour gets shorter; and move
    again, unless the moves leave a dropped road undriven. Until no service is dropped, at
    most ``MAX_DROP_PASSES`` times.
    """
    dropped, passes = True, 0
    while dropped and passes < MAX_DROP_PASSES:
        passes += 1
        before = list(services)
        improved, rounds = True, 0
        while improved and rounds < MAX_MOVE_ROUNDS:
            rounds += 1
            improved = _move_services(services, required, routes)
            for block in (2, 3):
                improved = _move_blocks(services, routes, block) or improved
            improved = _reverse_runs(services, required, routes) or improved
        if not _drives_all(_expand(services, routes), required):
            services[:] = before
        dropped = _drop_services(services, required, routes)
    return services


def _drives_all(drive: list[EdgeKey], required: Mapping[int, Sequence[EdgeKey]]) -> bool:
    driven = set(drive)
    return all(driven.intersection(options) for options in required.values())


def _move_services(
    services: list[tuple[int, EdgeKey]],
    required: Mapping[int, Sequence[EdgeKey]],
    routes: RouteFinder,
) -> bool:
    moved = False
    index = 0
    while index < len(services) and len(services) > 2:
        edge = services[index][1]
        before, after = services[index - 1][1], services[(index + 1) % len(services)][1]
        saving = (
            routes.gap(before, edge) + routes.length(edge) + routes.gap(edge, after)
            - routes.gap(before, after)
        )  # fmt: skip
        rest = services[:index] + services[index + 1 :]
        best = (saving - 1e-6, -1, edge)
        for place in range(len(rest)):
            a, b = rest[place - 1][1], rest[place][1]
            for option in required[services[index][0]]:
                cost = (
                    routes.gap(a, option) + routes.length(option) + routes.gap(option, b)
                    - routes.gap(a, b)
                )  # fmt: skip
                if cost < best[0]:
                    best = (cost, place, option)
        if best[1] >= 0:
            rest.insert(best[1], (services[index][0], best[2]))
            services[:] = rest
            moved = True
        index += 1
    return moved


def _move_blocks(services: list[tuple[int, EdgeKey]], routes: RouteFinder, size: int) -> bool:
    """Move runs of ``size`` consecutive services elsewhere in the order, if that is shorter."""
    moved = False
    index = 0
    while index + size <= len(services) and len(services) > size + 1:
        first, last = services[index][1], services[index + size - 1][1]
        before, after = services[index - 1][1], services[(index + size) % len(services)][1]
        saving = routes.gap(before, first) + routes.gap(last, after) - routes.gap(before, after)
        rest = services[:index] + services[index + size :]
        best = (saving - 1e-6, -1)
        for place in range(len(rest)):
            a, b = rest[place - 1][1], rest[place][1]
            cost = routes.gap(a, first) + routes.gap(last, b) - routes.gap(a, b)
            if cost < best[0]:
                best = (cost, place)
        if best[1] >= 0:
            services[:] = rest[: best[1]] + services[index : index + size] + rest[best[1] :]
            moved = True
        index += 1
    return moved


def _reverse_runs(
    services: list[tuple[int, EdgeKey]],
    required: Mapping[int, Sequence[EdgeKey]],
    routes: RouteFinder,
) -> bool:
    """Drive runs of services backwards, each two-way road the other way, if that is shorter.

    The 2-opt move of a route whose services may change direction; a one-way road keeps its
    direction.
    """

    def flipped(service: tuple[int, EdgeKey]) -> EdgeKey:
        return _other_way(*service, required)

    reversed_any = False
    count = len(services)
    for i in range(count):
        old_inside = new_inside = 0.0
        for j in range(i, min(count, i + count - 1)):
            if j > i:
                old_inside += routes.gap(services[j - 1][1], services[j][1])
                new_inside += routes.gap(flipped(services[j]), flipped(services[j - 1]))
            old_inside += routes.length(services[j][1])
            new_inside += routes.length(flipped(services[j]))
            before, after = services[i - 1][1], services[(j + 1) % count][1]
            old = (
                routes.gap(before, services[i][1]) + old_inside + routes.gap(services[j][1], after)
            )
            new = routes.gap(before, flipped(services[j])) + new_inside
            new += routes.gap(flipped(services[i]), after)
            if new < old - 1e-6:
                run = [(road, flipped((road, edge))) for road, edge in services[i : j + 1]]
                services[i : j + 1] = run[::-1]
                reversed_any = True
                break
    return reversed_any


def _drop_services(
    services: list[tuple[int, EdgeKey]],
    required: Mapping[int, Sequence[EdgeKey]],
    routes: RouteFinder,
) -> bool:
    dropped = False
    index = 0
    while index < len(services) and len(services) > 1:
        rest = services[:index] + services[index + 1 :]
        drive = _expand(rest, routes)
        serves_all = _drives_all(drive, required)
        shorter = sum(routes.length(e) for e in drive) < _route_length(services, routes)
        if serves_all and shorter:
            services[:] = rest
            dropped = True
        else:
            index += 1
    return dropped


def _route_length(services: list[tuple[int, EdgeKey]], routes: RouteFinder) -> float:
    return float(sum(routes.length(e) for e in _expand(services, routes)))


def _expand(services: list[tuple[int, EdgeKey]], routes: RouteFinder) -> list[EdgeKey]:
    """Return the closed drive through the services in order, shortest routes between them."""
    edges: list[EdgeKey] = []
    for position, (_, edge) in enumerate(services):
        edges.append(edge)
        following = services[(position + 1) % len(services)][1]
        if edge[1] != following[0]:
            edges.extend(routes.route(edge[1], following[0]))
    return edges


def reachable_roads(
    graph: nx.MultiDiGraph,
    required: Mapping[int, Sequence[EdgeKey]],
    values: Mapping[int, float] | None = None,
) -> tuple[dict[int, tuple[EdgeKey, ...]], list[int]]:
    """Split required roads into those one tour can drive and those it cannot.

    A tour is closed, so it stays inside one strongly connected component of the graph: the
    one holding the most value of required roads is kept (``values``: road id -> its value;
    each road counts 1 without them; the first component found wins a tie), and each road
    keeps the edges inside it.

    Returns
    -------
    kept
        Road id -> its serving edges inside that component.
    left_out
        The road ids with no serving edge inside it.
    """
    component_of: dict[int, int] = {}
    for index, nodes in enumerate(nx.strongly_connected_components(graph)):
        component_of.update(dict.fromkeys(nodes, index))
    worth: dict[int, float] = {}
    for road, options in required.items():
        holding = {component_of[u] for u, v, _ in options if component_of[u] == component_of[v]}
        for component in holding:
            worth[component] = worth.get(component, 0.0) + (values or {}).get(road, 1.0)
    if not worth:
        return {}, sorted(required)
    best = max(worth, key=worth.__getitem__)  # the first of equal worth, in order found
    kept: dict[int, tuple[EdgeKey, ...]] = {}
    for road, options in required.items():
        inside = tuple(e for e in options if component_of[e[0]] == component_of[e[1]] == best)
        if inside:
            kept[road] = inside
    return kept, sorted(set(required) - set(kept))


def orient_roads(required: Mapping[int, Sequence[EdgeKey]]) -> dict[int, EdgeKey]:
    """Pick one serving edge per road so that nodes get as many ways in as out.

    Roads with one option take it; each other road takes the option that lowers the total
    absolute imbalance (ways in minus ways out, summed over nodes) most, in road id order;
    then passes over the roads switch a road to another option while that lowers the total.
    """
    chosen: dict[int, EdgeKey] = {}
    balance: Counter[int] = Counter()
    for road in sorted(required):
        options = required[road]
        if len(options) == 1:
            chosen[road] = options[0]
            _shift(balance, options[0], +1)
    choosy = [road for road in sorted(required) if len(required[road]) > 1]
    for road in choosy:
        best = min(required[road], key=lambda edge: _imbalance_change(balance, edge))
        chosen[road] = best
        _shift(balance, best, +1)
    improved = True
    while improved:
        improved = False
        for road in choosy:
            _shift(balance, chosen[road], -1)
            best = min(required[road], key=lambda edge: _imbalance_change(balance, edge))
            if _imbalance_change(balance, best) < _imbalance_change(balance, chosen[road]):
                chosen[road] = best
                improved = True
            _shift(balance, chosen[road], +1)
    return chosen


def orient_along_circuit(
    required: Mapping[int, Sequence[EdgeKey]], routes: RouteFinder
) -> dict[int, EdgeKey]:
    """Orient two-way roads the way a tour of the roads as undirected streets drives them.

    The undirected tour (Frederickson's heuristic) joins the roads' pieces by a minimum
    spanning tree and pairs their odd-degree nodes by a minimum-weight matching, both over
    the shorter of the two directed route lengths; its Euler circuit gives each two-way road
    a direction. One-way roads keep theirs.
    """
    streets = nx.MultiGraph()
    for road, options in required.items():
        u, v, _ = options[0]
        streets.add_edge(u, v, road=road)
    pieces = [sorted(c) for c in nx.connected_components(streets)]
    links = nx.Graph()
    for i, first in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            cost, a, b = _closest(first, pieces[j], routes)
            if cost < float("inf"):
                links.add_edge(i, j, weight=cost, ends=(a, b))
    for _, _, data in nx.minimum_spanning_tree(links).edges(data=True):
        streets.add_edge(*data["ends"], road=None)
    odd = [node for node, degree in streets.degree() if degree % 2]
    pairs = nx.Graph()
    for a, b in itertools.combinations(odd, 2):
        cost = min(routes.distance(a, b), routes.distance(b, a))
        if cost < INF:
            pairs.add_edge(a, b, weight=cost)
    for a, b in nx.min_weight_matching(pairs):
        streets.add_edge(a, b, road=None)
    chosen = orient_roads(
        {road: options for road, options in required.items() if len(options) == 1}
    )
    start = next(iter(streets.nodes))
    component = nx.node_connected_component(streets, start)
    circuit = nx.eulerian_circuit(streets.subgraph(component), source=start, keys=True)
    for u, v, key in circuit:
        road = streets.edges[u, v, key]["road"]
        if road is None or road in chosen:
            continue
        options = required[road]
        chosen[road] = next((e for e in options if e[:2] == (u, v)), options[0])
    for road, options in required.items():
        chosen.setdefault(road, options[0])
    return chosen


def _deadhead_routes(
    walk: Counter[EdgeKey], routes: RouteFinder
) -> tuple[list[list[EdgeKey]], float]:
    """Return the connecting and balancing routes a walk needs, and their summed length.

    Two orders are tried and the shorter kept: join the pieces, then balance; or balance
    first (its routes often join pieces too), then join what is still apart and balance
    again.
    """
    plans = [_join_then_balance(walk, routes, [])]
    first = list(_balancing_routes(walk, routes))
    plans.append(_join_then_balance(walk + _counted(first), routes, first))
    lengths = [sum(routes.length(edge) for path in plan for edge in path) for plan in plans]
    best = lengths.index(min(lengths))
    return plans[best], float(lengths[best])


def _join_then_balance(
    walk: Counter[EdgeKey], routes: RouteFinder, done: list[list[EdgeKey]]
) -> list[list[EdgeKey]]:
    connecting = list(_connecting_routes(walk, routes))
    balancing = list(_balancing_routes(walk + _counted(connecting), routes))
    return done + connecting + balancing


def _counted(paths: list[list[EdgeKey]]) -> Counter[EdgeKey]:
    return Counter(edge for path in paths for edge in path)


def _shift(balance: Counter[int], edge: EdgeKey, sign: int) -> None:
    """Add (sign +1) or remove (-1) an edge's ways: +1 in at v, +1 out (-1) at u."""
    u, v, _ = edge
    balance[v] += sign
    balance[u] -= sign


def _imbalance_change(balance: Counter[int], edge: EdgeKey) -> int:
    u, v, _ = edge
    if u == v:
        return 0
    return (abs(balance[v] + 1) - abs(balance[v])) + (abs(balance[u] - 1) - abs(balance[u]))


class RouteFinder:
    """Shortest routes by length between nodes of one graph: one Dijkstra per origin, cached.

    The searches run in the compiled kernel the matcher uses
    (:func:`pipeline.snap.graph_kernels.shortest_path_tree`). Share one finder between the
    tours of a graph: its cache serves them all.
    """

    def __init__(self, graph: nx.MultiDiGraph) -> None:
        self.graph = graph
        self._index = {node: i for i, node in enumerate(graph.nodes)}
        edges = [
            (u, v, k, float(length)) for u, v, k, length in graph.edges(keys=True, data=LENGTH)
        ]
        self._keys: list[EdgeKey] = [(u, v, k) for u, v, k, _ in edges]
        self._lengths = {(u, v, k): d for u, v, k, d in edges}
        self._edge_u = np.array([self._index[u] for u, _, _, _ in edges], dtype=np.int64)
        edge_v = np.array([self._index[v] for _, v, _, _ in edges], dtype=np.int64)
        order = np.argsort(self._edge_u, kind="stable")
        self._arrays = (
            np.searchsorted(self._edge_u[order], np.arange(len(self._index) + 1)),
            order.astype(np.int64),
            edge_v,
            np.array([length for _, _, _, length in edges], dtype=np.float64),
        )
        self._trees: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def distance(self, origin: int, target: int) -> float:
        """Return the length of the shortest route from ``origin`` to ``target`` (inf: none)."""
        return float(self._tree(origin)[0][self._index[target]])

    def distances_from(self, origin: int) -> tuple[list[int], np.ndarray]:
        """Return every node of the graph and the length of its shortest route from ``origin``."""
        return list(self._index), self._tree(origin)[0]

    def gap(self, edge: EdgeKey, following: EdgeKey) -> float:
        """Return the shortest route's length from the end of ``edge`` to ``following``'s start."""
        return self.distance(edge[1], following[0])

    def length(self, edge: EdgeKey) -> float:
        """Return an edge's length."""
        return self._lengths[edge]

    def route(self, origin: int, target: int) -> list[EdgeKey]:
        """Return the edges of a shortest route from ``origin`` to ``target``, in order."""
        via = self._tree(origin)[1]
        path: list[EdgeKey] = []
        node, start = self._index[target], self._index[origin]
        while node != start:
            edge = int(via[node])
            if edge < 0:
                raise ValueError(f"node {target} cannot be reached from node {origin}")
            path.append(self._keys[edge])
            node = int(self._edge_u[edge])
        return path[::-1]

    def _tree(self, origin: int) -> tuple[np.ndarray, np.ndarray]:
        start = self._index[origin]
        if start not in self._trees:
            self._trees[start] = shortest_path_tree(start, np.inf, *self._arrays)
        return self._trees[start]


def _connecting_routes(walk: Counter[EdgeKey], routes: RouteFinder) -> Iterable[list[EdgeKey]]:
    """Routes joining the pieces of ``walk`` along a minimum spanning tree of route lengths."""
    pieces = nx.MultiDiGraph(list(walk))
    components = [sorted(c) for c in nx.weakly_connected_components(pieces)]
    if len(components) < 2:
        return []
    links = nx.Graph()
    links.add_nodes_from(range(len(components)))
    for i, first in enumerate(components):
        for j in range(i + 1, len(components)):
            cost, origin, target = _closest(first, components[j], routes)
            if cost < float("inf"):
                links.add_edge(i, j, weight=cost, ends=(origin, target))
    tree = nx.minimum_spanning_tree(links, weight="weight")
    if not nx.is_connected(tree):
        raise ValueError("the required roads cannot all be reached from one another")
    return [routes.route(*data["ends"]) for _, _, data in tree.edges(data=True)]


def _closest(first: list[int], second: list[int], routes: RouteFinder) -> tuple[float, int, int]:
    """Return the shortest route between two node sets, either way: cost, origin, target."""
    best = (float("inf"), first[0], second[0])
    for origins, targets in ((first, second), (second, first)):
        for a in origins:
            for b in targets:
                distance = routes.distance(a, b)
                if distance < best[0]:
                    best = (distance, a, b)
    return best


def _balancing_routes(walk: Counter[EdgeKey], routes: RouteFinder) -> Iterable[list[EdgeKey]]:
    """Routes from nodes with more ways in to nodes with more ways out, at minimum total length."""
    balance: Counter[int] = Counter()
    for edge, count in walk.items():
        for _ in range(count):
            _shift(balance, edge, +1)
    sources = [n for n, b in balance.items() if b > 0]  # more ways in: a route must leave
    sinks = [n for n, b in balance.items() if b < 0]
    if not sources:
        return []
    flow = nx.DiGraph()
    for node in sources:
        flow.add_node(("s", node), demand=-balance[node])
    for node in sinks:
        flow.add_node(("t", node), demand=-balance[node])
    for origin in sources:
        for target in sinks:
            distance = routes.distance(origin, target)
            if distance < INF:
                cost = round(distance * _FLOW_SCALE)
                flow.add_edge(("s", origin), ("t", target), weight=cost)
    try:
        sent = nx.min_cost_flow(flow)
    except nx.NetworkXUnfeasible:
        raise ValueError("the required roads cannot all be reached from one another") from None
    return [
        routes.route(origin[1], target[1])
        for origin, targets in sent.items()
        for target, units in targets.items()
        for _ in range(units)
    ]


def _euler_circuit(walk: Counter[EdgeKey], start: int) -> list[EdgeKey]:
    multigraph = nx.MultiDiGraph()
    for (u, v, key), count in walk.items():
        for _ in range(count):
            multigraph.add_edge(u, v, road_key=key)
    return [
        (u, v, multigraph.edges[u, v, k]["road_key"])
        for u, v, k in nx.eulerian_circuit(multigraph, source=start, keys=True)
    ]


def approach_from_clear_node(
    graph: nx.MultiDiGraph, tour: Tour, clearance_m: float, routes: RouteFinder
) -> Tour:
    """Return the tour driven from, and back to, a node at least ``clearance_m`` clear of it.

    Privacy trimming (:func:`pipeline.ingest.privacy.trip_end_mask`) drops every fix of a trip
    within a circle around its start and its end, wherever in the trip. A tour driven as a
    trip of its own from its first road would lose its roads near that point; driven from a
    node whose straight-line distance to every road of the tour is at least ``clearance_m``,
    and back to it, it loses only the way in and out. The node is the one reached first from
    the tour's start (shortest route) that is clear and from which the start can be reached.
    Edges need a ``geometry`` (lon/lat line); the tour is returned as it is when no node is
    clear (a region smaller than the circle).
    """
    if not tour.edges or clearance_m <= 0:
        return tour
    start = tour.edges[0][0]
    for node in _clear_nodes(graph, tour, clearance_m, routes):
        way_back = routes.distance(node, start)
        if way_back < INF:
            way_in, way_out = routes.route(node, start), routes.route(start, node)
            extra = sum(routes.length(edge) for edge in way_in + way_out)
            return Tour(
                edges=tuple(way_in) + tour.edges + tuple(way_out),
                length_m=tour.length_m + extra,
                served=tour.served,
                way_in=len(way_in),
                way_out=len(way_out),
            )
    return tour


def _clear_nodes(
    graph: nx.MultiDiGraph, tour: Tour, clearance_m: float, routes: RouteFinder
) -> list[int]:
    """Nodes reachable from the tour's start, nearest by route first, ``clearance_m`` clear."""
    ends = {}
    for u, v, line in graph.edges(data="geometry"):
        ends[u], ends[v] = line.coords[0], line.coords[-1]
    start = tour.edges[0][0]
    lon0, lat0 = ends[start]
    local = pyproj.Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +units=m", always_xy=True
    )
    lines = shapely.MultiLineString([graph.edges[e]["geometry"] for e in tour.edges])
    shape = shapely.transform(lines, lambda xy: np.column_stack(local.transform(*xy.T)))
    nodes, by_route = routes.distances_from(start)
    reachable = np.flatnonzero(by_route < INF)
    x, y = local.transform(*np.array([ends[nodes[i]] for i in reachable]).T)
    clear = shapely.distance(shapely.points(x, y), shape) >= clearance_m
    nearest_first = reachable[clear][np.argsort(by_route[reachable[clear]], kind="stable")]
    return [int(nodes[i]) for i in nearest_first]
