"""Coverage and H3 placement against answers worked out without the pipeline's own helpers.

The roads are a hand-written OSM file at 60° N (where a degree of longitude is half a degree
of latitude, so a missing cos(latitude) shows): two-way streets, one of them bent, and a
zigzag one-way street. Expected coverage is the union of the driven intervals, computed here
by hand on the road's forward orientation; expected H3 cells come from ``h3.latlng_to_cell``
on points placed along each edge with pyproj's geodesic on OSMnx's sphere (radius 6,371,009 m,
the sphere the edge lengths are measured on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from pipeline.config import settings_from_mapping
from pipeline.coverage.cells import edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.stage import compute_coverage
from pipeline.coverage.state import state_of_batch
from pipeline.coverage.summary import coverage_summary
from pipeline.coverage.tables import edge_coverage
from pipeline.export.inputs import read_cells
from pipeline.roads import build_roads, read_edges
from tests.builders import write_matched_batch, write_osm_network

LAT0, LON0 = 60.17, 24.94
METRES_PER_DEGREE = 111_195.0  # on the 6,371,009 m sphere; only used to place the nodes
SPHERE = Geod(a=6_371_009.0, f=0.0)
SETTINGS = settings_from_mapping({"regions": [{"name": "t", "osm": "t.osm"}]}).coverage
WHEN = pd.Timestamp("2026-10-10T10:00:00Z")
# node id -> (metres east, metres north) of (LON0, LAT0)
NODES = {
    1: (0, 0), 2: (300, 0),  # straight two-way street, due east
    3: (0, 200), 4: (150, 260), 5: (230, 420), 6: (420, 430),  # bent two-way street
    7: (0, 700), 8: (120, 700), 9: (120, 820), 10: (300, 1000), 11: (700, 1000),
    12: (700, 1180), 13: (560, 1320),  # zigzag one-way street
}  # fmt: skip
WAYS = {
    100: ([1, 2], "residential", False),
    101: ([3, 4, 5, 6], "residential", False),
    102: ([7, 8, 9, 10, 11, 12, 13], "primary", True),
}


def node_latlon(east: float, north: float) -> tuple[float, float]:
    """The latitude and longitude of a point ``east`` and ``north`` metres from (LON0, LAT0)."""
    lon = LON0 + east / (METRES_PER_DEGREE * np.cos(np.radians(LAT0)))
    return LAT0 + north / METRES_PER_DEGREE, lon


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("oracle-roads")
    nodes = {node: node_latlon(east, north) for node, (east, north) in NODES.items()}
    build_roads(write_osm_network(folder / "oracle.osm", nodes, WAYS), folder / "roads")
    return folder / "roads"


@pytest.fixture(scope="module")
def edges(roads_dir: Path) -> gpd.GeoDataFrame:
    return read_edges(roads_dir)


def directed_edge(edges: gpd.GeoDataFrame, way: int, forward: bool) -> pd.Series:
    """The edge of an OSM way in or against the way's node order."""
    refs = WAYS[way][0]
    u, v = (refs[0], refs[-1]) if forward else (refs[-1], refs[0])
    return edges[(edges["u"] == u) & (edges["v"] == v)].iloc[0]


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of closed intervals, by sorting and sweeping."""
    total, reach = 0.0, -np.inf
    for start, stop in sorted(intervals):
        if stop > reach:
            total += stop - max(start, reach)
            reach = stop
    return total


def on_forward_orientation(
    forward: Sequence[tuple[float, float]], backward: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Fractions driven on either direction, as fractions of the road in the way's order.

    Driving from fraction a to b against the way covers 1 - b to 1 - a of it.
    """
    return [*forward, *((1 - b, 1 - a) for a, b in backward)]


def drives_of(
    edges: gpd.GeoDataFrame,
    way: int,
    forward: Sequence[tuple[float, float]],
    backward: Sequence[tuple[float, float]],
) -> pd.DataFrame:
    """Matched pieces: each (a, b) drives fractions a..b of the edge, in its own direction."""
    rows = []
    for is_forward, pieces in ((True, forward), (False, backward)):
        edge = directed_edge(edges, way, is_forward)
        for number, (start, stop) in enumerate(pieces):
            rows.append(
                {
                    "edge_id": edge["edge_id"],
                    "trip_id": f"{'fwd' if is_forward else 'back'}-{number}",
                    "contributor_id": "c",
                    "from_offset_m": start * edge["length_m"],
                    "to_offset_m": stop * edge["length_m"],
                    "entered_at": WHEN,
                    "exited_at": WHEN + pd.Timedelta(seconds=30),
                }
            )
    return pd.DataFrame(rows)


TWO_WAY_CASES = {
    "one direction, whole": ([(0.0, 1.0)], []),
    "other direction, whole": ([], [(0.0, 1.0)]),
    "both directions, whole": ([(0.0, 1.0)], [(0.0, 1.0)]),
    "first half each way": ([(0.0, 0.5)], [(0.0, 0.5)]),
    "first 40 % each way": ([(0.0, 0.4)], [(0.0, 0.4)]),
    "first 70 % each way": ([(0.0, 0.7)], [(0.0, 0.7)]),
    "last 30 % against the way": ([], [(0.7, 1.0)]),
    "pieces both ways": ([(0.1, 0.2), (0.5, 0.6)], [(0.05, 0.3), (0.35, 0.45)]),
}


