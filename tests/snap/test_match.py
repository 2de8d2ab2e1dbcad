"""The map matcher on hand-built networks with known answers, and on one real Kubicka drive."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.roads import build_roads, read_edges
from pipeline.snap import (
    MatchParams,
    build_match_network,
    load_match_network,
    match_trip,
    match_trips,
    save_match_network,
    traversed_segments,
)
from pipeline.snap.match import _network_workspace

LAT0, LON0 = 60.17, 24.94
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * np.cos(np.radians(LAT0))

# A grid of nodes 200 m apart: ids 1..9 as (col, row) for col, row in 0..2.
#   7 - 8 - 9
#   |   |   |
#   4 - 5 - 6
#   |   |   |
#   1 - 2 - 3
# Ways: bottom row 1-2-3 two-way; column 2-5-8 two-way; 4-5-6 one-way eastwards;
# a two-way 4'-6' parallel to it 40 m north (nodes 10, 11); far node pair 20-21 (island).
NODES = {i + 1: (i % 3 * 200.0, i // 3 * 200.0) for i in range(9)} | {
    10: (0.0, 240.0), 11: (400.0, 240.0), 20: (3000.0, 3000.0), 21: (3200.0, 3000.0),
}  # fmt: skip
WAYS = [
    (100, [1, 2, 3], False),
    (101, [2, 5, 8], False),
    (102, [4, 5, 6], True),
    (103, [10, 11], False),
    (104, [20, 21], False),
    (105, [1, 4, 7], False),
]


def lonlat(x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return LON0 + np.asarray(x_m) / M_PER_DEG_LON, LAT0 + np.asarray(y_m) / M_PER_DEG_LAT


def write_osm(
    path: Path,
    nodes: dict[int, tuple[float, float]] = NODES,
    ways: list[tuple[int, list[int], bool]] = WAYS,
) -> Path:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="test">']
    for node, (x, y) in nodes.items():
        lon, lat = lonlat(np.array(x), np.array(y))
        lines.append(f'<node id="{node}" version="1" lat="{lat:.8f}" lon="{lon:.8f}"/>')
    for way, refs, oneway in ways:
        lines.append(f'<way id="{way}" version="1">')
        lines += [f'<nd ref="{r}"/>' for r in refs]
        lines.append('<tag k="highway" v="residential"/>')
        if oneway:
            lines.append('<tag k="oneway" v="yes"/>')
        lines.append("</way>")
    lines.append("</osm>")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def grid_net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("snap_grid")
    build_roads(write_osm(folder / "grid.osm"), folder / "roads")
    edges = read_edges(folder / "roads")
    return build_match_network(edges), edges


def drive(
    points_m: list[tuple[float, float]], step_m: float = 10.0, noise_m: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixes every second along a polyline (metres), at ``step_m`` per second."""
    line = shapely.LineString(points_m)
    along = np.arange(0.0, line.length + 1e-9, step_m)
    xy = shapely.get_coordinates(shapely.line_interpolate_point(line, along))
    xy += np.random.default_rng(seed).normal(0.0, noise_m, xy.shape) if noise_m else 0.0
    lon, lat = lonlat(xy[:, 0], xy[:, 1])
    return lon, lat, np.arange(len(along), dtype="float64")


def node_path(net, trip) -> list[int]:  # type: ignore[no-untyped-def]
    """OSM node ids visited by the traversed route, in order, without repeats."""
    seg = traversed_segments(net, trip)
    nodes: list[int] = []
    for u, v in zip(seg["u"], seg["v"], strict=True):
        for n in (u, v):
            if not nodes or nodes[-1] != n:
                nodes.append(int(n))
    return nodes


