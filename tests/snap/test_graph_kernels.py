"""The compiled graph kernels, checked against networkx on random directed multigraphs."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.snap.graph_kernels import (
    dijkstra_to_marked,
    new_workspace,
    reset_workspace,
    search_candidates,
    shortest_path_tree,
)
from pipeline.snap.network import _grid


def adjacency(edge_u: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(out_ptr, out_edge)``: each node's outgoing edge rows, as the kernels take them."""
    order = np.argsort(edge_u, kind="stable")
    return np.searchsorted(edge_u[order], np.arange(n_nodes + 1)), order


def random_edges(
    rng: np.random.Generator, n_nodes: int, n_edges: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edge_u, edge_v, edge_len)`` of a random directed multigraph, loops included."""
    edge_u = rng.integers(0, n_nodes, n_edges)
    edge_v = rng.integers(0, n_nodes, n_edges)
    edge_len = np.round(rng.uniform(0.0, 20.0, n_edges), 1)  # with zero lengths and ties
    return edge_u, edge_v, edge_len


@settings(max_examples=60, deadline=None)
@given(
    n_nodes=st.integers(1, 30),
    n_edges=st.integers(0, 120),
    seed=st.integers(0, 2**32 - 1),
    limit=st.sampled_from([0.0, 5.0, 40.0, math.inf]),
)
def test_shortest_path_tree_matches_networkx(
    n_nodes: int, n_edges: int, seed: int, limit: float
) -> None:
    rng = np.random.default_rng(seed)
    edge_u, edge_v, edge_len = random_edges(rng, n_nodes, n_edges)
    out_ptr, out_edge = adjacency(edge_u, n_nodes)
    dist, pred = shortest_path_tree(0, limit, out_ptr, out_edge, edge_v, edge_len)

    graph = nx.MultiDiGraph()
    graph.add_nodes_from(range(n_nodes))
    for e, (u, v, length) in enumerate(zip(edge_u, edge_v, edge_len, strict=True)):
        graph.add_edge(int(u), int(v), key=e, length=float(length))
    expected = nx.single_source_dijkstra_path_length(graph, 0, cutoff=limit, weight="length")
    reached = np.flatnonzero(np.isfinite(dist))
    assert {int(n): float(dist[n]) for n in reached} == pytest.approx(expected)
    for node in reached:  # every predecessor edge ends the node's shortest path
        if node == 0:
            assert pred[node] == -1
            continue
        edge = pred[node]
        assert edge_v[edge] == node
        assert dist[edge_u[edge]] + edge_len[edge] == pytest.approx(dist[node])
    assert (pred[~np.isfinite(dist)] == -1).all()


@settings(max_examples=60, deadline=None)
@given(
    n_nodes=st.integers(1, 30),
    n_edges=st.integers(0, 120),
    seed=st.integers(0, 2**32 - 1),
    limit=st.sampled_from([-1.0, 0.0, 5.0, 40.0, math.inf]),
)
def test_distances_to_marked_nodes_equal_the_tree_within_the_limit(
    n_nodes: int, n_edges: int, seed: int, limit: float
) -> None:
    rng = np.random.default_rng(seed)
    edge_u, edge_v, edge_len = random_edges(rng, n_nodes, n_edges)
    out_ptr, out_edge = adjacency(edge_u, n_nodes)
    src = int(rng.integers(0, n_nodes))
    targets = rng.permutation(n_nodes)[: int(rng.integers(1, n_nodes + 1))]
    workspace = new_workspace(n_nodes, n_edges)
    workspace[5][targets] = np.arange(len(targets))  # the marks
    row = np.full(len(targets), -7.0)
    touched = dijkstra_to_marked(
        src, limit, len(targets), out_ptr, out_edge, edge_v, edge_len, workspace, row
    )
    reset_workspace(workspace, touched)

    tree, _ = shortest_path_tree(src, math.inf, out_ptr, out_edge, edge_v, edge_len)
    expected = np.where(tree[targets] <= limit, tree[targets], np.inf)
    np.testing.assert_array_equal(row, expected)  # the same sums, to the bit
    dist, pred = workspace[0], workspace[1]
    assert np.isinf(dist).all() and (pred == -1).all()  # reset as it was found


def segment_network(
    rng: np.random.Generator, n_edges: int, lattice: bool
) -> tuple[np.ndarray, ...]:
    """One straight segment per edge in a 200 m square: ``(x0, y0, x1, y1)`` per edge.

    On a 10 m lattice (``lattice``) many distances tie exactly; otherwise none do.
    """
    shape = (n_edges, 4)
    ends = rng.integers(0, 21, shape) * 10.0 if lattice else rng.uniform(0, 200, shape)
    return tuple(ends.T)


def candidates(
    px: np.ndarray, py: np.ndarray, ends: tuple[np.ndarray, ...], cell_m: float, k: int
) -> tuple[np.ndarray, ...]:
    """The kernel's candidates of the fixes (radius 20 m, doubled up to 80 m)."""
    x0, y0, x1, y1 = ends
    n = len(x0)
    vert_x, vert_y = np.column_stack([x0, x1]).ravel(), np.column_stack([y0, y1]).ravel()
    vert_off = np.column_stack([np.zeros(n), np.hypot(x1 - x0, y1 - y0)]).ravel()
    seg_vert, seg_edge = 2 * np.arange(n), np.arange(n)
    grid = _grid(vert_x, vert_y, seg_vert, cell_m)
    return search_candidates(
        px, py, np.full(len(px), 20.0), 80.0, k, vert_x, vert_y, vert_off, seg_vert, seg_edge,
        grid["grid_keys"], grid["grid_ptr"], grid["grid_seg"], float(grid["grid_origin"][0]),
        float(grid["grid_origin"][1]), grid["grid_cell_m"], grid["grid_ncols"],
    )  # fmt: skip


