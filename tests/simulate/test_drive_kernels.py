"""The drive kernels give the numbers the simulator's numpy formulation gave, to the bit."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.simulate.drive import GRID_STEP_M, _turns, ar1_filter, drive_route
from pipeline.simulate.drive_kernels import _interp, _mod_360, fixes_along, speed_profile
from pipeline.simulate.network import DrivingNetwork, Route
from tests.simulate import drive_reference as reference

EXAMPLES = settings(max_examples=150, deadline=None)


def random_route(seed: int) -> Route:
    """A polyline of a few edges with duplicate vertices, straight runs and sharp turns."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    step = rng.normal(0.0, 30.0, (n - 1, 2)) * (rng.random((n - 1, 1)) < 0.9)  # duplicates
    if n > 3:
        step[1] = step[0] * 2.0  # straight on
    xy = np.concatenate([rng.uniform(-5000, 5000, (1, 2)), step]).cumsum(axis=0)
    step = np.diff(xy, axis=0)
    step_m = np.hypot(step[:, 0], step[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(step_m)])
    ends = np.sort(
        rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(1, 6))), replace=False)
    )
    ends[-1] = n - 1
    edge_start = np.concatenate([[0.0], cum[ends]])
    edges = np.arange(len(ends), dtype="int64")
    return Route(edges=edges, xy=xy, cum_m=cum, edge_start_m=edge_start, step=step, step_m=step_m)


def drive_inputs(seed: int) -> tuple[Route, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A route, its edges' speeds and stops (some at the same place), and its bearings."""
    route = random_route(seed)
    rng = np.random.default_rng(seed + 1)
    edge_speed = rng.uniform(2.0, 30.0, len(route.edges))
    stops = int(rng.integers(0, 4))
    stop_at_m = np.sort(rng.uniform(0.05, 0.95, stops) * route.length_m)
    if stops > 1 and rng.random() < 0.3:
        stop_at_m[1] = stop_at_m[0]
    dwell_s = rng.uniform(10.0, 30.0, stops)
    step_x, step_y = route.step.T.copy()
    return route, edge_speed, stop_at_m, dwell_s, np.arctan2(step_x, step_y)


@EXAMPLES
@given(st.integers(0, 2**32))
def test_speed_profile_is_the_numpy_one(seed: int) -> None:
    route, edge_speed, stop_at_m, dwell_s, bearing = drive_inputs(seed)
    points = max(2, math.ceil(route.length_m / GRID_STEP_M) + 1)
    got = speed_profile(
        route.edge_start_m, edge_speed, stop_at_m, dwell_s, *_turns(route, bearing), points
    )
    expected = reference._speed_profile(route, edge_speed, stop_at_m, dwell_s)
    for a, b in zip(got, expected, strict=True):
        assert a.tobytes() == b.tobytes()


@EXAMPLES
@given(st.integers(0, 2**32), st.sampled_from([1.0, 0.5, 2.0, 0.3]))
def test_fixes_along_are_the_numpy_ones(seed: int, step_s: float) -> None:
    route, edge_speed, stop_at_m, dwell_s, bearing = drive_inputs(seed)
    knot_t, knot_s, knot_v, _ = reference._speed_profile(route, edge_speed, stop_at_m, dwell_s)
    count = int(float(knot_t[-1]) // step_s) + 1
    t_s, speed, xy, heading = fixes_along(
        knot_t, knot_s, knot_v, count, step_s, route.xy, route.cum_m, bearing, route.step_m
    )
    expected_t = np.round(np.arange(count) * step_s, 3)
    expected_xy, expected_heading = reference._position_along(
        route, np.interp(expected_t, knot_t, knot_s)
    )
    assert t_s.tobytes() == expected_t.tobytes()
    assert speed.tobytes() == np.interp(expected_t, knot_t, knot_v).tobytes()
    assert xy.tobytes() == expected_xy.tobytes()
    assert heading.tobytes() == expected_heading.tobytes()


@EXAMPLES
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30),
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    st.integers(0, 2**32),
)
def test_interp_is_numpys(knots: list[float], x: list[float], seed: int) -> None:
    xp = np.sort(np.array(knots))  # ties too
    rng = np.random.default_rng(seed)
    fp = rng.normal(0.0, 100.0, len(xp))
    queries = np.concatenate([np.array(x), xp, [np.nan]])  # at the knots exactly too
    assert _interp(queries, xp, fp).tobytes() == np.interp(queries, xp, fp).tobytes()


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(deadline=None)  # the first example compiles the kernel
def test_mod_360_is_numpys(value: float) -> None:
    with np.errstate(invalid="ignore"):
        expected = np.mod(value, 360.0)
    assert np.float64(_mod_360(value)).tobytes() == expected.tobytes()


