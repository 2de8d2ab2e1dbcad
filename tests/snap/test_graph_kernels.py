"""The compiled graph kernels, checked against networkx on random directed multigraphs."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.snap.graph_kernels import (
    dijkstra_to_marked,
    new_workspace,
    reset_workspace,
    shortest_path_tree,
)


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