def expected_candidates(
    px: float, py: float, ends: tuple[np.ndarray, ...], k: int
) -> tuple[list[int], list[float]]:
    """By shapely: edges within 20 m (else 40, else 80), nearest first, ties by edge index.

    Distances equal to 1e-9 m are ties: shapely and the kernel may round the same distance
    (e.g. sqrt(20) m on the lattice) to neighbouring floats.
    """
    lines = shapely.linestrings(np.stack([np.column_stack(ends[:2]), np.column_stack(ends[2:])], 1))
    dist = shapely.distance(shapely.Point(px, py), lines)
    nearest_first = np.argsort(np.round(dist, 9), kind="stable")
    for radius in (20.0, 40.0, 80.0):
        near = [e for e in nearest_first if dist[e] <= radius]
        if near:
            return [int(e) for e in near[:k]], [float(dist[e]) for e in near[:k]]
    return [], []


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_edges=st.integers(1, 40), k=st.integers(1, 6))
@example(seed=7230, n_edges=27, k=2)  # two edges at sqrt(20) m, rounded apart by shapely
def test_candidates_are_the_nearest_edges_by_distance_in_one_grid_cell(
    seed: int, n_edges: int, k: int
) -> None:
    """One cell holds every segment, so edges found at the same distance keep edge order."""
    rng = np.random.default_rng(seed)
    ends = segment_network(rng, n_edges, lattice=True)
    px, py = rng.integers(-8, 29, 30) * 10.0, rng.integers(-8, 29, 30) * 10.0
    ptr, edge, _off, dist = candidates(px, py, ends, 1000.0, k)
    for i in range(len(px)):
        edges, distances = expected_candidates(px[i], py[i], ends, k)
        assert list(edge[ptr[i] : ptr[i + 1]]) == edges
        assert np.allclose(dist[ptr[i] : ptr[i + 1]], distances, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_edges=st.integers(1, 40), k=st.integers(1, 6))
def test_candidates_over_many_grid_cells_are_the_nearest_edges(
    seed: int, n_edges: int, k: int
) -> None:
    rng = np.random.default_rng(seed)
    ends = segment_network(rng, n_edges, lattice=False)
    px, py = rng.uniform(-80, 280, 30), rng.uniform(-80, 280, 30)
    ptr, edge, _off, dist = candidates(px, py, ends, 15.0, k)
    for i in range(len(px)):
        edges, distances = expected_candidates(px[i], py[i], ends, k)
        assert list(edge[ptr[i] : ptr[i + 1]]) == edges
        assert np.allclose(dist[ptr[i] : ptr[i + 1]], distances, atol=1e-9)


def test_an_edge_exactly_at_the_search_radius_is_a_candidate_and_one_beyond_it_is_not() -> None:
    """A fix 20 m below a road at y = 20 (radius 20 m): the road, not the one 1 um farther.

    By hand: the fix (50, 0) projects onto both horizontal roads at x = 50, at 20 m and at
    20.000001 m; only the first is within the radius (the widened search is not needed).
    """
    ends = (np.array([0.0, 0.0]), np.array([20.0, 20.000001]), np.array([100.0, 100.0]),
            np.array([20.0, 20.000001]))  # fmt: skip
    for cell_m in (15.0, 1000.0):
        ptr, edge, off, dist = candidates(np.array([50.0]), np.array([0.0]), ends, cell_m, 2)
        assert list(ptr) == [0, 1]
        assert list(edge) == [0]
        assert list(off) == [50.0]
        assert list(dist) == [20.0]
