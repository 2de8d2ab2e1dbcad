"""The area of a query: a GeoJSON (Multi)Polygon from a request body, checked field by field.

Everything in a request body is data: :func:`parse_area` walks the JSON value with plain type
checks and builds shapely geometry from numbers only. Each problem raises :class:`RequestError`
naming the JSON field that holds it, in the dotted/indexed form of the request body
(``area.coordinates[0][3]``), so that the HTTP layer can answer 422 with ``field``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from pipeline.errors import PipelineError

AREA_TYPES = ("Polygon", "MultiPolygon")
_WGS84 = pyproj.Geod(ellps="WGS84")
DENSIFY_DEG = 0.5


class RequestError(PipelineError, ValueError):
    """A request's value is unusable; the HTTP layer answers 422 ``{code, message, field}``.

    Parameters
    ----------
    code
        Stable machine-readable reason, e.g. ``"invalid_area"``.
    message
        One line: what is wrong, with the value, and the fix.
    field
        The request field holding the problem, e.g. ``"area.coordinates[0][3]"``.
    """

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def parse_area(geojson: object, *, max_vertices: int, max_area_km2: float) -> BaseGeometry:
    """Return the (Multi)Polygon of a GeoJSON Polygon, MultiPolygon or Feature of one.

    Positions are ``[lon, lat]`` (a third number, altitude, is ignored) in WGS 84 degrees.
    Rings must be closed (last position equal to the first) with at least four positions; the
    polygon must be valid in the OGC sense (no self-intersection, holes inside their shell).

    Parameters
    ----------
    geojson
        The decoded JSON value of the request's ``area``.
    max_vertices
        Most positions allowed over all rings.
    max_area_km2
        Largest geodesic area (WGS 84 ellipsoid) allowed, km².

    Returns
    -------
    shapely.geometry.base.BaseGeometry
        A valid Polygon or MultiPolygon in lon/lat.

    Raises
    ------
    RequestError
        Naming the field: wrong types, a missing member, NaN or infinite numbers, longitude or
        latitude out of range, an open or short ring, self-intersection, too many vertices,
        too large an area.
    """
    geometry, field = _geometry_member(geojson)
    kind = geometry.get("type")
    if kind not in AREA_TYPES:
        raise RequestError(
            "invalid_area",
            f"area type {_shown(kind)} is not supported; send a GeoJSON Polygon or MultiPolygon",
            f"{field}.type",
        )
    coordinates = geometry.get("coordinates")
    field = f"{field}.coordinates"
    polygons = [coordinates] if kind == "Polygon" else _list(coordinates, field, "polygons")
    prefixes = [field] if kind == "Polygon" else [f"{field}[{i}]" for i in range(len(polygons))]
    _check_vertex_count(polygons, prefixes, max_vertices)
    shapes = [_polygon(rings, prefix) for rings, prefix in zip(polygons, prefixes, strict=True)]
    area: BaseGeometry = shapes[0] if kind == "Polygon" else MultiPolygon(shapes)
    _check_valid(area, field)
    _check_area(area, max_area_km2)
    return area


def geodesic_area_km2(area: BaseGeometry) -> float:
    """Return the area of a lon/lat (Multi)Polygon on the WGS 84 ellipsoid, km².

    Edges are first cut into pieces of at most ``DENSIFY_DEG`` degrees, so that the area
    measured is that of the polygon as the queries read it (straight in lon/lat): an edge from
    179° to -179° runs the long way round, as it does for shapely, not across the antimeridian.
    """
    value, _ = _WGS84.geometry_area_perimeter(shapely.segmentize(area, DENSIFY_DEG))
    return abs(float(value)) / 1e6


def _geometry_member(geojson: object) -> tuple[dict[str, Any], str]:
    if not isinstance(geojson, dict):
        raise RequestError(
            "invalid_area",
            f"area must be a GeoJSON object, not {_kind(geojson)}; send a Polygon or MultiPolygon",
            "area",
        )
    if geojson.get("type") != "Feature":
        return geojson, "area"
    geometry = geojson.get("geometry")
    if not isinstance(geometry, dict):
        raise RequestError(
            "invalid_area",
            f"the Feature's geometry must be a GeoJSON object, not {_kind(geometry)}",
            "area.geometry",
        )
    return geometry, "area.geometry"


def _check_vertex_count(polygons: list[Any], prefixes: list[str], max_vertices: int) -> None:
    total = 0
    for rings, prefix in zip(polygons, prefixes, strict=True):
        for i, ring in enumerate(_list(rings, prefix, "rings")):
            total += len(_list(ring, f"{prefix}[{i}]", "positions"))
    if total > max_vertices:
        raise RequestError(
            "too_many_vertices",
            f"area has {total} vertices, more than the limit of {max_vertices}; simplify it",
            prefixes[0].rsplit("[", 1)[0] if len(prefixes) > 1 else prefixes[0],
        )


def _polygon(rings: Any, prefix: str) -> Polygon:
    checked = [
        _ring(ring, f"{prefix}[{i}]") for i, ring in enumerate(_list(rings, prefix, "rings"))
    ]
    if not checked:
        raise RequestError(
            "invalid_area", "a polygon needs at least its outer ring; none was sent", prefix
        )
    polygon = Polygon(checked[0], checked[1:])
    _check_valid(polygon, prefix)
    return polygon


def _ring(ring: Any, field: str) -> list[tuple[float, float]]:
    positions = [
        _position(p, f"{field}[{i}]") for i, p in enumerate(_list(ring, field, "positions"))
    ]
    if len(positions) < 4:
        raise RequestError(
            "invalid_area",
            f"a ring needs at least 4 positions (the first repeated last), it has {len(positions)}",
            field,
        )
    if positions[0] != positions[-1]:
        raise RequestError(
            "invalid_area",
            f"ring is not closed: it starts at {list(positions[0])} and ends at "
            f"{list(positions[-1])}; repeat the first position at the end",
            field,
        )
    return positions


def _position(position: Any, field: str) -> tuple[float, float]:
    if not isinstance(position, list) or len(position) not in (2, 3):
        raise RequestError(
            "invalid_area",
            f"a position must be [longitude, latitude], not {_shown(position)}",
            field,
        )
    for number in position:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise RequestError(
                "invalid_area", f"coordinate {_shown(number)} is not a number", field
            )
        if not math.isfinite(number):
            raise RequestError("invalid_area", f"coordinate {number} is not a finite number", field)
    lon, lat = float(position[0]), float(position[1])
    if not -180.0 <= lon <= 180.0:
        raise RequestError(
            "invalid_area",
            f"longitude {lon} is outside -180..180 (positions are [lon, lat])",
            field,
        )
    if not -90.0 <= lat <= 90.0:
        raise RequestError(
            "invalid_area", f"latitude {lat} is outside -90..90 (positions are [lon, lat])", field
        )
    return lon, lat


def _check_valid(area: BaseGeometry, field: str) -> None:
    if not shapely.is_valid(area):
        reason = shapely.is_valid_reason(area)
        raise RequestError(
            "invalid_area",
            f"area is not a valid polygon ({reason}); send rings that do not cross themselves "
            "or each other, holes inside their shell",
            field,
        )


def _check_area(area: BaseGeometry, max_area_km2: float) -> None:
    size = geodesic_area_km2(area)
    if size > max_area_km2:
        raise RequestError(
            "area_too_large",
            f"area is {size:,.0f} km², more than the limit of {max_area_km2:,.0f} km²; "
            "split it into smaller areas",
            "area",
        )


def _list(value: Any, field: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError("invalid_area", f"expected a list of {what}, not {_shown(value)}", field)
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: object, limit: int = 60) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__: Sequence[str] = ("RequestError", "geodesic_area_km2", "parse_area")
