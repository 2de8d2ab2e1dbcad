"""Compiled (numba) kernels on the network: spatial grid, candidate search, bounded Dijkstra.

Every function here works on plain numpy arrays so that it compiles in nopython mode and is
cached on disk (:func:`pipeline.jit.cached_njit`); the arrays come from
:class:`pipeline.snap.network.MatchNetwork`.
"""

from __future__ import annotations

import numpy as np

from pipeline.jit import cached_njit

INF = np.inf


@cached_njit
def grid_cells_of_segments(
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    origin_x: float,
    origin_y: float,
    cell_m: float,
    ncols: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cell key, segment)`` pairs: every grid cell each segment's bbox touches."""
    n = len(x0)
    count = 0
    for s in range(n):
        ix0 = int((min(x0[s], x1[s]) - origin_x) // cell_m)
        ix1 = int((max(x0[s], x1[s]) - origin_x) // cell_m)
        iy0 = int((min(y0[s], y1[s]) - origin_y) // cell_m)
        iy1 = int((max(y0[s], y1[s]) - origin_y) // cell_m)
        count += (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
    keys = np.empty(count, dtype=np.int64)
    segs = np.empty(count, dtype=np.int32)
    k = 0
    for s in range(n):
        ix0 = int((min(x0[s], x1[s]) - origin_x) // cell_m)
        ix1 = int((max(x0[s], x1[s]) - origin_x) // cell_m)
        iy0 = int((min(y0[s], y1[s]) - origin_y) // cell_m)
        iy1 = int((max(y0[s], y1[s]) - origin_y) // cell_m)
        for iy in range(iy0, iy1 + 1):
            for ix in range(ix0, ix1 + 1):
                keys[k] = np.int64(iy) * ncols + ix
                segs[k] = s
                k += 1
    return keys, segs


@cached_njit(inline="always")
def _project(
    px: float, py: float, ax: float, ay: float, bx: float, by: float
) -> tuple[float, float]:
    """Return (squared distance, fraction along a->b) of the closest point of segment a-b to p."""
    dx = bx - ax
    dy = by - ay
    den = dx * dx + dy * dy
    f = 0.0
    if den > 0.0:
        f = ((px - ax) * dx + (py - ay) * dy) / den
        f = min(max(f, 0.0), 1.0)
    cx = ax + f * dx - px
    cy = ay + f * dy - py
    return cx * cx + cy * cy, f


@cached_njit(inline="always")
def _sort_by_distance(dist: np.ndarray, edge: np.ndarray, off: np.ndarray, n: int) -> None:
    """Sort the first ``n`` candidates by distance, in place; equal distances keep their order.

    An insertion sort: a fix has a few candidates, too few for a sort that allocates.
    """
    for i in range(1, n):
        d, e, o = dist[i], edge[i], off[i]
        j = i - 1
        while j >= 0 and dist[j] > d:
            dist[j + 1], edge[j + 1], off[j + 1] = dist[j], edge[j], off[j]
            j -= 1
        dist[j + 1], edge[j + 1], off[j + 1] = d, e, o


@cached_njit
def search_candidates(
    px: np.ndarray,
    py: np.ndarray,
    radius_m: np.ndarray,
    max_radius_m: float,
    max_candidates: int,
    vert_x: np.ndarray,
    vert_y: np.ndarray,
    vert_off: np.ndarray,
    seg_vert: np.ndarray,
    seg_edge: np.ndarray,
    grid_keys: np.ndarray,
    grid_ptr: np.ndarray,
    grid_seg: np.ndarray,
    origin_x: float,
    origin_y: float,
    cell_m: float,
    ncols: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Find, for each fix, the nearest edges within its radius (one candidate per edge).

    A fix with no edge within its radius searches again with the radius doubled, while the
    radius stays within ``max_radius_m``.

    Returns
    -------
    tuple
        ``ptr`` (CSR offsets per fix), candidate ``edge``, ``offset`` (m from u, metric),
        and ``dist`` (m from the fix), nearest first within each fix.
    """
    n = len(px)
    buf_cap = 4096
    b_edge = np.empty(buf_cap, dtype=np.int32)
    b_dist = np.empty(buf_cap, dtype=np.float64)
    b_off = np.empty(buf_cap, dtype=np.float64)
    out_edge = np.empty(n * max_candidates, dtype=np.int32)
    out_off = np.empty(n * max_candidates, dtype=np.float64)
    out_dist = np.empty(n * max_candidates, dtype=np.float64)
    ptr = np.zeros(n + 1, dtype=np.int64)
    k_out = 0
    for i in range(n):
        r = radius_m[i]
        nb = 0
        while nb == 0 and r <= max_radius_m and np.isfinite(px[i]) and np.isfinite(py[i]):
            ix0 = max(int((px[i] - r - origin_x) // cell_m), 0)
            ix1 = min(int((px[i] + r - origin_x) // cell_m), ncols - 1)
            iy0 = max(int((py[i] - r - origin_y) // cell_m), 0)
            iy1 = int((py[i] + r - origin_y) // cell_m)
            # a segment whose squared distance passes r2 (a hair above r * r) is out of range;
            # the distance, rooted only for the others, decides those
            r2 = r * r * (1.0 + 1e-9)
            for iy in range(iy0, iy1 + 1):
                if ix0 > ix1:  # no column of the grid in range
                    break
                # the cells ix0..ix1 of the row are the keys first..last: one search per row
                first, last = np.int64(iy) * ncols + ix0, np.int64(iy) * ncols + ix1
                c = np.searchsorted(grid_keys, first)
                while c < len(grid_keys) and grid_keys[c] <= last:
                    c += 1
                    for j in range(grid_ptr[c - 1], grid_ptr[c]):
                        s = grid_seg[j]
                        a = seg_vert[s]
                        d2, f = _project(
                            px[i], py[i], vert_x[a], vert_y[a], vert_x[a + 1], vert_y[a + 1]
                        )
                        if d2 > r2:
                            continue
                        d = np.sqrt(d2)
                        if d > r:
                            continue
                        e = seg_edge[s]
                        off = vert_off[a] + f * (vert_off[a + 1] - vert_off[a])
                        found = False
                        for q in range(nb):
                            if b_edge[q] == e:
                                found = True
                                if d < b_dist[q]:
                                    b_dist[q] = d
                                    b_off[q] = off
                                break
                        if not found and nb < buf_cap:
                            b_edge[nb] = e
                            b_dist[nb] = d
                            b_off[nb] = off
                            nb += 1
            r *= 2.0
        _sort_by_distance(b_dist, b_edge, b_off, nb)
        take = min(nb, max_candidates)
        for q in range(take):
            out_edge[k_out] = b_edge[q]
            out_off[k_out] = b_off[q]
            out_dist[k_out] = b_dist[q]
            k_out += 1
        ptr[i + 1] = k_out
    return ptr, out_edge[:k_out], out_off[:k_out], out_dist[:k_out]


@cached_njit(inline="always")
def heap_push(heap_d: np.ndarray, heap_n: np.ndarray, size: int, d: float, node: int) -> int:
    """Push ``(d, node)`` on a binary min-heap stored in two arrays; return the new size."""
    i = size
    heap_d[i] = d
    heap_n[i] = node
    while i > 0:
        parent = (i - 1) >> 1
        if heap_d[parent] <= heap_d[i]:
            break
        heap_d[i], heap_d[parent] = heap_d[parent], heap_d[i]
        heap_n[i], heap_n[parent] = heap_n[parent], heap_n[i]
        i = parent
    return size + 1


@cached_njit(inline="always")
def heap_pop(heap_d: np.ndarray, heap_n: np.ndarray, size: int) -> tuple[float, int, int]:
    """Pop the smallest entry; return ``(d, node, new size)``."""
    d = heap_d[0]
    node = heap_n[0]
    size -= 1
    heap_d[0] = heap_d[size]
    heap_n[0] = heap_n[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and heap_d[left + 1] < heap_d[left]:
            child = left + 1
        if heap_d[i] <= heap_d[child]:
            break
        heap_d[i], heap_d[child] = heap_d[child], heap_d[i]
        heap_n[i], heap_n[child] = heap_n[child], heap_n[i]
        i = child
    return d, node, size


def new_workspace(n_nodes: int, n_edges: int) -> tuple[np.ndarray, ...]:
    """Return the arrays of :func:`dijkstra_to_marked`, reused from search to search.

    ``(dist, pred_edge, touched, heap_d, heap_n, mark)``: distances all inf, predecessors
    and marks all -1 between searches. Made with numpy, the types the kernels are compiled
    for: it is called from Python, once per worker, and a kernel of its own would cost a load
    from numba's cache (about 0.01 s of CPU) in every process.
    """
    return (
        np.full(n_nodes, INF),
        np.full(n_nodes, -1, dtype=np.int32),
        np.empty(n_nodes, dtype=np.int32),
        np.empty(n_edges + 1),
        np.empty(n_edges + 1, dtype=np.int64),
        np.full(n_nodes, -1, dtype=np.int64),
    )


@cached_njit(inline="always")
def dijkstra_to_marked(
    src: int,
    limit: float,
    n_marked: int,
    out_ptr: np.ndarray,
    out_edge: np.ndarray,
    edge_v: np.ndarray,
    edge_len: np.ndarray,
    workspace: tuple,
    row: np.ndarray,
) -> int:
    """Bounded one-to-many Dijkstra from ``src`` to the ``n_marked`` marked nodes.

    The workspace's ``mark[node]`` is the node's column in ``row`` (``-1`` for unmarked
    nodes; the columns ``0 .. n_marked - 1`` each marked once). ``row[column]`` receives the
    route distance (inf when farther than ``limit``); the search stops once every marked node
    is settled. ``dist``/``pred`` keep the search tree until :func:`reset_workspace` is called
    with the returned number of touched nodes.
    """
    dist, pred, touched, heap_d, heap_n, mark = workspace
    for k in range(n_marked):
        row[k] = INF
    remaining = n_marked
    n_touched = 1
    touched[0] = src
    dist[src] = 0.0
    pred[src] = -1
    size = heap_push(heap_d, heap_n, 0, 0.0, src)
    while size > 0 and remaining > 0:
        d, node, size = heap_pop(heap_d, heap_n, size)
        if d > dist[node]:
            continue
        if d > limit:
            break
        if mark[node] >= 0:
            row[mark[node]] = d
            remaining -= 1
        for j in range(out_ptr[node], out_ptr[node + 1]):
            e = out_edge[j]
            w = edge_v[e]
            nd = d + edge_len[e]
            if nd < dist[w] and nd <= limit:
                if dist[w] == INF:
                    touched[n_touched] = w
                    n_touched += 1
                dist[w] = nd
                pred[w] = e
                size = heap_push(heap_d, heap_n, size, nd, w)
    return n_touched


@cached_njit
def shortest_path_tree(
    src: int,
    limit: float,
    out_ptr: np.ndarray,
    out_edge: np.ndarray,
    edge_v: np.ndarray,
    edge_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Single-source Dijkstra from ``src`` over every node within ``limit``.

    Returns
    -------
    tuple
        ``dist`` (route distance to every node, inf beyond ``limit``) and ``pred`` (the edge by
        which each node is reached on its shortest path, -1 for ``src`` and unreached nodes).
        Of two equally short paths the one found first is kept.
    """
    n_nodes = len(out_ptr) - 1
    dist = np.full(n_nodes, INF)
    pred = np.full(n_nodes, -1, dtype=np.int64)
    done = np.zeros(n_nodes, dtype=np.bool_)
    heap_d = np.empty(len(edge_v) + 1)
    heap_n = np.empty(len(edge_v) + 1, dtype=np.int64)
    dist[src] = 0.0
    size = heap_push(heap_d, heap_n, 0, 0.0, src)
    while size > 0:
        d, node, size = heap_pop(heap_d, heap_n, size)
        if done[node]:
            continue
        done[node] = True
        for j in range(out_ptr[node], out_ptr[node + 1]):
            e = out_edge[j]
            w = edge_v[e]
            nd = d + edge_len[e]
            if nd < dist[w] and nd <= limit:
                dist[w] = nd
                pred[w] = e
                size = heap_push(heap_d, heap_n, size, nd, w)
    return dist, pred


@cached_njit(inline="always")
def reset_workspace(workspace: tuple, n: int) -> None:
    """Set the ``n`` nodes a search touched back to unvisited."""
    dist, pred, touched = workspace[0], workspace[1], workspace[2]
    for i in range(n):
        dist[touched[i]] = INF
        pred[touched[i]] = -1
