"""The match network: a roads folder's edges as flat arrays that the compiled matcher reads.

Built once per roads folder (:func:`build_match_network`), saved next to it as one ``.npz``
(:func:`save_match_network`, :func:`load_match_network`, or :func:`prepare_match_network` which
does both and rebuilds when the roads changed) and shipped once to each Dask worker: it is a
frozen dataclass of numpy arrays, so it pickles cheaply.

Geometry is projected to the UTM zone of the network's centroid; offsets along edges are metres
in that projection (``edge_len_m``); the edge table's ``length_m`` is kept to rescale offsets
on output so that a whole edge runs exactly from 0 to ``length_m``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj

from pipeline.errors import InputDataError
from pipeline.io import atomic_path
from pipeline.snap.graph_kernels import grid_cells_of_segments
from pipeline.snap.ubodt_kernels import build_ubodt_table

if TYPE_CHECKING:  # the build needs them; loading a network and matching do not
    import geopandas as gpd

log = logging.getLogger(__name__)

MATCH_NETWORK_FILE = "match_network.npz"
FORMAT_VERSION = 1
DEFAULT_CELL_M = 100.0


@dataclass(frozen=True, eq=False)
class Ubodt:
    """Bounded node-to-node shortest route distances (FMM's UBODT) as a hash table.

    Attributes
    ----------
    keys
        ``src * n_nodes + tgt`` per slot, ``-1`` for an empty slot (power-of-two size).
    dist_m
        Route distance of the slot (float32, metric metres).
    first_edge
        First edge of the shortest path of the slot (to rebuild paths).
    delta_m
        Every pair with a route of at most ``delta_m`` is in the table.
    entries
        Number of pairs stored.
    build_s
        Seconds the build took.
    """

    keys: np.ndarray
    dist_m: np.ndarray
    first_edge: np.ndarray
    delta_m: float
    entries: int
    build_s: float

    @property
    def nbytes(self) -> int:
        """Memory of the table in bytes."""
        return int(self.keys.nbytes + self.dist_m.nbytes + self.first_edge.nbytes)


@dataclass(frozen=True, eq=False)
class MatchNetwork:
    """Directed edges, their geometry, a spatial grid and a routing graph, as numpy arrays.

    Edges are indexed ``0..n_edges-1`` in the order of the edge table; nodes ``0..n_nodes-1``.
    """

    crs: str
    node_id: np.ndarray
    edge_id: np.ndarray
    edge_u_id: np.ndarray
    edge_v_id: np.ndarray
    edge_key: np.ndarray
    edge_osmid: np.ndarray
    edge_length_m: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    edge_len_m: np.ndarray
    edge_twin: np.ndarray
    edge_vert_ptr: np.ndarray
    vert_x: np.ndarray
    vert_y: np.ndarray
    vert_lon: np.ndarray
    vert_lat: np.ndarray
    vert_off_m: np.ndarray
    seg_vert: np.ndarray
    seg_edge: np.ndarray
    out_ptr: np.ndarray
    out_edge: np.ndarray
    grid_origin: np.ndarray
    grid_cell_m: float
    grid_ncols: int
    grid_keys: np.ndarray
    grid_ptr: np.ndarray
    grid_seg: np.ndarray
    ubodt: Ubodt | None = None

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_id)

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return len(self.edge_id)

    def routing_arrays(self) -> tuple[np.ndarray, ...]:
        """Return the graph arrays in the order the compiled kernels expect."""
        return (
            self.out_ptr, self.out_edge, self.edge_u, self.edge_v, self.edge_len_m,
            self.edge_twin,
        )  # fmt: skip

    def ubodt_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Return the UBODT arrays for the kernels (empty arrays when there is none)."""
        if self.ubodt is None:
            empty = np.empty(0, dtype=np.int64)
            return empty, np.empty(0, np.float32), np.empty(0, np.int32), 0.0
        u = self.ubodt
        return u.keys, u.dist_m, u.first_edge, float(u.delta_m)

    def transformer(self) -> pyproj.Transformer:
        """Return the lon/lat -> metric transformer of this network (cached per CRS)."""
        return _transformer(self.crs)


@lru_cache(maxsize=8)
def _transformer(crs: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def build_match_network(
    edges: gpd.GeoDataFrame,
    ubodt_delta_m: float | None = None,
    cell_m: float = DEFAULT_CELL_M,
) -> MatchNetwork:
    """Build the match network of an ``edges`` table (see :func:`pipeline.roads.read_edges`).

    Parameters
    ----------
    edges
        The edge table: ``edge_id, u, v, key, osmid, road_id, length_m`` and LineString
        geometry in EPSG:4326, oriented u -> v.
    ubodt_delta_m
        If given, also precompute the UBODT for every node up to this route distance (memory
        grows with ``n_nodes * nodes within delta``); otherwise transitions are routed with a
        bounded Dijkstra per step.
    cell_m
        Cell size of the spatial grid over edge segments.

    Raises
    ------
    InputDataError
        If the table is empty or lacks a column.
    """
    import shapely

    _check_edges(edges)
    crs = edges.estimate_utm_crs()
    coords, index = shapely.get_coordinates(edges.geometry.to_numpy(), return_index=True)
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
        coords[:, 0], coords[:, 1]
    )
    vert_ptr = np.searchsorted(index, np.arange(len(edges) + 1)).astype(np.int64)
    vert_off, edge_len = _vertex_offsets(np.asarray(x), np.asarray(y), index, vert_ptr)
    nodes, edge_u, edge_v = _node_index(edges)
    seg_vert = np.flatnonzero(np.diff(index, append=-1) == 0).astype(np.int64)
    seg_edge = index[seg_vert].astype(np.int64)
    out_order = np.argsort(edge_u, kind="stable")
    net = MatchNetwork(
        crs=crs.to_string(),
        node_id=nodes,
        edge_id=edges["edge_id"].to_numpy("int64"),
        edge_u_id=edges["u"].to_numpy("int64"),
        edge_v_id=edges["v"].to_numpy("int64"),
        edge_key=edges["key"].to_numpy("int64"),
        edge_osmid=edges["osmid"].to_numpy("int64"),
        edge_length_m=edges["length_m"].to_numpy("float64"),
        edge_u=edge_u,
        edge_v=edge_v,
        edge_len_m=edge_len,
        edge_twin=_twins(edges),
        edge_vert_ptr=vert_ptr,
        vert_x=np.asarray(x, dtype="float64"),
        vert_y=np.asarray(y, dtype="float64"),
        vert_lon=coords[:, 0].copy(),
        vert_lat=coords[:, 1].copy(),
        vert_off_m=vert_off,
        seg_vert=seg_vert,
        seg_edge=seg_edge,
        out_ptr=np.searchsorted(edge_u[out_order], np.arange(len(nodes) + 1)).astype(np.int64),
        out_edge=out_order.astype(np.int64),
        **_grid(np.asarray(x), np.asarray(y), seg_vert, cell_m),
    )
    if ubodt_delta_m is not None:
        net = replace(net, ubodt=build_ubodt(net, ubodt_delta_m))
    return net


def build_ubodt(net: MatchNetwork, delta_m: float, sources: np.ndarray | None = None) -> Ubodt:
    """Precompute bounded shortest route distances from every node (or ``sources``).

    Parameters
    ----------
    net
        The match network.
    delta_m
        Upper bound of the stored route distances (m).
    sources
        Node indices to start from; all nodes by default.
    """
    if sources is None:
        sources = np.arange(net.n_nodes, dtype=np.int64)
    started = time.perf_counter()
    keys, dist_m, first_edge = build_ubodt_table(
        sources, float(delta_m), net.out_ptr, net.out_edge, net.edge_v, net.edge_len_m,
        net.n_nodes,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    entries = int((keys >= 0).sum())
    log.info(
        "ubodt: %d sources, delta %.0f m: %d entries, %.1f MiB in %.2f s",
        len(sources), delta_m, entries, (keys.nbytes + dist_m.nbytes + first_edge.nbytes) / 2**20,
        seconds,
    )  # fmt: skip
    return Ubodt(keys, dist_m, first_edge, float(delta_m), entries, seconds)


def save_match_network(net: MatchNetwork, path: str | Path) -> None:
    """Write a match network (and its UBODT, if any) to one uncompressed ``.npz``, atomically."""
    arrays: dict[str, Any] = {}
    scalars: dict[str, Any] = {"format_version": FORMAT_VERSION}
    for f in fields(net):
        value = getattr(net, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, Ubodt):
            for g in fields(value):
                item = getattr(value, g.name)
                if isinstance(item, np.ndarray):
                    arrays[f"ubodt.{g.name}"] = item
                else:
                    scalars[f"ubodt.{g.name}"] = item
        elif value is not None:
            scalars[f.name] = value
    arrays["_scalars"] = np.frombuffer(json.dumps(scalars).encode(), dtype=np.uint8)
    with atomic_path(Path(path)) as temp, temp.open("wb") as handle:
        np.savez(handle, **arrays)


def load_match_network(path: str | Path) -> MatchNetwork:
    """Read a match network written by :func:`save_match_network`.

    Raises
    ------
    InputDataError
        If the file is missing or was written by another format version.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(
            f"{path}: match network not found; build it with prepare_match_network"
        )
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    scalars = json.loads(arrays.pop("_scalars").tobytes())
    if scalars.pop("format_version", None) != FORMAT_VERSION:
        raise InputDataError(f"{path}: written by another version of roadcover; rebuild it")
    ubodt_parts = {k.split(".", 1)[1]: v for k, v in {**arrays, **scalars}.items() if "." in k}
    plain = {k: v for k, v in {**arrays, **scalars}.items() if "." not in k}
    ubodt = Ubodt(**ubodt_parts) if ubodt_parts else None
    return MatchNetwork(**plain, ubodt=ubodt)


def prepare_match_network(
    roads_dir: str | Path, ubodt_delta_m: float | None = None, cell_m: float = DEFAULT_CELL_M
) -> MatchNetwork:
    """Load the match network cached in a roads folder, building and caching it when needed.

    The cache (``match_network.npz`` plus ``match_network.json`` with the build settings and
    the roads' ``source_sha256``) is rebuilt when the roads folder or the settings changed.
    """
    from pipeline.roads import read_edges, read_roads_meta

    roads_dir = Path(roads_dir)
    meta = read_roads_meta(roads_dir)
    roads = {"source_sha256": meta.get("source_sha256"), "edge_count": meta.get("edge_count")}
    return cached_match_network(
        roads_dir / MATCH_NETWORK_FILE, roads, lambda: read_edges(roads_dir), ubodt_delta_m, cell_m
    )


def cached_match_network(
    cache: Path,
    roads: dict[str, Any],
    read_roads: Callable[[], gpd.GeoDataFrame],
    ubodt_delta_m: float | None = None,
    cell_m: float = DEFAULT_CELL_M,
) -> MatchNetwork:
    """Load the match network cached at ``cache``, or build it from ``read_roads()`` and cache it.

    Parameters
    ----------
    cache
        The ``.npz`` file; its stamp (the format, ``roads`` and the build settings) is the
        ``.json`` beside it, written after it: the cache is used only when the stamp is equal.
    roads
        What identifies the edges the network is built from (JSON values).
    read_roads
        Returns the edge table (:func:`pipeline.roads.read_edges`); called only to build.
    ubodt_delta_m, cell_m
        As :func:`build_match_network`'s.
    """
    stamp = {
        "format_version": FORMAT_VERSION, **roads, "ubodt_delta_m": ubodt_delta_m,
        "cell_m": cell_m,
    }  # fmt: skip
    stamp_path = cache.with_suffix(".json")
    if cache.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return load_match_network(cache)
    started = time.perf_counter()
    net = build_match_network(read_roads(), ubodt_delta_m, cell_m)
    save_match_network(net, cache)
    with atomic_path(stamp_path) as temp:
        temp.write_text(json.dumps(stamp, sort_keys=True))
    log.info("%s: built, %d edges, in %.1f s", cache, net.n_edges, time.perf_counter() - started)
    return net


def _check_edges(edges: gpd.GeoDataFrame) -> None:
    needed = ("edge_id", "u", "v", "key", "osmid", "road_id", "length_m", "geometry")
    missing = [c for c in needed if c not in edges.columns]
    if missing:
        raise InputDataError(
            f"edges table lacks column(s) {missing}; give the table of pipeline.roads.read_edges"
        )
    if len(edges) == 0:
        raise InputDataError("edges table is empty: no road to match against")


def _vertex_offsets(
    x: np.ndarray, y: np.ndarray, index: np.ndarray, vert_ptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each vertex's metric offset from its edge's start, and each edge's length."""
    step = np.hypot(np.diff(x, prepend=x[0]), np.diff(y, prepend=y[0]))
    step[vert_ptr[:-1]] = 0.0
    cum = np.cumsum(step)
    vert_off = cum - cum[vert_ptr[:-1]][index]
    edge_len = vert_off[vert_ptr[1:] - 1]
    return vert_off, edge_len.astype("float64")


def _node_index(edges: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    both = np.concatenate([edges["u"].to_numpy("int64"), edges["v"].to_numpy("int64")])
    nodes, inverse = np.unique(both, return_inverse=True)
    n = len(edges)
    return nodes, inverse[:n].astype(np.int64), inverse[n:].astype(np.int64)


def _twins(edges: gpd.GeoDataFrame) -> np.ndarray:
    """Return, per edge, the index of the same road in the other direction, or -1."""
    import pandas as pd

    frame = pd.DataFrame(
        {"u": edges["u"].to_numpy(), "v": edges["v"].to_numpy(), "road": edges["road_id"]}
    ).reset_index(names="i")
    pairs = frame.merge(
        frame, left_on=["u", "v", "road"], right_on=["v", "u", "road"], suffixes=("", "_twin")
    )
    pairs = pairs[pairs["i"] != pairs["i_twin"]].drop_duplicates("i")
    twin = np.full(len(edges), -1, dtype=np.int64)
    twin[pairs["i"].to_numpy()] = pairs["i_twin"].to_numpy()
    return twin


def _grid(x: np.ndarray, y: np.ndarray, seg_vert: np.ndarray, cell_m: float) -> dict[str, Any]:
    """Bucket every segment into the square cells its bounding box touches."""
    origin = np.array([x.min() - cell_m, y.min() - cell_m])
    ncols = int((x.max() - origin[0]) // cell_m) + 3
    keys, segs = grid_cells_of_segments(
        x[seg_vert], y[seg_vert], x[seg_vert + 1], y[seg_vert + 1],
        float(origin[0]), float(origin[1]), float(cell_m), ncols,
    )  # fmt: skip
    order = np.argsort(keys, kind="stable")
    keys, segs = keys[order], segs[order]
    unique, starts = np.unique(keys, return_index=True)
    return {
        "grid_origin": origin,
        "grid_cell_m": float(cell_m),
        "grid_ncols": ncols,
        "grid_keys": unique.astype(np.int64),
        "grid_ptr": np.append(starts, len(keys)).astype(np.int64),
        "grid_seg": segs.astype(np.int64),
    }
