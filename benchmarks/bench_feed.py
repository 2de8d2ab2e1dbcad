"""Benchmark the feed export: seconds per release and rows per second.

Usage: ``python benchmarks/bench_feed.py [COVERAGE_DIR ROADS_DIR] [--runs N] [--partition-res R]``
(default: the demo's coverage and roads under results/demo/helsinki, made by ``make demo``).
Times, as medians of N runs, an export in GeoParquet only, in all three formats, and in
GeoParquet with a delta against a previous release. Prints a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.contracts import FEED_SEGMENTS
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.export.feeds import export_feed
from pipeline.export.feeds.tables import covered_pieces, feed_segments
from pipeline.export.feeds.writers import write_partitioned
from pipeline.export.inputs import edge_frame

DEMO_REGION = Path(__file__).parents[1] / "results" / "demo" / "helsinki"
DEFAULT_COVERAGE = DEMO_REGION / "coverage"
DEFAULT_ROADS = DEMO_REGION / "roads"


def time_exports(
    coverage: Path,
    roads: Path,
    runs: int,
    partition_res: int,
    formats: tuple[str, ...],
    delta: bool,
) -> tuple[list[float], int, int]:
    """Export ``runs`` releases; return their seconds, rows exported and bytes written."""
    seconds = []
    rows = size = 0
    with tempfile.TemporaryDirectory() as folder:
        releases = Path(folder)
        previous = None
        if delta:
            export_feed(coverage, roads, releases, "base", partition_res=partition_res)
            previous = releases / "base"
        for run in range(runs):
            started = time.perf_counter()
            manifest = export_feed(
                coverage,
                roads,
                releases,
                f"run{run}",
                previous=previous,
                formats=formats,
                partition_res=partition_res,
            )
            seconds.append(time.perf_counter() - started)
            rows = sum(t["rows"] for t in manifest["tables"].values())
            size = sum(f["size_bytes"] for f in manifest["files"])
    return seconds, rows, size


def time_segments_at_scale(
    coverage: Path, copies: int, partition_res: int
) -> tuple[float, float, int]:
    """Build and write the segments of ``copies`` copies of the coverage's edges (distinct
    way ids), the part of the export that grows with the data; return its seconds, the
    seconds of writing the same table as one plain GeoParquet file (geopandas), and rows."""
    table = read_edge_table(coverage)
    edges, intervals = edge_frame(table), table["intervals"]
    step = int(edges["osmid"].max()) + 1
    big = pd.concat(
        [edges.assign(osmid=edges["osmid"] + i * step) for i in range(copies)], ignore_index=True
    )
    big_intervals = pa.chunked_array(intervals.chunks * copies)
    as_of_ms = int(pd.Timestamp("2026-12-01T00:00Z").value // 1_000_000)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        pieces = covered_pieces(big, big_intervals)
        segments = feed_segments(big, pieces, as_of_ms, 0.5, partition_res)
        write_partitioned(segments, FEED_SEGMENTS, Path(folder), "segments", ("geoparquet",))
        feed_s = time.perf_counter() - started
        started = time.perf_counter()
        segments.to_parquet(Path(folder) / "plain.parquet", write_covering_bbox=True)
        return feed_s, time.perf_counter() - started, len(segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("coverage", nargs="?", type=Path, default=DEFAULT_COVERAGE)
    parser.add_argument("roads", nargs="?", type=Path, default=DEFAULT_ROADS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--partition-res", type=int, default=4)
    parser.add_argument("--copies", type=int, default=100, help="scale of the segments run")
    args = parser.parse_args()
    summary = json.loads((args.coverage / "summary.json").read_text())
    print(
        f"feed export of {args.coverage} (as of {summary['as_of']}), partition res "
        f"{args.partition_res}, median of {args.runs}; {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores, Python {platform.python_version()}\n"
    )
    print("| variant | median s | min s | rows | rows/s | MiB written |")
    print("|---|---:|---:|---:|---:|---:|")
    variants = [
        ("geoparquet", ("geoparquet",), False),
        ("geoparquet + csv + geojsonseq", ("geoparquet", "csv", "geojsonseq"), False),
        ("geoparquet + delta", ("geoparquet",), True),
    ]
    for label, formats, delta in variants:
        seconds, rows, size = time_exports(
            args.coverage, args.roads, args.runs, args.partition_res, formats, delta
        )
        median = statistics.median(seconds)
        print(
            f"| {label} | {median:.3f} | {min(seconds):.3f} | {rows:,} | {rows / median:,.0f} "
            f"| {size / 2**20:.2f} |"
        )
    scale_s, plain_s, scale_rows = time_segments_at_scale(
        args.coverage, args.copies, args.partition_res
    )
    print(
        f"\nsegments only, {args.copies} copies of the edges: {scale_rows:,} segments built and "
        f"written in {scale_s:.2f} s = {scale_rows / scale_s:,.0f} segments/s; writing the "
        f"finished table as one plain GeoParquet file (geopandas): {plain_s:.2f} s = "
        f"{scale_rows / plain_s:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
