"""H3 binning of road length and coverage, and rollups to coarser resolutions.

Every edge is cut into runs of constant H3 cell: the edge is walked in steps of at most
``STEP_M`` metres along its length, each step is given the cell of its midpoint, and runs of
equal cells are merged. A run's length is therefore exact to within one step at each cell
boundary (under 1 % of a resolution-9 cell's road length), and the runs of an edge tile it
exactly: summed over cells they give the edge length to the millimetre. Covered pieces are cut
at the same run boundaries, so covered length per cell never exceeds road length per cell.
"""

from __future__ import annotations

import h3.api.numpy_int as h3int
import numpy as np
import pandas as pd
import shapely
from h3ronpy.vector import coordinates_to_cells

from pipeline.coverage.intervals import to_mm

STEP_M = 2.0


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
    lon, lat = points_along(edges.geometry.to_numpy(), edge_index, fraction)
    cells = cells_of(lon, lat, resolution)
    keys = edges["edge_id"].to_numpy(dtype="int64")[edge_index]
    new_run = np.r_[True, (keys[1:] != keys[:-1]) | (cells[1:] != cells[:-1])]
    run_id = np.cumsum(new_run) - 1
    runs = pd.DataFrame(
        {"key": keys, "from_mm": step_from, "to_mm": step_to, "cell": cells, "run": run_id}
    )
    return (
        runs.groupby("run", sort=True)
        .agg(
            key=("key", "first"),
            from_mm=("from_mm", "min"),
            to_mm=("to_mm", "max"),
            cell=("cell", "first"),
        )
        .reset_index(drop=True)
    )


def points_along(
    lines: np.ndarray, line_index: np.ndarray, fraction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions at fractions of the length of lines, vectorized over all of them.

    Parameters
    ----------
    lines
        LineStrings (lon/lat).
    line_index
        For each wanted point, the line it lies on (non-decreasing).
    fraction
        For each wanted point, its position as a fraction of the line's length (0 to 1),
        measured in locally scaled degrees (longitude times cos(latitude)), which is
        proportional to metres along a line of a few kilometres.
    """
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    scale = np.cos(np.radians(coords[:, 1]))
    step = np.hypot(np.diff(coords[:, 0]) * scale[1:], np.diff(coords[:, 1]))
    step[owner[1:] != owner[:-1]] = 0.0
    travelled = np.r_[0.0, np.cumsum(step)]
    first_vertex = np.searchsorted(owner, np.arange(len(lines)))
    start = travelled[first_vertex]
    length = np.r_[travelled[first_vertex[1:] - 1], travelled[-1]] - start
    target = start[line_index] + fraction * length[line_index]
    # the segment of the line that holds each target: never past the line's last vertex
    last_vertex = np.r_[first_vertex[1:] - 1, len(coords) - 1]
    vertex = np.searchsorted(travelled, target, side="right") - 1
    vertex = np.clip(vertex, first_vertex[line_index], last_vertex[line_index] - 1)
    span = np.maximum(travelled[vertex + 1] - travelled[vertex], 1e-15)
    t = np.clip((target - travelled[vertex]) / span, 0.0, 1.0)[:, None]
    xy = coords[vertex] * (1 - t) + coords[vertex + 1] * t
    return xy[:, 0], xy[:, 1]


def cells_of(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """H3 cells (int64) of points, vectorized with h3ronpy."""
    cells = coordinates_to_cells(np.asarray(lat, "float64"), np.asarray(lon, "float64"), resolution)
    return np.asarray(cells).astype("int64")


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
    """Hexagon (or pentagon) polygons of cells, lon/lat."""
    return np.array(
        [
            shapely.Polygon([(lng, lat) for lat, lng in h3int.cell_to_boundary(int(c))])
            for c in cells
        ],
        dtype=object,
    )
