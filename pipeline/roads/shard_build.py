"""Build a sharded roads folder: cut the extract, build each shard, merge the owned edges.

``build_sharded_roads`` does the three steps in one process (``roadcover roads build EXTRACT
--shard-resolution N -o OUT``); the workflow runs them as separate jobs (``roadcover roads
cut``, ``roadcover roads build-shard`` per cell, ``roadcover roads merge``), so that each
shard's graph is built in a job of its own size. See :mod:`pipeline.roads.shards` for how a
shard is cut and which edges it owns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.errors import InputDataError
from pipeline.locking import DEFAULT_TIMEOUT_S
from pipeline.roads.build import road_length_km, roads_meta
from pipeline.roads.graph import build_road_graph, edge_table, node_table
from pipeline.roads.highways import highway_filter_for
from pipeline.roads.osm import RoadWays, read_road_ways
from pipeline.roads.shards import (
    CORE_WAYS_FILE,
    DEFAULT_BUFFER_M,
    DEFAULT_MAX_JOB_MEM_MB,
    SHARD_EXTRACT_FILE,
    SHARDS_DIR,
    cell_int,
    cut_extract,
    owner_cells,
    read_owners,
    read_plan,
    write_owners,
)
from pipeline.roads.store import read_edges, read_nodes, read_roads_meta, write_roads

log = logging.getLogger(__name__)


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
    roads_dir: str | Path, lock_timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """Write the region's tables and ``meta.json``: the union of every shard's owned edges.

    Edges and nodes are in the order an unsharded build writes them (``u, v, key``; node id),
    so the region's ``edges.parquet`` is that of an unsharded build of the same extract.

    Raises
    ------
    InputDataError
        If a shard of the plan has not been built.
    """
    roads_dir = Path(roads_dir)
    plan = read_plan(roads_dir)
    edge_parts, node_parts, shards = [], [], []
    for cell in plan["cells"]:
        shard_dir = roads_dir / SHARDS_DIR / cell
        shard_meta = read_roads_meta(shard_dir)
        owned = read_owners(shard_dir)["owned"].to_numpy()
        edges = read_edges(shard_dir)[owned]
        nodes = read_nodes(shard_dir)
        used = np.union1d(edges["u"].to_numpy(), edges["v"].to_numpy())
        edge_parts.append(edges)
        node_parts.append(nodes[nodes["node_id"].isin(used)])
        shards.append({"cell": cell, **{k: v for k, v in shard_meta["shard"].items()
                                        if k.startswith("owned_")}})  # fmt: skip
    edges = _concat(edge_parts).sort_values(["u", "v", "key"], ignore_index=True)
    nodes = _concat(node_parts).drop_duplicates("node_id")
    nodes = nodes.sort_values("node_id", ignore_index=True)
    meta = _region_meta(roads_dir, plan, edges, nodes, shards)
    write_roads(roads_dir, None, edges, nodes, meta, lock_timeout_s)
    log.info("roads: %s: %d shards, %d edges, %.1f road km", roads_dir, len(shards),
             len(edges), meta["road_km"])  # fmt: skip
    return meta


def _concat(parts: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)


def _region_meta(
    roads_dir: Path,
    plan: dict[str, Any],
    edges: gpd.GeoDataFrame,
    nodes: gpd.GeoDataFrame,
    shards: list[dict[str, Any]],
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
    meta = roads_meta(source, plan["network"], include, ways, edges, nodes, plan["source_sha256"])
    meta["shards"] = {
        "resolution": plan["resolution"],
        "buffer_m": plan["buffer_m"],
        "buffer_rings": plan["buffer_rings"],
        "folder": SHARDS_DIR,
        "cells": shards,
    }
    return meta
