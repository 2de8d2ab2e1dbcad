"""Lines in lon/lat cut to an area, measured as the pipeline measures roads.

Road lengths in roadcover are great-circle (haversine) sums over an edge's vertices
(:mod:`pipeline.geodesy`, OSMnx's convention) kept in integer millimetres. A line wholly inside
an area keeps its stored length exactly; a line crossing the boundary counts its stored length
times the share of its haversine length that lies inside. So the parts of a line inside and
outside an area add up to the line, and a region-wide polygon gives back the region's totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.geodesy import great_circle

LINESTRING = shapely.GeometryType.LINESTRING


def haversine_lengths_m(lines: np.ndarray) -> np.ndarray:
    """Return the great-circle length (m) of each LineString, summed over its vertices."""
    lines = np.asarray(lines, dtype=object)
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    if len(coords) < 2:
        return np.zeros(len(lines), dtype="float64")
    steps = great_circle(coords[:-1, 1], coords[:-1, 0], coords[1:, 1], coords[1:, 0])
    steps[owner[1:] != owner[:-1]] = 0.0
    return np.bincount(owner[1:], weights=steps, minlength=len(lines)).astype("float64")


@dataclass(frozen=True)
class Clipped:
    """The lines of an index that meet an area, and how much of each is inside.

    Attributes
    ----------
    rows
        Positions of the lines in the index.
    share
        Fraction (0-1) of each line's haversine length inside the area; exactly 1.0 for a line
        covered by the area.
    """

    rows: np.ndarray
    share: np.ndarray


@dataclass(frozen=True)
class ClipParts:
    """The pieces of lines crossing an area's boundary that lie inside it.

    Attributes
    ----------
    rows
        Position in the index of the line each part comes from.
    parts
        LineStrings, each a contiguous stretch of its line.
    start, end
        Where each part begins and ends along its line, as fractions of the line's haversine
        length (``start < end``).
    """

    rows: np.ndarray
    parts: np.ndarray
    start: np.ndarray
    end: np.ndarray


class LineIndex:
    """LineStrings with their haversine lengths and an STRtree, built once.

    Parameters
    ----------
    lines
        LineStrings in lon/lat.
    """

    def __init__(self, lines: np.ndarray) -> None:
        self.lines = np.asarray(lines, dtype=object)
        self.lengths_m = haversine_lengths_m(self.lines)
        self.tree = shapely.STRtree(self.lines)
        coords, owner = shapely.get_coordinates(self.lines, return_index=True)
        self.first_xy = coords[np.searchsorted(owner, np.arange(len(self.lines)))].reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.lines)

    def clip(self, area: BaseGeometry, candidates: np.ndarray | None = None) -> Clipped:
        """Return the lines meeting ``area`` (among ``candidates``) and their share inside.

        Parameters
        ----------
        area
            A (Multi)Polygon in lon/lat, prepared (see :func:`private_prepared`).
        candidates
            Boolean mask of the lines to consider (default all).
        """
        rows, inside, crossing = self._split(area, candidates)
        share = inside.astype("float64")
        if crossing.any():
            cut = shapely.intersection(self.lines[rows[crossing]], area)
            share[crossing] = _shares(_parts_lengths_m(cut), self.lengths_m[rows[crossing]])
        keep = share > 0.0
        return Clipped(rows=rows[keep], share=share[keep])

    def crossing_parts(self, area: BaseGeometry, rows: np.ndarray) -> ClipParts:
        """Cut the given lines (which cross the area's boundary) to the area, part by part."""
        if not len(rows):
            empty = np.zeros(0)
            return ClipParts(rows[:0], np.array([], dtype=object), empty, empty)
        cut = shapely.intersection(self.lines[rows], area)
        parts, owner = shapely.get_parts(cut, return_index=True)
        is_line = (shapely.get_type_id(parts) == LINESTRING) & ~shapely.is_empty(parts)
        parts, owner = parts[is_line], owner[is_line]
        lines = self.lines[rows[owner]]
        total = self.lengths_m[rows[owner]]
        begin = _haversine_to_m(lines, shapely.get_point(parts, 0))
        finish = _haversine_to_m(lines, shapely.get_point(parts, -1))
        start = _shares(np.minimum(begin, finish), total)
        end = _shares(np.maximum(begin, finish), total)
        keep = end > start
        return ClipParts(rows[owner][keep], parts[keep], start[keep], end[keep])

    def split(
        self, area: BaseGeometry, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the positions of lines covered by ``area`` and of lines crossing its boundary."""
        rows, inside, crossing = self._split(area, candidates)
        return rows[inside], rows[crossing]

    def _split(
        self, area: BaseGeometry, candidates: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lines meeting the area, and which of them meet its boundary (the rest are inside).

        Only lines near the boundary are tested against it (its edges are queried one by one);
        a line whose bounding box meets the area's but that meets no boundary edge lies wholly
        inside or wholly outside, which its first vertex tells.
        """
        boxed = self.tree.query(area)
        if candidates is not None:
            boxed = boxed[candidates[boxed]]
        near = np.zeros(len(self.lines), dtype=bool)
        near[self.tree.query(boundary_edges(area), predicate="intersects")[1]] = True
        crossing = near[boxed]
        away = boxed[~crossing]
        start = self.first_xy[away]
        inside = shapely.contains_xy(area, start[:, 0], start[:, 1])
        rows = np.concatenate([boxed[crossing], away[inside]])
        crossing = np.arange(len(rows)) < int(crossing.sum())
        return rows, ~crossing, crossing


def private_prepared(area: BaseGeometry) -> BaseGeometry:
    """Return a prepared copy of ``area`` that no other thread holds.

    GEOS builds parts of a prepared geometry lazily on first use, so one geometry is not
    prepared and queried by several threads at once: each query works on its own copy.
    """
    copy = shapely.from_wkb(shapely.to_wkb(area))
    shapely.prepare(copy)
    return copy


def boundary_edges(area: BaseGeometry) -> np.ndarray:
    """Return every edge (two-point LineString) of the rings of a (Multi)Polygon."""
    rings = shapely.get_parts(shapely.boundary(area))
    coords, owner = shapely.get_coordinates(rings, return_index=True)
    same_ring = owner[1:] == owner[:-1]
    pairs = np.stack([coords[:-1][same_ring], coords[1:][same_ring]], axis=1)
    return np.asarray(shapely.linestrings(pairs), dtype=object)


def _parts_lengths_m(geometries: np.ndarray) -> np.ndarray:
    """Haversine length of each geometry's LineString parts (a MultiLineString's gaps excluded)."""
    parts, owner = shapely.get_parts(geometries, return_index=True)
    lengths = haversine_lengths_m(parts)
    lengths[shapely.get_type_id(parts) != LINESTRING] = 0.0
    return np.bincount(owner, weights=lengths, minlength=len(geometries)).astype("float64")


def _haversine_to_m(lines: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Haversine length of each line from its start to the point (on it) closest to ``points``.

    The point is located on the line (planar), then measured as the haversine length of the
    line's vertices before it plus the great-circle step from the last of them to the point.
    """
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    first = np.searchsorted(owner, np.arange(len(lines)))
    planar = np.zeros(len(coords))
    planar[1:] = np.hypot(np.diff(coords[:, 0]), np.diff(coords[:, 1]))
    steps = np.zeros(len(coords))
    steps[1:] = great_circle(coords[:-1, 1], coords[:-1, 0], coords[1:, 1], coords[1:, 0])
    planar[first] = steps[first] = 0.0
    along, walked = np.cumsum(planar), np.cumsum(steps)
    along -= along[first][owner]
    walked -= walked[first][owner]
    target = shapely.line_locate_point(lines, points)  # planar distance along the line
    # the last vertex at or before the point: search (line, distance) pairs made monotone
    stride = float(along.max(initial=0.0)) * 2.0 + 1.0
    before = (
        np.searchsorted(owner * stride + along, np.arange(len(lines)) * stride + target, "right")
        - 1
    )
    before = np.maximum(before, first)
    at = shapely.get_coordinates(shapely.line_interpolate_point(lines, target))
    tail = great_circle(coords[before, 1], coords[before, 0], at[:, 1], at[:, 0])
    return np.asarray(walked[before] + tail, dtype="float64")


def _shares(part_m: np.ndarray, total_m: np.ndarray) -> np.ndarray:
    share = np.divide(part_m, total_m, out=np.zeros(len(part_m)), where=total_m > 0)
    return np.clip(share, 0.0, 1.0)
