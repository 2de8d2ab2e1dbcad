"""Build a sharded roads folder: cut the extract, build each shard, merge the owned edges.

``build_sharded_roads`` does the three steps in one process (``roadcover roads build EXTRACT
--shard-resolution N -o OUT``); the workflow runs them as separate jobs (``roadcover roads
cut``, ``roadcover roads build-shard`` per cell, ``roadcover roads merge``), so that each
shard's graph is built in a job of its own size. See :mod:`pipeline.roads.shards` for how a
shard is cut and which edges it owns.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contracts import EDGES, NODES, check_contract_metadata, validate_table
from pipeline.errors import InputDataError
from pipeline.io import (
    COVERING_BBOX_COLUMN,
    ROW_GROUP_ROWS,
    STAGING_DIR,
    RowGroupWriter,
    atomic_path,
    write_json,
)
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads.build import road_length_km, roads_meta, source_meta
from pipeline.roads.graph import build_road_graph, edge_table, node_table
from pipeline.roads.highways import highway_filter_for
from pipeline.roads.osm import RoadWays, read_road_ways
from pipeline.roads.shards import (
    CORE_WAYS_FILE,
    DEFAULT_BUFFER_M,
    DEFAULT_MAX_JOB_MEM_MB,
    OWNERS_FILE,
    PLAN_FILE,
    SHARD_EXTRACT_FILE,
    SHARDS_DIR,
    cell_int,
    cut_extract,
    owner_cells,
    read_owners,
    read_plan,
    write_owners,
)
from pipeline.roads.store import (
    EDGES_FILE,
    META_FILE,
    NODES_FILE,
    read_roads_meta,
    write_roads,
)
from pipeline.storage import is_url, join

if TYPE_CHECKING:
    from pipeline.storage import Staging

log = logging.getLogger(__name__)

MAX_BUCKETS = 512
"""At most this many buckets (two spill files each) in a merge, whatever ``bucket_rows``."""
_CONTRACTS = {EDGES_FILE: EDGES, NODES_FILE: NODES}
REGION_FILES = (EDGES_FILE, NODES_FILE, META_FILE)
"""The files of a sharded region's roads folder that the merge writes."""
SHARD_TABLES = (META_FILE, EDGES_FILE, NODES_FILE)
"""The files of a shard's folder that matching reads."""
SIMULATED_SHARD_FILES = (*SHARD_TABLES, OWNERS_FILE)
"""The files of a shard's folder that the fleet simulator reads."""
MERGE_INPUTS = (
    f"{SHARDS_DIR}/{PLAN_FILE}",
    *(f"{SHARDS_DIR}/*/{name}" for name in (*SHARD_TABLES, OWNERS_FILE)),
)
"""The files of a sharded region's roads folder that the merge reads."""


