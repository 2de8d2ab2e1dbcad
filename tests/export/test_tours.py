"""Tours on hand-built graphs, against the optimum found by exhaustive search."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
import pytest
import shapely

from pipeline.export.tours import (
    EdgeKey,
    RouteFinder,
    Tour,
    approach_from_clear_node,
    plan_tour,
    reachable_roads,
)

MAX_GAP = 0.10  # the bound on the tour's length above the optimum


def optimal_length(graph: nx.MultiDiGraph, required: Mapping[int, Sequence[EdgeKey]]) -> float:
    """Length of the shortest closed walk serving every required road (Dijkstra on states).

    A state is (node, set of roads served so far); the walk starts and ends at the first
    road's first node, which every closed walk serving that road passes through.
    """
    roads = sorted(required)
    bit = {edge: 1 << i for i, road in enumerate(roads) for edge in required[road]}
    full = (1 << len(roads)) - 1
    start = required[roads[0]][0][0]
    best = {(start, 0): 0.0}
    queue = [(0.0, start, 0)]
    while queue:
        cost, node, served = heapq.heappop(queue)
        if (node, served) == (start, full):
            return cost
        if cost > best[(node, served)]:
            continue
        for _, target, key, length in graph.out_edges(node, keys=True, data="length_m"):
            state = (target, served | bit.get((node, target, key), 0))
            if cost + length < best.get(state, float("inf")):
                best[state] = cost + length
                heapq.heappush(queue, (cost + length, *state))
    raise AssertionError("no closed walk serves every road")


def street_graph(streets: Sequence[tuple[int, int, float, bool]]) -> nx.MultiDiGraph:
    """Graph of (u, v, length, one-way) streets; a two-way street is two opposite edges."""
    graph = nx.MultiDiGraph()
    for u, v, length, oneway in streets:
        graph.add_edge(u, v, length_m=length)
        if not oneway:
            graph.add_edge(v, u, length_m=length)
    return graph


def road_options(graph: nx.MultiDiGraph, streets: Sequence[tuple[int, int, float, bool]]) -> dict:
    """Road index -> its serving edges (key 0 each way: the streets are never parallel)."""
    return {
        i: [(u, v, 0)] if oneway else [(u, v, 0), (v, u, 0)]
        for i, (u, v, _, oneway) in enumerate(streets)
    }


def assert_valid_tour(graph, required, tour) -> None:
    edges = tour.edges
    assert edges, "empty tour"
    for (_, v, _), (u, _, _) in zip(edges, edges[1:] + edges[:1], strict=True):
        assert v == u, "the tour jumps"
    assert all(graph.has_edge(*edge) for edge in edges)
    driven = set(edges)
    for road, options in required.items():
        assert driven & set(options), f"road {road} is not driven"
    assert tour.length_m == pytest.approx(sum(graph.edges[e]["length_m"] for e in edges))


# a 3 x 3 block of streets, 100 m apart, nodes numbered row by row
#  0 - 1 - 2
#  |   |   |
#  3 - 4 - 5
#  |   |   |
#  6 - 7 - 8
GRID = [
    (0, 1, 100.0, False), (1, 2, 100.0, False), (3, 4, 100.0, False), (4, 5, 100.0, False),
    (6, 7, 100.0, False), (7, 8, 100.0, False), (0, 3, 100.0, False), (3, 6, 100.0, False),
    (1, 4, 100.0, False), (4, 7, 100.0, False), (2, 5, 100.0, False), (5, 8, 100.0, False),
]  # fmt: skip


def test_a_block_of_two_way_streets_is_driven_around_once() -> None:
    """The outer ring of the grid: 8 streets of 100 m, a circuit of exactly 800 m."""
    graph = street_graph(GRID)
    ring = {i: road_options(graph, GRID)[i] for i in (0, 1, 4, 5, 6, 7, 10, 11)}
    tour = plan_tour(graph, ring)
    assert_valid_tour(graph, ring, tour)
    assert tour.length_m == pytest.approx(800.0)
    assert set(tour.served) == set(ring)


def test_every_street_of_the_grid_within_ten_percent_of_the_optimum() -> None:
    """All 12 streets (1200 m): the odd-degree nodes 1, 3, 5, 7 pair up 200 m apart: 1600 m."""
    graph = street_graph(GRID)
    required = road_options(graph, GRID)
    tour = plan_tour(graph, required)
    assert_valid_tour(graph, required, tour)
    assert optimal_length(graph, required) == pytest.approx(1600.0)
    assert tour.length_m <= 1600.0 * (1 + MAX_GAP)


def test_a_one_way_street_is_driven_its_way() -> None:
    """A one-way street 0 -> 1 in a triangle of two-way streets: 0 -> 1 -> 2 -> 0."""
    streets = [(0, 1, 100.0, True), (1, 2, 120.0, False), (2, 0, 130.0, False)]
    graph = street_graph(streets)
    required = road_options(graph, streets)
    tour = plan_tour(graph, required)
    assert_valid_tour(graph, required, tour)
    assert (0, 1, 0) in tour.edges and (1, 0, 0) not in tour.edges
    assert tour.length_m == pytest.approx(350.0)


def test_required_streets_apart_are_joined_by_the_shortest_routes() -> None:
    """Two separate streets of the grid's top and bottom rows: joined through the middle."""
    graph = street_graph(GRID)
    options = road_options(graph, GRID)
    required = {0: options[0], 5: options[5]}  # 0-1 and 7-8
    tour = plan_tour(graph, required)
    assert_valid_tour(graph, required, tour)
    # 0-1 (100), 1-4-7 (200), 7-8 (100), back from 8 to 0 (400): 800 m
    assert optimal_length(graph, required) == pytest.approx(800.0)
    assert tour.length_m <= 800.0 * (1 + MAX_GAP)


