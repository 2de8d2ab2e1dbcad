"""The merge of a sharded region (``roadcover roads merge``) against the region's size.

Usage::

    python benchmarks/bench_merge.py SHARDED_X1 --factors 1 4 8 32 --runs 3 [--work DIR]

``SHARDED_X1`` is a roads folder of Kubicka 00000013 cut and built in shards with the default
1,000 m buffer (``benchmarks/bench_scale.py sharded --factors 1 --shard-resolution 5`` leaves
it as ``/tmp/roadcover-scale/sharded-x1-r5``). A region of ``N`` times its size is made of
``N`` copies of every built shard, as ``benchmarks/scale_network.py`` copies the network: copy
``k`` has its node, way and edge ids moved by ``k`` times a constant (so no id repeats), its
rows and lines otherwise the same (a merge does not look at where the lines are), so the merge
of any factor is measured without building that factor's shards (``bench_scale.py sharded``
measures the merge of the shards really built).

Each merge is ``roadcover roads merge`` in a fresh process, measured as
``bench_scale.measure_command`` measures a job: wall and CPU seconds (its own and its
children's), peak RSS of its process tree sampled every 0.5 s. Prints one JSON line per run and
a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import ROADCOVER, machine, measure_command

ID_STEP = 1 << 40  # more than Kubicka's ids (node and way ids < 2**32), less than 2**63 / 64
SHIFTED = {
    "edges.parquet": ("edge_id", "u", "v", "osmid", "road_id"),
    "nodes.parquet": ("node_id",),
    "owners.parquet": ("edge_id",),
}


def replicate(source: Path, factor: int, out: Path) -> None:
    """Write a sharded roads folder of ``factor`` copies of ``source``'s built shards."""
    shutil.rmtree(out, ignore_errors=True)
    plan = json.loads((source / "shards" / "plan.json").read_text())
    cells = []
    for copy in range(factor):
        for cell in plan["cells"]:
            name = cell if copy == 0 else f"{cell}-{copy}"
            copy_shard(source / "shards" / cell, out / "shards" / name, copy)
            cells.append(name)
    plan["cells"] = cells
    for key in ("ways_kept", "ways_clipped", "missing_node_refs"):
        plan[key] *= factor
    (out / "shards" / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True))


def copy_shard(source: Path, out: Path, copy: int) -> None:
    """Copy a built shard's tables and ``meta.json``, its ids moved by ``copy * ID_STEP``."""
    out.mkdir(parents=True)
    shutil.copyfile(source / "meta.json", out / "meta.json")
    for name, columns in SHIFTED.items():
        table = pq.read_table(source / name)
        for column in columns:
            index = table.schema.get_field_index(column)
            moved = pc.add(table.column(column), pa.scalar(copy * ID_STEP, pa.int64()))
            table = table.set_column(index, table.schema.field(index), moved)
        pq.write_table(table, out / name, compression="zstd")


def bench(source: Path, factors: list[int], runs: int, work: Path) -> None:
    """Measure ``runs`` merges of each factor's region; print JSON lines and a table."""
    rows = []
    for factor in factors:
        region = work / f"merge-x{factor}"
        replicate(source, factor, region)
        measures = []
        for run in range(runs):
            argv = [*ROADCOVER, "roads", "merge", str(region)]
            measure = measure_command(argv, work / f"merge-x{factor}.log")
            if measure.exit_status != 0:
                sys.exit(f"merge of {region} failed; see {work}/merge-x{factor}.log")
            print(json.dumps({"factor": factor, "run": run, **measure.__dict__}), flush=True)
            measures.append(measure)
        meta = json.loads((region / "meta.json").read_text())
        largest = max(
            json.loads((region / "shards" / c / "meta.json").read_text())["edge_count"]
            for c in json.loads((region / "shards" / "plan.json").read_text())["cells"]
        )
        rows.append((factor, meta, largest, measures))
        shutil.rmtree(region, ignore_errors=True)
    print(f"\n## roads merge: {machine()}, median of {runs}\n")
    print("| factor | shards | region edges | largest shard's edges | wall s | CPU s | peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for factor, meta, largest, measures in rows:
        print(
            f"| {factor}x | {len(meta['shards']['cells'])} | {meta['edge_count']:,} "
            f"| {largest:,} | {statistics.median(m.wall_s for m in measures):.1f} "
            f"| {statistics.median(m.cpu_s for m in measures):.1f} "
            f"| {statistics.median(m.peak_rss_mb for m in measures):,.0f} |"
        )


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sharded", type=Path, help="a built sharded roads folder (1x)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/roadcover-merge"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bench(args.sharded, args.factors, args.runs, args.work)


if __name__ == "__main__":
    main()
