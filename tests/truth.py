"""The road length a simulated fleet really drove, from its true routes, with shapely and pyproj.

An oracle for end-to-end coverage tests that uses no pipeline function: each true edge
traversal (``FLEET_DIR/truth.parquet``) is cut to the time window of the trip ingest kept
(ingest trims trip ends for privacy), the pieces are merged as geometry (the two directions of
a two-way road share their line, so a road driven both ways counts once) and the merged lines
are measured on OSMnx's sphere, whose great-circle lengths the edge table holds.
"""

from __future__ import annotations

import hashlib
import hmac

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import Geod
from shapely.ops import substring

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


def route_between(
    routes: gpd.GeoDataFrame, device: str, start: pd.Timestamp, stop: pd.Timestamp
) -> list[shapely.LineString]:
    """The pieces of road ``device`` drove from ``start`` to ``stop`` (metric lines).

    Within an edge, the vehicle's position is interpolated linearly in time between the moments
    it entered and left it.
    """
    on = routes[
        (routes["device"] == device) & (routes["exited_at"] > start) & (routes["entered_at"] < stop)
    ]
    span = (on["exited_at"] - on["entered_at"]).dt.total_seconds().clip(lower=1e-3)
    begin = ((start - on["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    end = ((stop - on["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    return [
        substring(line, a, b, normalized=True)
        for line, a, b in zip(on.geometry, begin, end, strict=True)
        if b > a
    ]


def trip_truth(routes: gpd.GeoDataFrame, trips: pd.DataFrame) -> dict[str, shapely.Geometry]:
    """Per trip ingest kept, the merged road it truly drove between its first and last fix.

    ``routes`` is :func:`true_routes`; ``trips`` the trips table (``trip_id``, ``device_id``,
    ``started_at``, ``ended_at``).
    """
    merged = {}
    for trip in trips.itertuples():
        pieces = route_between(routes, trip.device_id, trip.started_at, trip.ended_at)
        if not pieces:
            raise AssertionError(f"trip {trip.trip_id} has no true route")
        merged[trip.trip_id] = shapely.union_all(pieces, grid_size=GRID_M)
    return merged


def sphere_km(lines: shapely.Geometry, crs: object) -> float:
    """Length in km on OSMnx's sphere of metric lines in ``crs``."""
    lonlat = gpd.GeoSeries([lines], crs=crs).to_crs("EPSG:4326").iloc[0]
    return SPHERE.geometry_length(lonlat) / 1000.0


def driven_truth_km(truth: gpd.GeoDataFrame, trips: pd.DataFrame, key: str) -> float:
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
    """
    routes = true_routes(truth, key)
    merged = shapely.union_all(list(trip_truth(routes, trips).values()), grid_size=GRID_M)
    return sphere_km(merged, routes.crs)