def build_sharded_roads(
    osm_path: str | Path,
    roads_dir: str | Path,
    resolution: int | str,
    network: str = "drive",
    highway_include: tuple[str, ...] | None = None,
    buffer_m: float = DEFAULT_BUFFER_M,
    max_job_mem_mb: float = DEFAULT_MAX_JOB_MEM_MB,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Build the roads folder of an extract in shards of H3 cells at ``resolution``.

    Parameters
    ----------
    osm_path
        A ``.osm``, ``.osm.gz``, ``.osm.bz2`` or ``.osm.pbf`` file.
    roads_dir
        Output folder: the region's roads folder, with ``shards/<cell>/`` beneath.
    resolution
        H3 resolution 0-15 of the shards, or ``"auto"``.
    network, highway_include
        As for :func:`~pipeline.roads.build.build_roads`.
    buffer_m
        How far around its cell a shard's roads reach (at least 1 grid step).
    max_job_mem_mb
        The memory bound per job that ``auto`` chooses the resolution for.
    lock_timeout_s
        How long to wait for another process writing a folder.

    Returns
    -------
    dict
        The region's ``meta.json``.
    """
    osm_path, roads_dir = Path(osm_path), Path(roads_dir)
    plan = cut_extract(osm_path, roads_dir, resolution, network, highway_include, buffer_m,
                       max_job_mem_mb, lock_timeout_s)  # fmt: skip
    for cell in plan["cells"]:
        build_shard(roads_dir, cell, lock_timeout_s)
    return merge_shards(roads_dir, lock_timeout_s)


def stage_shard(staging: Staging, roads_dir: str | Path, cell: str) -> Path:
    """Return the local roads folder in which to build shard ``cell`` of ``roads_dir``.

    ``roads_dir`` itself if it is a path. Of a URL, the plan and the shard's folder (its
    extract and core ways) are downloaded, and the shard's folder is an output of ``staging``:
    locked, and published when the build succeeds. Nothing else of the region is read.
    """
    if not is_url(roads_dir):
        return Path(roads_dir)
    local = staging.input_file(join(str(roads_dir), SHARDS_DIR, PLAN_FILE)).parent.parent
    if cell in read_plan(local)["cells"]:  # else build_shard refuses it
        staging.output_folder(join(str(roads_dir), SHARDS_DIR, cell), keep_existing=True)
    return local


def stage_merge(staging: Staging, roads_dir: str | Path) -> Path:
    """Return the local roads folder in which to merge the shards of ``roads_dir``.

    ``roads_dir`` itself if it is a path. Of a URL, the region's tables and ``meta.json`` are
    an output of ``staging`` (locked, and published when the merge succeeds; the shards'
    objects are left as they are), and the files the merge reads are downloaded (the plan,
    and each shard's tables, owners and ``meta.json``; not the extracts).
    """
    if not is_url(roads_dir):
        return Path(roads_dir)
    local = staging.output_folder(roads_dir, keep_existing=False, include=REGION_FILES)
    staging.input_folder(roads_dir, include=MERGE_INPUTS)
    return local


def stage_match_roads(
    staging: Staging, roads_dir: str | Path, traces_dir: Path, batch_id: str | None
) -> Path:
    """Return the local roads folder on which to match a batch (``roadcover snap``).

    ``roads_dir`` itself if it is a path. Of a URL, its objects are downloaded; of a sharded
    region's, only what matching reads: the region's ``meta.json`` and ``edges.parquet`` (its
    identity, hashed), the plan, and the tables of the shards that the batch's trips are
    matched on (:func:`pipeline.snap.shards.trip_shards`), not every shard of the region.
    """
    if not is_url(roads_dir):
        return Path(roads_dir)
    local = staging.input_folder(roads_dir, include=(META_FILE, f"{SHARDS_DIR}/{PLAN_FILE}"))
    if "shards" not in read_roads_meta(local):
        return staging.input_folder(roads_dir)  # unsharded: the whole folder
    from pipeline.snap.shards import trip_shards
    from pipeline.snap.stage import batch_trip_files

    needed = [EDGES_FILE]
    trip_files = pd.DataFrame(batch_trip_files(traces_dir, batch_id))
    if len(trip_files):
        cells = sorted({cell for cells in trip_shards(trip_files, local) for cell in cells})
        needed += [f"{SHARDS_DIR}/{cell}/{name}" for cell in cells for name in SHARD_TABLES]
    staging.input_folder(roads_dir, include=needed)
    return local


def stage_simulate_roads(staging: Staging, roads_dir: str | Path) -> Path:
    """Return the local roads folder on which to simulate a fleet (``roadcover simulate``).

    ``roads_dir`` itself if it is a path. Of a URL, its objects are downloaded; of a sharded
    region's, only what the simulator reads: the region's ``meta.json`` and every shard's
    tables, ``meta.json`` and owners, not the region's tables nor the shards' extracts.
    """
    if not is_url(roads_dir):
        return Path(roads_dir)
    local = staging.input_folder(roads_dir, include=(META_FILE,))
    if "shards" not in read_roads_meta(local):
        return staging.input_folder(roads_dir)  # unsharded: the whole folder
    needed = [f"{SHARDS_DIR}/*/{name}" for name in SIMULATED_SHARD_FILES]
    staging.input_folder(roads_dir, include=needed)
    return local


def build_shard(
    roads_dir: str | Path, cell: str, lock_timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """Build the roads folder ``shards/<cell>`` of a cut region from its extract.

    The graph is built from the shard's complete ways; the edges of its ring ways (there only
    so that the core ways' nodes see all their roads) are dropped, and every edge left gets its
    owner (``owners.parquet``).

    Returns
    -------
    dict
        The shard's ``meta.json``.

    Raises
    ------
    InputDataError
        If ``cell`` is not a shard of the region's plan.
    """
    roads_dir = Path(roads_dir)
    plan = read_plan(roads_dir)
    if cell not in plan["cells"]:
        raise InputDataError(
            f"{roads_dir}: {cell!r} is not one of its {len(plan['cells'])} shard cell(s); "
            f"see {roads_dir / SHARDS_DIR / 'plan.json'}"
        )
    shard_dir = roads_dir / SHARDS_DIR / cell
    extract = shard_dir / SHARD_EXTRACT_FILE
    highway_include = plan["highway_include"]
    include = tuple(highway_include) if highway_include is not None else None
    ways = read_road_ways(extract, highway_filter_for(plan["network"], include))
    graph = build_road_graph(ways, str(extract))
    edges, nodes = _core_tables(edge_table(graph), node_table(graph), shard_dir)
    shard_cells = {cell_int(c) for c in plan["cells"]}
    owners = owner_cells(edges, plan["resolution"], shard_cells)
    owned = owners == cell_int(cell)
    meta = roads_meta(extract, plan["network"], include, ways, edges, nodes)
    owned_road_km, owned_directed_km = road_length_km(edges[owned])
    meta["shard"] = {
        "cell": cell,
        "resolution": plan["resolution"],
        "owned_edge_count": int(owned.sum()),
        "owned_road_km": round(owned_road_km, 6),
        "owned_directed_km": round(owned_directed_km, 6),
    }
    write_owners(shard_dir, edges, owners, cell_int(cell))
    write_roads(shard_dir, graph, edges, nodes, meta, lock_timeout_s)
    log.info("shard %s: %d edges, %d owned", cell, len(edges), int(owned.sum()))
    return meta


def _core_tables(
    edges: gpd.GeoDataFrame, nodes: gpd.GeoDataFrame, shard_dir: Path
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Keep the edges of the shard's core ways, and the nodes they join."""
    core_ways = np.load(shard_dir / CORE_WAYS_FILE, allow_pickle=False)
    edges = edges[edges["osmid"].isin(core_ways)].reset_index(drop=True)
    used = np.union1d(edges["u"].to_numpy(), edges["v"].to_numpy())
    nodes = nodes[nodes["node_id"].isin(used)].reset_index(drop=True)
    return edges, nodes


def merge_shards(
    roads_dir: str | Path,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
    bucket_rows: int | None = None,
) -> dict[str, Any]:
    """Write the region's tables and ``meta.json``: the union of every shard's owned edges.

    The tables are streamed, so that memory is that of one shard's tables, not the region's:

    1. every shard's owned ``u``, sampled, cuts the node ids into ranges (*buckets*) of about
       ``bucket_rows`` owned edges;
    2. shard by shard, the owned edges (by ``u``) and the nodes they join (by ``node_id``) are
       appended to their bucket's spill file (Arrow IPC, under ``.staging/``), and the figures
       of ``meta.json`` are summed;
    3. bucket by bucket, in node id order, the rows are sorted (edges by ``u, v, key``; nodes by
       ``node_id``, each node once: the row of the first shard of the plan that has it) and
       written in row groups of :data:`~pipeline.io.ROW_GROUP_ROWS` rows.

    So the rows are in the order an unsharded build writes them, in the same row groups:
    ``edges.parquet`` and ``nodes.parquet`` are byte for byte those of an unsharded build of
    the same extract, and of every rerun.

    Parameters
    ----------
    roads_dir
        The region's roads folder, cut and with every shard built.
    lock_timeout_s
        How long to wait for another process writing the folder.
    bucket_rows
        Owned edges per bucket; default: the edges of the largest shard.

    Raises
    ------
    InputDataError
        If a shard of the plan has not been built, or its owners are not its edges'.
    """
    roads_dir = Path(roads_dir)
    plan = read_plan(roads_dir)
    with folder_lock(roads_dir, lock_timeout_s):
        (roads_dir / META_FILE).unlink(missing_ok=True)  # not a roads folder until merged
        shards = [_Shard(roads_dir / SHARDS_DIR / cell) for cell in plan["cells"]]
        (roads_dir / STAGING_DIR).mkdir(exist_ok=True)
        spill = Path(tempfile.mkdtemp(prefix="merge-", dir=roads_dir / STAGING_DIR))
        try:
            rows = bucket_rows or max(int(shard.meta["edge_count"]) for shard in shards)
            buckets = _Buckets(_bucket_bounds(shards, rows), spill)
            figures = _Figures()
            for shard in shards:
                _spill_shard(shard, buckets, figures)
            buckets.close()
            rows_written = {
                name: _write_buckets(buckets, roads_dir / name, shards[0].folder / name, figures)
                for name in (EDGES_FILE, NODES_FILE)
            }
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        meta = _region_meta(plan, figures, rows_written[NODES_FILE], shards)
        write_json(meta, roads_dir / META_FILE)
    log.info("roads: %s: %d shards, %d edges, %.1f road km", roads_dir, len(shards),
             meta["edge_count"], meta["road_km"])  # fmt: skip
    return meta


class _Shard:
    """A built shard's folder and its ``meta.json`` (read at once: the shard must be built)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            self.meta = read_roads_meta(folder)
        except InputDataError:
            raise InputDataError(
                f"{folder}: shard {folder.name} has not been built; run `roadcover roads "
                f"build-shard {folder.parent.parent} {folder.name}` first"
            ) from None

    def owned(self) -> np.ndarray:
        """Return the ``owned`` flag of every edge, in the order of ``edges.parquet``.

        Raises
        ------
        InputDataError
            If ``owners.parquet`` does not list the edges of ``edges.parquet``.
        """
        owners = read_owners(self.folder)
        edge_ids = pq.read_table(self.folder / EDGES_FILE, columns=["edge_id"])["edge_id"]
        if not np.array_equal(owners["edge_id"].to_numpy(), edge_ids.to_numpy()):
            raise InputDataError(
                f"{self.folder / OWNERS_FILE}: not the edges of {EDGES_FILE}; build shard "
                f"{self.folder.name} again with `roadcover roads build-shard`"
            )
        return np.asarray(owners["owned"].to_numpy(), dtype=bool)

    def table(self, name: str) -> pa.Table:
        """Return a table of the shard as written (its covering ``bbox`` too), checked."""
        path = self.folder / name
        contract = _CONTRACTS[name]
        table = pq.read_table(path)
        check_contract_metadata(table.schema, contract, str(path))
        validate_table(table.drop_columns([COVERING_BBOX_COLUMN]), contract, str(path))
        return table


def _bucket_bounds(shards: list[_Shard], rows: int) -> np.ndarray:
    """Return the node ids where buckets start (but the first): about ``rows`` owned edges each.

    Every shard's owned ``u``, sorted, is sampled every ``step`` values; the bounds are every
    ``rows / step``-th value of all the samples. A bucket then holds ``rows`` owned edges, give
    or take ``step`` per shard, and the samples take 8 bytes per ``step`` owned edges.
    """
    step = max(1, rows // (8 * (math.isqrt(len(shards)) + 1)))
    samples = []
    for shard in shards:
        u = pq.read_table(shard.folder / EDGES_FILE, columns=["u"])["u"].to_numpy()
        samples.append(np.sort(u[shard.owned()])[::step])
    ordered = np.sort(np.concatenate(samples))
    per_bucket = max(1, rows // step, math.ceil(len(ordered) / MAX_BUCKETS))
    return np.unique(ordered[per_bucket::per_bucket])


class _Buckets:
    """The spill files of each bucket's edges and nodes: Arrow IPC streams, zstd-compressed."""

    def __init__(self, bounds: np.ndarray, folder: Path) -> None:
        self.bounds, self.folder = bounds, folder
        self._files: dict[Path, tuple[pa.NativeFile, Any]] = {}

    def path(self, name: str, bucket: int) -> Path:
        """Return the spill file of the table ``name`` (``edges.parquet``...) of ``bucket``."""
        return self.folder / f"{Path(name).stem}-{bucket:05d}.arrows"

    def count(self) -> int:
        """Return how many buckets there are."""
        return len(self.bounds) + 1

    def append(self, name: str, table: pa.Table, node_ids: np.ndarray) -> None:
        """Append each row of ``table`` to the spill file of its node id's bucket."""
        if not len(node_ids):
            return
        bucket = np.searchsorted(self.bounds, node_ids, side="right")
        order = np.argsort(bucket, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(bucket[order]) != 0])
        stops = [*starts[1:], len(order)]
        table = table.replace_schema_metadata(None)
        for start, stop in zip(starts, stops, strict=True):
            path = self.path(name, int(bucket[order[start]]))
            if path not in self._files:
                sink = pa.OSFile(str(path), "wb")
                options = pa.ipc.IpcWriteOptions(compression="zstd")
                self._files[path] = (sink, pa.ipc.new_stream(sink, table.schema, options=options))
            self._files[path][1].write_table(table.take(pa.array(order[start:stop])))

    def read(self, name: str, bucket: int) -> pa.Table | None:
        """Return the rows spilled to a bucket, in the order they came (None: none)."""
        path = self.path(name, bucket)
        if not path.exists():
            return None
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_stream(source).read_all()

    def close(self) -> None:
        """Close every spill file."""
        for sink, writer in self._files.values():
            writer.close()
            sink.close()
        self._files.clear()


