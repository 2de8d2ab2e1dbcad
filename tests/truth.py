"""The road length a simulated fleet really drove, from its true routes, with shapely and pyproj.

An oracle for end-to-end coverage tests that uses no stage function: each true edge
traversal (``FLEET_DIR/truth.parquet``) is cut to the time window of the trip ingest kept
(ingest trims trip ends for privacy), the pieces are merged as geometry (the two directions of
a two-way road share their line, so a road driven both ways counts once) and the merged lines
are measured on OSMnx's sphere, whose great-circle lengths the edge table holds.

A trip's ends are cut where the vehicle truly was at its first and last fix: the simulator is
run again with its per-fix truth (:func:`true_fixes`) and that position is located on the edge.
(Interpolating in time within the edge would misplace them: vehicles speed up and slow down
along an edge, by several metres on average at the trimmed ends.)
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod
from shapely.ops import substring

from pipeline.config import SimulateSettings
from pipeline.simulate.fleet import drive_device, plan_fleet
from pipeline.simulate.network import DrivingNetwork

SPHERE = Geod(a=6_371_009.0, f=0.0)
GRID_M = 0.001  # 1 mm: both directions' lines coincide
CELL_M = 0.05  # resolution of the road masks


def device_pseudonym(key: str, raw_id: str) -> str:
    """HMAC-SHA256 of a raw device id under the pseudonym key, 16 hex digits (docs/ingest.md)."""
    return hmac.new(key.encode(), raw_id.encode(), hashlib.sha256).hexdigest()[:16]


def true_routes(truth: gpd.GeoDataFrame, key: str) -> gpd.GeoDataFrame:
    """The true routes in their UTM zone, with the pseudonym of each device (``device``)."""
    metric = truth.estimate_utm_crs()
    truth = truth.assign(device=truth["device_id"].map(lambda d: device_pseudonym(key, d)))
    return truth.to_crs(metric)


def true_fixes(roads_dir: Path, params: SimulateSettings, key: str) -> pd.DataFrame:
    """Where every simulated device truly was at each of its fixes.

    The simulator is deterministic: driving the fleet again with ``truth`` gives the fixes of
    its files with their true positions. Columns ``device`` (pseudonym under ``key``),
    ``trip_id`` (the simulator's), ``observed_at``, ``true_lon``, ``true_lat``.
    """
    network = DrivingNetwork.from_roads_dir(roads_dir)
    frames = []
    for device in plan_fleet(network, params):
        fixes = drive_device(network, device, params, truth=True).fixes
        frames.append(
            fixes[["trip_id", "observed_at", "true_lon", "true_lat"]].assign(
                device=device_pseudonym(key, device.device_id)
            )
        )
    return pd.concat(frames, ignore_index=True)


def located_fractions(
    lines: np.ndarray, lon: np.ndarray, lat: np.ndarray, crs: object
) -> np.ndarray:
    """Where points (EPSG:4326) lie along metric lines in ``crs``, as fractions of them."""
    points = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326").to_crs(crs)
    return np.asarray(shapely.line_locate_point(lines, points.to_numpy(), normalized=True))


def route_between(
    routes: gpd.GeoDataFrame,
    device: str,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    ends: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> list[shapely.LineString]:
    """The pieces of road ``device`` drove from ``start`` to ``stop`` (metric lines).

    The edges driven at ``start`` and ``stop`` are cut where the vehicle was, ``ends`` (its
    true (lon, lat) at both times); without them, at the position interpolated linearly in
    time between the moments it entered and left the edge.
    """
    on = routes[
        (routes["device"] == device) & (routes["exited_at"] > start) & (routes["entered_at"] < stop)
    ]
    span = (on["exited_at"] - on["entered_at"]).dt.total_seconds().clip(lower=1e-3)
    begin = ((start - on["entered_at"]).dt.total_seconds() / span).clip(0, 1).to_numpy(copy=True)
    end = ((stop - on["entered_at"]).dt.total_seconds() / span).clip(0, 1).to_numpy(copy=True)
    if ends is not None and len(on):
        lines = on.geometry.to_numpy()
        (lon0, lat0), (lon1, lat1) = ends
        begin[0] = located_fractions(lines[:1], np.array([lon0]), np.array([lat0]), on.crs)[0]
        end[-1] = located_fractions(lines[-1:], np.array([lon1]), np.array([lat1]), on.crs)[0]
    return [
        substring(line, a, b, normalized=True)
        for line, a, b in zip(on.geometry, begin, end, strict=True)
        if b > a
    ]


def trip_truth(
    routes: gpd.GeoDataFrame, trips: pd.DataFrame, fixes: pd.DataFrame | None = None
) -> dict[str, shapely.Geometry]:
    """Per trip ingest kept, the merged road it truly drove between its first and last fix.

    ``routes`` is :func:`true_routes`; ``trips`` the trips table (``trip_id``, ``device_id``,
    ``started_at``, ``ended_at``); ``fixes`` (:func:`true_fixes`) places the trips' ends.
    """
    where = None if fixes is None else fixes.set_index(["device", "observed_at"])
    merged = {}
    for trip in trips.itertuples():
        ends = None
        if where is not None:
            first = where.loc[(trip.device_id, trip.started_at)]
            last = where.loc[(trip.device_id, trip.ended_at)]
            ends = ((first.true_lon, first.true_lat), (last.true_lon, last.true_lat))
        pieces = route_between(routes, trip.device_id, trip.started_at, trip.ended_at, ends)
        if not pieces:
            raise AssertionError(f"trip {trip.trip_id} has no true route")
        merged[trip.trip_id] = shapely.union_all(pieces, grid_size=GRID_M)
    return merged


def sphere_km(lines: shapely.Geometry, crs: object) -> float:
    """Length in km on OSMnx's sphere of metric lines in ``crs``."""
    lonlat = gpd.GeoSeries([lines], crs=crs).to_crs("EPSG:4326").iloc[0]
    return SPHERE.geometry_length(lonlat) / 1000.0


def driven_truth_km(
    truth: gpd.GeoDataFrame, trips: pd.DataFrame, key: str, fixes: pd.DataFrame | None = None
) -> float:
    """Road km the simulated vehicles drove while ingest kept their fixes, both ways once.

    Parameters
    ----------
    truth
        The simulator's true routes (contract ``simulated_routes``).
    trips
        The trips ingest kept (contract ``trips``): ``device_id`` (pseudonym), ``started_at``,
        ``ended_at``.
    key
        The pseudonym key ingest ran with.
    fixes
        The fleet's true positions (:func:`true_fixes`), to cut each trip where the vehicle
        was at its first and last fix; without, that position is interpolated in time.
    """
    routes = true_routes(truth, key)
    merged = shapely.union_all(list(trip_truth(routes, trips, fixes).values()), grid_size=GRID_M)
    return sphere_km(merged, routes.crs)


class RoadRaster:
    """Every road of the roads folder cut into cells of ``CELL_M``: sets of road as masks.

    Both directions of a two-way road (one ``road_id``) share their cells: a piece of an edge
    is mapped onto the orientation of the road's first edge (the lowest ``edge_id``), reversed
    when the edge's line starts where that one ends.
    """

    def __init__(self, edges: gpd.GeoDataFrame) -> None:
        edges = edges.sort_values("edge_id")
        first = edges.groupby("road_id")["edge_id"].transform("min")
        reference = edges.set_index("edge_id").loc[first.to_numpy()]
        starts = shapely.get_point(edges.geometry.to_numpy(), 0)
        ref_starts = shapely.get_point(reference.geometry.to_numpy(), 0)
        reverse = (first.to_numpy() != edges["edge_id"].to_numpy()) & ~shapely.equals(
            starts, ref_starts
        )
        roads = edges.drop_duplicates("road_id")
        cells = np.ceil(roads["length_m"].to_numpy() / CELL_M).astype(np.int64)
        road_start = pd.Series(np.r_[0, np.cumsum(cells)[:-1]], index=roads["road_id"])
        self.size = int(cells.sum())
        self.by_edge = pd.DataFrame(
            {
                "start": road_start.loc[edges["road_id"].to_numpy()].to_numpy(),
                "length_m": edges["length_m"].to_numpy(),
                "reverse": reverse,
            },
            index=edges["edge_id"].to_numpy(),
        )

    def mask(self, edge_id: np.ndarray, from_m: np.ndarray, to_m: np.ndarray) -> np.ndarray:
        """The cells whose centre lies within ``[from_m, to_m]`` (either order) of the edges."""
        edge = self.by_edge.loc[np.asarray(edge_id)]
        length = edge["length_m"].to_numpy()
        low = np.clip(np.minimum(from_m, to_m), 0, length)
        high = np.clip(np.maximum(from_m, to_m), 0, length)
        flip = edge["reverse"].to_numpy()
        low, high = np.where(flip, length - high, low), np.where(flip, length - low, high)
        first = edge["start"].to_numpy() + np.ceil(low / CELL_M - 0.5).astype(np.int64)
        stop = edge["start"].to_numpy() + np.ceil(high / CELL_M - 0.5).astype(np.int64)
        keep = stop > first
        change = np.zeros(self.size + 1, dtype=np.int64)
        np.add.at(change, first[keep], 1)
        np.add.at(change, stop[keep], -1)
        return np.cumsum(change[:-1]) > 0


def masked_km(mask: np.ndarray) -> float:
    """Length in km of the road cells of a mask."""
    return float(np.count_nonzero(mask)) * CELL_M / 1000.0


def true_pieces(
    routes: gpd.GeoDataFrame, windows: pd.DataFrame, fixes: pd.DataFrame
) -> pd.DataFrame:
    """The pieces of edges the devices drove within time windows (``device``, ``start``, ``stop``).

    An edge driven at a window's start or stop is cut where the vehicle truly was then
    (``fixes``, :func:`tests.truth.true_fixes`), else at the position interpolated linearly in
    time within the edge (as ``tests/truth.py`` does).
    """
    where = fixes[["device", "observed_at", "true_lon", "true_lat"]]
    where = where.rename(columns={"observed_at": "at"})
    for side in ("start", "stop"):
        named = where.rename(columns={"at": side, "true_lon": f"{side}_lon",
                                      "true_lat": f"{side}_lat"})  # fmt: skip
        windows = windows.merge(named, on=["device", side], how="left")
    rows = windows.merge(pd.DataFrame(routes.drop(columns="geometry")).assign(
        line=routes.geometry.to_numpy()), on="device")  # fmt: skip
    rows = rows[(rows["exited_at"] > rows["start"]) & (rows["entered_at"] < rows["stop"])]
    span = (rows["exited_at"] - rows["entered_at"]).dt.total_seconds().clip(lower=1e-3)
    begin = ((rows["start"] - rows["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    end = ((rows["stop"] - rows["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    begin, end = begin.to_numpy(copy=True), end.to_numpy(copy=True)
    for side, fraction in (("start", begin), ("stop", end)):
        cut = ((rows["entered_at"] <= rows[side]) & (rows[side] < rows["exited_at"])
               & rows[f"{side}_lon"].notna()).to_numpy()  # fmt: skip
        fraction[cut] = located_fractions(
            rows["line"].to_numpy()[cut], rows[f"{side}_lon"].to_numpy()[cut],
            rows[f"{side}_lat"].to_numpy()[cut], routes.crs,
        )  # fmt: skip
    return pd.DataFrame(
        {
            "trip_id": rows["trip_id"].to_numpy(),
            "edge_id": rows["edge_id"].to_numpy(),
            "from_m": begin * rows["length_m"].to_numpy(),
            "to_m": end * rows["length_m"].to_numpy(),
        }
    )
