"""Small vectorized geodesy shared by the stages: distances between consecutive fixes."""

from __future__ import annotations

import numpy as np
from osmnx.distance import great_circle


def step_distances_m(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle distance (m) from each fix to the next; the last element is 0."""
    distances = np.zeros(len(lon), dtype="float64")
    if len(lon) > 1:
        distances[:-1] = great_circle(lat[:-1], lon[:-1], lat[1:], lon[1:])
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