@dataclass
class _Figures:
    """The region's ``meta.json`` figures and its tables' extents, summed shard by shard.

    Lengths are summed exactly per shard (:func:`math.fsum`), then over the shards. A road's
    edges (both directions) have one owner shard, so its length is taken once, from the first
    of its edges in ``u, v, key`` order, as :func:`~pipeline.roads.build.road_length_km` does.
    """

    directed_m: list[float] = field(default_factory=list)
    road_m: list[float] = field(default_factory=list)
    by_class: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    road_count: int = 0
    edge_count: int = 0
    corners: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add_edges(self, edges: pa.Table) -> None:
        """Add a shard's owned edges."""
        frame = edges.select(["u", "v", "key", "road_id", "highway", "length_m"]).to_pandas()
        frame = frame.sort_values(["u", "v", "key"], ignore_index=True)
        first = ~frame["road_id"].duplicated().to_numpy()
        length = frame["length_m"].to_numpy()
        self.directed_m.append(math.fsum(length))
        self.road_m.append(math.fsum(length[first]))
        self.road_count += int(first.sum())
        self.edge_count += len(frame)
        for highway, rows in frame.groupby("highway", sort=True).indices.items():
            directed, road = self.by_class.setdefault(str(highway), ([], []))
            directed.append(math.fsum(length[rows]))
            road.append(math.fsum(length[rows[first[rows]]]))
        self.add_extent(EDGES_FILE, edges)

    def add_extent(self, name: str, table: pa.Table) -> None:
        """Add the rows of a table (``edges.parquet``, ``nodes.parquet``) to its extent."""
        if table.num_rows:
            box = table.column(COVERING_BBOX_COLUMN).combine_chunks()
            low = [pc.min(box.field(name)).as_py() for name in ("xmin", "ymin")]
            high = [pc.max(box.field(name)).as_py() for name in ("xmax", "ymax")]
            self.corners.setdefault(name, []).append(np.array([low, high], dtype="float64"))

    def bbox(self, name: str) -> list[float]:
        """Return the bounding box of a table's rows: xmin, ymin, xmax, ymax."""
        corners = np.concatenate(self.corners[name])
        return [*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()]

    def meta(self) -> dict[str, Any]:
        """Return the figures of :func:`~pipeline.roads.build.roads_meta` but nodes'."""
        by_highway = {
            highway: {
                "road_km": round(math.fsum(road) / 1000.0, 6),
                "directed_km": round(math.fsum(directed) / 1000.0, 6),
            }
            for highway, (directed, road) in sorted(self.by_class.items())
        }
        return {
            "edge_count": self.edge_count,
            "road_count": self.road_count,
            "bbox": [round(value, 7) for value in self.bbox(EDGES_FILE)],
            "road_km": round(math.fsum(self.road_m) / 1000.0, 6),
            "directed_km": round(math.fsum(self.directed_m) / 1000.0, 6),
            "by_highway": by_highway,
        }


