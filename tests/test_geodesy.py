"""Geodesy helpers: the haversine agrees with OSMnx's (which builds the graph), cells with h3-py."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from osmnx.distance import great_circle as osmnx_great_circle

from pipeline.geodesy import (
    cells_of,
    distances_m,
    great_circle,
    step_distances_m,
    step_distances_within_m,
)


def test_great_circle_agrees_with_osmnx() -> None:
    rng = np.random.default_rng(7)
    lat1, lat2 = rng.uniform(-89, 89, (2, 1000))
    lon1, lon2 = rng.uniform(-180, 180, (2, 1000))
    np.testing.assert_allclose(
        great_circle(lat1, lon1, lat2, lon2), osmnx_great_circle(lat1, lon1, lat2, lon2), rtol=1e-12
    )


def test_a_degree_of_latitude_and_steps_within_groups() -> None:
    one_degree = distances_m(np.array([24.9]), np.array([60.0]), np.array([24.9]), np.array([61.0]))
    assert one_degree[0] == pytest.approx(np.radians(1.0) * 6_371_009.0, rel=1e-12)
    steps = step_distances_within_m(
        np.array([0, 0, 1, 1]), np.array([0.0, 0.001, 5.0, 5.0]), np.zeros(4)
    )
    assert steps[0] > 100 and steps[1] == 0.0 and steps[2] == 0.0 and steps[3] == 0.0


def test_steps_are_the_great_circle_of_each_pair_exactly() -> None:
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-89, 89, 500), rng.uniform(-180, 180, 500)
    steps = step_distances_m(lon, lat)
    np.testing.assert_array_equal(steps[:-1], great_circle(lat[:-1], lon[:-1], lat[1:], lon[1:]))
    assert steps[-1] == 0.0 and step_distances_m(lon[:1], lat[:1]).tolist() == [0.0]


@pytest.mark.parametrize("resolution", [0, 5, 9, 15])
def test_cells_of_agrees_with_h3_point_by_point(resolution: int) -> None:
    rng = np.random.default_rng(resolution)
    lon, lat = rng.uniform(-180, 180, 2000), rng.uniform(-89.9, 89.9, 2000)
    pairs = zip(lon, lat, strict=True)
    expected = [h3.str_to_int(h3.latlng_to_cell(y, x, resolution)) for x, y in pairs]
    assert cells_of(lon, lat, resolution).view("uint64").tolist() == expected
