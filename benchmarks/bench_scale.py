"""How the roads build grows with the network: 1x to 32x copies of a real network side by side.

Usage::

    python benchmarks/bench_scale.py unsharded --factors 1 2 4 8 [--runs N]
    python benchmarks/bench_scale.py sharded --factors 1 2 4 8 16 32 --shard-resolution R
    python benchmarks/bench_scale.py sharded --factors 8 --max-shards 20 --random-shards 20
    python benchmarks/bench_scale.py cut --factors 1 2 4 8 16 --shard-resolution R [--runs N]

The networks are ``benchmarks/scale_network.py``'s replicas of Kubicka 00000013 (307,392 edges
per copy), written once into ``--networks`` (default ``/tmp/roadcover-scale``) and reused.
Every build is ``roadcover roads build`` in a fresh process; while it runs,
:class:`pipeline.process_tree.TreeMemorySampler` samples the memory of its whole process tree
(every process it starts included) every 0.5 s. CPU seconds are the build process's user +
system time with its children's (``os.wait4``). Prints Markdown tables for docs/benchmarks.md
and one JSON line per build.

A sharded run is the cut, every shard two processes at a time (the machine's two cores), then
the merge; its total wall time runs from the cut's start to the merge's end, with the load
average sampled every 10 s meanwhile (the machine is shared). After the merge the region is
checked against the source network read here with pyosmium (not by the pipeline): ``N`` times
its ways as edges (each of Kubicka's ways is one directed edge), ``N`` times its road km (each
way's great-circle length on osmnx's sphere of 6,371,009 m), and every edge owned by exactly
one shard.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.process_tree import TreeMemorySampler

HERE = Path(__file__).parent
ROADCOVER = [sys.executable, "-m", "pipeline.cli"]
SAMPLE_INTERVAL_S = 0.5
LOAD_INTERVAL_S = 10.0
EARTH_RADIUS_M = 6_371_009.0  # osmnx.distance.great_circle's default


@dataclass
class Measure:
    """One command's cost: wall and CPU seconds, peak RSS and PSS of its process tree (MiB)."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    peak_pss_mb: float | None
    exit_status: int
    own_peak_rss_mb: float = 0.0  # the command's own process


def at_once(run: Callable[..., None], calls: Iterable[tuple[Any, ...]]) -> None:
    """Call ``run(*args)`` for every ``args`` of ``calls`` at the same time, one thread each.

    For commands measured side by side; returns once every call has.
    """
    threads = [threading.Thread(target=run, args=args) for args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure_command(
    argv: list[str],
    log_path: Path,
    interval_s: float = SAMPLE_INTERVAL_S,
    env: dict[str, str] | None = None,
) -> Measure:
    """Run ``argv`` to its end, sampling its process tree's memory; stderr/stdout to the log.

    CPU seconds are the process's own and its waited-for children's (``os.wait4``), so jobs
    measured side by side in threads do not count each other's. ``env``: the command's
    environment (default: this process's).
    """
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        with TreeMemorySampler(
            process.pid, interval_s=interval_s, include_shared_cluster=False
        ) as sampler:
            _, wait_status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(wait_status)
    memory = sampler.snapshot()
    return Measure(
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=memory.peak_rss_mb,
        peak_pss_mb=memory.peak_pss_mb,
        exit_status=process.returncode,
        own_peak_rss_mb=memory.own_peak_rss_mb,
    )


def network_file(folder: Path, factor: int) -> Path:
    """The replicated network of ``factor`` copies, written by scale_network.py if missing."""
    path = folder / f"kubicka13-x{factor}.osm.pbf"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "scale_network.py"), "--factor", str(factor),
             "-o", str(path)],
            check=True,
        )  # fmt: skip
    return path


def read_meta(roads_dir: Path) -> dict[str, object]:
    """The roads folder's ``meta.json``."""
    return dict(json.loads((roads_dir / "meta.json").read_text()))