def _spill_shard(shard: _Shard, buckets: _Buckets, figures: _Figures) -> None:
    """Spill a shard's owned edges and the nodes they join to the buckets; add their figures."""
    edges = shard.table(EDGES_FILE).filter(pa.array(shard.owned()))
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    nodes = shard.table(NODES_FILE)
    nodes = nodes.filter(pc.is_in(nodes["node_id"], pa.array(np.union1d(u, v))))
    figures.add_edges(edges)
    figures.add_extent(NODES_FILE, nodes)
    buckets.append(EDGES_FILE, edges, u)
    buckets.append(NODES_FILE, nodes, nodes["node_id"].to_numpy())


def _write_buckets(buckets: _Buckets, path: Path, sample: Path, figures: _Figures) -> int:
    """Write a region table from its buckets, in key order; return its rows.

    The file's schema is that of the shard file ``sample``, with the GeoParquet ``bbox`` of
    the rows written: the file :func:`~pipeline.io.write_table` writes for the same rows.
    """
    contract = _CONTRACTS[path.name]
    keys = ["u", "v", "key"] if contract is EDGES else ["node_id"]
    schema = pq.read_schema(sample)
    schema = schema.with_metadata(_with_bbox(schema.metadata, figures.bbox(path.name)))
    written = 0
    with atomic_path(path) as temp, RowGroupWriter(temp, schema, ROW_GROUP_ROWS) as out:
        for bucket in range(buckets.count()):
            rows = buckets.read(path.name, bucket)
            if rows is None:
                continue
            rows = rows.take(pc.sort_indices(rows, [(key, "ascending") for key in keys]))
            if contract is NODES:  # each node once: the first shard's row (the sort is stable)
                ids = rows["node_id"].to_numpy()
                rows = rows.filter(pa.array(np.r_[True, ids[1:] != ids[:-1]]))
            validate_table(rows.drop_columns([COVERING_BBOX_COLUMN]), contract, str(path))
            out.write(rows)
            written += rows.num_rows
    return written