def random_instance(
    seed: int, size: int = 4, required: tuple[int, int] = (3, 10)
) -> tuple[nx.MultiDiGraph, dict[int, list[EdgeKey]]]:
    """A size x size grid of streets of random length, a third one-way; some roads required.

    Streets are 50 to 399 m, 15 % of the grid's streets are missing, and the number of
    required roads is drawn from ``range(*required)``; the graph is strongly connected.
    """
    rng = np.random.default_rng(seed)
    while True:
        streets = []
        for row, col in itertools.product(range(size), range(size)):
            node = size * row + col
            right = node + 1 if col < size - 1 else None
            down = node + size if row < size - 1 else None
            for other in (right, down):
                if other is None or rng.random() < 0.15:
                    continue
                u, v = (node, other) if rng.random() < 0.5 else (other, node)
                streets.append((u, v, float(rng.integers(50, 400)), bool(rng.random() < 0.33)))
        graph = street_graph(streets)
        if graph.number_of_nodes() == size * size and nx.is_strongly_connected(graph):
            break
    options = road_options(graph, streets)
    picked = rng.choice(len(streets), size=int(rng.integers(*required)), replace=False)
    return graph, {int(i): options[int(i)] for i in sorted(picked)}


def tour_gaps(seeds: range) -> list[float]:
    gaps = []
    for seed in seeds:
        graph, required = random_instance(seed)
        tour = plan_tour(graph, required)
        assert_valid_tour(graph, required, tour)
        gaps.append(tour.length_m / optimal_length(graph, required) - 1)
    return gaps


def test_random_grids_within_ten_percent_of_the_optimum() -> None:
    """100 random 4 x 4 street grids with one-way streets and 3 to 9 required roads."""
    gaps = tour_gaps(range(100))
    assert min(gaps) >= -1e-9  # nothing beats the optimum: the oracle is sound
    assert max(gaps) <= MAX_GAP, f"worst gap {max(gaps):.1%}"


def test_roads_outside_the_main_component_are_left_out() -> None:
    """A street reachable only one way (a dead-end one-way spur) cannot be in a closed tour."""
    streets = [(0, 1, 100.0, False), (1, 2, 100.0, False), (2, 9, 50.0, True)]
    graph = street_graph(streets)
    kept, left_out = reachable_roads(graph, road_options(graph, streets))
    assert sorted(kept) == [0, 1] and left_out == [2]


def test_the_component_with_the_most_value_is_kept_not_the_most_roads() -> None:
    """Two blocks no closed drive joins: three cheap streets against two valuable ones."""
    cheap = [(0, 1, 50.0, False), (1, 2, 50.0, False), (2, 3, 50.0, False)]
    valuable = [(10, 11, 400.0, False), (11, 12, 400.0, False)]
    link = [(3, 10, 500.0, True)]  # one way only: the blocks are two components
    streets = cheap + valuable + link
    graph = street_graph(streets)
    required = {road: options for road, options in road_options(graph, streets).items() if road < 5}
    values = {0: 1.0, 1: 1.0, 2: 1.0, 3: 8.0, 4: 8.0}

    kept, left_out = reachable_roads(graph, required, values)
    assert sorted(kept) == [3, 4] and left_out == [0, 1, 2]
    by_count, left_by_count = reachable_roads(graph, required)
    assert sorted(by_count) == [0, 1, 2] and left_by_count == [3, 4]


def test_a_tour_is_driven_from_and_back_to_the_nearest_node_clear_of_its_roads() -> None:
    """A 100 m grid (0.0009 degrees of latitude at the equator) with a road running west.

    The tour is the grid's outer ring from node 0 (nodes 0-8 at x, y in 0..200 m); a road
    0 -> 9 -> 10 -> 11 leads west 100 m a step. Clear of the ring by 250 m: node 11 (300 m
    west of x = 0; node 10 is 200 m). The way in and out is 11 -> 10 -> 9 -> 0 and back: 600 m
    more. No node is 350 m clear: the tour is returned as it is.
    """
    metre = 1 / 111_320  # degrees of longitude (and about of latitude) per metre at the equator
    where = {n: ((n % 3) * 100 * metre, (n // 3) * 100 * metre) for n in range(9)}
    where |= {9: (-100 * metre, 0.0), 10: (-200 * metre, 0.0), 11: (-300 * metre, 0.0)}
    streets = [*GRID, (0, 9, 100.0, False), (9, 10, 100.0, False), (10, 11, 100.0, False)]
    graph = street_graph(streets)
    for u, v, k in graph.edges(keys=True):
        graph.edges[u, v, k]["geometry"] = shapely.LineString([where[u], where[v]])
    ring = [0, 1, 2, 5, 8, 7, 6, 3, 0]
    tour = Tour(
        edges=tuple((u, v, 0) for u, v in itertools.pairwise(ring)), length_m=800.0, served={}
    )
    driven = approach_from_clear_node(graph, tour, 250.0, RouteFinder(graph))
    way_in, way_out = driven.edges[:3], driven.edges[-3:]
    assert [e[:2] for e in way_in] == [(11, 10), (10, 9), (9, 0)]
    assert [e[:2] for e in way_out] == [(0, 9), (9, 10), (10, 11)]
    assert driven.edges[3:-3] == tour.edges
    assert driven.length_m == pytest.approx(tour.length_m + 600.0)
    assert driven.circuit == tour.edges
    assert approach_from_clear_node(graph, tour, 350.0, RouteFinder(graph)) == tour  # none clear


def test_nothing_required_is_an_empty_tour() -> None:
    tour = plan_tour(street_graph(GRID), {})
    assert tour.edges == () and tour.length_m == 0.0
