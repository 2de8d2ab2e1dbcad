"""A fixed fleet simulated on sharded regions of growing size: CPU and memory of the whole tree.

Usage::

    python benchmarks/bench_simulate_shards.py ROADS [ROADS ...] -o DIR [--devices 100]
        [--days 7] [--workers 2] [--runs 3]

Each roads folder (sharded or not: ``roadcover roads build --shard-resolution N``) is given
the same fleet (``roadcover simulate --devices N --days D --seed S --format csv``), each run a
fresh ``roadcover simulate`` process. The roads folders of one run are simulated side by side
(at the same time, one thread each), so that they share the machine's load. Measured per run:

* CPU seconds of the whole process tree: the process's user + system time with its
  waited-for children's (``os.wait4``: the Dask nannies and workers);
* peak RSS of the whole tree (:class:`pipeline.process_tree.TreeMemorySampler`, every 0.5 s),
  of the stage process alone, and the highest peak of any other single process (a worker);
* the fleet's fixes (``simulation.json``), and the edges of the region and of its largest
  shard (``meta.json``).

Prints a Markdown table of the medians for docs/benchmarks.md and one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from bench_scale import at_once

from pipeline.process_tree import TreeMemorySampler

ROADCOVER = [sys.executable, "-m", "pipeline.cli"]
SAMPLE_INTERVAL_S = 0.5
MIB = 1024 * 1024


@dataclass
class Run:
    """One simulation's cost."""

    roads: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stage_peak_mb: float
    worker_peak_mb: float
    fixes: int
    exit_status: int


class ProcessPeaks:
    """The highest RSS of each process of a tree (sampled in a thread), by pid."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    rss = process.memory_info().rss / MIB
                except psutil.Error:
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0.0), rss)


def simulate(roads: Path, out: Path, args: argparse.Namespace) -> Run:
    """Run ``roadcover simulate`` on ``roads`` into a fresh ``out``; measure it."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [*ROADCOVER, "simulate", "--roads", str(roads), "-o", str(out),
            "--devices", str(args.devices), "--days", str(args.days), "--seed", str(args.seed),
            "--format", "csv", "--workers", str(args.workers)]  # fmt: skip
    started = time.perf_counter()
    log_path = out.with_suffix(".log")
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        with (
            TreeMemorySampler(
                process.pid, interval_s=SAMPLE_INTERVAL_S, include_shared_cluster=False
            ) as tree,
            ProcessPeaks(process.pid) as peaks,
        ):
            _, wait_status, usage = os.wait4(process.pid, 0)
    memory = tree.snapshot()
    others = [mb for pid, mb in peaks.peaks.items() if pid != process.pid]
    summary = out / "simulation.json"
    fixes = json.loads(summary.read_text())["totals"]["fixes"] if summary.exists() else 0
    return Run(
        roads=str(roads),
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=memory.peak_rss_mb,
        stage_peak_mb=memory.own_peak_rss_mb,
        worker_peak_mb=max(others, default=0.0),
        fixes=fixes,
        exit_status=os.waitstatus_to_exitcode(wait_status),
    )


def edges_of(roads: Path) -> tuple[int, int]:
    """The region's edges and its largest shard's (the region's when it is not sharded)."""
    meta = json.loads((roads / "meta.json").read_text())
    if "shards" not in meta:
        return meta["edge_count"], meta["edge_count"]
    shard_edges = [
        json.loads((roads / "shards" / cell["cell"] / "meta.json").read_text())["edge_count"]
        for cell in meta["shards"]["cells"]
    ]
    return meta["edge_count"], max(shard_edges)


def side_by_side(roads_dirs: list[Path], number: int, args: argparse.Namespace) -> list[Run]:
    """Simulate the fleet on every roads folder at the same time; return the runs in order."""
    results: dict[int, Run] = {}

    def one(index: int, roads: Path) -> None:
        results[index] = simulate(roads, args.out / f"fleet-{index}-run{number}", args)

    at_once(one, enumerate(roads_dirs))
    return [results[index] for index in range(len(roads_dirs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roads", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[Path, list[Run]] = {roads: [] for roads in args.roads}
    for number in range(args.runs):
        for run in side_by_side(args.roads, number, args):
            runs[Path(run.roads)].append(run)
            print(json.dumps(asdict(run)), flush=True)
    print(f"\n{args.devices} devices x {args.days} days, {args.workers} workers, "
          f"median of {args.runs} runs side by side\n")  # fmt: skip
    print("| roads | edges | largest shard | fixes | wall s | CPU s | tree peak MiB "
          "| stage peak MiB | worker peak MiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for roads, measured in runs.items():
        edges, largest = edges_of(roads)

        def median(name: str, values: list[Run] = measured) -> float:
            return statistics.median(getattr(run, name) for run in values)

        print(
            f"| {roads.name} | {edges:,} | {largest:,} | {int(median('fixes')):,} "
            f"| {median('wall_s'):.0f} | {median('cpu_s'):.1f} | {median('peak_rss_mb'):,.0f} "
            f"| {median('stage_peak_mb'):,.0f} | {median('worker_peak_mb'):,.0f} |"
        )


if __name__ == "__main__":
    main()