def _with_bbox(metadata: dict[bytes, bytes] | None, bbox: list[float]) -> dict[bytes, bytes]:
    """Return schema metadata with ``bbox`` as its GeoParquet primary column's bounding box."""
    metadata = dict(metadata or {})
    geo = json.loads(metadata[b"geo"])
    geo["columns"][geo["primary_column"]]["bbox"] = bbox
    metadata[b"geo"] = json.dumps(geo).encode()
    return metadata


def _region_meta(
    plan: dict[str, Any], figures: _Figures, node_count: int, shards: list[_Shard]
) -> dict[str, Any]:
    """Return the region's ``meta.json``: an unsharded build's, with the shard list."""
    ways = RoadWays(
        ways_kept=plan["ways_kept"],
        ways_clipped=plan["ways_clipped"],
        missing_node_refs=plan["missing_node_refs"],
        osm_timestamp=plan["osm_timestamp"],
    )
    include = tuple(plan["highway_include"]) if plan["highway_include"] is not None else None
    source = Path(plan["source_file"])
    meta = source_meta(source, plan["network"], include, ways, plan["source_sha256"])
    meta.update(figures.meta(), node_count=node_count)
    cells = [
        {"cell": shard.folder.name,
         **{k: v for k, v in shard.meta["shard"].items() if k.startswith("owned_")}}
        for shard in shards
    ]  # fmt: skip
    meta["shards"] = {
        "resolution": plan["resolution"],
        "buffer_m": plan["buffer_m"],
        "folder": SHARDS_DIR,
        "cells": cells,
    }
    return meta