def bench_unsharded(networks: Path, factors: list[int], runs: int) -> None:
    """Build each factor's network unsharded ``runs`` times; print a Markdown table."""
    rows = []
    for factor in factors:
        osm = network_file(networks, factor)
        measures, meta = [], {}
        for _ in range(runs):
            out = networks / f"roads-x{factor}"
            shutil.rmtree(out, ignore_errors=True)
            argv = [*ROADCOVER, "roads", "build", str(osm), "-o", str(out)]
            measure = measure_command(argv, networks / f"roads-x{factor}.log")
            report("unsharded", factor, measure)
            if measure.exit_status != 0:
                sys.exit(f"roads build of {osm} failed; see {networks}/roads-x{factor}.log")
            measures.append(measure)
            meta = read_meta(out)
            shutil.rmtree(out, ignore_errors=True)
        rows.append((factor, meta, measures))
    print_unsharded(rows, runs)


def print_unsharded(rows: list[tuple[int, dict[str, object], list[Measure]]], runs: int) -> None:
    """Print the unsharded builds as a Markdown table (medians over the runs)."""
    print(f"\n## roads build, unsharded: {machine()}, median of {runs}\n")
    print("| factor | edges | road km | wall s | CPU s | peak RSS MiB (tree) | peak PSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for factor, meta, measures in rows:
        pss = [m.peak_pss_mb for m in measures if m.peak_pss_mb is not None]
        print(
            f"| {factor}x | {meta['edge_count']:,} | {meta['road_km']:,.0f} "
            f"| {median(m.wall_s for m in measures):.1f} "
            f"| {median(m.cpu_s for m in measures):.1f} "
            f"| {median(m.peak_rss_mb for m in measures):,.0f} "
            f"| {median(pss):,.0f} |"
        )


CUT = """
import sys
from pathlib import Path
from typing import Any
from pipeline.roads.shards import cut_extract
plan = cut_extract(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
print(len(plan["cells"]))
"""
BUILD_SHARD = """
import sys
from pipeline.roads.shard_build import build_shard
build_shard(sys.argv[1], sys.argv[2])
"""
MERGE = """
import sys
from pipeline.roads.shard_build import merge_shards
merge_shards(sys.argv[1])
"""


def python_code(code: str, *args: str) -> list[str]:
    """The command line running ``code`` with ``args`` in a fresh interpreter."""
    return [sys.executable, "-c", code, *args]


@dataclass
class ShardedRun:
    """One factor's sharded build: its jobs' figures, the machine's load, the region's check."""

    factor: int
    cells: int
    cut: Measure
    shards: list[tuple[str, Measure]]
    shards_wall_s: float
    merged: Measure | None
    sizes: dict[str, tuple[int, int]]
    total_wall_s: float
    jobs: int
    load: list[float] = field(default_factory=list)
    check: dict[str, object] | None = None

    @property
    def total_cpu_s(self) -> float:
        """CPU seconds of the cut, every shard built and the merge."""
        merge = self.merged.cpu_s if self.merged else 0.0
        return self.cut.cpu_s + sum(m.cpu_s for _, m in self.shards) + merge


class LoadSampler:
    """Sample the 1-minute load average every ``LOAD_INTERVAL_S`` seconds in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(LOAD_INTERVAL_S):
                return


def bench_sharded(
    networks: Path,
    factors: list[int],
    resolution: int,
    sample: tuple[int, int] | None,
    merge: bool,
    jobs: int = 2,
    then_all: bool = False,
) -> None:
    """Cut each factor's network into shards, build the shards ``jobs`` at a time, merge them.

    Every job (the cut, each shard, the merge) is its own process, measured alone. With
    ``sample`` = ``(largest, randomly)`` only that many shards are built (those with the most
    core ways, and that many more chosen at random with a fixed seed) and the merge is skipped;
    with ``then_all`` too, the sample is built first and then every other shard, and merged.
    """
    runs = []
    for factor in factors:
        osm = network_file(networks, factor)
        with LoadSampler() as load:
            run = run_sharded(networks, osm, factor, resolution, sample, merge, jobs, then_all)
        run.load = load.samples
        if run.merged is not None:
            run.check = check_region(networks / f"sharded-x{factor}-r{resolution}", osm)
            print(json.dumps({"job": "check", "factor": factor, **run.check}), flush=True)
        totals = {"total_wall_s": run.total_wall_s, "total_cpu_s": run.total_cpu_s,
                  "load_min": min(run.load), "load_median": median(run.load),
                  "load_max": max(run.load)}  # fmt: skip
        print(json.dumps({"job": "total", "factor": factor, **totals}), flush=True)
        runs.append(run)
    print_sharded(runs, resolution)


def run_sharded(
    networks: Path,
    osm: Path,
    factor: int,
    resolution: int,
    sample: tuple[int, int] | None,
    merge: bool,
    jobs: int,
    then_all: bool = False,
) -> ShardedRun:
    """Cut ``osm``, build its shards (or a sample of them) ``jobs`` at a time, merge them."""
    out = networks / f"sharded-x{factor}-r{resolution}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    cut = measure_command(
        python_code(CUT, str(osm), str(out), str(resolution)), networks / f"cut-x{factor}.log"
    )
    report("cut", factor, cut)
    if cut.exit_status != 0:
        sys.exit(f"cut of {osm} failed; see {networks}/cut-x{factor}.log")
    plan = json.loads((out / "shards" / "plan.json").read_text())
    cells = plan["cells"]
    chosen = sample_shards(out, cells, *sample) if sample else cells
    if sample and then_all:  # the sample first, so that a run cut short has measured it
        chosen += [cell for cell in cells if cell not in set(chosen)]
    report("plan", factor, cut, cells=len(cells), core_ways=core_way_total(out, cells),
           ways=plan["ways_kept"])  # fmt: skip
    shards_started = time.perf_counter()
    shards = build_shards(out, chosen, networks, factor, jobs)
    shards_wall = time.perf_counter() - shards_started
    merged = None
    if merge and len(chosen) == len(cells):
        log = networks / f"merge-x{factor}.log"
        merged = measure_command(python_code(MERGE, str(out)), log)
        report("merge", factor, merged)
        if merged.exit_status != 0:
            sys.exit(f"merge of {out} failed; see {log}")
    return ShardedRun(
        factor, len(cells), cut, shards, shards_wall, merged, shard_sizes(out, chosen),
        total_wall_s=time.perf_counter() - started, jobs=jobs,
    )  # fmt: skip


def source_figures(osm: Path) -> tuple[int, float]:
    """The ways of ``osm`` and the great-circle km of its roads, read with pyosmium alone.

    A road is counted once whatever its direction: two ways along the same nodes, one the
    other reversed, are one road (as the roads stage's ``road_id``).
    """
    import osmium

    ways, roads = 0, {}
    for way in osmium.FileProcessor(str(osm)).with_locations():
        if way.is_way():
            ways += 1
            ids = [n.ref for n in way.nodes]
            points = [(math.radians(n.lon), math.radians(n.lat)) for n in way.nodes]
            key = tuple(min(ids, ids[::-1]))
            roads[key] = sum(great_circle_m(a, b) for a, b in itertools.pairwise(points))
    return ways, math.fsum(roads.values()) / 1000.0


def great_circle_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance in metres between two (lon, lat) points in radians."""
    h = (
        math.sin((b[1] - a[1]) / 2) ** 2
        + math.cos(a[1]) * math.cos(b[1]) * math.sin((b[0] - a[0]) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def check_region(out: Path, osm: Path) -> dict[str, object]:
    """Compare the merged region with the source network; every edge owned once.

    The source's figures are those of the 1x network times the factor (its copies are the same
    roads moved east), read from ``kubicka13-x1.osm.pbf`` beside ``osm``.
    """
    import numpy as np
    import pyarrow.parquet as pq

    factor = int(osm.name.split("-x")[1].split(".")[0])
    ways, km = source_figures(osm.with_name("kubicka13-x1.osm.pbf"))
    meta = read_meta(out)
    edge_ids = pq.read_table(out / "edges.parquet", columns=["edge_id"])["edge_id"].to_numpy()
    plan = json.loads((out / "shards" / "plan.json").read_text())
    owned = np.concatenate([
        pq.read_table(out / "shards" / cell / "owners.parquet", columns=["edge_id", "owned"],
                      filters=[("owned", "=", True)])["edge_id"].to_numpy()
        for cell in plan["cells"]
    ])  # fmt: skip
    owned_unique = np.unique(owned)
    return {
        "edges": int(meta["edge_count"]),  # type: ignore[call-overload]
        "edges_expected": factor * ways,
        "road_km": float(meta["road_km"]),  # type: ignore[arg-type]
        "road_km_expected": factor * km,
        "edge_ids_unique": len(np.unique(edge_ids)) == len(edge_ids),
        "owned_rows": len(owned),
        "owned_unique": len(owned_unique),
        "owned_equals_region": bool(np.array_equal(owned_unique, np.unique(edge_ids))),
    }


def bench_cut(networks: Path, factors: list[int], resolution: int, runs: int) -> None:
    """Only cut each factor's network into shards, ``runs`` times; print a Markdown table."""
    rows = []
    for factor in factors:
        osm = network_file(networks, factor)
        out = networks / f"cut-x{factor}-r{resolution}"
        measures = []
        for _ in range(runs):
            shutil.rmtree(out, ignore_errors=True)
            cut = measure_command(
                python_code(CUT, str(osm), str(out), str(resolution)), networks / "cut.log"
            )
            if cut.exit_status != 0:
                sys.exit(f"cut of {osm} failed; see {networks}/cut.log")
            plan = json.loads((out / "shards" / "plan.json").read_text())
            core = core_way_total(out, plan["cells"])
            report("cut", factor, cut, cells=len(plan["cells"]), core_ways=core,
                   ways=plan["ways_kept"])  # fmt: skip
            measures.append(cut)
        rows.append((factor, plan["ways_kept"], len(plan["cells"]), core, measures))
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n## the cut at resolution {resolution}: {machine()}, median of {runs}\n")
    print("| factor | ways | shards | core ways per way | cut CPU s | cut peak MiB (tree RSS) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for factor, ways, cells, core, measures in rows:
        print(
            f"| {factor}x | {ways:,} | {cells} | {core / ways:.2f} "
            f"| {median(m.cpu_s for m in measures):.1f} "
            f"| {median(m.peak_rss_mb for m in measures):,.0f} |"
        )


def sample_shards(out: Path, cells: list[str], largest: int, randomly: int) -> list[str]:
    """The ``largest`` cells with the most core ways, and ``randomly`` more of the others."""
    import numpy as np

    core = {cell: len(np.load(out / "shards" / cell / "core_ways.npy")) for cell in cells}
    ranked = sorted(cells, key=lambda cell: (-core[cell], cell))
    rest = ranked[largest:]
    return ranked[:largest] + random.Random(22).sample(rest, min(randomly, len(rest)))


def core_way_total(out: Path, cells: list[str]) -> int:
    """Core ways summed over the shards: each way counts once per shard that builds it."""
    import numpy as np

    return sum(len(np.load(out / "shards" / c / "core_ways.npy")) for c in cells)


def build_shards(
    out: Path, cells: list[str], networks: Path, factor: int, jobs: int
) -> list[tuple[str, Measure]]:
    """Build the shards of ``cells``, ``jobs`` processes at a time (2: the machine's cores)."""
    from concurrent.futures import ThreadPoolExecutor

    def build(cell: str) -> tuple[str, Measure]:
        log = networks / f"shard-x{factor}-{cell}.log"
        measure = measure_command(python_code(BUILD_SHARD, str(out), cell), log)
        if measure.exit_status != 0:
            sys.exit(f"shard {cell} of {out} failed; see {log}")
        report("shard", factor, measure, cell=cell)
        return cell, measure

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(build, cells))


def shard_sizes(out: Path, cells: list[str]) -> dict[str, tuple[int, int]]:
    """Each built shard's edges and owned edges, from its ``meta.json``."""
    sizes = {}
    for cell in cells:
        meta = read_meta(out / "shards" / cell)
        shard = meta["shard"]
        assert isinstance(shard, dict)
        sizes[cell] = (int(str(meta["edge_count"])), int(shard["owned_edge_count"]))
    return sizes


def report(job: str, factor: int, measure: Measure, **extra: object) -> None:
    """Print one job's figures as a JSON line."""
    print(json.dumps({"job": job, "factor": factor, **extra, **asdict(measure)}), flush=True)


def print_sharded(runs: list[ShardedRun], resolution: int) -> None:
    """Print the sharded builds as Markdown tables: the jobs, then the whole and its check."""
    print(f"\n## roads build, sharded at resolution {resolution}: {machine()}\n")
    print(
        "| factor | shards (built) | edges built (owned) | cut CPU s / peak MiB "
        "| shard CPU s median / max | shard peak MiB median / max "
        "| merge CPU s / peak MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        cpu = [m.cpu_s for _, m in run.shards]
        peak = [m.peak_rss_mb for _, m in run.shards]
        built = sum(s[0] for s in run.sizes.values())
        owned = sum(s[1] for s in run.sizes.values())
        merged = run.merged
        merge_text = f"{merged.cpu_s:.1f} / {merged.peak_rss_mb:,.0f}" if merged else "not run"
        print(
            f"| {run.factor}x | {run.cells} ({len(run.shards)}) | {built:,} ({owned:,}) "
            f"| {run.cut.cpu_s:.1f} / {run.cut.peak_rss_mb:,.0f} "
            f"| {median(cpu):.1f} / {max(cpu):.1f} | {median(peak):,.0f} / {max(peak):,.0f} "
            f"| {merge_text} |"
        )
    print("\n| factor | total CPU s | total wall s | shard jobs at a time | load average min / "
          "median / max | region edges (expected) | road km (expected) | owned once |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        check = run.check or {}
        print(
            f"| {run.factor}x | {run.total_cpu_s:,.0f} | {run.total_wall_s:,.0f} | {run.jobs} "
            f"| {min(run.load):.1f} / {median(run.load):.1f} / {max(run.load):.1f} "
            f"| {check.get('edges', 0):,} ({check.get('edges_expected', 0):,}) "
            f"| {check.get('road_km', 0.0):,.3f} ({check.get('road_km_expected', 0.0):,.3f}) "
            f"| {check.get('owned_equals_region', 'not merged')} |"
        )


def median(values: object) -> float:
    """Median of an iterable of numbers (nan when empty)."""
    items = list(values)  # type: ignore[call-overload]
    return statistics.median(items) if items else float("nan")


def machine() -> str:
    """One line naming the machine and the load it had."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average at the end {load}"
    )


def main() -> None:
    """Parse the command line and run the chosen benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["unsharded", "sharded", "cut"])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--networks", type=Path, default=Path("/tmp/roadcover-scale"))
    parser.add_argument("--shard-resolution", type=int, default=5)
    parser.add_argument(
        "--max-shards", type=int, default=None, help="build only the shards with most core ways"
    )
    parser.add_argument(
        "--random-shards", type=int, default=0, help="with --max-shards: this many more, at random"
    )
    parser.add_argument("--no-merge", action="store_true", help="skip the merge job")
    parser.add_argument("--jobs", type=int, default=2, help="shard jobs at a time")
    parser.add_argument(
        "--then-all", action="store_true", help="build the sample first, then all other shards"
    )
    args = parser.parse_args()
    args.networks.mkdir(parents=True, exist_ok=True)
    if args.mode == "unsharded":
        bench_unsharded(args.networks, args.factors, args.runs)
    elif args.mode == "cut":
        bench_cut(args.networks, args.factors, args.shard_resolution, args.runs)
    else:
        sample = (args.max_shards, args.random_shards) if args.max_shards else None
        bench_sharded(
            args.networks, args.factors, args.shard_resolution, sample, not args.no_merge,
            args.jobs, args.then_all,
        )  # fmt: skip


if __name__ == "__main__":
    main()
