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


def device_pseudonym(key: str, raw_id: str) -> str:
    """HMAC-SHA256 of a raw device id under the pseudonym key, 16 hex digits (docs/ingest.md)."""
    return hmac.new(key.encode(), raw_id.encode(), hashlib.sha256).hexdigest()[:16]


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

    Within an edge, the vehicle's position is interpolated linearly in time between the moments
    it entered and left it.
    """
    metric = truth.estimate_utm_crs()
    truth = truth.assign(device=truth["device_id"].map(lambda d: device_pseudonym(key, d)))
    truth = truth.to_crs(metric)
    pieces = []
    for trip in trips.itertuples():
        on = truth[
            (truth["device"] == trip.device_id)
            & (truth["exited_at"] > trip.started_at)
            & (truth["entered_at"] < trip.ended_at)
        ]
        if on.empty:
            raise AssertionError(f"trip {trip.trip_id} has no true route")
        span = (on["exited_at"] - on["entered_at"]).dt.total_seconds().clip(lower=1e-3)
        start = ((trip.started_at - on["entered_at"]).dt.total_seconds() / span).clip(0, 1)
        stop = ((trip.ended_at - on["entered_at"]).dt.total_seconds() / span).clip(0, 1)
        pieces += [
            substring(line, a, b, normalized=True)
            for line, a, b in zip(on.geometry, start, stop, strict=True)
            if b > a
        ]
    merged = shapely.union_all(pieces, grid_size=0.001)  # 1 mm: both directions' lines coincide
    lonlat = gpd.GeoSeries([merged], crs=metric).to_crs("EPSG:4326").iloc[0]
    return SPHERE.geometry_length(lonlat) / 1000.0
