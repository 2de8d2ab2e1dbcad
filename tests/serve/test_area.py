"""parse_area: GeoJSON areas from request bodies, and every way a hostile one is refused."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyproj
import pytest
import shapely

from pipeline.serve.area import RequestError, parse_area

LIMITS = {"max_vertices": 1000, "max_area_km2": 5000.0}
SQUARE = [[24.9, 60.1], [25.0, 60.1], [25.0, 60.2], [24.9, 60.2], [24.9, 60.1]]
HOLE = [[24.94, 60.14], [24.96, 60.14], [24.96, 60.16], [24.94, 60.14]]


def _polygon(*rings: list[list[Any]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def _refused(geojson: object, **limits: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_area(geojson, **{**LIMITS, **limits})
    error = caught.value
    assert str(error) == error.message and "\n" not in error.message
    return error


def test_polygon_with_a_hole_is_that_polygon() -> None:
    area = parse_area(_polygon(SQUARE, HOLE), **LIMITS)
    assert area.equals(shapely.Polygon(SQUARE, [HOLE]))


def test_feature_and_multipolygon_are_accepted_altitude_ignored() -> None:
    other = [[25.1, 60.1], [25.2, 60.1], [25.2, 60.2], [25.1, 60.1]]
    with_altitude = [[x, y, 12.5] for x, y in SQUARE]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "MultiPolygon", "coordinates": [[with_altitude], [other]]},
    }
    area = parse_area(feature, **LIMITS)
    assert area.equals(shapely.MultiPolygon([shapely.Polygon(SQUARE), shapely.Polygon(other)]))


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (float("nan"), "area.coordinates[0][2]", "not a finite number"),
        (math.inf, "area.coordinates[0][2]", "not a finite number"),
        ("25.0", "area.coordinates[0][2]", "not a number"),
        (None, "area.coordinates[0][2]", "not a number"),
        (True, "area.coordinates[0][2]", "not a number"),
    ],
)
def test_bad_numbers_name_the_position(bad: object, field: str, words: str) -> None:
    ring = [list(p) for p in SQUARE]
    ring[2][0] = bad
    error = _refused(_polygon(ring))
    assert (error.field, error.code) == (field, "invalid_area")
    assert words in error.message


def test_latitude_91_and_longitude_181_are_refused() -> None:
    ring = [list(p) for p in SQUARE]
    ring[1] = [25.0, 91.0]
    error = _refused(_polygon(ring))
    assert error.field == "area.coordinates[0][1]" and "latitude 91.0" in error.message
    ring[1] = [181.0, 60.1]
    error = _refused(_polygon(ring))
    assert error.field == "area.coordinates[0][1]" and "longitude 181.0" in error.message


def test_unclosed_and_short_rings_are_refused() -> None:
    error = _refused(_polygon(SQUARE[:-1]))
    assert error.field == "area.coordinates[0]" and "not closed" in error.message
    error = _refused(_polygon([SQUARE[0], SQUARE[1], SQUARE[0]]))
    assert error.field == "area.coordinates[0]" and "at least 4 positions" in error.message


def test_bow_tie_is_refused_as_self_intersecting() -> None:
    bow_tie = [[24.9, 60.1], [25.0, 60.2], [25.0, 60.1], [24.9, 60.2], [24.9, 60.1]]
    error = _refused(_polygon(bow_tie))
    assert error.field == "area.coordinates" and "Self-intersection" in error.message


def test_a_bow_tie_in_a_multipolygon_names_its_part() -> None:
    bow_tie = [[25.1, 60.1], [25.2, 60.2], [25.2, 60.1], [25.1, 60.2], [25.1, 60.1]]
    error = _refused({"type": "MultiPolygon", "coordinates": [[SQUARE], [bow_tie]]})
    assert error.field == "area.coordinates[1]" and "Self-intersection" in error.message


def test_a_hole_outside_its_shell_is_refused() -> None:
    outside = [[25.5, 60.5], [25.6, 60.5], [25.6, 60.6], [25.5, 60.5]]
    error = _refused(_polygon(SQUARE, outside))
    assert error.field == "area.coordinates" and error.code == "invalid_area"


def test_overlapping_parts_of_a_multipolygon_are_refused() -> None:
    shifted = [[x + 0.05, y] for x, y in SQUARE]
    error = _refused({"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted]]})
    assert error.field == "area.coordinates" and error.code == "invalid_area"


def test_100k_vertices_are_refused_before_they_are_read() -> None:
    turns = np.linspace(0.0, 2.0 * np.pi, 100_001)
    ring = np.column_stack([25.0 + 0.05 * np.cos(turns), 60.15 + 0.05 * np.sin(turns)]).tolist()
    ring[-1] = ring[0]
    assert len(ring) > 100_000
    ring[5] = "not even a position"  # never looked at: the count comes first
    error = _refused(_polygon(ring))
    assert (error.field, error.code) == ("area.coordinates", "too_many_vertices")
    assert f"{len(ring)} vertices" in error.message


def _equal_area_km2(ring: list[list[float]]) -> float:
    """Area of a lon/lat ring read straight in lon/lat, in a cylindrical equal-area projection."""
    to_cea = pyproj.Transformer.from_crs("EPSG:4326", "+proj=cea +ellps=WGS84", always_xy=True)
    dense = shapely.segmentize(shapely.Polygon(ring), 0.01)
    return (
        float(shapely.transform(dense, lambda xy: np.column_stack(to_cea.transform(*xy.T))).area)
        / 1e6
    )


def _km2_in(message: str) -> float:
    return float(message.split(" km²")[0].split()[-1].replace(",", ""))


def test_an_area_the_size_of_a_continent_is_refused() -> None:
    africa_box = [[-17.0, -35.0], [51.0, -35.0], [51.0, 37.0], [-17.0, 37.0], [-17.0, -35.0]]
    error = _refused(_polygon(africa_box))
    assert (error.field, error.code) == ("area", "area_too_large")
    assert _km2_in(error.message) == pytest.approx(_equal_area_km2(africa_box), rel=1e-3)


def test_a_band_across_the_antimeridian_is_read_the_long_way_and_refused() -> None:
    band = [[179.0, 0.0], [-179.0, 0.0], [-179.0, 0.1], [179.0, 0.1], [179.0, 0.0]]
    assert shapely.Polygon(band).bounds == (-179.0, 0.0, 179.0, 0.1)  # how queries read it
    error = _refused(_polygon(band))  # 358° x 0.1°, not 2° x 0.1°
    assert error.code == "area_too_large"
    assert _km2_in(error.message) == pytest.approx(_equal_area_km2(band), rel=1e-3)


def test_the_area_limit_is_the_geodesic_area() -> None:
    km2 = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(shapely.Polygon(SQUARE))[0]) / 1e6
    parse_area(_polygon(SQUARE), max_vertices=10, max_area_km2=km2 * 1.001)
    error = _refused(_polygon(SQUARE), max_area_km2=km2 * 0.999)
    assert error.code == "area_too_large"


@pytest.mark.parametrize(
    ("geojson", "field"),
    [
        (None, "area"),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", "area"),
        ([SQUARE], "area"),
        ({"type": "Point", "coordinates": [25.0, 60.1]}, "area.type"),
        ({"type": "LineString", "coordinates": SQUARE}, "area.type"),
        ({"coordinates": [SQUARE]}, "area.type"),
        ({"type": "Polygon"}, "area.coordinates"),
        ({"type": "Polygon", "coordinates": "[[0, 0]]"}, "area.coordinates"),
        ({"type": "Polygon", "coordinates": []}, "area.coordinates"),
        ({"type": "Polygon", "coordinates": [[SQUARE[0], "x", *SQUARE[1:]]]},
         "area.coordinates[0][1]"),
        ({"type": "Polygon", "coordinates": [[[25.0], *SQUARE]]}, "area.coordinates[0][0]"),
        ({"type": "MultiPolygon", "coordinates": [[SQUARE], None]}, "area.coordinates[1]"),
        ({"type": "Feature", "geometry": None}, "area.geometry"),
        ({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}},
         "area.geometry.type"),
    ],
)  # fmt: skip
def test_wrong_types_name_the_field(geojson: object, field: str) -> None:
    error = _refused(geojson)
    assert error.field == field and error.code == "invalid_area"


def test_the_vertex_limit_counts_every_position_of_every_ring() -> None:
    count = len(SQUARE) + len(HOLE)  # 9, the closing positions included
    assert parse_area(_polygon(SQUARE, HOLE), max_vertices=count, max_area_km2=5000.0)
    error = _refused(_polygon(SQUARE, HOLE), max_vertices=count - 1)
    assert error.code == "too_many_vertices" and f"{count} vertices" in error.message