@EXAMPLES
@given(st.integers(1, 800), st.floats(0.05, 0.999), st.integers(0, 2**32))
def test_ar1_filter_is_the_numpy_one(n: int, rho: float, seed: int) -> None:
    white = np.random.default_rng(seed).standard_normal((3, n))
    assert ar1_filter(white, rho).tobytes() == reference.ar1_filter(white, rho).tobytes()


@pytest.mark.parametrize("seed", range(60))
def test_drive_route_is_the_numpy_one(seed: int) -> None:
    """A whole trip, draws included: the same random stream gives the same fixes and times."""
    route = random_route(seed)
    rng = np.random.default_rng(seed)
    network = SimpleNamespace(edge_speed_mps=rng.uniform(2.0, 30.0, len(route.edges)))
    params = replace(
        load_config().simulate,
        outlier_rate=0.2,  # outliers, dropouts and stops on short routes
        dropout_rate_per_km=3.0,
        stop_rate_per_km=3.0,
        sample_interval_s=[1.0, 0.5, 2.0][seed % 3],
    )
    sigma = float(rng.uniform(1.0, 30.0))
    got = drive_route(network, route, params, sigma, np.random.default_rng(seed))
    expected = reference.drive_route(network, route, params, sigma, np.random.default_rng(seed))
    for name in expected.__dataclass_fields__:
        a, b = getattr(got, name), getattr(expected, name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
        else:
            assert a == b, name


@EXAMPLES
@given(st.integers(0, 2**32))
def test_route_polyline_is_the_numpy_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vertex_counts = rng.integers(2, 8, 40)
    coord_start = np.concatenate([[0], np.cumsum(vertex_counts)])
    coords = rng.normal(0.0, 500.0, (int(coord_start[-1]), 2))
    edges = rng.integers(0, 40, int(rng.integers(1, 12)))
    got = DrivingNetwork.route(SimpleNamespace(_coords=coords, _coord_start=coord_start), edges)
    expected = reference.route(coords, coord_start, edges)
    for name in expected.__dataclass_fields__:
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name


@EXAMPLES
@given(st.integers(0, 2**32))
def test_path_edges_are_the_walked_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes = int(rng.integers(2, 30))
    # a random tree from node 0: each other node reached by an edge from an earlier one
    edge_u = np.array([int(rng.integers(0, v)) for v in range(1, nodes)], dtype="int64")
    via_edge = np.concatenate([[-1], np.arange(nodes - 1)]).astype("int64")
    unreached = int(rng.integers(1, nodes))
    via_edge[unreached] = -1  # cut off: it and the nodes under it are not reached
    network = SimpleNamespace(edge_u=edge_u)
    for destination in range(nodes):
        try:
            expected = reference.path_edges(via_edge, edge_u, 0, destination)
        except ValueError as error:
            with pytest.raises(ValueError, match=str(error)):
                DrivingNetwork.path_edges(network, via_edge, 0, destination)
            continue
        got = DrivingNetwork.path_edges(network, via_edge, 0, destination)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
