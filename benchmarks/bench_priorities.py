"""Benchmark where-to-drive-next: the tours' gap to the optimum, and the export's time.

Usage::

    python benchmarks/bench_priorities.py gap [--instances N]
    python benchmarks/bench_priorities.py time COVERAGE_DIR ROADS_DIR [--runs N] [--tours N]

``gap``: random street grids (4 x 4 nodes with 3 to 9 required roads, 5 x 5 with 6 to 12), a
third of the streets one-way; each tour's length against the shortest closed walk serving
every required road, found exhaustively (Dijkstra over (node, roads served) states, the
oracle of tests/export/test_tours.py). ``time``: wall time of ``export_priorities`` on a
coverage folder (median of the runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.config import settings_from_mapping
from pipeline.export.priorities import export_priorities
from pipeline.export.tours import plan_tour
from tests.export.test_tours import optimal_length, random_instance


def measure_gaps(instances: int) -> None:
    """Print the gap distribution of the tours on random grids of two sizes."""
    for size, low, high in ((4, 3, 10), (5, 6, 13)):
        gaps, seconds = [], []
        for seed in range(instances):
            graph, required = random_instance(seed, size=size, required=(low, high))
            started = time.perf_counter()
            tour = plan_tour(graph, required)
            seconds.append(time.perf_counter() - started)
            gaps.append(tour.length_m / optimal_length(graph, required) - 1)
        values = np.array(gaps)
        print(
            f"{size}x{size} grid, {low}-{high - 1} required roads, {instances} instances: "
            f"optimal {np.mean(values < 1e-9):.1%}, mean gap {values.mean():.2%}, "
            f"p95 {np.percentile(values, 95):.2%}, max {values.max():.2%}; "
            f"median plan time {statistics.median(seconds) * 1000:.0f} ms"
        )


def measure_time(coverage_dir: Path, roads_dir: Path, runs: int, tours: int) -> None:
    """Print the median wall time of export_priorities over ``runs`` runs."""
    settings = settings_from_mapping({"regions": [{"name": "b", "osm": "b.osm"}]})
    priorities = replace(settings.priorities, tours=tours)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(runs):
            started = time.perf_counter()
            result = export_priorities(coverage_dir, roads_dir, Path(folder) / str(run), priorities)
            seconds.append(time.perf_counter() - started)
    print(
        f"export priorities: {result['roads']} roads to drive, {result['cells']} cells, "
        f"{len(result['tours'])} tours ({sum(t['length_km'] for t in result['tours']):.1f} km): "
        f"median {statistics.median(seconds):.1f} s over {runs} runs "
        f"({', '.join(f'{s:.1f}' for s in seconds)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gap = commands.add_parser("gap")
    gap.add_argument("--instances", type=int, default=200)
    timing = commands.add_parser("time")
    timing.add_argument("coverage_dir", type=Path)
    timing.add_argument("roads_dir", type=Path)
    timing.add_argument("--runs", type=int, default=3)
    timing.add_argument("--tours", type=int, default=5)
    args = parser.parse_args()
    if args.command == "gap":
        measure_gaps(args.instances)
    else:
        measure_time(args.coverage_dir, args.roads_dir, args.runs, args.tours)


if __name__ == "__main__":
    main()
