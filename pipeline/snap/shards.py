"""Match a batch on a sharded region: each trip on the shard graph(s) it touches.

A trip's fixes fall in H3 cells at the shards' resolution; the shards of those cells are the
trip's shards, and for a fix in a cell without a shard (no road's sample falls in it) every
shard within ``roads.shard_buffer_m`` plus half a sample spacing (an eighth of an edge
length, :func:`pipeline.roads.shards.sample_spacing_m`) of that cell. A trip inside one shard
is matched on that shard's roads folder; a trip across shards on the union of their graphs.
Each match task builds (or loads) its network on its worker (:func:`shard_network`); a
union's is cached in ``ROADS/shard-networks/``, across batches and runs.

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
import json
import logging
import os
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.contracts import POINTS
from pipeline.geodesy import cells_of
from pipeline.io import memoized_sha256, read_arrow, write_json
from pipeline.locking import DEFAULT_TIMEOUT_S, LOCK_FILE, LockTimeoutError, folder_lock
from pipeline.roads.shards import (
    SHARDS_DIR,
    cell_int,
    cells_within,
    read_plan,
    sample_spacing_m,
)
from pipeline.roads.store import EDGES_FILE, read_edges
from pipeline.snap.network import (
    MATCH_NETWORK_FILE,
    MatchNetwork,
    cached_match_network,
    prepare_match_network,
)

log = logging.getLogger(__name__)

NETWORKS_DIR = "shard-networks"
EVICTIONS_FILE = "evictions.json"
"""In a union's folder: when its network was emptied (``evicted``) and built again
(``rebuilt``), as lists of Unix times; kept when the folder is emptied."""
KEPT_WHEN_EMPTIED = (LOCK_FILE, EVICTIONS_FILE)
"""What an emptied network folder keeps (and what its size leaves out)."""


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


def shard_network(
    roads_dir: Path,
    shards: tuple[str, ...],
    cache_mb: float,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> MatchNetwork:
    """Return the match network of a shard, or of the union of several shards' roads.

    Called by each match task, on its worker, so the networks a batch needs are built in
    parallel. A shard's network is cached in its own folder (``match_network.npz``); a union's
    in ``ROADS/shard-networks/<hash of the cells>/``, kept across batches and runs, and rebuilt
    when the sha256 of a shard's edges changed (:func:`pipeline.io.memoized_sha256`). Each
    network is built under the lock of its folder in ``shard-networks`` (one per set of
    cells), so two tasks asking for the same one at once build it once: the second waits and
    loads it. After a union is used, the least recently used others are emptied until all
    together take at most ``cache_mb`` (:func:`evict_networks`); a union built again after
    that is logged and recorded (:func:`rebuilds_since`).

    Parameters
    ----------
    roads_dir
        A sharded roads folder.
    shards
        The sorted cells (hex) of the shards, as :func:`trip_shards` gives them.
    cache_mb
        The disk the unions' networks may take together (config
        ``snap.shard_network_cache_mb``).
    lock_timeout_s
        How long to wait for another process building the same network.
    """
    networks = roads_dir / NETWORKS_DIR
    folder = networks / hashlib.blake2b(",".join(shards).encode(), digest_size=8).hexdigest()
    with folder_lock(folder, lock_timeout_s):
        if len(shards) == 1:
            return prepare_match_network(roads_dir / SHARDS_DIR / shards[0])
        identity = {
            cell: memoized_sha256(roads_dir / SHARDS_DIR / cell / EDGES_FILE) for cell in shards
        }
        emptied = _was_emptied(folder)
        net = cached_match_network(
            folder / MATCH_NETWORK_FILE, {"union_of_shards": identity},
            lambda: union_edges(roads_dir, shards),
        )  # fmt: skip
        if emptied:
            _record(folder, "rebuilt")
            log.warning(
                "%s: built again, emptied earlier to keep the unions under "
                "snap.shard_network_cache_mb (%g MB): raise it", folder, cache_mb,
            )  # fmt: skip
    evict_networks(networks, cache_mb, keep=folder)
    return net


def union_edges(roads_dir: Path, shards: tuple[str, ...]) -> gpd.GeoDataFrame:
    """Return the edges of every one of the shards, each edge once, in ``u, v, key`` order."""
    folders = [roads_dir / SHARDS_DIR / cell for cell in shards]
    parts = [read_edges(folder) for folder in folders]
    edges = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)
    return edges.drop_duplicates("edge_id").sort_values(["u", "v", "key"], ignore_index=True)


def evict_networks(networks: Path, cache_mb: float, keep: Path) -> list[Path]:
    """Empty the least recently used network folders until all take at most ``cache_mb``.

    A folder's last use is the time its lock was last taken (the holder is written into the
    lock file then). A folder whose lock another process holds is left alone; an emptied one
    keeps its lock file, so a process waiting for it never builds in a folder being removed,
    and its evictions record (:data:`EVICTIONS_FILE`), so that building it again is counted
    (:func:`rebuilds_since`).
    ``keep`` (the folder just used) is never emptied.

    Returns
    -------
    list of Path
        The folders emptied, oldest first.
    """
    used = {folder: _folder_bytes(folder) for folder in networks.iterdir() if folder.is_dir()}
    excess = sum(used.values()) - cache_mb * 2**20
    emptied = []
    for folder in sorted(used, key=lambda f: (_stat(f / LOCK_FILE).st_mtime_ns, f.name)):
        if excess <= 0:
            break
        if folder == keep or used[folder] == 0:
            continue
        try:
            with folder_lock(folder, timeout_s=0):
                for path in folder.iterdir():
                    if path.name not in KEPT_WHEN_EMPTIED:
                        path.unlink()
                _record(folder, "evicted")
        except LockTimeoutError:
            continue  # in use
        excess -= used[folder]
        emptied.append(folder)
        log.info("%s: emptied, the least recently used shard network over %g MB", folder, cache_mb)
    return emptied


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files in a network folder but its lock file and evictions record."""
    return sum(
        _stat(path).st_size for path in folder.iterdir() if path.name not in KEPT_WHEN_EMPTIED
    )


