"""H3 binning of road length and coverage, and rollups to coarser resolutions.

Every edge is cut into runs of constant H3 cell: the edge is walked in steps of at most
``STEP_M`` metres along its length, each step is given the cell of its midpoint, and runs of
equal cells are merged (only the cells that can differ from their neighbours' are looked up:
see :func:`step_cells`). A run's length is therefore exact to within one step at each cell
boundary (under 1 % of a resolution-9 cell's road length), and the runs of an edge tile it
exactly: summed over cells they give the edge length to the millimetre. Covered pieces are cut
at the same run boundaries, so covered length per cell never exceeds road length per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import h3.api.numpy_int as h3int
import numpy as np
import pandas as pd
import shapely

from pipeline.coverage.intervals import to_mm
from pipeline.geodesy import cells_of

STEP_M = 2.0
SAMPLE_EVERY = 8  # steps between the points whose cell is looked up first


def edge_cell_runs(edges: pd.DataFrame, resolution: int) -> pd.DataFrame:
    """Return the runs ``key`` (edge_id), ``from_mm``, ``to_mm``, ``cell`` of every edge."""
    length_mm = to_mm(edges["length_m"])
    steps = np.maximum(np.ceil(length_mm / (STEP_M * 1000.0)).astype("int64"), 1)
    edge_index = np.repeat(np.arange(len(edges)), steps)
    rank = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    lengths = length_mm[edge_index]
    step_from = (rank * lengths) // steps[edge_index]
    step_to = ((rank + 1) * lengths) // steps[edge_index]
    fraction = (rank + 0.5) / steps[edge_index]
    cells = step_cells(edges.geometry.to_numpy(), edge_index, rank, fraction, resolution)
    keys = edges["edge_id"].to_numpy(dtype="int64")[edge_index]
    # steps are in edge order and along each edge: a run is a stretch of equal (key, cell)
    change = (keys[1:] != keys[:-1]) | (cells[1:] != cells[:-1])
    starts = np.flatnonzero(np.r_[len(keys) > 0, change])
    ends = np.r_[starts[1:], len(keys)][: len(starts)] - 1  # (no edges: no runs)
    return pd.DataFrame(
        {
            "key": keys[starts],
            "from_mm": step_from[starts],
            "to_mm": step_to[ends],
            "cell": cells[starts],
        }
    )


def step_cells(
    lines: np.ndarray,
    line_index: np.ndarray,
    rank: np.ndarray,
    fraction: np.ndarray,
    resolution: int,
) -> np.ndarray:
    """H3 cells of the step midpoints along lines, looking up only the cells that can differ.

    The cells of every ``SAMPLE_EVERY``-th step, of each line's last step and of the lines'
    vertices are looked up first. Between two consecutive samples the line is a chain of
    straight pieces through the vertices that lie between them; when both samples and all
    those vertices are in the same cell, so is every step between them, because an H3 cell is
    convex. Only the other steps are looked up one by one. The result is the cell of every
    step's midpoint, exactly as if each had been looked up, at a fraction of the cost.

    Parameters
    ----------
    lines
        LineStrings (lon/lat).
    line_index
        For each step, the line it lies on (non-decreasing; each line's steps in order).
    rank
        For each step, its number along its line (0, 1, ...).
    fraction
        For each step, the position of its midpoint as a fraction of the line's length.
    resolution
        H3 resolution.
    """
    if not len(rank):
        return np.empty(0, dtype="int64")
    polylines = Polylines.of(lines)
    last = np.r_[line_index[1:] != line_index[:-1], True]
    sampled = (rank % SAMPLE_EVERY == 0) | last
    samples = np.flatnonzero(sampled)
    lon, lat, segment = polylines.points_at(line_index[samples], fraction[samples])
    sample_cells = cells_of(lon, lat, resolution)
    cells = np.empty(len(rank), dtype="int64")
    cells[samples] = sample_cells
    # every step that is not a sample lies between sample ``before`` and sample ``before + 1``
    # of its own line (each line's first and last steps are samples)
    between = np.flatnonzero(~sampled)
    before = np.cumsum(sampled)[between] - 1
    cell = sample_cells[before]
    vertex_cells = cells_of(polylines.coords[:, 0], polylines.coords[:, 1], resolution)
    settled = (cell == sample_cells[before + 1]) & _vertices_in_cell(
        vertex_cells, segment[before] + 1, segment[before + 1], cell
    )
    cells[between[settled]] = cell[settled]
    unsettled = between[~settled]
    lon, lat, _ = polylines.points_at(line_index[unsettled], fraction[unsettled])
    cells[unsettled] = cells_of(lon, lat, resolution)
    return cells


def _vertices_in_cell(
    vertex_cells: np.ndarray, first: np.ndarray, last: np.ndarray, cell: np.ndarray
) -> np.ndarray:
    """Whether the vertices ``first..last`` (global indices; none when last < first) are in cell."""
    # changes[i]: how many times the cell changes from vertex 0 up to vertex i
    changes = np.r_[0, np.cumsum(vertex_cells[1:] != vertex_cells[:-1])]
    empty = last < first
    first = np.minimum(first, last)
    same = (changes[last] == changes[first]) & (vertex_cells[first] == cell)
    return empty | same


def points_along(
    lines: np.ndarray, line_index: np.ndarray, fraction: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions at fractions of the length of lines: :meth:`Polylines.points_at`."""
    return Polylines.of(lines).points_at(line_index, fraction)


@dataclass(frozen=True)
class Polylines:
    """The vertices of many lines and the distance travelled along them, measured once.

    Distances are in locally scaled degrees (longitude times cos(latitude)), which is
    proportional to metres along a line of a few kilometres.
    """

    coords: np.ndarray
    travelled: np.ndarray
    first_vertex: np.ndarray
    last_vertex: np.ndarray

    @classmethod
    def of(cls, lines: np.ndarray) -> Polylines:
        """Measure LineStrings (lon/lat)."""
        coords, owner = shapely.get_coordinates(lines, return_index=True)
        scale = np.cos(np.radians(coords[:, 1]))
        step = np.hypot(np.diff(coords[:, 0]) * scale[1:], np.diff(coords[:, 1]))
        step[owner[1:] != owner[:-1]] = 0.0
        first_vertex = np.searchsorted(owner, np.arange(len(lines)))
        last_vertex = np.r_[first_vertex[1:] - 1, len(coords) - 1]
        return cls(coords, np.r_[0.0, np.cumsum(step)], first_vertex, last_vertex)

    def points_at(
        self, line_index: np.ndarray, fraction: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions at fractions of the length of lines, vectorized over all of them.

        Parameters
        ----------
        line_index
            For each wanted point, the line it lies on (non-decreasing).
        fraction
            For each wanted point, its position as a fraction of the line's length (0 to 1).

        Returns
        -------
        lon, lat, segment
            The points, and the segment of its line that holds each (the index of the
            segment's first vertex among the vertices of all the lines).
        """
        travelled = self.travelled
        start = travelled[self.first_vertex]
        length = travelled[self.last_vertex] - start
        target = start[line_index] + fraction * length[line_index]
        # the segment of the line that holds each target: never past the line's last vertex
        vertex = np.searchsorted(travelled, target, side="right") - 1
        vertex = np.clip(vertex, self.first_vertex[line_index], self.last_vertex[line_index] - 1)
        span = np.maximum(travelled[vertex + 1] - travelled[vertex], 1e-15)
        t = np.clip((target - travelled[vertex]) / span, 0.0, 1.0)[:, None]
        xy = self.coords[vertex] * (1 - t) + self.coords[vertex + 1] * t
        return xy[:, 0], xy[:, 1], vertex


def parent_cells(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Parents (int64) of cells at a coarser resolution, computed once per distinct cell."""
    uniques, inverse = np.unique(cells, return_inverse=True)
    parents = np.fromiter(
        (h3int.cell_to_parent(int(c), resolution) for c in uniques),
        dtype="uint64",
        count=len(uniques),
    ).astype("int64")
    return parents[inverse]


def cell_polygons(cells: np.ndarray) -> np.ndarray:
    """Hexagon (or pentagon) polygons of cells, lon/lat (shapely, made in one call)."""
    boundaries = [h3int.cell_to_boundary(int(cell)) for cell in cells]
    if not boundaries:
        return np.empty(0, dtype=object)
    counts = np.fromiter(map(len, boundaries), dtype="int64", count=len(boundaries))
    lat_lng = np.array(list(chain.from_iterable(boundaries)), dtype="float64")
    rings = shapely.linearrings(
        lat_lng[:, ::-1], indices=np.repeat(np.arange(len(boundaries)), counts)
    )
    return np.asarray(shapely.polygons(rings), dtype=object)
