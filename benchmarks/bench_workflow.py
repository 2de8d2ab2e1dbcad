"""End-to-end benchmark: the whole workflow on the demo region with growing simulated fleets.

Usage: ``python benchmarks/bench_workflow.py [--scales 1 4 16] [--workers 1 2] [--runs N]``.
For each fleet size (the demo's 40 devices over 21 days, times each scale) and worker count, runs
``roadcover run --cores WORKERS`` from scratch into a temporary folder (the rules give their
stages ``--workers {threads}``, and ``roadcover run`` shares one LocalCluster of ``WORKERS``
Dask workers between them; one core means no Dask at all) and reports wall time, fixes read,
fixes per second end to end, each rule's time and peak memory from Snakemake's benchmark files,
and the peak RSS of any one Dask worker (sampled every 0.2 s: Snakemake's figures cover a
rule's own processes, not the shared workers). With ``--runs N`` every combination runs N
times, the rounds interleaved (so that the machine's drift falls on all of them alike), and
the tables give medians (seconds, fixes/s and each rule's time; the peak RSS is the largest).
To compare two versions side by side, run the script from each checkout in turn (e.g. with
``PYTHONPATH`` on an old worktree); warm its Numba cache with a first run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
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
    worker_peak_rss: int


class WorkerPeak:
    """Peak RSS of any one Dask worker below a process (workers are multiprocessing children)."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "multiprocessing" in " ".join(child.cmdline()):
                            self.peak = max(self.peak, child.memory_info().rss)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def demo_config(folder: Path, scale: int = 1) -> Path:
    """Write the demo's config, its fleet ``scale`` times larger, into ``folder``; return it.

    Its outputs go to ``folder/results``.
    """
    config = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    config["output_dir"] = str(folder / "results")
    config["simulate"]["devices"] *= scale
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def run_command(config_path: Path, cores: int) -> list[str]:
    """The command that runs the workflow on a config (``roadcover run``)."""
    return [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config_path),
            "--cores", str(cores)]  # fmt: skip


def fixes_read(folder: Path) -> int:
    """The fixes the demo region's fleet batch read, in a run into ``folder/results``."""
    batch = folder / "results" / "helsinki" / "traces" / "batches" / "fleet.json"
    return int(json.loads(batch.read_text())["rows_read"])


def run_once(scale: int, workers: int, folder: Path) -> Run:
    """Run the workflow once; return its measures."""
    command = run_command(demo_config(folder, scale), workers)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=folder, env={**os.environ, "ROADCOVER_PSEUDONYM_KEY": KEY},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    worker_peak = WorkerPeak(process.pid)
    worker_peak.start()
    _, stderr = process.communicate()
    worker_peak.stop()
    if process.returncode != 0:
        raise RuntimeError(f"the workflow failed:\n{stderr.decode()[-3000:]}")
    seconds = time.perf_counter() - started
    fixes = fixes_read(folder)
    rules = {}
    benchmarks = folder / "results" / "benchmarks"
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        # helsinki/build_roads.tsv, helsinki/ingest_traces/fleet.tsv (per batch), write_report.tsv
        name = str(tsv.relative_to(benchmarks).with_suffix("")).removeprefix("helsinki/")
        rules[name] = (float(row["s"]), float(row["max_rss"]))
    return Run(40 * scale, workers, seconds, fixes, rules, worker_peak.peak)


def main() -> None:
    """Run every combination (``--runs`` times, interleaved) and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=1, help="runs of each combination")
    args = parser.parse_args()
    runs: dict[tuple[int, int], list[Run]] = {}
    for round_ in range(args.runs):
        for scale in args.scales:
            for workers in args.workers:
                with tempfile.TemporaryDirectory() as folder:
                    runs.setdefault((scale, workers), []).append(
                        run_once(scale, workers, Path(folder))
                    )
                print(
                    f"done: round {round_ + 1}, scale {scale}, {workers} worker(s)", file=sys.stderr
                )
    print_tables([median_run(group) for group in runs.values()], args.runs)


def median_run(runs: list[Run]) -> Run:
    """One run of medians: wall time, each rule's time and memory; the largest worker peak."""
    names = {name for r in runs for name in r.rules}
    return Run(
        runs[0].devices,
        runs[0].workers,
        statistics.median(r.seconds for r in runs),
        runs[0].fixes,
        {
            name: (
                statistics.median(r.rules[name][0] for r in runs if name in r.rules),
                statistics.median(r.rules[name][1] for r in runs if name in r.rules),
            )
            for name in names
        },
        max(r.worker_peak_rss for r in runs),
    )


def print_tables(results: list[Run], runs: int) -> None:
    """Print the end-to-end table and the per-rule table (medians of ``runs`` runs)."""
    print(f"medians of {runs} run(s)\n")
    print(
        "| fleet | cores (Dask workers) | fixes | seconds | fixes/s end to end "
        "| without the simulator | peak RSS per worker MiB |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in results:
        simulate_s = r.rules.get("simulate_fleet", (0.0, 0.0))[0]
        peak = f"{r.worker_peak_rss / 2**20:,.0f}" if r.worker_peak_rss else "- (no Dask)"
        print(
            f"| {r.devices} devices | {r.workers} | {r.fixes:,} | {r.seconds:.1f} | "
            f"{r.fixes / r.seconds:,.0f} | {r.fixes / (r.seconds - simulate_s):,.0f} | {peak} |"
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
