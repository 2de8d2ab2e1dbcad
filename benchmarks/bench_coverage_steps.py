"""The coverage's peak memory against the partitions its batch touches and those a step holds.

On a sharded roads folder, for each batch size and ``coverage.batch_max_mb``: the batch's first
update (which writes every partition) into a new folder holding hard links to the region's
network cache, so that the run is the update alone, in a process of its own; its peak RSS
(``VmHWM``: the stage starts no other process) and CPU seconds, medians of ``--runs``; beside
them the partitions the batch touches, its steps and the most partitions a step holds (the
stage's own cut, :mod:`pipeline.coverage.steps`), and :mod:`pipeline.resources`' modelled
peak (before the headroom)::

    python benchmarks/bench_coverage_steps.py ROADS --trips 300 3000 \\
        --batch-max-mb 1024 64 16 --runs 3 --work /tmp/bench-coverage-steps

The batches are those of ``benchmarks/bench_coverage_update.py`` (trips of 100 consecutive
edges in the order of their res-7 cell, a fix a second at 12 m/s, seed: the trips). The
network cache is computed once, by a first run of a 6-trip batch into ``WORK/first`` (its
peak is printed too: a first run's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.config import load_config
from pipeline.coverage.partitions import NETWORK_META, Network
from pipeline.coverage.stage import SEGMENTS_FILE
from pipeline.coverage.steps import _plan_steps, step_segments
from pipeline.resources import InputSizes, measure_inputs, model_peak_mb, sharded_sizes

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests.builders, for the batches
sys.path.insert(0, str(Path(__file__).parent))
from bench_coverage_update import SMALL_TRIPS, ordered_edges, trips_batch

UPDATE_ONE = """
import json, resource, sys
from dataclasses import replace
from pathlib import Path
from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.process_tree import own_peak_rss_mb
roads, batch, out = (Path(a) for a in sys.argv[1:4])
settings = replace(load_config().coverage, batch_max_mb=float(sys.argv[4]))
compute_coverage(roads, [batch], out, settings)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_mib": own_peak_rss_mb()}))
"""


def update(roads: Path, batch: Path, out: Path, batch_max_mb: float) -> dict[str, float]:
    """Apply one batch in a new process; return its CPU seconds and peak MiB."""
    run = subprocess.run(
        [sys.executable, "-c", UPDATE_ONE, str(roads), str(batch), str(out), str(batch_max_mb)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def cached_network(coverage_dir: Path) -> Network:
    """Return the network cache a coverage folder holds (computed by its first run)."""
    meta_path = next((coverage_dir / "network").glob(f"*/{NETWORK_META}"))
    meta = json.loads(meta_path.read_text())
    resolution = load_config().coverage.h3_resolution
    parts = tuple(meta["parts"])
    return Network(meta_path.parent, resolution, int(meta["partition_resolution"]), parts)


def step_partitions(batch: Path, network: Network, batch_max_mb: float) -> dict[str, int]:
    """Return the batch's segments, the partitions it touches, its steps, a step's most."""
    settings = replace(load_config().coverage, batch_max_mb=batch_max_mb)
    plan, total = _plan_steps(
        [(batch, "bench")], set(), network, settings, step_segments(batch_max_mb)
    )  # the stage's own cut (a private function: what the stage does, not a copy of it)
    edge_ids = pq.read_table(batch / SEGMENTS_FILE, columns=["edge_id"]).column(0).to_numpy()
    keys = np.unique(network.edge_parts(edge_ids).astype(str))
    _, per_step = np.unique(plan.step_of_parts(keys), return_counts=True)
    return {
        "segments": total, "touched": len(keys), "steps": len(plan.first_keys),
        "held": int(per_step.max()),
    }  # fmt: skip


def modelled(roads: Path, segments: int, trips: int, batch_max_mb: float) -> float:
    """Return the model's peak of the coverage job of this batch (before the headroom)."""
    inputs = [roads / "meta.json"]
    sizes = replace(measure_inputs(inputs), segments=segments, trips=trips)
    sizes = sharded_sizes("compute_coverage", inputs, sizes)
    assert isinstance(sizes, InputSizes) and sizes.region_edges is not None, roads
    return model_peak_mb("compute_coverage", sizes, 1, batch_max_mb)


def measure(roads: Path, batch: Path, work: Path, batch_max_mb: float, runs: int) -> list[Any]:
    """Return the median CPU seconds and peak MiB of ``runs`` first updates of ``batch``."""
    results = []
    for _ in range(runs):
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(work / "first" / "network", out / "network", copy_function=os.link)
        results.append(update(roads, batch, out, batch_max_mb))
        shutil.rmtree(out)
    cpu = statistics.median(r["cpu_seconds"] for r in results)
    peaks = sorted(r["peak_mib"] for r in results)
    return [cpu, statistics.median(peaks), peaks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roads", type=Path, help="a sharded roads folder")
    parser.add_argument("--work", type=Path, default=Path("bench-coverage-steps"))
    parser.add_argument("--trips", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--batch-max-mb", type=float, nargs="+", default=[1024.0, 64.0, 16.0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    edges = ordered_edges(args.roads)
    small = args.work / "small"
    if not small.exists():
        trips_batch(edges, small, args.roads, SMALL_TRIPS, seed=999_999, day=200)
    if not (args.work / "first").exists():
        first = update(args.roads, small, args.work / "first", 1024.0)
        print(f"first run, {SMALL_TRIPS} trips: {first['cpu_seconds']:.1f} CPU s, "
              f"{first['peak_mib']:.1f} MiB", flush=True)  # fmt: skip
    network = cached_network(args.work / "first")
    print("| trips | segments | partitions touched | batch_max_mb | steps | a step's most "
          "| CPU s | peak MiB (median; runs) | model MiB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for trips in args.trips:
        batch = args.work / f"batch-{trips}"
        if not batch.exists():
            trips_batch(edges, batch, args.roads, trips, seed=trips, day=0)
        for batch_max_mb in args.batch_max_mb:
            cut = step_partitions(batch, network, batch_max_mb)
            cpu, peak, peaks = measure(args.roads, batch, args.work, batch_max_mb, args.runs)
            model = modelled(args.roads, cut["segments"], trips, batch_max_mb)
            every = ", ".join(f"{p:.0f}" for p in peaks)
            print(f"| {trips:,} | {cut['segments']:,} | {cut['touched']} | {batch_max_mb:g} "
                  f"| {cut['steps']} | {cut['held']} | {cpu:.1f} | {peak:.0f} ({every}) "
                  f"| {model:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
