"""Coverage per shard of a sharded region, and its roll-up to the region's numbers.

Each edge of a sharded region is owned by one shard (:mod:`pipeline.roads.shards`): the
coverage of a shard is that of the edges it owns, so the shards' figures sum to the region's
exactly. Lengths are summed in integer millimetres, as the region summary sums them
(:func:`pipeline.coverage.summary.coverage_summary`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.intervals import to_mm
from pipeline.coverage.tables import MM_PER_KM
from pipeline.roads.shards import cell_hex, read_owners, shard_dirs

ROLLED_UP = ("road_km", "directed_km", "directed_covered_km")
"""The summary figures the shards' own figures sum to."""


def edge_owners(roads_dir: str | Path) -> pd.DataFrame:
    """Return every edge of a sharded region with its owner shard: ``edge_id``, ``cell`` (hex)."""
    parts = [read_owners(folder).query("owned") for folder in shard_dirs(roads_dir)]
    owners = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(
        {"edge_id": owners["edge_id"], "cell": [cell_hex(c) for c in owners["owner_cell"]]}
    )


def coverage_by_shard(coverage_dir: str | Path, roads_dir: str | Path) -> pd.DataFrame:
    """Return the coverage of each shard's owned edges, one row per shard cell (hex).

    Columns: ``cell``, ``edges``, ``road_km`` (each road once: both directions of a road have
    one owner), ``directed_km`` and ``directed_covered_km``.
    """
    columns = ["edge_id", "road_id", "length_m", "covered_m"]
    edges = read_edge_table(coverage_dir, columns).to_pandas()
    edges = edges.merge(edge_owners(roads_dir), on="edge_id", how="left", validate="1:1")
    edges = edges.assign(length_mm=to_mm(edges["length_m"]), covered_mm=to_mm(edges["covered_m"]))
    roads = edges.sort_values("edge_id").drop_duplicates("road_id")
    by_cell = edges.groupby("cell", sort=True)
    rows = pd.DataFrame(
        {
            "edges": by_cell.size(),
            "road_km": roads.groupby("cell")["length_mm"].sum() / MM_PER_KM,
            "directed_km": by_cell["length_mm"].sum() / MM_PER_KM,
            "directed_covered_km": by_cell["covered_mm"].sum() / MM_PER_KM,
        }
    )
    return rows.fillna(0.0).rename_axis("cell").reset_index()


def roll_up(shards: pd.DataFrame) -> dict[str, float]:
    """Return the region's figures from the shards' (:func:`coverage_by_shard`), summed in mm."""
    return {
        name: round(float((shards[name] * MM_PER_KM).round().sum())) / MM_PER_KM
        for name in ROLLED_UP
    }
