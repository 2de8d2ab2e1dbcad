"""Benchmark the roads stage: build time and peak memory, and how fast the graph loads.

Usage: ``python benchmarks/bench_roads.py [OSM_FILE] [--runs N] [--loads-only]`` (default:
Monaco 2016 PBF from ../shared/data). Each build runs in a fresh process so peak RSS is that
build's own (its ``VmHWM``: :func:`pipeline.process_tree.own_peak_rss_mb`). Prints a Markdown
table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_OSM = (
    Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "osm"
    / "monaco-2016.osm.pbf"
)

BUILD_ONE = """
import sys, time
from pipeline.process_tree import own_peak_rss_mb
from pipeline.roads import build_roads
started = time.perf_counter()
build_roads(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - started
print(f"{seconds:.4f} {own_peak_rss_mb():.1f}")
"""


def time_builds(osm_file: Path, runs: int) -> tuple[list[float], list[float]]:
    """Build the graph ``runs`` times, each in a new process; return seconds and peak MiB."""
    seconds, peaks = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run(
                [sys.executable, "-c", BUILD_ONE, str(osm_file), out],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
        run_seconds, run_peak = result.stdout.split()[-2:]
        seconds.append(float(run_seconds))
        peaks.append(float(run_peak))
    return seconds, peaks


def time_loads(osm_file: Path, runs: int) -> dict[str, float]:
    """Median seconds to load the built graph: from GeoParquet, as GraphML, and as a pickle.

    ``load_road_graph`` rebuilds the graph from the roads folder's GeoParquet tables. The
    pickle row is for comparison only: roadcover wrote and loaded ``graph.pickle`` until
    unpickling a roads folder's file was found to run whatever code it names; here it is a
    pickle this benchmark has just written itself.
    """
    import pickle

    import osmnx as ox

    from pipeline.roads import build_roads, load_road_graph

    with tempfile.TemporaryDirectory() as folder:
        roads_dir = Path(folder)
        build_roads(osm_file, roads_dir)
        graph = load_road_graph(roads_dir)
        graphml = roads_dir / "graph.graphml"
        ox.save_graphml(graph, graphml)
        pickled = pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL)
        loaders = {
            "edges+nodes GeoParquet (load_road_graph)": lambda: load_road_graph(roads_dir),
            "GraphML (ox.load_graphml)": lambda: ox.load_graphml(graphml),
            "pickle of the same graph (no longer used)": lambda: pickle.loads(pickled),
        }
        medians = {}
        for name, load in loaders.items():
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                load()
                samples.append(time.perf_counter() - started)
            medians[name] = statistics.median(samples)
    return medians


def main() -> None:
    """Run the benchmark and print the Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("osm_file", nargs="?", type=Path, default=DEFAULT_OSM)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loads-only", action="store_true", help="Skip the build timings.")
    args = parser.parse_args()
    if args.loads_only:
        print_loads(args.osm_file, time_loads(args.osm_file, args.runs), args.runs)
        return
    seconds, peaks = time_builds(args.osm_file, args.runs)
    loads = time_loads(args.osm_file, args.runs)
    print(f"## roads build: {args.osm_file.name}\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.runs} runs each\n")  # fmt: skip
    print("| measure | median | min | max |\n|---|---|---|---|")
    print(f"| build seconds | {statistics.median(seconds):.2f} | {min(seconds):.2f} "
          f"| {max(seconds):.2f} |")  # fmt: skip
    print(f"| build peak RSS MiB | {statistics.median(peaks):.0f} | {min(peaks):.0f} "
          f"| {max(peaks):.0f} |\n")  # fmt: skip
    print_loads(args.osm_file, loads, args.runs)


def print_loads(osm_file: Path, loads: dict[str, float], runs: int) -> None:
    """Print the graph load medians as a Markdown table."""
    fastest = min(loads.values())
    print(f"## graph load: {osm_file.name}, median of {runs}\n")
    print("| graph load | median seconds | ratio to fastest |\n|---|---|---|")
    for name, value in loads.items():
        print(f"| {name} | {value:.3f} | {value / fastest:.1f} |")


if __name__ == "__main__":
    main()
