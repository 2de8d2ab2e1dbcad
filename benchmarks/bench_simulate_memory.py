"""The simulate stage process's memory against the fleet's size (and, optionally, another code's).

Usage::

    python benchmarks/bench_simulate_memory.py ROADS --devices 100 400 1400 [--other-code TREE]
        [--days 7] [--runs 3] [--work DIR]

Every run is ``roadcover simulate --roads ROADS --devices N --days D --seed S --format csv
--workers 2`` in a fresh process (its own LocalCluster of 2 workers), of this checkout's code
and, with ``--other-code``, at the same time in another thread, of the source tree ``TREE``
(e.g. ``git archive BASE pipeline | tar -x -C TREE``; it comes first on the other command's
``PYTHONPATH``). ``bench_scale.measure_command`` measures each: CPU seconds of the whole tree
(``os.wait4``: the stage process, the nannies and workers), its peak RSS and the stage
process's own (sampled every 0.2 s); the stage process also reports its ``VmHWM`` as it exits
(the true peak of its own RSS, which a sample can miss). With two codes, after the runs of a
size, every file the two wrote is compared by sha256. Prints one JSON line per run and a
Markdown table of the medians for docs/benchmarks.md ("Simulate: a fleet on a sharded region").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest_memory import digests
from bench_scale import at_once, machine, measure_command

HERE = Path(__file__).parent
SEED = 20261207
HWM_ENV = "ROADCOVER_BENCH_HWM_FILE"
# runs roadcover's command line; as the process exits, writes its VmHWM (MiB) to HWM_ENV's file
# (read here, not with pipeline.process_tree.own_peak_rss_mb: the other code may not have it)
WITH_HWM = """
import atexit, os, sys
from pathlib import Path
def write_hwm():
    status = Path("/proc/self/status").read_text().splitlines()
    kib = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
    Path(os.environ["ROADCOVER_BENCH_HWM_FILE"]).write_text(str(kib / 1024))
atexit.register(write_hwm)
from pipeline.cli import main
sys.argv[0] = "roadcover"
main()
"""


def simulate_env(code: Path, hwm_file: Path) -> dict[str, str]:
    """This process's environment with ``code`` first on the path and the VmHWM file named."""
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, HWM_ENV: str(hwm_file)}


def run_pair(
    roads: Path, devices: int, days: int, codes: dict[str, Path], work: Path
) -> dict[str, dict[str, Any]]:
    """Simulate the fleet with each code at the same time; return each one's measure."""
    results: dict[str, dict[str, Any]] = {}

    def one(label: str, code: Path) -> None:
        out, hwm = work / label, work / f"{label}.hwm"
        shutil.rmtree(out, ignore_errors=True)
        hwm.unlink(missing_ok=True)
        argv = [sys.executable, "-c", WITH_HWM, "simulate", "--roads", str(roads),
                "-o", str(out), "--devices", str(devices), "--days", str(days),
                "--seed", str(SEED), "--format", "csv", "--workers", "2"]  # fmt: skip
        measure = measure_command(argv, work / f"{label}.log", 0.2, simulate_env(code, hwm))
        if measure.exit_status:
            raise RuntimeError(f"{label}: roadcover simulate failed; see {work / label}.log")
        fixes = json.loads((out / "simulation.json").read_text())["totals"]["fixes"]
        results[label] = {
            "devices": devices, "days": days, "code": label, "fixes": fixes,
            "stage_vmhwm_mb": float(hwm.read_text()), **measure.__dict__,
        }  # fmt: skip

    at_once(one, codes.items())
    return results


def main() -> None:
    """Parse the command line, run the pairs and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roads", type=Path)
    parser.add_argument("--other-code", type=Path, help="a source tree to run side by side")
    parser.add_argument("--devices", type=int, nargs="+", required=True)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-simulate-memory"))
    args = parser.parse_args()
    codes = {"this": HERE.parent.absolute()}
    if args.other_code:
        codes["other"] = args.other_code.absolute()
    print("| devices x days | fixes | code | CPU s (tree) | tree peak RSS MiB "
          "| stage process VmHWM MiB (sampled peak) |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|")
    for devices in args.devices:
        work = args.work / f"devices-{devices}"
        work.mkdir(parents=True, exist_ok=True)
        runs = [run_pair(args.roads, devices, args.days, codes, work) for _ in range(args.runs)]
        for pair in runs:
            for result in pair.values():
                print(json.dumps(result), file=sys.stderr, flush=True)
        for label in codes:
            med = {
                key: statistics.median(run[label][key] for run in runs)
                for key in ("cpu_s", "peak_rss_mb", "stage_vmhwm_mb", "own_peak_rss_mb")
            }
            print(
                f"| {devices} x {args.days} | {runs[0][label]['fixes']:,} | {label} "
                f"| {med['cpu_s']:.1f} | {med['peak_rss_mb']:,.0f} "
                f"| {med['stage_vmhwm_mb']:,.0f} ({med['own_peak_rss_mb']:,.0f}) |",
                flush=True,
            )
        if "other" in codes:
            same = digests(work / "this") == digests(work / "other")
            verdict = "byte-identical" if same else "DIFFER"
            print(f"{devices} devices: outputs {verdict}", flush=True)
    print(machine(), file=sys.stderr)


if __name__ == "__main__":
    main()
