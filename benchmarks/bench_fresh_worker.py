"""A fresh Dask worker's first task: numba compiling (empty cache) or loading (warm cache).

Starts a real cluster of processes on localhost (``dask scheduler`` and one ``dask worker``,
each a fresh process) with ``NUMBA_CACHE_DIR`` pointing at an empty folder ("cold") or at a
folder filled once by ``roadcover warmup`` ("warm", as a cluster's workers sharing a cache
folder would), and times the worker's first and second task: matching the warm-up's sample
trips (``snap_traces`` inside the worker), and simulating 4 devices for a day::

    python benchmarks/bench_fresh_worker.py --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from dask.distributed import Client

from pipeline.config import load_config
from pipeline.warmup import run_sample_stages


def match_in_worker(roads: str, traces: str, out: str) -> float:
    """Match every trip of ``traces`` in this (worker) process; return the seconds taken."""
    from pipeline.snap.stage import snap_traces

    started = time.perf_counter()
    snap_traces(Path(roads), Path(traces), Path(out), replace(load_config().snap, workers=1))
    return time.perf_counter() - started


def simulate_in_worker(roads: str, out: str) -> float:
    """Simulate 4 devices for a day in this (worker) process; return the seconds taken."""
    from pipeline.simulate.fleet import simulate_fleet

    fleet = replace(load_config().simulate, devices=4, days=1, formats=("parquet",))
    started = time.perf_counter()
    simulate_fleet(Path(roads), Path(out), fleet, workers=1)
    return time.perf_counter() - started


@contextlib.contextmanager
def process_cluster(folder: Path, env: dict[str, str]) -> Iterator[Client]:
    """A ``dask scheduler`` and one ``dask worker`` process; a client of them."""
    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    quiet: dict[str, Any] = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)], **quiet,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
         "--no-dashboard", "--host", "127.0.0.1"], **quiet,
    )  # fmt: skip
    try:
        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(1, timeout=120)
            yield client
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=60)


def one_run(sample: dict[str, Path], cache: Path, work: Path) -> dict[str, float]:
    """Time the first and second task of each kind on a fresh worker using ``cache``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    times = {}
    with process_cluster(work, env) as client:
        started = time.perf_counter()
        client.run(lambda: None)  # the worker answers
        times["worker ready s"] = time.perf_counter() - started
        for n in (1, 2):
            out = str(work / f"matched{n}")
            roads, traces = str(sample["roads"]), str(sample["traces"])
            started = time.perf_counter()
            client.submit(match_in_worker, roads, traces, out, pure=False).result()
            times[f"match task {n} s"] = time.perf_counter() - started
        for n in (1, 2):
            out = str(work / f"simulated{n}")
            started = time.perf_counter()
            client.submit(simulate_in_worker, str(sample["roads"]), out, pure=False).result()
            times[f"simulate task {n} s"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-cache", type=Path, help="a folder `roadcover warmup` filled")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fresh-worker-"))
    warm = args.warm_cache or root / "warm-cache"
    if args.warm_cache is None:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(warm)}
        subprocess.run([sys.executable, "-m", "pipeline.cli", "warmup"], env=env, check=True)
    os.environ["NUMBA_CACHE_DIR"] = str(warm)  # this process's sample stages: no compiling
    (root / "sample").mkdir()
    sample = run_sample_stages(root / "sample", load_config())
    results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for run in range(args.runs):
        for mode in ("cold", "warm"):
            cache = root / f"empty-cache-{run}" if mode == "cold" else warm
            cache.mkdir(exist_ok=True)
            work = root / f"{mode}-{run}"
            work.mkdir()
            results[mode].append(one_run(sample, cache, work))
            print(mode, run, results[mode][-1], flush=True)
    print("\n| measure | cold (empty cache) | warm (`roadcover warmup`) |\n|---|---:|---:|")
    for key in results["cold"][0]:
        cells = []
        for mode in ("cold", "warm"):
            values = [r[key] for r in results[mode]]
            low, high = min(values), max(values)
            cells.append(f"{statistics.median(values):.1f} ({low:.1f}-{high:.1f})")
        print(f"| {key} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
