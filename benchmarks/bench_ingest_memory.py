"""The ingest stage's memory against the batch's size (and, optionally, another code's).

Usage::

    python benchmarks/bench_ingest_memory.py FOLDER [FOLDER ...] [--other-code TREE] [--runs N]

Every run is ``roadcover ingest -o OUT --workers 2 -- FOLDER`` in a fresh process (its own
LocalCluster of 2 workers), of this checkout's code and, with ``--other-code``, at the same
time in another thread, of the source tree ``TREE`` (e.g. ``git archive BASE | tar -x -C
TREE``; it comes first on the other command's ``PYTHONPATH``). ``bench_scale.measure_command``
measures each: CPU seconds of the whole tree (``os.wait4``), its peak RSS and the stage
process's own (sampled every 0.1 s). With two codes, after the runs of a folder, every file the
two wrote (points, trips, rejects, reports, the key's fingerprint; not the lock) is compared by
sha256, and a trips table whose bytes differ by its row groups alone is compared by content.
Prints one JSON line per run and a Markdown table of the medians for docs/benchmarks.md
("Ingest: the stage's memory against the batch's size").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import ROADCOVER, at_once, machine, measure_command

from pipeline.contracts import TRIPS
from pipeline.io import read_table

HERE = Path(__file__).parent
KEY_ENV = "ROADCOVER_PSEUDONYM_KEY"
LOCK = ".roadcover.lock"
BENCH_KEY = "bench-pseudonym-key-0123456789"


def ingest_env(code: Path) -> dict[str, str]:
    """This process's environment with ``code`` first on the path, and a pseudonym key."""
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, KEY_ENV: os.environ.get(KEY_ENV, BENCH_KEY)}


def run_pair(folder: Path, codes: dict[str, Path], work: Path) -> dict[str, dict[str, Any]]:
    """Ingest ``folder`` with each code at the same time; return each one's measure."""
    results: dict[str, dict[str, Any]] = {}

    def one(label: str, code: Path) -> None:
        out = work / label
        shutil.rmtree(out, ignore_errors=True)
        argv = [*ROADCOVER, "ingest", "-o", str(out), "--workers", "2", "--", str(folder)]
        measure = measure_command(argv, work / f"{label}.log", 0.1, ingest_env(code))
        if measure.exit_status:
            raise RuntimeError(f"{label}: roadcover ingest failed; see {work / label}.log")
        results[label] = {"folder": str(folder), "code": label, **measure.__dict__}

    at_once(one, codes.items())
    return results


def digests(folder: Path) -> dict[str, str]:
    """Each file's sha256 under ``folder`` (relative path -> digest), the lock left out."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != LOCK
    }


def compare_outputs(one: Path, other: Path) -> str:
    """Say whether two traces folders hold the same files, byte for byte or by content."""
    first, second = digests(one), digests(other)
    if first.keys() != second.keys():
        return f"different files: {sorted(first.keys() ^ second.keys())}"
    differ = [name for name in first if first[name] != second[name]]
    if not differ:
        return f"all {len(first)} files byte-identical"
    if all(name.startswith("trips/") for name in differ):
        for name in differ:
            pd.testing.assert_frame_equal(
                pd.DataFrame(read_table(one / name, TRIPS)),
                pd.DataFrame(read_table(other / name, TRIPS)),
            )
        return f"{len(first) - len(differ)} files byte-identical; the trips the same rows"
    return f"different bytes: {differ}"


def main() -> None:
    """Parse the command line, run the pairs and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--other-code", type=Path, help="a source tree to run side by side")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-ingest-memory"))
    args = parser.parse_args()
    codes = {"this": HERE.parent.absolute()}
    if args.other_code:
        codes["other"] = args.other_code.absolute()
    print("| folder | code | CPU s (tree) | tree peak RSS MiB | stage process peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for folder in args.folders:
        work = args.work / folder.name
        work.mkdir(parents=True, exist_ok=True)
        runs = [run_pair(folder, codes, work) for _ in range(args.runs)]
        for pair in runs:
            for result in pair.values():
                print(json.dumps(result), file=sys.stderr)
        for label in codes:
            med = {
                key: statistics.median(run[label][key] for run in runs)
                for key in ("cpu_s", "peak_rss_mb", "own_peak_rss_mb")
            }
            print(
                f"| {folder} | {label} | {med['cpu_s']:.1f} | {med['peak_rss_mb']:,.0f} | "
                f"{med['own_peak_rss_mb']:,.0f} |"
            )
        if "other" in codes:
            print(f"outputs: {compare_outputs(work / 'this', work / 'other')}", file=sys.stderr)
    print(machine(), file=sys.stderr)


if __name__ == "__main__":
    main()
