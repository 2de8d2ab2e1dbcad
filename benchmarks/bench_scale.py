"""How the roads build grows with the network: 1x to 32x copies of a real network side by side.

Usage::

    python benchmarks/bench_scale.py unsharded --factors 1 2 4 8 [--runs N]
    python benchmarks/bench_scale.py sharded --factors 1 2 4 8 16 32 --shard-resolution R
    python benchmarks/bench_scale.py cut --factors 1 2 4 8 16 --shard-resolution R [--runs N]

The networks are ``benchmarks/scale_network.py``'s replicas of Kubicka 00000013 (307,392 edges
per copy), written once into ``--networks`` (default ``/tmp/roadcover-scale``) and reused.
Every build is ``roadcover roads build`` in a fresh process; while it runs,
:class:`pipeline.process_tree.TreeMemorySampler` samples the memory of its whole process tree
(every process it starts included) every 0.5 s. CPU seconds are the build process's user +
system time with its children's (``os.wait4``). Prints Markdown tables for docs/benchmarks.md
and one JSON line per build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.process_tree import TreeMemorySampler

HERE = Path(__file__).parent
ROADCOVER = [sys.executable, "-m", "pipeline.cli"]
SAMPLE_INTERVAL_S = 0.5


@dataclass
class Measure:
    """One command's cost: wall and CPU seconds, peak RSS and PSS of its process tree (MiB)."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    peak_pss_mb: float | None
    exit_status: int


def measure_command(argv: list[str], log_path: Path) -> Measure:
    """Run ``argv`` to its end, sampling its process tree's memory; stderr/stdout to the log.

    CPU seconds are the process's own and its waited-for children's (``os.wait4``), so jobs
    measured side by side in threads do not count each other's.
    """
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        with TreeMemorySampler(
            process.pid, interval_s=SAMPLE_INTERVAL_S, include_shared_cluster=False
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


def bench_sharded(
    networks: Path, factors: list[int], resolution: int, max_shards: int | None, merge: bool
) -> None:
    """Cut each factor's network into shards, build the shards two at a time, merge them.

    Every job (the cut, each shard, the merge) is its own process, measured alone. With
    ``max_shards`` only that many shards are built (those with the largest extracts) and the
    merge is skipped.
    """
    rows = []
    for factor in factors:
        osm = network_file(networks, factor)
        out = networks / f"sharded-x{factor}-r{resolution}"
        shutil.rmtree(out, ignore_errors=True)
        cut = measure_command(
            python_code(CUT, str(osm), str(out), str(resolution)), networks / "cut.log"
        )
        report("cut", factor, cut)
        if cut.exit_status != 0:
            sys.exit(f"cut of {osm} failed; see {networks}/cut.log")
        plan = json.loads((out / "shards" / "plan.json").read_text())
        cells = plan["cells"]
        chosen = largest_shards(out, cells, max_shards) if max_shards else cells
        report("plan", factor, cut, cells=len(cells), core_ways=core_way_total(out, cells),
               ways=plan["ways_kept"])  # fmt: skip
        started = time.perf_counter()
        shards = build_shards_two_at_a_time(out, chosen, networks, factor)
        shards_wall = time.perf_counter() - started
        merged = None
        if merge and len(chosen) == len(cells):
            merged = measure_command(python_code(MERGE, str(out)), networks / "merge.log")
            report("merge", factor, merged)
        rows.append(
            (factor, len(cells), cut, shards, shards_wall, merged, shard_sizes(out, chosen))
        )
    print_sharded(rows, resolution)


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


def largest_shards(out: Path, cells: list[str], count: int) -> list[str]:
    """The ``count`` cells whose shard extracts are the largest files (the densest shards)."""
    size = {cell: (out / "shards" / cell / "extract.osm.pbf").stat().st_size for cell in cells}
    return sorted(cells, key=lambda cell: -size[cell])[:count]


def core_way_total(out: Path, cells: list[str]) -> int:
    """Core ways summed over the shards: each way counts once per shard that builds it."""
    import numpy as np

    return sum(len(np.load(out / "shards" / c / "core_ways.npy")) for c in cells)


def build_shards_two_at_a_time(
    out: Path, cells: list[str], networks: Path, factor: int
) -> list[tuple[str, Measure]]:
    """Build the shards of ``cells``, two processes at a time (the machine's two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    def build(cell: str) -> tuple[str, Measure]:
        measure = measure_command(
            python_code(BUILD_SHARD, str(out), cell), networks / f"shard-{cell}.log"
        )
        if measure.exit_status != 0:
            sys.exit(f"shard {cell} of {out} failed; see {networks}/shard-{cell}.log")
        report("shard", factor, measure, cell=cell)
        return cell, measure

    with ThreadPoolExecutor(max_workers=2) as pool:
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


def print_sharded(rows: list[tuple], resolution: int) -> None:
    """Print the sharded builds as a Markdown table."""
    print(f"\n## roads build, sharded at resolution {resolution}: {machine()}\n")
    print(
        "| factor | shards (built) | edges built (owned) | cut CPU s / peak MiB "
        "| shard CPU s median / max | shard peak MiB median / max | shards wall s (2 at a time) "
        "| merge CPU s / peak MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for factor, n_cells, cut, shards, shards_wall, merged, sizes in rows:
        cpu = [m.cpu_s for _, m in shards]
        peak = [m.peak_rss_mb for _, m in shards]
        built = sum(s[0] for s in sizes.values())
        owned = sum(s[1] for s in sizes.values())
        merge_text = f"{merged.cpu_s:.1f} / {merged.peak_rss_mb:,.0f}" if merged else "not run"
        print(
            f"| {factor}x | {n_cells} ({len(shards)}) | {built:,} ({owned:,}) "
            f"| {cut.cpu_s:.1f} / {cut.peak_rss_mb:,.0f} "
            f"| {median(cpu):.1f} / {max(cpu):.1f} | {median(peak):,.0f} / {max(peak):,.0f} "
            f"| {shards_wall:.0f} | {merge_text} |"
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
    parser.add_argument("--max-shards", type=int, default=None, help="build only this many")
    parser.add_argument("--no-merge", action="store_true", help="skip the merge job")
    args = parser.parse_args()
    args.networks.mkdir(parents=True, exist_ok=True)
    if args.mode == "unsharded":
        bench_unsharded(args.networks, args.factors, args.runs)
    elif args.mode == "cut":
        bench_cut(args.networks, args.factors, args.shard_resolution, args.runs)
    else:
        bench_sharded(
            args.networks, args.factors, args.shard_resolution, args.max_shards, not args.no_merge
        )


if __name__ == "__main__":
    main()
