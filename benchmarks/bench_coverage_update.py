"""Benchmark a coverage update of a fixed small batch against the size of the history.

Usage: ``python benchmarks/bench_coverage_update.py ROADS_DIR [--work DIR] [--levels 0.7 2.5 5 10]
[--runs N]``. ``ROADS_DIR`` is a ``roadcover roads build`` output (docs/benchmarks.md uses
Kubicka 00000013, 307,392 edges). The history is simulated: trips of 100 consecutive edges in
the order of their H3 cell (so a trip stays in one area), driven fully at 12 m/s with a fix a
second (a trip of L metres stands for L / 12 fixes), applied with ``roadcover coverage`` in
batches of about 1 M fixes until the history holds each level (millions of fixes). At every
level a copy of the coverage folder gets the same 6-trip batch, ``--runs`` times, each in a
new process: the update's wall and CPU time (inside the process, without Python's start and
imports) and the process's peak RSS (its ``VmHWM``: ``ru_maxrss`` of a child process counts
the RSS of the process that started it, here the bench's, which holds the roads' edge table);
then the same batch again ("nothing new"), inside the process and as a whole ``roadcover
coverage`` command (Python's start and imports included; its wall and CPU seconds).
Prints a Markdown table.
For the update's cost against the network's size, run it on roads of networks 1, 2 and 8 times
Kubicka 00000013 (``benchmarks/scale_network.py``) with ``--levels 0.7``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.geodesy import cells_of
from pipeline.roads import read_edges
from tests.builders import write_matched_batch

SPEED_MPS = 12.0  # one fix a second at this speed: fixes = metres / 12
EDGES_PER_TRIP = 100
BATCH_FIXES = 1_000_000
SMALL_TRIPS = 6

UPDATE_ONE = """
import json, resource, sys, time
from pathlib import Path
from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.process_tree import own_peak_rss_mb
import pipeline.coverage.update  # imported before the clock starts, as before it was lazy
roads, batch, out = (Path(a) for a in sys.argv[1:4])
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
started, cpu_started = time.perf_counter(), cpu()
compute_coverage(roads, [batch], out, load_config().coverage)
seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
# the peak RSS of this process's own memory (VmHWM), not ru_maxrss (the bench's, inherited)
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": own_peak_rss_mb()}))
"""


def ordered_edges(roads: Path) -> pd.DataFrame:
    """The roads' edges in the order of the res-7 H3 cell of their first vertex, then id."""
    edges = read_edges(roads)
    start = np.array([line.coords[0] for line in edges.geometry])
    edges["area"] = cells_of(start[:, 0], start[:, 1], 7)
    return edges.sort_values(["area", "edge_id"], ignore_index=True)


def trips_batch(
    edges: pd.DataFrame, folder: Path, roads: Path, trips: int, seed: int, day: int
) -> int:
    """Write a matched batch of ``trips`` simulated trips; return its fixes."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(edges) - EDGES_PER_TRIP, trips)
    index = (starts[:, None] + np.arange(EDGES_PER_TRIP)).ravel()
    pick = edges.iloc[index]
    length = pick["length_m"].to_numpy()
    trip = np.repeat(np.arange(trips), EDGES_PER_TRIP)
    offset_s = (length / SPEED_MPS).reshape(trips, EDGES_PER_TRIP).cumsum(axis=1).ravel()
    began = pd.Timestamp("2026-06-01T06:00Z") + pd.Timedelta(days=day)
    began = began + pd.to_timedelta(
        np.repeat(rng.integers(0, 14 * 3600, trips), EDGES_PER_TRIP), "s"
    )
    exited = (began + pd.to_timedelta(offset_s, "s")).floor("ms")
    drives = pd.DataFrame(
        {
            "edge_id": pick["edge_id"].to_numpy(),
            "trip_id": [f"s{seed}-t{t}" for t in trip],
            "contributor_id": [f"c{(seed * 7 + t) % 200}" for t in trip],
            "from_offset_m": 0.0,
            "to_offset_m": length,
            "entered_at": (exited - pd.to_timedelta(length / SPEED_MPS, "s")).floor("ms"),
            "exited_at": exited,
        }
    )
    write_matched_batch(folder, edges, drives, roads_dir=roads)
    return int(length.sum() / SPEED_MPS)


def update(roads: Path, batch: Path, out: Path) -> dict[str, float]:
    """Apply one batch in a new process; return its seconds, CPU seconds and peak MiB."""
    run = subprocess.run(
        [sys.executable, "-c", UPDATE_ONE, str(roads), str(batch), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def nothing_new_command(roads: Path, batch: Path, out: Path) -> tuple[float, float]:
    """Run ``roadcover coverage`` with a batch already applied; return its wall and CPU s."""
    started, cpu_started = time.perf_counter(), _children_cpu()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "coverage", "--roads", str(roads),
         "--matched", str(batch), "-o", str(out)],
        capture_output=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - started, _children_cpu() - cpu_started


def _children_cpu() -> float:
    """User and system CPU seconds of the finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Build the history level by level and time the small batch at each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("roads", type=Path)
    parser.add_argument("--work", type=Path, default=Path("bench-coverage-update"))
    parser.add_argument("--levels", type=float, nargs="+", default=[0.7, 2.5, 5.0, 10.0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    edges = ordered_edges(args.roads)
    fixes_per_trip = edges["length_m"].mean() * EDGES_PER_TRIP / SPEED_MPS
    small = args.work / "small"
    if not small.exists():
        trips_batch(edges, small, args.roads, SMALL_TRIPS, seed=999_999, day=200)
    history, fixes, number = args.work / "history", 0, 0
    print(f"{len(edges):,} edges; ~{fixes_per_trip:,.0f} fixes a trip\n")
    print("| history fixes | history updates | small batch update s (median, runs) "
          "| CPU s | peak MiB | nothing new s | nothing new, command s | ... CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        target = int(level * 1_000_000)
        while fixes < target:
            trips = max(int(min(BATCH_FIXES, target - fixes) / fixes_per_trip), 1)
            folder = args.work / f"batch{number}"
            fixes += trips_batch(edges, folder, args.roads, trips, seed=number, day=number)
            update(args.roads, folder, history)
            shutil.rmtree(folder)
            number += 1
        seconds, cpus, peaks = [], [], []
        for _ in range(args.runs):
            copy = args.work / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(history, copy)
            result = update(args.roads, small, copy)
            seconds.append(result["seconds"])
            cpus.append(result["cpu_seconds"])
            peaks.append(result["peak_mib"])
        again = [update(args.roads, small, copy)["seconds"] for _ in range(args.runs)]
        command = [nothing_new_command(args.roads, small, copy) for _ in range(args.runs)]
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        median, cpu, peak, nothing, whole, whole_cpu = (
            statistics.median(v)
            for v in (seconds, cpus, peaks, again, [c[0] for c in command], [c[1] for c in command])
        )
        print(f"| {fixes / 1e6:.2f} M | {number} | {median:.2f} ({runs}) | {cpu:.2f} "
              f"| {peak:,.0f} | {nothing:.2f} | {whole:.2f} | {whole_cpu:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
