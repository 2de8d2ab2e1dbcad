"""Benchmark the coverage stage: H3 binning of road edges, and a batch update vs state size.

Usage: ``python benchmarks/bench_coverage.py [OSM_FILE] [--runs N]`` (default: Monaco 2016).
Binning walks every edge in steps of at most 2 m and assigns each step's midpoint to an H3 cell;
the figures are edges/s and steps (points assigned to cells)/s on one core. The update benchmark
applies synthetic batches of matched segments (every edge driven once per batch) to a growing
state and times each merge plus the table recomputation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.coverage.cells import STEP_M, edge_cell_runs
from pipeline.coverage.edges import canonical_edges
from pipeline.coverage.state import merge_states, state_of_batch
from pipeline.coverage.tables import cell_coverage, edge_coverage
from pipeline.roads import build_roads, read_edges

DEFAULT_OSM = (
    Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "osm"
    / "monaco-2016.osm.pbf"
)


def batch_segments(edges: pd.DataFrame, batch: int) -> pd.DataFrame:
    """Every edge driven once, fully, by 50 trips, on day ``batch``."""
    when = pd.Timestamp("2026-10-01T08:00Z") + pd.Timedelta(days=batch)
    return pd.DataFrame(
        {
            "edge_id": edges["edge_id"].to_numpy(),
            "trip_id": [f"b{batch}-t{i % 50}" for i in range(len(edges))],
            "contributor_id": [f"c{i % 7}" for i in range(len(edges))],
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=10),
        }
    )


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("osm_file", nargs="?", type=Path, default=DEFAULT_OSM)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        build_roads(args.osm_file, Path(folder))
        edges = read_edges(Path(folder))
    steps = int(np.maximum(np.ceil(edges["length_m"].to_numpy() / STEP_M), 1).sum())
    seconds = []
    for _ in range(args.runs):
        started = time.perf_counter()
        runs = edge_cell_runs(edges, 9)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    name = args.osm_file.name
    print(f"## H3 binning, {name}: {len(edges):,} edges, {steps:,} steps of <= {STEP_M} m\n")
    print("| measure | median | per second |\n|---|---|---|")
    print(f"| bin all edges at res 9 | {median:.2f} s | {len(edges) / median:,.0f} edges/s, "
          f"{steps / median:,.0f} steps/s |\n")  # fmt: skip
    canonical = canonical_edges(edges)
    state = None
    print("| batch | state rows (pieces + edge-trips + cell-trips) | merge s | tables s |")
    print("|---|---|---|---|")
    for batch in range(args.batches):
        started = time.perf_counter()
        new = state_of_batch(batch_segments(edges, batch), runs, f"b{batch}")
        state = new if state is None else merge_states(state, new)
        merged = time.perf_counter() - started
        as_of = int(pd.Timestamp("2026-10-01T08:00Z").value // 1_000_000) + batch * 86_400_000
        started = time.perf_counter()
        edge_coverage(edges, state, as_of)
        cell_coverage(edges, canonical, runs, state, as_of, 9)
        tables = time.perf_counter() - started
        size = len(state.edge_pieces) + len(state.edge_trips) + len(state.cell_trips)
        print(f"| {batch + 1} | {size:,} | {merged:.2f} | {tables:.2f} |")


if __name__ == "__main__":
    main()
