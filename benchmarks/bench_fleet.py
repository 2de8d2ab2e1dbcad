"""End-to-end benchmark: the workflow on a large network with simulated fleets of growing size.

Usage::

    python benchmarks/bench_fleet.py CONFIG --devices 135 450 [--roads BUILT_ROADS] -o DIR

For each fleet size, ``CONFIG`` (one region with ``simulated_fleet: true``) is written to
``DIR/devices-N/config.yaml`` with ``simulate.devices: N`` and its ``output_dir`` in that
folder, and ``roadcover run --cores CORES`` runs it from scratch. With ``--roads`` a roads
folder built once (``roadcover roads build``, or the workflow's own) is hard-linked into the
run as the region's roads, so that the run starts with the simulator (the roads' cost does not
grow with the fleet; measure it once, apart).

Measured per run:

* wall time, and the CPU seconds of the whole process tree (``os.wait4`` on ``roadcover run``:
  Snakemake, every rule's processes, the shared Dask cluster);
* per rule: wall time and Snakemake's ``max_rss`` (its own processes), the CPU seconds of the
  whole tree while the rule ran (a sampler of the tree's CPU times every ``--interval``
  seconds, between the rule's start and end in Snakemake's log; rules that run side by side
  share their window) and the peak RSS of the stage's whole tree with the shared cluster
  (the stage's record in ``benchmarks/_process_tree``, :mod:`pipeline.process_tree`);
* fixes read (the fleet batch's report), fixes per second end to end and without the
  simulator; the peak RSS of the whole run (``run.json``).

``--until '{region}/coverage/summary.json'`` stops each run after the coverage, leaving out the
exports and the report (whose cost is the region's, not the fleet's). Prints Markdown tables
and one JSON line per run (``--json`` appends them to a file). Run heavy
sizes under ``nice``: CPU seconds do not change with it, wall times do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import psutil
import yaml

KEY = "benchmark-key-not-a-secret-0123"
FLEET_BATCH = "fleet"
# Snakemake's log: a job's start ("[Mon Dec  7 00:42:24 2026]" then "localrule NAME:" and
# its "jobid: N") and its end ("[...]" then "Finished jobid: N (Rule: NAME)")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished job(?:id)?:? (\d+)")


@dataclass
class RuleMeasure:
    """One rule's measures in a run."""

    wall_s: float
    snakemake_max_rss_mb: float
    tree_cpu_s: float | None = None
    stage_tree_peak_rss_mb: float | None = None


@dataclass
class FleetRun:
    """Measures of one workflow run."""

    devices: int
    fixes: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float | None
    rules: dict[str, RuleMeasure] = field(default_factory=dict)

    def rule_s(self, name: str) -> float:
        """A rule's wall time (0 when it did not run)."""
        return self.rules[name].wall_s if name in self.rules else 0.0


class TreeCpuSampler:
    """Sample the CPU seconds used so far by a process tree, every ``interval_s``.

    A live process's user and system time plus those of its children it has waited for: the
    sum over the live tree counts every process once, also those that have ended.
    """

    def __init__(self, pid: int, interval_s: float) -> None:
        self.root, self.interval_s = psutil.Process(pid), interval_s
        self.samples: list[tuple[float, float]] = []  # (unix time, CPU s so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            with contextlib.suppress(psutil.Error):
                for process in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        total += times.user + times.system
                        total += times.children_user + times.children_system
            self.samples.append((time.time(), total))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeCpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds used between two unix times (the samples nearest to them)."""
        times = [t for t, _ in self.samples]
        first = min(range(len(times)), key=lambda i: abs(times[i] - start))
        last = min(range(len(times)), key=lambda i: abs(times[i] - end))
        return max(0.0, self.samples[last][1] - self.samples[first][1])


def fleet_config(template: Path, devices: int, folder: Path) -> tuple[Path, str]:
    """Write the config of one fleet size into ``folder``; return it and its region's name."""
    config = yaml.safe_load(template.read_text())
    config["output_dir"] = str(folder / "results")
    config.setdefault("simulate", {})["devices"] = devices
    regions = [region for region in config["regions"] if region.get("simulated_fleet")]
    if len(regions) != 1:
        raise SystemExit(f"{template}: give one region with simulated_fleet: true")
    for region in config["regions"]:
        region["osm"] = str((template.parent / region["osm"]).resolve())
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, str(regions[0]["name"])


def link_roads(built: Path, region_roads: Path) -> None:
    """Hard-link a built roads folder's files as the region's roads (meta.json last)."""
    region_roads.mkdir(parents=True)
    files = sorted(p for p in built.rglob("*") if p.is_file() and p.name != ".roadcover.lock")
    for path in sorted(files, key=lambda p: p.name == "meta.json"):
        target = region_roads / path.relative_to(built)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


def rule_windows(log_text: str) -> dict[str, tuple[float, float]]:
    """Each rule's (start, end) unix times from Snakemake's log (last job of each rule)."""
    stamp = 0.0
    started: dict[str, tuple[str, float]] = {}
    pending_rule: str | None = None
    windows: dict[str, tuple[float, float]] = {}
    for line in log_text.splitlines():
        if match := STAMP.match(line.strip()):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
        elif match := RULE.match(line.strip()):
            pending_rule = match.group(1)
        elif (match := JOBID.match(line)) and pending_rule is not None:
            started[match.group(1)] = (pending_rule, stamp)
            pending_rule = None
        elif (match := FINISHED.match(line.strip())) and match.group(1) in started:
            name, start = started[match.group(1)]
            windows[name] = (start, stamp)
    return windows


