"""Benchmark a trip's matching cost against the size of the network it is matched on.

Usage: ``python benchmarks/bench_snap_network_size.py [--copies 1 8] [--fixes-per-trip 60]
[--repeat 25] [--runs 3] [--cache DIR]``

The network is Kubicka drive 00000013's (307,392 arcs, ``ROADCOVER_SHARED_DATA``), and the same
network replicated ``N`` times (copies stacked northwards by the network's bounding box, node,
way and edge ids made distinct; copy 0 is the original, first in the edge table, so its edges
keep their indices, and southernmost, so the spatial grid keeps its origin and a fix's
candidates are found in the same order: a fix as near to two edges, at a node, keeps its
candidate). The trips are the drive's own 1 Hz trace cut into pieces of
``--fixes-per-trip`` fixes, repeated ``--repeat`` times, all on copy 0: the same trips, on
networks of 1x and Nx the edges. For each network: the wall, user and system time of matching
every trip with ``match_trip`` in one thread (median of ``--runs``, after one warm-up pass), and
that the matched edges and offsets are identical on every network. Prints Markdown.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

sys.path.insert(0, str(Path(__file__).parent))
from bench_snap_kubicka import KUBICKA, read_trace, roads_folder

from pipeline.roads import read_edges
from pipeline.snap import MatchNetwork, TripMatch, build_match_network, match_trip

DRIVE = "00000013"
MARGIN_DEG = 0.05


def replicate(edges: gpd.GeoDataFrame, copies: int) -> gpd.GeoDataFrame:
    """Return ``copies`` copies of the edge table, stacked northwards from the original."""
    if copies == 1:
        return edges
    _, miny, _, maxy = edges.total_bounds
    height = maxy - miny + MARGIN_DEG
    node_step = int(max(edges["u"].max(), edges["v"].max())) + 1
    way_step = int(edges["osmid"].max()) + 1
    parts = []
    for k in range(copies):
        part = edges.copy()
        part["u"] = edges["u"] + k * node_step
        part["v"] = edges["v"] + k * node_step
        part["osmid"] = edges["osmid"] + k * way_step
        shift = np.array([0.0, k * height])
        part["geometry"] = shapely.transform(
            edges.geometry.to_numpy(), lambda xy, shift=shift: xy + shift
        )
        parts.append(part)
    table = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=edges.crs)
    table["edge_id"] = np.arange(len(table), dtype="int64")
    return table


def trips(fixes_per_trip: int, repeat: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The drive's trace cut into pieces, the list repeated ``repeat`` times."""
    lon, lat, t_s = read_trace(KUBICKA / DRIVE)
    pieces = [
        (lon[a : a + fixes_per_trip], lat[a : a + fixes_per_trip], t_s[a : a + fixes_per_trip])
        for a in range(0, len(lon), fixes_per_trip)
    ]
    return pieces * repeat


def time_trips(
    net: MatchNetwork, batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[dict[str, float], list[TripMatch]]:
    """Match every trip once; return wall, user and system seconds, and the results."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    results = [match_trip(net, lon, lat, t_s) for lon, lat, t_s in batch]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
    }, results


def bench_network(
    edges: gpd.GeoDataFrame, copies: int, batch: list, runs: int
) -> tuple[dict[str, float], list[TripMatch]]:
    """Build the replicated network and time the batch on it (medians of ``runs``)."""
    net = build_match_network(replicate(edges, copies))
    time_trips(net, batch[:50])  # warm-up: JIT cache load, first touch of the network
    timings = []
    for _ in range(runs):
        timing, results = time_trips(net, batch)
        timings.append(timing)
    row = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    row |= {"copies": copies, "edges": net.n_edges, "trips": len(batch)}
    row["fixes"] = sum(len(trip[0]) for trip in batch)
    return row, results


def same_results(a: list[TripMatch], b: list[TripMatch]) -> bool:
    """Matched edges and offsets identical, trip by trip."""
    return all(
        np.array_equal(x.edge, y.edge) and np.array_equal(x.offset_m, y.offset_m, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--fixes-per-trip", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/roadcover_bench_snap"))
    args = parser.parse_args()
    edges = read_edges(roads_folder(DRIVE, args.cache))
    batch = trips(args.fixes_per_trip, args.repeat)
    rows, reference = [], None
    for copies in args.copies:
        row, results = bench_network(edges, copies, batch, args.runs)
        reference = reference or results
        row["identical"] = same_results(reference, results)
        rows.append(row)
    print("| copies | edges | trips | fixes | wall s | user s | sys s | ms per trip | identical |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['copies']} | {r['edges']:,} | {r['trips']:,} | {r['fixes']:,} | "
            f"{r['wall_s']:.2f} | {r['user_s']:.2f} | {r['sys_s']:.2f} | "
            f"{1000 * r['wall_s'] / r['trips']:.2f} | {'yes' if r['identical'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
