"""Small vectorized geodesy shared by the stages: distances between consecutive fixes.

Distances are great-circle (haversine) distances on the sphere of OSMnx's
``osmnx.distance.great_circle`` (radius 6,371,009 m), so they agree with the road graph's edge
lengths; the formula is written out here because importing OSMnx costs about a second, paid by
every stage that measures fixes (tests/test_geodesy.py checks the two agree).
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_009.0


def great_circle(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Haversine distance (m) between paired points, as OSMnx computes it."""
    y1, y2 = np.deg2rad(lat1), np.deg2rad(lat2)
    x1, x2 = np.deg2rad(lon1), np.deg2rad(lon2)
    return _haversine_m(y2 - y1, x2 - x1, np.cos(y1) * np.cos(y2))


def _haversine_m(dy: np.ndarray, dx: np.ndarray, cos_product: np.ndarray) -> np.ndarray:
    """Haversine distance (m) from latitude and longitude differences (radians) and cos·cos."""
    h = np.sin(dy / 2) ** 2 + cos_product * np.sin(dx / 2) ** 2
    return np.asarray(2 * np.arcsin(np.sqrt(np.minimum(1.0, h))) * EARTH_RADIUS_M)


def step_distances_m(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle distance (m) from each fix to the next; the last element is 0.

    The same values as :func:`great_circle` of each pair, with each fix's radians and cosine
    computed once instead of once per pair it is in.
    """
    distances = np.zeros(len(lon), dtype="float64")
    if len(lon) > 1:
        y, x = np.deg2rad(lat), np.deg2rad(lon)
        cos_y = np.cos(y)
        distances[:-1] = _haversine_m(np.diff(y), np.diff(x), cos_y[:-1] * cos_y[1:])
    return distances


def step_distances_within_m(groups: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Distance (m) from each fix to the next fix of the same group; 0 at each group's last fix.

    ``groups`` labels each fix (e.g. trip codes); fixes are sorted by group, then time.
    """
    steps = step_distances_m(lon, lat)
    if len(steps):
        steps[np.r_[groups[1:] != groups[:-1], True]] = 0.0
    return steps


def distances_m(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    """Great-circle distance (m) between paired points, elementwise."""
    return np.asarray(great_circle(lat1, lon1, lat2, lon2), dtype="float64")


def cells_of(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """Return the H3 cells (int64) of points at ``resolution``, vectorized with h3ronpy."""
    from h3ronpy.vector import coordinates_to_cells  # imports pyarrow: only where cells are needed

    cells = coordinates_to_cells(np.asarray(lat, "float64"), np.asarray(lon, "float64"), resolution)
    return np.asarray(cells).astype("int64")
