"""Benchmark exact coverage and segment queries on a feed release (pipeline.serve.queries).

Usage::

    python benchmarks/bench_serve_queries.py RELEASE_DIR ROADS_DIR [--runs N] [--queries Q]
    python benchmarks/bench_serve_queries.py --build OSM_FILE WORK_DIR [--covered 0.5] ...

The first form times an existing release (e.g. the demo's, under results/demo/helsinki after
``make demo``). The second builds one first in WORK_DIR with the pipeline's own stages: roads
from OSM_FILE, one synthetic matched batch driving a random stretch of a share of the directed
edges (``--covered``) at times spread over 120 days, coverage, and a feed release.

Prints the medians of N runs of ``RegionRelease.open``, the time of a first ``segments`` query
over the whole region (which reads every partition's rows), and, over Q city-sized polygons (circles
of 64 vertices and ``--radius-km``, centred on random covered segments), the median and 90th
percentile of ``coverage(area)``, ``coverage(None)`` and ``segments(area)`` in milliseconds, in
one process on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import shapely

from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.export.feeds import export_feed
from pipeline.roads import build_roads, read_edges, resolve_extract
from pipeline.serve.queries import RegionRelease
from tests.builders import write_matched_batch

AS_OF = pd.Timestamp("2026-12-01T00:00Z")
GEOD = pyproj.Geod(ellps="WGS84")


def build_release(osm_file: str, work: Path, covered: float, partition_res: int) -> Path:
    """Build roads, a synthetic batch, coverage and a release in ``work``; return the release."""
    roads = work / "roads"
    if not (roads / "meta.json").exists():
        build_roads(resolve_extract(osm_file, work / "cache"), roads)
    edges = read_edges(roads)
    rng = np.random.default_rng(1)
    pick = edges.sample(frac=covered, random_state=1)
    length = pick["length_m"].to_numpy()
    start = rng.uniform(0.0, 0.5, len(pick)) * length
    when = AS_OF - pd.to_timedelta(rng.integers(0, 120 * 24, len(pick)), "h")
    drives = pd.DataFrame(
        {
            "edge_id": pick["edge_id"].to_numpy(),
            "trip_id": [f"trip{i // 40}" for i in range(len(pick))],
            "contributor_id": [f"c{i % 9}" for i in range(len(pick))],
            "from_offset_m": start,
            "to_offset_m": start + rng.uniform(0.3, 1.0, len(pick)) * (length - start),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    batch = write_matched_batch(work / "matched", edges, drives, roads_dir=roads)
    compute_coverage(roads, [batch], work / "coverage", load_config().coverage, AS_OF)
    release_id = f"res{partition_res}"
    releases = work / "releases"
    export_feed(work / "coverage", roads, releases, release_id, partition_res=partition_res)
    return work / "releases" / release_id


def city_areas(release: RegionRelease, count: int, radius_km: float) -> list[shapely.Polygon]:
    """Circles of 64 vertices around the midpoints of random covered segments."""
    rng = np.random.default_rng(2)
    segments = release.segments(shapely.box(-180, -90, 180, 90))
    centres = shapely.line_interpolate_point(
        segments.geometry.to_numpy()[rng.integers(0, len(segments), count)], 0.5, normalized=True
    )
    areas = []
    for centre in centres:
        lons, lats, _ = GEOD.fwd(
            np.full(64, centre.x), np.full(64, centre.y), np.linspace(0, 360, 64, endpoint=False),
            np.full(64, radius_km * 1000.0),
        )  # fmt: skip
        areas.append(shapely.Polygon(np.column_stack([lons, lats])))
    return areas


def _ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{1000 * statistics.median(ordered):.1f} / {1000 * p90:.1f}"


def time_queries(release_dir: Path, roads: Path, runs: int, queries: int, radius_km: float) -> None:
    """Print the open time and the query times as a Markdown table."""
    opens = []
    for _ in range(runs):
        started = time.perf_counter()
        release = RegionRelease.open(release_dir, roads)
        opens.append(time.perf_counter() - started)
    started = time.perf_counter()
    release.segments(shapely.box(-180, -90, 180, 90))  # reads every partition: the cold cost
    cold = time.perf_counter() - started
    areas = city_areas(release, queries, radius_km)
    region = release.coverage(None)
    timed: dict[str, list[float]] = {name: [] for name in ("coverage(area)", "segments(area)")}
    timed["coverage(None, since=...)"] = []
    since = (pd.Timestamp(region["as_of"]) - pd.Timedelta(days=30)).date()
    rows = []
    for area in areas:
        started = time.perf_counter()
        release.coverage(area)
        timed["coverage(area)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        release.coverage(None, since=since)
        timed["coverage(None, since=...)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        rows.append(len(release.segments(area)))
        timed["segments(area)"].append(time.perf_counter() - started)
    km2 = statistics.median(abs(GEOD.geometry_area_perimeter(a)[0]) / 1e6 for a in areas)
    print(
        f"release {release.release_id}: {region['road_km']:.1f} road km, "
        f"{region['covered_km']:.1f} covered km, {release.segment_rows} segments; "
        f"{queries} circles of {km2:.1f} km², median {statistics.median(rows):.0f} segments each"
    )
    print("| measure | median / p90 (ms) |\n|---|---:|")
    print(f"| `RegionRelease.open` ({runs} runs) | {_ms(opens)} |")
    print(f"| first `segments` of the whole region (reads every partition) | {1000 * cold:.1f} |")
    for name, seconds in timed.items():
        print(f"| `{name}` | {_ms(seconds)} |")


def main() -> None:
    """Parse the arguments, build a release if asked, and time it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("release", help="RELEASE_DIR, or OSM_FILE with --build")
    parser.add_argument("roads", type=Path, help="ROADS_DIR, or WORK_DIR with --build")
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--covered", type=float, default=0.5)
    parser.add_argument("--partition-res", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--radius-km", type=float, default=2.0)
    args = parser.parse_args()
    if args.build:
        release = build_release(args.release, args.roads, args.covered, args.partition_res)
        roads = args.roads / "roads"
    else:
        release, roads = Path(args.release), args.roads
    time_queries(release, roads, args.runs, args.queries, args.radius_km)


if __name__ == "__main__":
    main()