def rebuilds_since(networks: Path, since: float) -> int:
    """Return how many unions were built again after being emptied, from ``since`` (Unix s) on.

    A union emptied by :func:`evict_networks` and needed again is built again; a count above 0
    in one batch means ``snap.shard_network_cache_mb`` is smaller than the unions it needs.
    """
    records = (_evictions(path.parent) for path in networks.glob(f"*/{EVICTIONS_FILE}"))
    return sum(t >= since for record in records for t in record.get("rebuilt", []))


def _was_emptied(folder: Path) -> bool:
    """Whether the folder's network was emptied and not built since (under its lock)."""
    record = _evictions(folder)
    emptied = len(record.get("evicted", [])) > len(record.get("rebuilt", []))
    return emptied and not (folder / MATCH_NETWORK_FILE).exists()


def _evictions(folder: Path) -> dict[str, list[float]]:
    """Return the folder's evictions record; {} when it has none (or it is unreadable)."""
    try:
        record = json.loads((folder / EVICTIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _record(folder: Path, event: str) -> None:
    """Add now to the folder's ``event`` times (``evicted`` or ``rebuilt``; under its lock)."""
    record = _evictions(folder)
    record[event] = [*record.get(event, []), time.time()]
    write_json(record, folder / EVICTIONS_FILE)


def _stat(path: Path) -> os.stat_result:
    """Return the file's status, all zeros if it is gone or not there yet.

    Another process may remove a network's files, or make a folder before its lock file.
    """
    try:
        return path.stat()
    except FileNotFoundError:
        return os.stat_result((0,) * 10)


def group_trips(
    trip_files: pd.DataFrame, roads_dir: Path
) -> list[tuple[tuple[str, ...], pd.DataFrame]]:
    """Split a batch's trips by the shards each is matched on: ``(shard cells, trips)``.

    Groups are in the order of their first trip (by file, then trip id).
    """
    shards = trip_shards(trip_files, roads_dir)
    with_shards = trip_files.assign(shards=trip_files["trip_id"].map(shards))
    with_shards = with_shards.sort_values(["file", "trip_id"], ignore_index=True)
    groups = []
    for key in pd.unique(with_shards["shards"]):
        trips = with_shards[np.array([s == key for s in with_shards["shards"]])]
        groups.append((key, trips[["trip_id", "file"]]))
    return groups
