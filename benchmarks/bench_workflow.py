"""End-to-end benchmark: the whole workflow on the demo region with growing simulated fleets.

Usage: ``python benchmarks/bench_workflow.py [--scales 1 4 16] [--workers 1 2]``. For each fleet
size (the demo's 40 devices over 21 days, times each scale) and Dask worker count, runs
``roadcover run`` from scratch into a temporary folder and reports wall time, fixes read, fixes
per second end to end, and each rule's time and peak memory from Snakemake's benchmark files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pipeline.config import DEMO_CONFIG_PATH

KEY = "benchmark-key-not-a-secret-0123"


@dataclass
class Run:
    """Measures of one workflow run."""

    devices: int
    workers: int
    seconds: float
    fixes: int
    rules: dict[str, tuple[float, float]]


def run_once(scale: int, workers: int, folder: Path) -> Run:
    """Run the workflow once; return its measures."""
    config = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    config["output_dir"] = str(folder / "results")
    config["simulate"]["devices"] = 40 * scale
    config["ingest"] = {"workers": workers}
    config["snap"] = {"workers": workers}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config_path), "--cores", "2"],
        check=True, cwd=folder, env={**os.environ, "ROADCOVER_PSEUDONYM_KEY": KEY},
        capture_output=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    region = folder / "results" / "helsinki"
    fixes = json.loads((region / "traces" / "batches" / "fleet.json").read_text())["rows_read"]
    rules = {}
    benchmarks = folder / "results" / "benchmarks"
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        # helsinki/build_roads.tsv, helsinki/ingest_traces/fleet.tsv (per batch), write_report.tsv
        name = str(tsv.relative_to(benchmarks).with_suffix("")).removeprefix("helsinki/")
        rules[name] = (float(row["s"]), float(row["max_rss"]))
    return Run(40 * scale, workers, seconds, fixes, rules)


def main() -> None:
    """Run every combination and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    results = []
    for scale in args.scales:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as folder:
                results.append(run_once(scale, workers, Path(folder)))
                print(f"done: scale {scale}, {workers} worker(s)", file=sys.stderr)
    print(
        "| fleet | workers | fixes | seconds | fixes/s end to end | without the simulator |\n"
        "|---|---|---|---|---|---|"
    )
    for r in results:
        simulate_s = r.rules.get("simulate_fleet", (0.0, 0.0))[0]
        print(
            f"| {r.devices} devices | {r.workers} | {r.fixes:,} | {r.seconds:.0f} | "
            f"{r.fixes / r.seconds:,.0f} | {r.fixes / (r.seconds - simulate_s):,.0f} |"
        )
    names = sorted({name for r in results for name in r.rules})
    print(
        "\n| rule | "
        + " | ".join(f"{r.devices} dev, {r.workers} w: s (MB)" for r in results)
        + " |"
    )
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = [
            f"{r.rules[name][0]:.1f} ({r.rules[name][1]:.0f})" if name in r.rules else "-"
            for r in results
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
