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

    def __len__(self) -> int:
        return len(self.lines)

    def clip(self, area: BaseGeometry, candidates: np.ndarray | None = None) -> Clipped:
        """Return the lines meeting ``area`` (among ``candidates``) and their share inside.

        Parameters
        ----------
        area
            A (Multi)Polygon in lon/lat; it is prepared in place for repeated predicates.
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
        shapely.prepare(area)
        rows = np.sort(self.tree.query(area, predicate="intersects"))
        if candidates is not None:
            rows = rows[candidates[rows]]
        inside = shapely.covered_by(self.lines[rows], area)
        return rows, inside, ~inside


def _parts_lengths_m(geometries: np.ndarray) -> np.ndarray:
    """Haversine length of each geometry's LineString parts (a MultiLineString's gaps excluded)."""
    parts, owner = shapely.get_parts(geometries, return_index=True)
    lengths = haversine_lengths_m(parts)
    lengths[shapely.get_type_id(parts) != LINESTRING] = 0.0
    return np.bincount(owner, weights=lengths, minlength=len(geometries)).astype("float64")


def _haversine_to_m(lines: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Haversine length of each line from its start to the point (on it) closest to ``points``."""
    where = shapely.line_locate_point(lines, points, normalized=True)
    heads = shapely.line_interpolate_point(lines, where, normalized=True)
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    planar = np.hypot(np.diff(coords[:, 0]), np.diff(coords[:, 1]))
    planar[owner[1:] != owner[:-1]] = 0.0
    along = np.concatenate([[0.0], np.cumsum(planar)])
    first = np.searchsorted(owner, np.arange(len(lines)))
    along -= along[first][owner]
    steps = np.zeros(len(coords))
    steps[1:] = great_circle(coords[:-1, 1], coords[:-1, 0], coords[1:, 1], coords[1:, 0])
    steps[1:][owner[1:] != owner[:-1]] = 0.0
    cumulative = np.cumsum(steps)
    cumulative -= cumulative[first][owner]
    target = where * np.asarray(shapely.length(lines))
    # the last vertex of each line at or before the located point
    before = np.array(
        [
            first[i] + max(int(np.searchsorted(along[first[i] : end], target[i], "right")) - 1, 0)
            for i, end in enumerate(np.r_[first[1:], len(coords)])
        ],
        dtype="int64",
    )
    head_xy = shapely.get_coordinates(heads)
    tail = great_circle(coords[before, 1], coords[before, 0], head_xy[:, 1], head_xy[:, 0])
    return np.asarray(cumulative[before] + tail, dtype="float64")


def _shares(part_m: np.ndarray, total_m: np.ndarray) -> np.ndarray:
    share = np.divide(part_m, total_m, out=np.zeros(len(part_m)), where=total_m > 0)
    return np.clip(share, 0.0, 1.0)
