"""The memory model of the rules against the measured peaks of their jobs' process trees.

Runs the workflow with Snakemake directly (no shared Dask cluster: every job starts its own
workers, as on a cluster) with ``ROADCOVER_PROCESS_RECORDS`` set, so that each stage command
records the peak memory of its whole process tree (:mod:`pipeline.process_tree`); then prints,
for every job, the sizes the model reads of its inputs, the model's peak
(:mod:`pipeline.resources`, before headroom), the memory the rule declares, and the measured
peaks::

    python benchmarks/bench_resources.py                        # demo at 40 and 160 devices,
                                                                # two Kubicka networks
    python benchmarks/bench_resources.py --runs s40 kub         # only some of them
    python benchmarks/bench_resources.py --collect-only WORKDIR  # tabulate an earlier run

The Kubicka networks (76,425 and 307,392 edges) need the shared data (``ROADCOVER_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DEMO_CONFIG_PATH
from pipeline.process_tree import RECORDS_ENV
from pipeline.resources import (
    COSTS,
    InputSizes,
    job_mem_mb,
    local_extract,
    measure_inputs,
    model_peak_mb,
    osm_edges,
    rule_threads,
    sharded_sizes,
)
from pipeline.workflow import SNAKEFILE

KUBICKA = ("00000017", "00000013")
RULES = {
    "roads build": "build_roads",
    "simulate": "simulate_fleet",
    "ingest": "ingest_traces",
    "snap": "match_traces",
    "coverage": "compute_coverage",
    "export tiles": "export_tiles",
    "export viewer": "export_viewer",
    "export feed": "export_feed",
    "export priorities": "export_priorities",
    "report": "write_report",
}


def write_configs(workdir: Path, shared: Path) -> list[str]:
    """Write the configs of the runs into ``workdir``; return their names."""
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    names = []
    for devices in (40, 160):
        name = f"s{devices}"
        config = {**demo, "output_dir": f"results/{name}"}
        config["simulate"] = {**demo["simulate"], "devices": devices}
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(config))
        names.append(name)
    drives = shared / "mapmatch" / "kubicka-dev"
    if drives.is_dir():
        regions = [
            {
                "name": f"k{drive}",
                "osm": str(drives / drive / "network.osm.bz2"),
                "batches": {"drive": [str(drives / drive / "trace.csv")]},
            }
            for drive in KUBICKA
        ]
        contributors = [{"pattern": "*/kubicka-dev/*", "contributor_id": "kubicka-2015"}]
        config = {
            "output_dir": "results/kub",
            "regions": regions,
            "roads": {"network": "drive"},
            "ingest": {"contributors": contributors},
        }
        (workdir / "kub.yaml").write_text(yaml.safe_dump(config))
        names.append("kub")
    return names


def run(workdir: Path, name: str, cores: int) -> None:
    """Run the workflow of config ``name`` in ``workdir`` with the stages' records on."""
    records = workdir / "results" / name / "benchmarks" / "_process_tree"
    env = {**os.environ, RECORDS_ENV: str(records)}
    env.setdefault("ROADCOVER_PSEUDONYM_KEY", "bench-key-not-a-secret-0123456789")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--configfile", f"{name}.yaml", "--cores", str(cores), "--rerun-incomplete",
    ]  # fmt: skip
    with (workdir / f"{name}.log").open("w") as log:
        subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=log, check=True)


def rule_inputs(rule: str, command: list[str]) -> list[str]:
    """The input files the rule of a recorded command declares (as the rules name them)."""

    def option(name: str) -> list[str]:
        return [command[i + 1] for i, word in enumerate(command[:-1]) if word == name]

    after = command[command.index("--") + 1 :] if "--" in command else []
    if rule == "simulate_fleet":
        return [f"{option('--roads')[0]}/meta.json"]
    if rule == "ingest_traces":
        return after
    if rule == "match_traces":
        return [f"{option('--roads')[0]}/meta.json", *option("--batch-report")]
    if rule == "compute_coverage":
        return [f"{option('--roads')[0]}/meta.json"] + [
            f"{m}/meta.json" for m in option("--matched")
        ]
    if rule in ("export_tiles", "export_viewer"):
        return [f"{after[0]}/summary.json"]
    if rule in ("export_feed", "export_priorities"):
        return [f"{option('--roads')[0]}/meta.json", f"{after[0]}/summary.json"]
    if rule == "write_report":
        return [f"{region}/coverage/summary.json" for region in after]
    return []


def model_row(record: dict[str, Any], cores: int) -> dict[str, Any]:
    """The model's view of one recorded job beside its measured peaks."""
    command = record["command"]
    words = " ".join(word for word in command[:2] if word.isidentifier())
    rule = RULES[words]
    cwd = Path(record["cwd"])
    inputs = [str(cwd / path) for path in rule_inputs(rule, command)]
    config: dict[str, Any] = {"resources": {}}
    if rule == "build_roads":
        spec = command[-1] if "://" in command[-1] else str(cwd / command[-1])
        extract = local_extract(spec)
        assert extract is not None, spec
        sizes = InputSizes(edges=osm_edges(extract))
        edges = json.loads((cwd / command[command.index("-o") + 1] / "meta.json").read_text())
        actual = f"{edges['edge_count']:,} (estimated {sizes.edges:,})"
        threads = 1
    else:
        sizes = sharded_sizes(rule, inputs, measure_inputs(inputs))
        if rule == "simulate_fleet":
            out = cwd / command[command.index("-o") + 1]
            params = json.loads((out / "simulation.json").read_text())["params"]
            config["simulate"] = {"devices": params["devices"], "days": params["days"]}
            sizes = replace(sizes, device_days=params["devices"] * params["days"])
        actual = f"{sizes.edges:,}"
        threads = min(cores, rule_threads(rule, inputs, config))
    cost = COSTS[rule]
    units = {
        "fix": sizes.fixes or 0,
        "input_mb": sizes.input_bytes / 2**20,
        "segment": sizes.segments,
        "device_day": sizes.device_days,
        "": 0,
    }[cost.unit]
    return {
        "job": f"{rule} {Path(record['output']).name}",
        "edges": actual,
        "units": f"{units:,.1f} {cost.unit}".strip(),
        "threads": threads,
        "model_mb": round(model_peak_mb(rule, sizes, threads)),
        "declared_mb": job_mem_mb(rule, sizes, threads, config["resources"]),
        "rss_mb": record["peak_rss_mb"],
        "pss_mb": record["peak_pss_mb"],
        "processes": record["peak_processes"],
    }


def collect(workdir: Path, names: list[str], cores: int) -> list[dict[str, Any]]:
    """The rows of every recorded job of the runs ``names`` in ``workdir``."""
    rows = []
    for name in names:
        folder = workdir / "results" / name / "benchmarks" / "_process_tree"
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            rows.append({"run": name, **model_row(record, cores)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-only", type=Path, help="tabulate the runs in this folder")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--runs", nargs="+", choices=("s40", "s160", "kub"), help="only these runs (default: all)"
    )
    args = parser.parse_args()
    shared = Path(os.environ.get("ROADCOVER_SHARED_DATA", "../shared/data")).resolve()
    if args.collect_only:
        workdir = args.collect_only.resolve()
        names = [p.stem for p in sorted(workdir.glob("*.yaml"))]
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-resources-"))
        names = [n for n in write_configs(workdir, shared) if not args.runs or n in args.runs]
        for name in names:
            run(workdir, name, args.cores)
    rows = collect(workdir, names, args.cores)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")


if __name__ == "__main__":
    main()
