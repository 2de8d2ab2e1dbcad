"""Match one trip's fixes to the road graph and describe the route it traversed."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.snap.batch_kernels import match_trips_kernel
from pipeline.snap.graph_kernels import search_candidates
from pipeline.snap.hmm_kernels import (
    MATCHED,
    NO_CANDIDATE,
    OUTLIER,
    decode_trip,
    new_network_workspace,
)
from pipeline.snap.network import MatchNetwork
from pipeline.snap.params import MatchParams
from pipeline.snap.route_kernels import (
    FROM,
    SEG,
    T0,
    T1,
    TO,
    build_route_pieces,
    matched_fixes,
    substring_coords,
)

if TYPE_CHECKING:  # for the tables of one trip's route; matching itself uses neither
    import geopandas as gpd
    import pandas as pd

UNMATCHED_REASONS = {MATCHED: None, NO_CANDIDATE: "no_candidate", OUTLIER: "outlier"}
_REASONS = np.array([UNMATCHED_REASONS[k] for k in sorted(UNMATCHED_REASONS)], dtype=object)


@dataclass(frozen=True, eq=False)
class MatchedFixes:
    """Per-fix results of matching, and the route pieces; arrays have one row per fix.

    Attributes
    ----------
    edge
        Matched edge index into the network (``-1`` when unmatched).
    offset_m
        Position along the edge from ``u`` (m, on the edge table's ``length_m`` scale).
    lon, lat
        The snapped position (NaN when unmatched).
    distance_m
        Distance from the raw fix to the snapped position (NaN when unmatched).
    status
        How each fix ended, as a code of :data:`UNMATCHED_REASONS`: matched (0), no road
        within the search radius (1) or no plausible route reaching it (2); its name is
        :attr:`reason`.
    segment
        Index of the HMM run the fix belongs to (``-1`` when unmatched).
    is_break
        True at the first matched fix of every run after the first: the route is split there
        because no plausible route joins it to the previous run.
    route_columns
        The route pieces' columns as arrays (:attr:`TripMatch.route`; to join many trips'
        routes without a DataFrame per trip).
    """

    edge: np.ndarray
    offset_m: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    distance_m: np.ndarray
    status: np.ndarray
    segment: np.ndarray
    is_break: np.ndarray
    route_columns: dict[str, np.ndarray]

    @property
    def reason(self) -> np.ndarray:
        """``None`` if matched, else ``"no_candidate"`` or ``"outlier"``, per fix."""
        return _REASONS[self.status]


@dataclass(frozen=True, eq=False)
class TripMatch(MatchedFixes):
    """The result of matching one trip (:class:`MatchedFixes` of the trip's ``n`` fixes).

    Attributes
    ----------
    beta_m
        The transition scale the trip was decoded with (fitted to the trip when
        :attr:`MatchParams.estimate_beta`).
    """

    beta_m: float

    @property
    def route(self) -> pd.DataFrame:
        """Traversed pieces of edges, in order.

        Columns ``edge, from_offset_m, to_offset_m, from_metric_m, to_metric_m, entered_at_s,
        exited_at_s, segment`` (edge indices; offsets on the ``length_m`` scale, and on the
        network's metric scale; times in the unit of the input ``t_s``).
        """
        import pandas as pd

        return pd.DataFrame(self.route_columns)

    @property
    def matched_fraction(self) -> float:
        """Share of fixes that were matched."""
        return float((self.edge >= 0).mean()) if len(self.edge) else 0.0


def match_trip(
    net: MatchNetwork,
    lon: np.ndarray,
    lat: np.ndarray,
    t_s: np.ndarray,
    params: MatchParams | None = None,
    radius_m: np.ndarray | None = None,
) -> TripMatch:
    """Match a trip's fixes (time-ordered) to the road graph with the Newson & Krumm HMM.

    With ``params.estimate_beta`` the trip is decoded twice, the second time with the
    transition scale fitted to the first decoding (:func:`~pipeline.snap.hmm_kernels.fitted_beta_m`
    and :func:`~pipeline.snap.hmm_kernels.with_beta`).

    Parameters
    ----------
    net
        The match network of the roads folder.
    lon, lat
        Fixes in EPSG:4326.
    t_s
        Fix times in seconds (any epoch), non-decreasing.
    params
        Matcher settings; defaults of :class:`MatchParams` if omitted.
    radius_m
        Per-fix search radius (e.g. from hdop); ``params.search_radius_m`` if omitted.

    Raises
    ------
    ValueError
        If the arrays differ in length or the times decrease.
    """
    params = params or MatchParams()
    lon, lat, t_s = (np.asarray(a, dtype="float64") for a in (lon, lat, t_s))
    _check_trip(lon, lat, t_s)
    x, y = net.transformer().transform(lon, lat)
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    radius = np.full(len(x), params.search_radius_m) if radius_m is None else radius_m
    cand = search_candidates(
        x, y, np.asarray(radius, dtype="float64"), params.max_search_radius_m,
        params.max_candidates,
        net.vert_x, net.vert_y, net.vert_off_m, net.seg_vert, net.seg_edge,
        net.grid_keys, net.grid_ptr, net.grid_seg, float(net.grid_origin[0]),
        float(net.grid_origin[1]), net.grid_cell_m, net.grid_ncols,
    )  # fmt: skip
    cand_point = np.repeat(np.arange(len(x), dtype=np.int64), np.diff(cand[0]))
    routing, ubodt = net.routing_arrays(), net.ubodt_arrays()
    with _network_workspace(net) as workspace:
        (chosen, status, segment, kind, _), beta_m = decode_trip(
            x, y, t_s, cand, cand_point, routing, ubodt, params.kernel_array(), workspace,
            params.estimate_beta,
        )  # fmt: skip
        pieces = build_route_pieces(
            chosen, segment, t_s, cand[1], cand[2], kind, routing, ubodt, params.max_route_m,
            workspace[0],
        )  # fmt: skip
    return _trip_match(net, cand, chosen, status, segment, pieces, beta_m)


@dataclass(frozen=True, eq=False)
class TripsMatch(MatchedFixes):
    """The results of matching many trips (:func:`match_trips`), concatenated trip after trip.

    ``segment`` counts each trip's runs from 0, and ``route_columns`` holds the trips' route
    pieces one after the other.

    Attributes
    ----------
    route_bounds
        Trip ``i``'s rows of ``route_columns`` are ``route_bounds[i]:route_bounds[i + 1]``.
    """

    route_bounds: np.ndarray


def match_trips(
    net: MatchNetwork,
    lon: np.ndarray,
    lat: np.ndarray,
    t_s: np.ndarray,
    bounds: np.ndarray,
    params: MatchParams | None = None,
) -> TripsMatch:
    """Match many trips at once: trip ``i`` is fixes ``bounds[i]:bounds[i + 1]``.

    Each trip's result is :func:`match_trip`'s of the trip alone (with the search radius
    ``params.search_radius_m``), in one compiled call for all the trips instead of one call
    per trip (:func:`~pipeline.snap.batch_kernels.match_trips_kernel`).

    Parameters
    ----------
    net
        The match network of the roads folder.
    lon, lat
        Fixes in EPSG:4326, trip after trip.
    t_s
        Fix times in seconds (any epoch), non-decreasing within each trip.
    bounds
        Where each trip starts, and the number of fixes: ``len(bounds) - 1`` trips.
    params
        Matcher settings; defaults of :class:`MatchParams` if omitted.

    Raises
    ------
    ValueError
        If the arrays differ in length, ``bounds`` does not cut them into trips, or the times
        decrease within a trip.
    """
    params = params or MatchParams()
    lon, lat, t_s = (np.asarray(a, dtype="float64") for a in (lon, lat, t_s))
    bounds = np.asarray(bounds, dtype=np.int64)
    _check_trips(lon, lat, t_s, bounds)
    x, y = net.transformer().transform(lon, lat)
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    radius = np.full(len(x), float(params.search_radius_m))
    search = (
        float(params.max_search_radius_m), int(params.max_candidates), net.vert_x, net.vert_y,
        net.vert_off_m, net.seg_vert, net.seg_edge, net.grid_keys, net.grid_ptr, net.grid_seg,
        float(net.grid_origin[0]), float(net.grid_origin[1]), float(net.grid_cell_m),
        int(net.grid_ncols),
    )  # fmt: skip
    geometry = (net.edge_length_m, net.edge_len_m, net.edge_vert_ptr, net.vert_lon, net.vert_lat)
    with _network_workspace(net) as workspace:
        fixes, pieces, piece_bounds = match_trips_kernel(
            x, y, t_s, bounds, radius, search, geometry, net.routing_arrays(),
            net.ubodt_arrays(), params.kernel_array(), params.estimate_beta,
            float(params.max_route_m), workspace,
        )  # fmt: skip
    edge, offset, dist, snapped_lon, snapped_lat, is_break, status, segment = fixes
    kept = _kept_pieces(pieces)
    piece_trip = np.repeat(np.arange(len(bounds) - 1), np.diff(piece_bounds))
    sizes = np.bincount(piece_trip[kept], minlength=len(bounds) - 1)
    return TripsMatch(
        edge=edge,
        offset_m=offset,
        lon=snapped_lon,
        lat=snapped_lat,
        distance_m=dist,
        status=status,
        segment=segment.astype(np.int64),
        is_break=is_break,
        route_columns=_route_columns(net, pieces),
        route_bounds=np.r_[0, np.cumsum(sizes)].astype(np.int64),
    )


def _check_trips(lon: np.ndarray, lat: np.ndarray, t_s: np.ndarray, bounds: np.ndarray) -> None:
    """Check the arrays of :func:`match_trips` (as :func:`_check_trip` does one trip's)."""
    if not len(lon) == len(lat) == len(t_s):
        raise ValueError(
            f"lon, lat and t_s differ in length ({len(lon)}, {len(lat)}, {len(t_s)}); "
            "give one value per fix"
        )
    if len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != len(t_s) or (np.diff(bounds) < 0).any():
        raise ValueError(
            f"bounds must rise from 0 to the number of fixes ({len(t_s)}); give where each "
            "trip starts, then the number of fixes"
        )
    steps = np.diff(t_s) < 0
    ends = bounds[1:-1] - 1  # a trip may start before the previous one ended
    steps[ends[(ends >= 0) & (ends < len(steps))]] = False
    if steps.any():
        first = int(np.flatnonzero(steps)[0])
        raise ValueError(
            f"t_s decreases within a trip at fix {first + 1} ({t_s[first]} -> "
            f"{t_s[first + 1]}); sort each trip by time first"
        )


class _NetworkWorkspaces(threading.local):
    """Each thread's :func:`~pipeline.snap.hmm_kernels.new_network_workspace` per network.

    Made at a thread's first trip on a network and reused by its later trips, so that no
    trip allocates or clears arrays sized to the network; freed with the network.
    """

    def __init__(self) -> None:
        self.by_network: weakref.WeakKeyDictionary[MatchNetwork, tuple] = (
            weakref.WeakKeyDictionary()
        )


_WORKSPACES = _NetworkWorkspaces()


@contextmanager
def _network_workspace(net: MatchNetwork) -> Iterator[tuple]:
    """Lend this thread's workspace of ``net``; forget it if a kernel fails while holding it.

    A kernel that stopped half-way could leave marks or distances set, which the next trip
    would read as its own: the workspace is dropped and the next trip makes a clean one.
    """
    workspaces = _WORKSPACES.by_network
    workspace = workspaces.get(net)
    if workspace is None:
        workspace = new_network_workspace(net.n_nodes, net.n_edges)
        workspaces[net] = workspace
    try:
        yield workspace
    except BaseException:
        workspaces.pop(net, None)
        raise


def _check_trip(lon: np.ndarray, lat: np.ndarray, t_s: np.ndarray) -> None:
    if not len(lon) == len(lat) == len(t_s):
        raise ValueError(
            f"lon, lat and t_s differ in length ({len(lon)}, {len(lat)}, {len(t_s)}); "
            "give one value per fix"
        )
    if len(t_s) > 1 and bool(np.any(np.diff(t_s) < 0)):
        first = int(np.flatnonzero(np.diff(t_s) < 0)[0])
        raise ValueError(
            f"t_s decreases at fix {first + 1} ({t_s[first]} -> {t_s[first + 1]}); "
            "sort the trip by time first"
        )


def _trip_match(
    net: MatchNetwork,
    cand: tuple[np.ndarray, ...],
    chosen: np.ndarray,
    status: np.ndarray,
    segment: np.ndarray,
    pieces: np.ndarray,
    beta_m: float,
) -> TripMatch:
    edge, offset, dist, lon, lat, is_break = matched_fixes(
        chosen, segment, cand[1], cand[2], cand[3], net.edge_length_m, net.edge_len_m,
        net.edge_vert_ptr, net.vert_off_m, net.vert_lon, net.vert_lat,
    )  # fmt: skip
    return TripMatch(
        edge=edge,
        offset_m=offset,
        lon=lon,
        lat=lat,
        distance_m=dist,
        status=status,
        segment=segment.astype(np.int64),
        is_break=is_break,
        route_columns=_route_columns(net, pieces),
        beta_m=beta_m,
    )


def _scale(net: MatchNetwork, edge: np.ndarray) -> np.ndarray:
    metric = net.edge_len_m[edge]
    return np.divide(net.edge_length_m[edge], metric, out=np.ones(len(edge)), where=metric > 0)


def _kept_pieces(pieces: np.ndarray) -> np.ndarray:
    """Which rows of the kernel's piece table are kept in the route: those of some length."""
    kept: np.ndarray = pieces[:, TO] - pieces[:, FROM] > 1e-9
    return kept


def _route_columns(net: MatchNetwork, pieces: np.ndarray) -> dict[str, np.ndarray]:
    """Turn the kernel's piece table into route columns, dropping zero-length pieces."""
    p = pieces[_kept_pieces(pieces)]
    edge = p[:, 0].astype(np.int64)
    scale = _scale(net, edge)
    return {
        "edge": edge,
        "from_offset_m": p[:, FROM] * scale,
        "to_offset_m": np.minimum(p[:, TO] * scale, net.edge_length_m[edge]),
        "from_metric_m": p[:, FROM],
        "to_metric_m": p[:, TO],
        "entered_at_s": p[:, T0],
        "exited_at_s": p[:, T1],
        "segment": p[:, SEG].astype(np.int64),
    }


def traversed_segments(net: MatchNetwork, trip: TripMatch) -> gpd.GeoDataFrame:
    """Return the traversed pieces of edges of a matched trip, with their exact geometry.

    See :func:`route_segments`.
    """
    return route_segments(net, trip.route)


def route_segments(net: MatchNetwork, route: pd.DataFrame) -> gpd.GeoDataFrame:
    """Return traversed pieces of edges (of one trip or many), with their exact geometry.

    Parameters
    ----------
    net
        The match network.
    route
        ``TripMatch.route`` tables, possibly of several trips concatenated.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``edge_id, u, v, key, osmid, from_offset_m, to_offset_m, entered_at, exited_at,
        segment, geometry`` (LineString of exactly the traversed part, EPSG:4326), one row per
        row of ``route``, in its order. Times are UTC timestamps when ``t_s`` was in Unix
        seconds.
    """
    import geopandas as gpd

    columns, coords, offsets = route_segment_lines(net, route)
    return gpd.GeoDataFrame(columns, geometry=_linestrings(coords, offsets), crs="EPSG:4326")


def route_segment_lines(
    net: MatchNetwork, route: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`route_segments` as columns and vertices, for writing without shapely objects.

    Returns
    -------
    columns
        Every column of :func:`route_segments` but the geometry.
    coords, offsets
        The pieces' vertices (lon, lat): piece ``i`` is ``coords[offsets[i]:offsets[i + 1]]``.
    """
    import pandas as pd

    edge = route["edge"].to_numpy()
    columns = pd.DataFrame(
        {
            "edge_id": net.edge_id[edge],
            "u": net.edge_u_id[edge],
            "v": net.edge_v_id[edge],
            "key": net.edge_key[edge],
            "osmid": net.edge_osmid[edge],
            "from_offset_m": route["from_offset_m"].to_numpy(),
            "to_offset_m": route["to_offset_m"].to_numpy(),
            "entered_at": pd.to_datetime(route["entered_at_s"].to_numpy(), unit="s", utc=True),
            "exited_at": pd.to_datetime(route["exited_at_s"].to_numpy(), unit="s", utc=True),
            "segment": route["segment"].to_numpy(),
        }
    )
    coords, offsets = substring_lines(
        net, edge, route["from_metric_m"].to_numpy(), route["to_metric_m"].to_numpy()
    )
    return columns, coords, offsets


def edge_substrings(
    net: MatchNetwork, edge: np.ndarray, from_m: np.ndarray, to_m: np.ndarray
) -> np.ndarray:
    """Return LineStrings (EPSG:4326) of the parts of edges between metric offsets, vectorized.

    Parameters
    ----------
    net
        The match network.
    edge
        Edge indices.
    from_m, to_m
        Offsets from ``u`` in the network's metric projection (``edge_len_m`` scale).
    """
    return _linestrings(*substring_lines(net, edge, from_m, to_m))


def _linestrings(coords: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shapely LineStrings of lines ``coords[offsets[i]:offsets[i + 1]]``."""
    import shapely

    indices = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.asarray(shapely.linestrings(coords, indices=indices), dtype=object)


def substring_lines(
    net: MatchNetwork, edge: np.ndarray, from_m: np.ndarray, to_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`edge_substrings` as vertices (lon, lat) and each line's first vertex.

    Line ``i`` is ``coords[offsets[i]:offsets[i + 1]]``, of two or more vertices.
    """
    if len(edge) == 0:
        return np.empty((0, 2)), np.zeros(1, dtype=np.int64)
    coords, index = substring_coords(
        np.asarray(edge, dtype=np.int64), np.asarray(from_m, dtype="float64"),
        np.asarray(to_m, dtype="float64"), net.edge_vert_ptr, net.vert_off_m, net.vert_lon,
        net.vert_lat,
    )  # fmt: skip
    return coords, np.searchsorted(index, np.arange(len(edge) + 1))
