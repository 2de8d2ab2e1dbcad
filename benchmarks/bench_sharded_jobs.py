"""The matching and the coverage of a batch on sharded regions: each job's tree peak, and the model.

Usage::

    python benchmarks/bench_sharded_jobs.py ROADS BATCH [ROADS BATCH ...] -o DIR
        [--workers 2] [--runs 3]

Each ``ROADS`` is a sharded roads folder (``roadcover roads build --shard-resolution N``) and
``BATCH`` either an ingest batch on it (its report, ``TRACES/reports/<batch>.json``: the batch
is matched, then its coverage computed) or a matched batch folder on it (its coverage only).
Every run hard-links the roads into a fresh folder of ``DIR`` without any match network
(``bench_fleet.link_roads``: the roads are read, never written), then runs, as the workflow's
rules do, ``roadcover snap --batch-report REPORT --workers N`` (which builds the shards' and
the unions' networks, as a region's first batch does) and ``roadcover coverage`` of the batch
into a fresh folder (which computes the network cache shard by shard, as a region's first
coverage does). The regions of one run go side by side (at the same time, one thread each),
so that they share the machine's load. Measured per command
(``bench_scale.measure_command``): the CPU seconds of its whole process tree (``os.wait4``)
and the peak RSS of the whole tree and of its own process
(:class:`pipeline.process_tree.TreeMemorySampler`, every 0.5 s).

Prints, per region and job, the medians beside the sizes the model reads and what the rule
declares (:func:`pipeline.resources.rule_mem_mb` on the run's inputs, the run's worker count
as the matching's threads), and one JSON line per command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_fleet import link_roads
from bench_scale import ROADCOVER, at_once, measure_command

from pipeline.resources import COSTS, measure_inputs, model_peak_mb, rule_mem_mb, sharded_sizes


@dataclass
class Job:
    """One command's cost on one region."""

    region: str
    rule: str
    run: int
    region_edges: int
    held_edges: int
    units: int
    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    own_peak_rss_mb: float
    model_mb: float
    declared_mb: int
    exit_status: int


def run_region(index: int, region: tuple[Path, Path], number: int, args: argparse.Namespace,
               jobs: list[Job]) -> None:  # fmt: skip
    """Match the batch on a fresh link of the roads, then compute its coverage; measure both."""
    roads, batch = region
    folder = args.out / f"region-{index}-run{number}"
    shutil.rmtree(folder, ignore_errors=True)
    link_roads(roads, folder / "roads")
    matched = folder / "matched" if batch.is_file() else batch
    commands = {
        "match_traces": [*ROADCOVER, "snap", "--roads", str(folder / "roads"), "--traces",
                         str(batch.parent.parent), "--batch-report", str(batch), "-o",
                         str(matched), "--workers", str(args.workers)],
        "compute_coverage": [*ROADCOVER, "coverage", "--roads", str(folder / "roads"),
                             "--matched", str(matched), "-o", str(folder / "coverage")],
    }  # fmt: skip
    inputs = {
        "match_traces": [str(folder / "roads" / "meta.json"), str(batch)],
        "compute_coverage": [str(folder / "roads" / "meta.json"), str(matched / "meta.json")],
    }
    for rule in job_rules(batch):
        threads = args.workers if rule == "match_traces" else 1
        measure = measure_command(commands[rule], folder / f"{rule}.log")
        declared = rule_mem_mb(rule, inputs[rule], threads, {"resources": {}})
        sizes = sharded_sizes(rule, inputs[rule][:1], measure_inputs(inputs[rule]))
        unit = {"fix": sizes.fixes, "segment": sizes.segments}[COSTS[rule].unit]
        job = Job(f"{roads} {batch.name}", rule, number, sizes.region_edges or sizes.edges,
                  sizes.edges, int(unit or 0), measure.cpu_s, measure.wall_s,
                  measure.peak_rss_mb, measure.own_peak_rss_mb,
                  round(model_peak_mb(rule, sizes, threads)), declared,
                  measure.exit_status)  # fmt: skip
        jobs.append(job)
        print(json.dumps(asdict(job)), flush=True)
        if measure.exit_status != 0:
            return


def job_rules(batch: Path) -> list[str]:
    """The rules a batch is run through: an ingest report's both, a matched folder's coverage."""
    return ["match_traces", "compute_coverage"] if batch.is_file() else ["compute_coverage"]


def table(jobs: list[Job], args: argparse.Namespace) -> None:
    """Print the medians of each region's jobs beside the model's sizes and declared memory."""
    print(f"\n{args.workers} workers for the matching; medians of {args.runs} runs side by side\n")
    print("| roads, batch | job | region edges | edges held | fixes or segments | CPU s "
          "| tree peak MiB | own process MiB | model MiB | declared mem_mb |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in dict.fromkeys((job.region, job.rule) for job in jobs):
        done = [job for job in jobs if (job.region, job.rule) == key]

        def median(name: str, values: list[Job] = done) -> float:
            return statistics.median(getattr(job, name) for job in values)

        print(
            f"| {key[0]} | {key[1]} | {done[0].region_edges:,} | {done[0].held_edges:,} "
            f"| {done[0].units:,} | {median('cpu_s'):.1f} | {median('peak_rss_mb'):,.0f} "
            f"| {median('own_peak_rss_mb'):,.0f} | {median('model_mb'):,.0f} "
            f"| {median('declared_mb'):,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("regions", nargs="+", type=Path, help="ROADS BATCH, repeated")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if len(args.regions) % 2:
        sys.exit("give the regions as ROADS BATCH pairs")
    regions = list(zip(args.regions[::2], args.regions[1::2], strict=True))
    args.out.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    for number in range(args.runs):
        at_once(run_region, [(i, region, number, args, jobs) for i, region in enumerate(regions)])
    table(jobs, args)


if __name__ == "__main__":
    main()
