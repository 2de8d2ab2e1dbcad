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
    ``observed_at``, ``true_lon``, ``true_lat``.
    """
    network = DrivingNetwork.from_roads_dir(roads_dir)
    frames = []
    for device in plan_fleet(network, params):
        fixes = drive_device(network, device, params, truth=True).fixes
        frames.append(
            fixes[["observed_at", "true_lon", "true_lat"]].assign(
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
