"""Compiled kernels of the UBODT: bounded node-to-node shortest distances in a hash table.

The table (FMM's "upper-bounded origin-destination table") holds, for every source node and
every node reachable from it within ``delta`` metres, the route distance and the first edge of
the shortest path. Keys are ``src * n_nodes + tgt`` in an open-addressing table (linear
probing, power-of-two capacity, ``-1`` = empty slot), so a lookup is O(1) and a path is
rebuilt by following first edges.
"""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit
from pipeline.snap.graph_kernels import heap_pop, heap_push

INF = np.inf
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@cached_njit(inline="always")
def _slot(key: np.int64, mask: np.int64) -> np.int64:
    h = np.uint64(key) * _GOLDEN
    return np.int64(h >> np.uint64(17)) & mask


@cached_njit
def ubodt_lookup(
    keys: np.ndarray, dists: np.ndarray, src: int, tgt: int, n_nodes: int
) -> tuple[float, np.int64]:
    """Return ``(distance, slot)`` of ``src -> tgt``; ``(inf, -1)`` when not in the table."""
    if src == tgt:
        return 0.0, np.int64(-1)
    key = np.int64(src) * n_nodes + tgt
    mask = np.int64(len(keys) - 1)
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return dists[i], i
        if k == -1:
            return INF, np.int64(-1)
        i = (i + 1) & mask


@cached_njit
def _bounded_rows(
    sources: np.ndarray,
    delta: float,
    out_ptr: np.ndarray,
    out_edge: np.ndarray,
    edge_v: np.ndarray,
    edge_len: np.ndarray,
    n_nodes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run a Dijkstra bounded by ``delta`` from each source; return the settled rows."""
    dist = np.full(n_nodes, INF)
    first = np.full(n_nodes, -1, dtype=np.int32)
    touched = np.empty(n_nodes, dtype=np.int32)
    heap_d = np.empty(len(edge_v) + 1)
    heap_n = np.empty(len(edge_v) + 1, dtype=np.int64)
    cap = max(16, 4 * len(sources))
    r_src = np.empty(cap, dtype=np.int32)
    r_tgt = np.empty(cap, dtype=np.int32)
    r_dist = np.empty(cap, dtype=np.float64)
    r_first = np.empty(cap, dtype=np.int32)
    m = 0
    for src in sources:
        dist[src] = 0.0
        touched[0] = src
        n_touched = 1
        size = heap_push(heap_d, heap_n, 0, 0.0, src)
        while size > 0:
            d, node, size = heap_pop(heap_d, heap_n, size)
            if d > dist[node]:
                continue
            if node != src:
                if m == cap:
                    cap *= 2
                    r_src = _grow_i32(r_src, cap)
                    r_tgt = _grow_i32(r_tgt, cap)
                    r_first = _grow_i32(r_first, cap)
                    r_dist = _grow_f64(r_dist, cap)
                r_src[m] = src
                r_tgt[m] = node
                r_dist[m] = d
                r_first[m] = first[node]
                m += 1
            for j in range(out_ptr[node], out_ptr[node + 1]):
                e = out_edge[j]
                w = edge_v[e]
                nd = d + edge_len[e]
                if nd < dist[w] and nd <= delta:
                    if dist[w] == INF:
                        touched[n_touched] = w
                        n_touched += 1
                    dist[w] = nd
                    first[w] = e if node == src else first[node]
                    size = heap_push(heap_d, heap_n, size, nd, w)
        for i in range(n_touched):
            dist[touched[i]] = INF
            first[touched[i]] = -1
    return r_src[:m], r_tgt[:m], r_dist[:m], r_first[:m]


@cached_njit
def _grow_i32(a: np.ndarray, cap: int) -> np.ndarray:
    b = np.empty(cap, dtype=np.int32)
    b[: len(a)] = a
    return b


@cached_njit
def _grow_f64(a: np.ndarray, cap: int) -> np.ndarray:
    b = np.empty(cap, dtype=np.float64)
    b[: len(a)] = a
    return b


@cached_njit
def _fill_table(
    r_src: np.ndarray, r_tgt: np.ndarray, r_dist: np.ndarray, r_first: np.ndarray, n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = len(r_src)
    cap = 16
    while cap < 2 * m:
        cap *= 2
    keys = np.full(cap, -1, dtype=np.int64)
    dists = np.empty(cap, dtype=np.float32)
    firsts = np.empty(cap, dtype=np.int32)
    mask = np.int64(cap - 1)
    for r in range(m):
        key = np.int64(r_src[r]) * n_nodes + r_tgt[r]
        i = _slot(key, mask)
        while keys[i] != -1:
            i = (i + 1) & mask
        keys[i] = key
        dists[i] = r_dist[r]
        firsts[i] = r_first[r]
    return keys, dists, firsts


@cached_njit
def build_ubodt_table(
    sources: np.ndarray,
    delta: float,
    out_ptr: np.ndarray,
    out_edge: np.ndarray,
    edge_v: np.ndarray,
    edge_len: np.ndarray,
    n_nodes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the hash table ``(keys, dist_m float32, first_edge int32)`` of the sources."""
    r_src, r_tgt, r_dist, r_first = _bounded_rows(
        sources, delta, out_ptr, out_edge, edge_v, edge_len, n_nodes
    )
    return _fill_table(r_src, r_tgt, r_dist, r_first, n_nodes)