def test_straight_trace_matches_its_road_with_increasing_offsets(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat, t = drive([(15, 0), (385, 0)], noise_m=3.0)
    trip = match_trip(net, lon, lat, t)
    assert (trip.edge >= 0).all()
    assert set(net.edge_osmid[trip.edge]) == {100}
    seg = traversed_segments(net, trip)
    assert list(seg["u"]) == [1, 2] and list(seg["v"]) == [2, 3]
    first = trip.edge == trip.edge[0]
    assert np.all(np.diff(trip.offset_m[first]) > -5.0)
    assert np.nanmax(trip.distance_m) < 15.0


def test_turn_at_intersection_is_followed(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat, t = drive([(15, 0), (200, 0), (200, 385)], noise_m=3.0, seed=1)
    trip = match_trip(net, lon, lat, t)
    assert node_path(net, trip) == [1, 2, 5, 8]
    assert not trip.is_break.any()


def test_one_way_is_never_matched_against_its_direction(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat, t = drive([(385, 225), (15, 225)], noise_m=2.0, seed=2)
    trip = match_trip(net, lon, lat, t)
    matched = trip.edge[trip.edge >= 0]
    assert len(matched) > 0
    assert 102 not in set(net.edge_osmid[matched])
    assert set(net.edge_osmid[matched]) == {103}
    seg = traversed_segments(net, trip)
    assert list(seg["u"]) == [11] and list(seg["v"]) == [10]


def test_parallel_roads_40_m_apart_are_told_apart(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    # eastwards 6 m from the one-way 4-5-6 (y=200), then 6 m from the two-way 10-11 (y=240)
    for y, way in ((206.0, 102), (234.0, 103)):
        lon, lat, t = drive([(15, y), (385, y)], noise_m=3.0, seed=int(y))
        trip = match_trip(net, lon, lat, t)
        assert set(net.edge_osmid[trip.edge[trip.edge >= 0]]) == {way}, f"y={y}"


def test_u_turn_in_the_middle_of_a_road(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    # along the two-way bottom row to x=300 (half way between nodes 2 and 3), then back
    lon, lat, t = drive([(15, 0), (300, 0), (15, 0)], noise_m=2.0, seed=9)
    seg = traversed_segments(net, match_trip(net, lon, lat, t))
    assert list(zip(seg["u"], seg["v"], strict=True)) == [(1, 2), (2, 3), (3, 2), (2, 1)]
    turn = seg.iloc[1:3]
    assert turn["to_offset_m"].iloc[0] == pytest.approx(100.0, abs=10.0)  # 100 m past node 2
    assert turn["from_offset_m"].iloc[1] == pytest.approx(100.0, abs=10.0)  # 100 m before it
    route_m = float((seg["to_offset_m"] - seg["from_offset_m"]).sum())
    assert route_m == pytest.approx(2 * 285.0, abs=20.0)
    # U-turns on a road forbidden: no route explains the turn. The fixes coming back along
    # (2, 3) are taken as the car standing at the turn (as a stopped car's drifting fixes
    # are), and the trip breaks once they are on (2, 1): no road is invented, and the way
    # back before the break is not counted
    forbidden = traversed_segments(
        net, match_trip(net, lon, lat, t, MatchParams(uturn_penalty=None))
    )
    assert list(zip(forbidden["u"], forbidden["v"], strict=True)) == [(1, 2), (2, 3), (2, 1)]
    assert list(forbidden["segment"]) == [0, 0, 1]
    assert forbidden["to_offset_m"].iloc[1] == pytest.approx(100.0, abs=10.0)  # at the turn


def test_a_trips_transition_scale_is_the_mean_of_what_its_transitions_charge(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    # eastwards between nodes 1 and 2 (y = 0), 10 m a second, the fixes alternately 3 m north
    # and south of the road: each fix lies 10 m along the road from the previous one (the
    # route) and hypot(10, 6) m from it in a straight line, so each of the 17 transitions
    # charges hypot(10, 6) - 10 = 1.662 m; beta_m = 10 counts as one more
    x = np.arange(15.0, 186.0, 10.0)
    lon, lat = lonlat(x, np.where(np.arange(len(x)) % 2 == 0, 3.0, -3.0))
    t = np.arange(len(x), dtype="float64")
    trip = match_trip(net, lon, lat, t)
    assert (trip.edge >= 0).all() and set(net.edge_osmid[trip.edge]) == {100}
    assert trip.beta_m == pytest.approx((10.0 + 17 * (np.hypot(10.0, 6.0) - 10.0)) / 18, rel=1e-3)
    assert match_trip(net, lon, lat, t, MatchParams(estimate_beta=False)).beta_m == 10.0


@pytest.mark.parametrize("drift_m", [10.0, 30.0])
def test_a_stopped_cars_fixes_drifting_back_are_no_u_turn_with_the_fitted_scale(
    grid_net,  # type: ignore[no-untyped-def]
    drift_m: float,
) -> None:
    net, _ = grid_net
    # eastwards along the bottom row (two-way), 10 m a second; at x = 150 the car stops for
    # 8 s while its fixes drift back by drift_m and return, then it drives on to x = 385
    x = np.concatenate(
        [
            np.arange(15.0, 150.0, 10.0),
            150.0 - np.linspace(0.0, drift_m, 6)[1:],
            np.linspace(150.0 - drift_m, 150.0, 4)[1:-1],
            np.arange(150.0, 386.0, 10.0),
        ]
    )
    lon, lat = lonlat(x, np.zeros_like(x))
    t = np.arange(len(x), dtype="float64")
    trip = match_trip(net, lon, lat, t)
    assert trip.beta_m < 2.0  # the fixes lie on the road: the transitions charge little
    seg = traversed_segments(net, trip)
    # the car stood still: no U-turn onto (2, 1) and back
    assert list(zip(seg["u"], seg["v"], strict=True)) == [(1, 2), (2, 3)]


def test_a_path_beside_the_road_and_longer_is_not_taken_for_fixes_offset_towards_it(
    tmp_path: Path,
) -> None:
    # a straight two-way road 1 -> 2 (300 m along y = 0) and a one-way branch 1 -> 3 -> 4 -> 2
    # that runs 8 m north of it for 200 m (1.27 m longer). The car drives the road; its fixes
    # all lie 4.5 m north of it (GPS error that stays for seconds), 3.5 m from the branch:
    # each fix is a little likelier on the branch, and only the route length tells them apart
    nodes = {1: (0.0, 0.0), 2: (300.0, 0.0), 3: (50.0, 8.0), 4: (250.0, 8.0)}
    ways = [(1, [1, 2], False), (2, [1, 3, 4, 2], True)]
    build_roads(write_osm(tmp_path / "branch.osm", nodes, ways), tmp_path / "roads")
    net = build_match_network(read_edges(tmp_path / "roads"))
    lon, lat, t = drive([(5, 4.5), (295, 4.5)])

    def ways_taken(params: MatchParams) -> set[int]:
        return set(traversed_segments(net, match_trip(net, lon, lat, t, params))["osmid"])

    # with the scale fitted to the trip (its fixes step 10 m along a straight line: its
    # transitions charge next to nothing), the 1.27 m more of the branch outweighs them
    assert ways_taken(MatchParams()) == {1}
    # with the fixed 10 m scale they do not: the car is matched onto the branch
    assert ways_taken(MatchParams(estimate_beta=False)) == {2}


def test_far_outlier_is_unmatched_and_does_not_derail(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat, t = drive([(15, 0), (385, 0)], noise_m=2.0, seed=3)
    lon[20], lat[20] = lonlat(np.array(300.0), np.array(-900.0))
    trip = match_trip(net, lon, lat, t)
    assert trip.edge[20] == -1 and trip.reason[20] == "no_candidate"
    assert (trip.edge[np.arange(len(lon)) != 20] >= 0).all()
    assert node_path(net, trip) == [1, 2, 3]
    assert not trip.is_break.any()


def test_gap_without_route_creates_a_break(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    a = drive([(15, 0), (385, 0)], noise_m=1.0, seed=4)
    b = drive([(3015, 3000), (3185, 3000)], noise_m=1.0, seed=5)
    lon, lat = np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    t = np.arange(len(lon), dtype="float64")
    trip = match_trip(net, lon, lat, t)
    assert trip.is_break.sum() == 1
    first_b = len(a[0])
    assert trip.is_break[first_b]
    seg = traversed_segments(net, trip)
    assert seg["segment"].nunique() == 2
    assert set(seg.loc[seg["segment"] == 1, "osmid"]) == {104}
    assert set(seg.loc[seg["segment"] == 0, "osmid"]) == {100}


def test_traversed_segments_connect_and_sum_to_route_length(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, edges = grid_net
    lon, lat, t = drive([(15, 5), (200, 0), (200, 385)], noise_m=3.0, seed=6)
    trip = match_trip(net, lon, lat, t)
    seg = traversed_segments(net, trip)
    assert len(seg) >= 3
    length = edges.set_index("edge_id")["length_m"]
    for (_, a), (_, b) in zip(seg.iloc[:-1].iterrows(), seg.iloc[1:].iterrows(), strict=True):
        assert a["v"] == b["u"]
        assert a["to_offset_m"] == pytest.approx(length[a["edge_id"]])
        assert b["from_offset_m"] == 0.0
        assert a["exited_at"] <= b["entered_at"] + pd.Timedelta("1ms")
    route_m = float((seg["to_offset_m"] - seg["from_offset_m"]).sum())
    geo_m = float(seg.to_crs(net.crs).geometry.length.sum())
    assert route_m == pytest.approx(geo_m, rel=0.01)
    assert seg["from_offset_m"].iloc[0] == pytest.approx(trip.offset_m[0])
    assert seg["to_offset_m"].iloc[-1] == pytest.approx(trip.offset_m[-1])
    assert route_m == pytest.approx(185.0 + 200.0 + 185.0, abs=10.0)


def test_stop_keeps_fixes_and_matching_is_deterministic(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat, t = drive([(15, 0), (385, 0)], noise_m=3.0, seed=7)
    lon = np.concatenate([lon[:15], np.repeat(lon[15], 20) + 1e-6 * np.arange(20), lon[15:]])
    lat = np.concatenate([lat[:15], np.repeat(lat[15], 20), lat[15:]])
    t = np.arange(len(lon), dtype="float64")
    first, again = match_trip(net, lon, lat, t), match_trip(net, lon, lat, t)
    assert (first.edge >= 0).all()
    assert np.array_equal(first.edge, again.edge)
    assert np.array_equal(first.offset_m, again.offset_m)
    pd.testing.assert_frame_equal(first.route, again.route)


# (polyline, metres per fix): at 130 m a step can cross a whole edge, routed through the graph
TRIPS_M = [
    ([(15, 0), (200, 0), (200, 385)], 10.0),
    ([(385, 0), (15, 0)], 10.0),
    ([(15, 0), (15, 400), (385, 400), (385, 0), (15, 0)], 130.0),
    ([(200, 385), (200, 15), (385, 0)], 130.0),
]


def match_in_threads(net, orders: list[list[int]]) -> list[list]:  # type: ignore[no-untyped-def]
    """Match the trips of ``TRIPS_M`` in the given orders, one thread per order, at once."""
    fixes = [
        drive(points, step_m=step, noise_m=4.0, seed=i) for i, (points, step) in enumerate(TRIPS_M)
    ]
    results: list[list] = [[None] * len(TRIPS_M) for _ in orders]
    clean = [False] * len(orders)

    def run(slot: int) -> None:
        for i in orders[slot]:
            results[slot][i] = match_trip(net, *fixes[i])
        with _network_workspace(net) as workspace:  # this thread's, as its trips left it
            (dist, pred, _, _, _, target_mark), source_mark = workspace
            clean[slot] = bool(
                np.isinf(dist).all() and (pred == -1).all() and (target_mark == -1).all()
                and (source_mark == -1).all()
            )  # fmt: skip

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(orders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert all(clean)  # every search set back what it touched
    return results


def test_a_trip_matches_the_same_after_other_trips_and_beside_other_threads(grid_net) -> None:  # type: ignore[no-untyped-def]
    """Workspaces are reused from trip to trip in a thread: nothing leaks from one to the next.

    Each trip alone in a fresh thread (a fresh workspace) is the reference; three threads at
    once, each matching every trip (in another order, twice over), must give the same.
    """
    net, _ = grid_net
    alone = [match_in_threads(net, [[i]])[0][i] for i in range(len(TRIPS_M))]
    assert node_path(net, alone[0]) == [1, 2, 5, 8]  # by hand: east along 1-2, north on 2-5-8
    orders = [[0, 1, 2, 3] * 2, [3, 2, 1, 0] * 2, [1, 3, 0, 2] * 2]
    for results in match_in_threads(net, orders):
        for reference, trip in zip(alone, results, strict=True):
            assert np.array_equal(reference.edge, trip.edge)
            assert np.array_equal(reference.offset_m, trip.offset_m, equal_nan=True)
            pd.testing.assert_frame_equal(reference.route, trip.route)


def test_a_workspace_a_failure_may_have_left_dirty_is_not_lent_again(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    with pytest.raises(KeyboardInterrupt), _network_workspace(net) as workspace:
        workspace[1][0] = 3  # a mark set, as a kernel stopped half-way would leave it
        raise KeyboardInterrupt
    with _network_workspace(net) as fresh:
        assert fresh is not workspace
        assert (fresh[1] == -1).all() and np.isinf(fresh[0][0]).all()
    with _network_workspace(net) as again:
        assert again is fresh  # reused while nothing fails


def test_match_network_roundtrip_and_ubodt_agree(grid_net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net, edges = grid_net
    with_table = build_match_network(edges, ubodt_delta_m=1000.0)
    assert with_table.ubodt is not None and with_table.ubodt.entries > 0
    save_match_network(with_table, tmp_path / "net.npz")
    loaded = load_match_network(tmp_path / "net.npz")
    assert loaded.ubodt is not None and loaded.ubodt.entries == with_table.ubodt.entries
    lon, lat, t = drive([(15, 0), (200, 0), (200, 385)], noise_m=3.0, seed=8)
    plain, tabled = match_trip(net, lon, lat, t), match_trip(loaded, lon, lat, t)
    assert np.array_equal(plain.edge, tabled.edge)
    assert np.allclose(plain.route["to_offset_m"], tabled.route["to_offset_m"])


def test_bad_input_is_refused(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    with pytest.raises(ValueError, match="differ in length"):
        match_trip(net, np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="decreases"):
        match_trip(net, np.zeros(2), np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma_m"):
        MatchParams(sigma_m=0)


@pytest.mark.shared_data
def test_kubicka_drive_0_route_mismatch_within_half_again_of_the_measured(
    shared_data: Path, tmp_path: Path
) -> None:
    drive_dir = shared_data / "mapmatch" / "kubicka-dev" / "00000000"
    build_roads(drive_dir / "network.osm.bz2", tmp_path / "roads", network="all")
    net = build_match_network(read_edges(tmp_path / "roads"))
    trace = pd.read_csv(drive_dir / "trace.csv")
    t = (
        pd.to_datetime(trace["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")
    ).dt.total_seconds()
    trip = match_trip(net, trace["lon"].to_numpy(), trace["lat"].to_numpy(), t.to_numpy())
    truth = gpd.GeoSeries(
        [shapely.geometry.shape(json.loads((drive_dir / "truth.geojson").read_text())["geometry"])],
        crs="EPSG:4326",
    ).to_crs(net.crs)[0]
    matched = shapely.union_all(traversed_segments(net, trip).to_crs(net.crs).geometry.to_numpy())
    rmf = (
        matched.difference(truth.buffer(7.5)).length + truth.difference(matched.buffer(7.5)).length
    ) / truth.length
    # measured 0.0060 with the defaults (2026-12-07, docs/testing.md); the limit is 1.5 times that
    assert rmf < 0.009


def test_matched_fixes_scale_offsets_place_fixes_and_flag_the_first_fix_of_later_runs() -> None:
    from pipeline.snap.route_kernels import matched_fixes

    # one edge of 2 vertices, 100 m metric and 110 m long; candidates at 0, 50 and 100 m
    chosen = np.array([0, -1, 1, 2, -1, 0, 1])
    segment = np.array([0, -1, 0, 1, -1, 1, 2], dtype=np.int32)
    edge, offset, dist, lon, lat, is_break = matched_fixes(
        chosen, segment, np.zeros(3, dtype=np.int32), np.array([0.0, 50.0, 100.0]),
        np.array([1.0, 2.0, 3.0]), np.array([110.0]), np.array([100.0]), np.array([0, 2]),
        np.array([0.0, 100.0]), np.array([24.0, 25.0]), np.array([60.0, 61.0]),
    )  # fmt: skip
    assert edge.tolist() == [0, -1, 0, 0, -1, 0, 0]
    assert np.allclose(offset, [0, np.nan, 55, 110, np.nan, 0, 55], equal_nan=True)
    assert np.allclose(dist, [1, np.nan, 2, 3, np.nan, 1, 2], equal_nan=True)
    assert np.allclose(lon, [24, np.nan, 24.5, 25, np.nan, 24, 24.5], equal_nan=True)
    assert np.allclose(lat, [60, np.nan, 60.5, 61, np.nan, 60, 60.5], equal_nan=True)
    assert is_break.tolist() == [False, False, False, True, False, False, True]


def trips_of_every_kind() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Trips with a turn, a U-turn, a far outlier, a break between islands and a single fix."""
    outlier = drive([(15, 0), (385, 0)], noise_m=2.0, seed=3)
    outlier[0][20], outlier[1][20] = lonlat(np.array(300.0), np.array(-900.0))
    a = drive([(15, 0), (385, 0)], noise_m=1.0, seed=4)
    b = drive([(3015, 3000), (3185, 3000)], noise_m=1.0, seed=5)
    gap = (np.r_[a[0], b[0]], np.r_[a[1], b[1]], np.arange(len(a[0]) + len(b[0]), dtype=float))
    single = drive([(15, 0), (16, 0)])
    return [
        drive([(15, 0), (200, 0), (200, 385)], noise_m=4.0, seed=0),
        drive([(200, 385), (200, 15), (385, 0)], step_m=130.0, noise_m=4.0, seed=3),
        outlier,
        gap,
        (single[0][:1], single[1][:1], single[2][:1] + 1000.0),  # starts after the gap trip
        drive([(385, 0), (15, 0)], noise_m=4.0, seed=1),  # its times start again from 0
    ]


def test_trips_matched_together_are_each_as_matched_alone(grid_net) -> None:  # type: ignore[no-untyped-def]
    """match_trips gives every trip match_trip's result (checked by hand in the tests above)."""
    net, _ = grid_net
    trips = trips_of_every_kind()
    alone = [match_trip(net, *trip) for trip in trips]
    assert node_path(net, alone[0]) == [1, 2, 5, 8]  # by hand: east along 1-2, north on 2-5-8
    assert alone[2].reason[20] == "no_candidate" and alone[3].is_break.sum() == 1
    bounds = np.r_[0, np.cumsum([len(trip[0]) for trip in trips])]
    lon, lat, t = (np.concatenate(parts) for parts in zip(*trips, strict=True))
    together = match_trips(net, lon, lat, t, bounds)
    for name in ("edge", "offset_m", "lon", "lat", "distance_m", "segment", "is_break"):
        expected = np.concatenate([getattr(trip, name) for trip in alone])
        assert np.array_equal(getattr(together, name), expected, equal_nan=True), name
    assert list(together.reason) == [r for trip in alone for r in trip.reason]
    sizes = [len(trip.route_columns["edge"]) for trip in alone]
    assert list(np.diff(together.route_bounds)) == sizes
    for name, column in together.route_columns.items():
        expected = np.concatenate([trip.route_columns[name] for trip in alone])
        assert np.array_equal(column, expected), name


def test_trips_matched_together_refuse_bad_input(grid_net) -> None:  # type: ignore[no-untyped-def]
    net, _ = grid_net
    lon, lat = np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="differ in length"):
        match_trips(net, lon, lat[:3], np.zeros(4), np.array([0, 4]))
    with pytest.raises(ValueError, match="bounds must rise from 0 to the number of fixes"):
        match_trips(net, lon, lat, np.zeros(4), np.array([0, 3]))
    with pytest.raises(ValueError, match="bounds must rise"):
        match_trips(net, lon, lat, np.zeros(4), np.array([0, 3, 2, 4]))
    with pytest.raises(ValueError, match=r"within a trip at fix 2 \(1.0 -> 0.5\)"):
        match_trips(net, lon, lat, np.array([0.0, 1.0, 0.5, 2.0]), np.array([0, 4]))
    # the same times, cut into trips where they go back: accepted
    fine = match_trips(net, lon, lat, np.array([0.0, 1.0, 0.5, 2.0]), np.array([0, 2, 4]))
    assert len(fine.edge) == 4 and list(fine.route_bounds) == [0, 0, 0]