@pytest.mark.parametrize("way", [100, 101])
@pytest.mark.parametrize("case", list(TWO_WAY_CASES))
def test_two_way_road_coverage_is_the_union_of_both_directions(
    roads_dir: Path, edges: gpd.GeoDataFrame, tmp_path: Path, way: int, case: str
) -> None:
    forward, backward = TWO_WAY_CASES[case]
    drives = drives_of(edges, way, forward, backward)
    batch = write_matched_batch(tmp_path / "m", edges, drives, roads_dir=roads_dir)
    summary = compute_coverage(roads_dir, [batch], tmp_path / "coverage", SETTINGS)
    road_m = directed_edge(edges, way, True)["length_m"]
    assert directed_edge(edges, way, False)["length_m"] == pytest.approx(road_m, abs=1e-6)
    unique_m = union_length(on_forward_orientation(forward, backward)) * road_m
    directed_m = (union_length(forward) + union_length(backward)) * road_m
    assert summary["unique_km"] * 1000 == pytest.approx(unique_m, abs=0.01)
    assert summary["directed_covered_km"] * 1000 == pytest.approx(directed_m, abs=0.01)
    finest = read_cells(tmp_path / "coverage")[["resolution", "unique_km"]]
    finest = finest[finest["resolution"] == SETTINGS.h3_resolution]
    assert finest["unique_km"].sum() * 1000 == pytest.approx(unique_m, abs=0.01)


fractions = st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(
    lambda ab: (min(ab) / 1000, max(ab) / 1000)
)


@settings(max_examples=60, deadline=None)
@given(
    way=st.sampled_from([100, 101]),
    forward=st.lists(fractions, max_size=4),
    backward=st.lists(fractions, max_size=4),
)
def test_any_pieces_in_both_directions_cover_their_union(
    edges: gpd.GeoDataFrame,
    way: int,
    forward: list[tuple[float, float]],
    backward: list[tuple[float, float]],
) -> None:
    runs = edge_cell_runs(edges, 9)
    segments = drives_of(edges, way, forward, backward).assign(seq=0)
    if segments.empty:
        return
    state = state_of_batch(segments, runs, "b")
    table = edge_coverage(edges, state, 0)
    summary = coverage_summary(table, state, canonical_edges(edges), 0)
    road_m = directed_edge(edges, way, True)["length_m"]
    unique_m = union_length(on_forward_orientation(forward, backward)) * road_m
    # each piece's ends are rounded to the millimetre
    assert summary["unique_km"] * 1000 == pytest.approx(unique_m, abs=0.002 * len(segments))


def geodesic_samples(
    line: np.ndarray, spacing_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Points every ``spacing_m`` (at the middles) along a lon/lat polyline, on the sphere.

    Returns the distance of each point from the start, its lon and lat, and the line's length.
    """
    lon, lat = line[:, 0], line[:, 1]
    azimuth, _, step_m = SPHERE.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])
    start_m = np.r_[0.0, np.cumsum(step_m)]
    along = np.arange(spacing_m / 2, start_m[-1], spacing_m)
    segment = np.clip(np.searchsorted(start_m, along, side="right") - 1, 0, len(step_m) - 1)
    at_lon, at_lat, _ = SPHERE.fwd(
        lon[segment], lat[segment], azimuth[segment], along - start_m[segment]
    )
    return along, np.asarray(at_lon), np.asarray(at_lat), float(start_m[-1])


def h3_cells(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    return np.array(
        [h3.str_to_int(h3.latlng_to_cell(y, x, resolution)) for x, y in zip(lon, lat, strict=True)],
        dtype="int64",
    )


@pytest.mark.parametrize("resolution", [10, 12])
def test_cell_runs_agree_with_h3_on_geodesic_points(
    edges: gpd.GeoDataFrame, resolution: int
) -> None:
    runs = edge_cell_runs(edges, resolution)
    crossings = 0
    for edge in edges.itertuples():
        along, lon, lat, length_m = geodesic_samples(np.asarray(edge.geometry.coords), 0.1)
        assert length_m == pytest.approx(edge.length_m, abs=0.01)
        expected = h3_cells(lon, lat, resolution)
        mine = runs[runs["key"] == edge.edge_id].sort_values("from_mm")
        bounds_m = mine["to_mm"].to_numpy()[:-1] / 1000.0
        got = mine["cell"].to_numpy()[np.searchsorted(bounds_m, along, side="right")]
        # a run boundary lies on a step boundary: the step whose middle is in a cell is given
        # to it, so a boundary is off by at most half a step (steps of at most 2 m)
        steps = max(int(np.ceil(edge.length_m / 2.0)), 1)
        tolerance_m = edge.length_m / steps / 2 + 0.05
        near_bound = np.abs(along[:, None] - bounds_m[None, :]).min(axis=1, initial=np.inf)
        far = near_bound > tolerance_m
        wrong = far & (got != expected)
        assert not wrong.any(), (
            f"edge {edge.u}->{edge.v}: {int(wrong.sum())} points (first at "
            f"{along[wrong][0]:.1f} m) are in another cell than h3 says"
        )
        # every run boundary is a place where h3's cell changes
        changes_m = (
            along[1:][expected[1:] != expected[:-1]] + along[:-1][expected[1:] != expected[:-1]]
        ) / 2
        near_change = np.abs(bounds_m[:, None] - changes_m[None, :]).min(axis=1, initial=np.inf)
        assert (near_change <= tolerance_m).all(), (
            f"edge {edge.u}->{edge.v}: a run boundary where h3 sees none"
        )
        crossings += len(changes_m)
    assert crossings > (20 if resolution == 12 else 4)  # the edges really cross many cells
