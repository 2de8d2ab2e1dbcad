"""What a workflow run costs before it does any work: the floor under the demo's fixes/s.

Usage: ``python benchmarks/bench_startup.py [--runs 5]``.

Measures, each ``--runs`` times (medians):

1. a fresh Python that imports the module each rule's stage runs (``roadcover <stage>`` is a
   new process per rule), and the CLI alone;
2. ``roadcover run`` on a finished demo (Snakemake finds nothing to do), with 1 and 2 cores:
   the wrapper's start, Snakemake's start, DAG and exit, and with 2 cores the shared cluster.

The floor is (2) with one core plus the imports of the rules on the demo's critical path
(``export_tiles`` and ``export_feed`` run side by side: the slower of the two counts), and the
cap it sets is the demo's fixes divided by that floor: no change to the stages' work can take
the demo beyond it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_workflow import KEY, demo_config, fixes_read, run_command

# each rule of the demo, in the order of its critical path, and the module its stage imports
RULE_MODULES = {
    "build_roads": "pipeline.roads.build",
    "simulate_fleet": "pipeline.simulate.fleet",
    "ingest_traces": "pipeline.ingest.stage",
    "match_traces": "pipeline.snap.stage",
    "compute_coverage": "pipeline.coverage.stage",
    "export_tiles": "pipeline.export.tiles",
    "export_feed": "pipeline.export.feeds",
    "export_viewer": "pipeline.export.viewer",
    "write_report": "pipeline.report",
}
SIDE_BY_SIDE = ("export_tiles", "export_feed")


def seconds_of(command: list[str], cwd: Path | None = None) -> float:
    """Wall seconds of one run of ``command`` (its output discarded); raise if it fails."""
    started = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, env={**os.environ, "ROADCOVER_PSEUDONYM_KEY": KEY}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def import_seconds(runs: int) -> dict[str, float]:
    """Median seconds of a fresh process importing the CLI, then the CLI and each rule's module."""
    medians = {"(the CLI alone)": _median_import("import pipeline.cli", runs)}
    for rule, module in RULE_MODULES.items():
        medians[rule] = _median_import(f"import pipeline.cli; import {module}", runs)
    return medians


def _median_import(code: str, runs: int) -> float:
    return statistics.median(seconds_of([sys.executable, "-c", code]) for _ in range(runs))


def finished_demo(folder: Path) -> tuple[Path, int]:
    """Run the demo once into ``folder``; return its config's path and the fixes it read."""
    config_path = demo_config(folder)
    seconds_of(run_command(config_path, cores=2), cwd=folder)
    return config_path, fixes_read(folder)


def no_op_seconds(config_path: Path, runs: int) -> dict[int, list[float]]:
    """Seconds of ``roadcover run`` with nothing to do, by cores (1 and 2, interleaved)."""
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(runs):
        for cores in seconds:
            seconds[cores].append(
                seconds_of(run_command(config_path, cores), cwd=config_path.parent)
            )
    return seconds


def critical_path_imports(imports: dict[str, float]) -> float:
    """Seconds the demo's critical path spends importing (the slower of the side-by-side rules)."""
    serial = sum(imports[rule] for rule in RULE_MODULES if rule not in SIDE_BY_SIDE)
    return serial + max(imports[rule] for rule in SIDE_BY_SIDE)


def main() -> None:
    """Measure and print the tables and the floor in Markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure")
    args = parser.parse_args()
    imports = import_seconds(args.runs)
    with tempfile.TemporaryDirectory() as folder:
        config_path, fixes = finished_demo(Path(folder))
        no_op = no_op_seconds(config_path, args.runs)
    print(f"medians of {args.runs} run(s)\n\n| process | import s |\n|---|---:|")
    for name, seconds in imports.items():
        print(f"| {name} | {seconds:.2f} |")
    print("\n| `roadcover run` with nothing to do | seconds (each run) | median |\n|---|---|---:|")
    for cores, seconds in no_op.items():
        each = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| --cores {cores} | {each} | {statistics.median(seconds):.2f} |")
    imported = critical_path_imports(imports)
    floor = statistics.median(no_op[1]) + imported
    print(
        f"\nfloor: {statistics.median(no_op[1]):.2f} s (nothing to do, 1 core) + {imported:.2f} s "
        f"(imports on the critical path) = {floor:.2f} s; the demo's {fixes:,} fixes cannot "
        f"go faster than {fixes / floor:,.0f} fixes/s end to end"
    )


if __name__ == "__main__":
    main()
