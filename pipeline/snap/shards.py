"""Match a batch on a sharded region: each trip on the shard graph(s) it touches.

A trip's fixes fall in H3 cells at the shards' resolution; the shards of those cells are the
trip's shards, and for a fix in a cell without a shard (no road's sample falls in it) every
shard within ``roads.shard_buffer_m`` plus half a sample spacing (an eighth of an edge
length, :func:`pipeline.roads.shards.sample_spacing_m`) of that cell. A trip inside one shard
is matched on that shard's roads folder; a trip across shards on the union of their graphs,
written once per set of shards into the run's staging folder.

Why a trip sees the roads an unsharded match sees. Every edge of a shard is an edge of the
unsharded graph with its global id (:mod:`pipeline.roads.shards`), and a shard holds every
way that passes within ``buffer_m`` of its hexagon. A fix's candidates lie within
``snap.max_search_radius_m`` (``r``) of it: for a fix in a shard's cell, within ``r`` of that
hexagon, so in the shard when ``r <= buffer_m``. For a fix in a cell without a shard, a
candidate's way passes through the cell of one of its own samples at most ``r`` plus half a
sample spacing from the fix, a shard of the trip, so that shard holds it. A route between
two candidates of length ``L`` stays within ``r + L / 2`` of a fix, so the shortest routes
the matcher compares are in the trip's shards when ``r + L / 2 <= buffer_m``: with the
defaults (``r`` 400 m, 1,000 m), routes up to 1,200 m, far more than a 1 Hz trace's fixes
are apart. Segments on edges owned elsewhere keep their global ids: they are the owner's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.contracts import POINTS
from pipeline.geodesy import cells_of
from pipeline.io import read_arrow
from pipeline.roads.shards import (
    SHARDS_DIR,
    cell_int,
    cells_within,
    read_plan,
    sample_spacing_m,
)
from pipeline.roads.store import read_edges, read_nodes, read_roads_meta, write_roads

NETWORKS_DIR = "shard-networks"


def trip_shards(trip_files: pd.DataFrame, roads_dir: Path) -> pd.Series:
    """Return, per trip (indexed by ``trip_id``), the sorted tuple of its shard cells (hex).

    Parameters
    ----------
    trip_files
        ``trip_id`` and ``file`` (the partition holding its fixes), as
        :func:`pipeline.snap.stage.batch_trip_files` gives them.
    roads_dir
        A sharded roads folder.
    """
    plan = read_plan(roads_dir)
    shard_of = {cell_int(c): c for c in plan["cells"]}
    parts = []
    for file, group in trip_files.groupby("file", sort=True):
        ids = group["trip_id"].tolist()
        fixes = read_arrow(Path(str(file)), POINTS, columns=["trip_id", "lon", "lat"],
                           filters=[("trip_id", "in", ids)]).to_pandas()  # fmt: skip
        cells = cells_of(fixes["lon"].to_numpy(), fixes["lat"].to_numpy(), plan["resolution"])
        # each file's distinct (trip, cell) pairs only: a batch's fixes are never held at once
        parts.append(pd.DataFrame({"trip_id": fixes["trip_id"], "cell": cells}).drop_duplicates())
    pairs = pd.concat(parts, ignore_index=True).drop_duplicates()
    reach = float(plan["buffer_m"]) + sample_spacing_m(plan["resolution"]) / 2
    shards = np.sort(np.fromiter(shard_of, "int64", len(shard_of)))
    near = {
        cell: _shards_near(int(cell), shard_of, shards, reach, plan["resolution"])
        for cell in pairs["cell"].unique()
    }
    found: dict[str, set[str]] = {}
    for trip, cell in zip(pairs["trip_id"].tolist(), pairs["cell"].tolist(), strict=True):
        found.setdefault(trip, set()).update(near[cell])
    default = (plan["cells"][0],)  # a trip far from every road: unmatched on any shard
    trips = trip_files["trip_id"].unique()
    return pd.Series([tuple(sorted(found.get(t) or default)) for t in trips], index=trips)


def _shards_near(
    cell: int, shard_of: dict[int, str], shards: np.ndarray, reach_m: float, resolution: int
) -> list[str]:
    """Return the shard of ``cell``, or, for a cell without one, the shards within ``reach_m``."""
    if cell in shard_of:
        return [shard_of[cell]]
    return [shard_of[c] for c in cells_within(cell, reach_m, resolution, among=shards).tolist()]


def network_folder(roads_dir: Path, shards: tuple[str, ...], staging: Path) -> Path:
    """Return the roads folder to match on: the shard's own, or the union of several shards.

    A union is written into ``staging`` once per set of shards (its name is a hash of the
    cells): the edges of every shard, each edge once, and their nodes.
    """
    if len(shards) == 1:
        return roads_dir / SHARDS_DIR / shards[0]
    name = hashlib.blake2b(",".join(shards).encode(), digest_size=8).hexdigest()
    folder = staging / NETWORKS_DIR / name
    if (folder / "meta.json").exists():
        return folder
    folders = [roads_dir / SHARDS_DIR / cell for cell in shards]
    edges = _concat([read_edges(f) for f in folders]).drop_duplicates("edge_id")
    nodes = _concat([read_nodes(f) for f in folders]).drop_duplicates("node_id")
    edges = edges.sort_values(["u", "v", "key"], ignore_index=True)
    nodes = nodes.sort_values("node_id", ignore_index=True)
    write_roads(folder, None, edges, nodes, _union_meta(roads_dir, shards, edges))
    return folder


def _concat(parts: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)


def _union_meta(
    roads_dir: Path, shards: tuple[str, ...], edges: gpd.GeoDataFrame
) -> dict[str, Any]:
    region = read_roads_meta(roads_dir)
    return {
        "source_sha256": region["source_sha256"],
        "edge_count": len(edges),
        "bbox": [round(float(v), 7) for v in edges.total_bounds],
        "union_of_shards": list(shards),
    }


def group_trips(
    trip_files: pd.DataFrame, roads_dir: Path, staging: Path
) -> list[tuple[Path, pd.DataFrame]]:
    """Split a batch's trips by the network each is matched on: ``(roads folder, trips)``.

    Groups are in the order of their first trip (by file, then trip id).
    """
    shards = trip_shards(trip_files, roads_dir)
    with_shards = trip_files.assign(shards=trip_files["trip_id"].map(shards))
    with_shards = with_shards.sort_values(["file", "trip_id"], ignore_index=True)
    groups = []
    for key in pd.unique(with_shards["shards"]):
        trips = with_shards[np.array([s == key for s in with_shards["shards"]])]
        groups.append((network_folder(roads_dir, key, staging), trips[["trip_id", "file"]]))
    return groups