def stage_peaks(records: Path) -> dict[str, float]:
    """The peak RSS (MiB) of each stage command's whole tree, by subcommand words."""
    peaks: dict[str, float] = {}
    for path in sorted(records.glob("*.json")):
        record = json.loads(path.read_text())
        if path.name == "run.json":
            continue
        words = [w for w in record["command"][:2] if w.isidentifier()]
        name = " ".join(words)
        peaks[name] = max(peaks.get(name, 0.0), float(record["peak_rss_mb"]))
    return peaks


STAGE_OF_RULE = {
    "simulate_fleet": "simulate",
    "ingest_traces": "ingest",
    "match_traces": "snap",
    "compute_coverage": "coverage",
    "export_tiles": "export tiles",
    "export_feed": "export feed",
    "export_viewer": "export viewer",
    "export_priorities": "export priorities",
    "write_report": "report",
    "build_roads": "roads build",
}


def run_fleet(
    template: Path,
    devices: int,
    folder: Path,
    roads: Path | None,
    cores: int,
    interval_s: float,
    until: str | None = None,
) -> FleetRun:
    """Run the workflow once on a fleet of ``devices``; return its measures.

    With ``until`` (a file under the output folder, ``{region}`` for the region's name), the
    workflow runs only the rules that file needs.
    """
    folder.mkdir(parents=True)
    config_path, region = fleet_config(template, devices, folder)
    results = folder / "results"
    if roads is not None:
        link_roads(roads, results / region / "roads")
    command = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config_path),
               "--cores", str(cores)]  # fmt: skip
    if until is not None:
        command.append(str(results / until.format(region=region)))
    log_path = folder / "run.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=folder, env={**os.environ, "ROADCOVER_PSEUDONYM_KEY": KEY},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        with TreeCpuSampler(process.pid, interval_s) as cpu:
            _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the workflow failed; see {log_path}")
    batch = results / region / "traces" / "batches" / f"{FLEET_BATCH}.json"
    records = results / "benchmarks" / "_process_tree"
    run_record = json.loads((records / "run.json").read_text())
    run = FleetRun(
        devices=devices,
        fixes=int(json.loads(batch.read_text())["rows_read"]),
        wall_s=wall_s,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=run_record.get("peak_rss_mb"),
    )
    windows = rule_windows(log_path.read_text())
    peaks = stage_peaks(records)
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        name = tsv.stem if tsv.parent.name in (region, "benchmarks") else tsv.parent.name
        window = windows.get(name)
        run.rules[name] = RuleMeasure(
            wall_s=float(row["s"]),
            snakemake_max_rss_mb=float(row["max_rss"]),
            tree_cpu_s=cpu.cpu_between(*window) if window else None,
            stage_tree_peak_rss_mb=peaks.get(STAGE_OF_RULE.get(name, ""), None),
        )
    return run


def print_tables(runs: list[FleetRun]) -> None:
    """Print the end-to-end table and the per-rule table."""
    print(
        "| devices | fixes | wall s | CPU s (whole tree) | CPU s per M fixes | fixes/s end to end "
        "| without the simulator | peak RSS MiB (whole run) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in runs:
        no_sim = r.wall_s - r.rule_s("simulate_fleet")
        peak = f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb else "-"
        print(
            f"| {r.devices} | {r.fixes:,} | {r.wall_s:,.1f} | {r.cpu_s:,.1f} | "
            f"{r.cpu_s / r.fixes * 1e6:,.1f} | {r.fixes / r.wall_s:,.0f} | "
            f"{r.fixes / no_sim:,.0f} | {peak} |"
        )
    names = sorted({name for r in runs for name in r.rules})
    print(
        "\n| rule | "
        + " | ".join(f"{r.devices} dev: wall s / tree CPU s / stage tree peak MiB" for r in runs)
        + " |\n|---|"
        + "---|" * len(runs)
    )
    for name in names:
        cells = []
        for r in runs:
            m = r.rules.get(name)
            if m is None:
                cells.append("-")
                continue
            cpu = f"{m.tree_cpu_s:,.1f}" if m.tree_cpu_s is not None else "-"
            peak = f"{m.stage_tree_peak_rss_mb:,.0f}" if m.stage_tree_peak_rss_mb else "-"
            cells.append(f"{m.wall_s:,.1f} / {cpu} / {peak}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    """Run each fleet size once and print its measures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path, help="a config with one simulated-fleet region")
    parser.add_argument("--devices", type=int, nargs="+", required=True)
    parser.add_argument("--roads", type=Path, help="a built roads folder of the region's extract")
    parser.add_argument("-o", "--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5, help="CPU sampling, seconds")
    parser.add_argument(
        "--until",
        help="stop at this output, e.g. '{region}/coverage/summary.json' (no exports)",
    )
    parser.add_argument("--json", type=Path, help="append one JSON line per run to this file")
    args = parser.parse_args()
    runs = []
    for devices in args.devices:
        run = run_fleet(
            args.config.resolve(), devices, args.out / f"devices-{devices}",
            args.roads.resolve() if args.roads else None, args.cores, args.interval, args.until,
        )  # fmt: skip
        runs.append(run)
        line = json.dumps(asdict(run))
        print(line, file=sys.stderr)
        if args.json:
            with args.json.open("a") as out:
                out.write(line + "\n")
    print_tables(runs)


if __name__ == "__main__":
    main()
