"""Coverage from object storage: what its runs download and upload, and what they cost.

Usage: ``python benchmarks/bench_coverage_stagein.py ROADS_DIR --before CODE_DIR [--runs 3]``.

Starts moto's S3 server (``moto[server]``) on 127.0.0.1 in this process, with a counter of the
bytes of every object it sends (GET bodies) and receives (PUT and POST bodies), by key,
uploads the roads folder ``ROADS_DIR`` (a sharded region: its tables, shards and extracts; not
its hidden memos or lock) to a new bucket, and writes matched batches of synthetic trips on its
edges (:func:`tests.builders.write_matched_batch`): two of 200 trips of 20 edges each drawn at
random over the region, one of 6 such trips on the 120 edges nearest a random one (a
neighbourhood's drives). Then, for ``--runs`` rounds, with the code of this checkout
(``after``) and of ``CODE_DIR`` (``before``, e.g. ``git archive`` of an earlier commit) taking
turns, into a new coverage prefix, ``roadcover coverage`` of:

* ``first``: the first 200-trip batch (the first update: it computes the network cache);
* ``second``: both 200-trip batches;
* ``6 trips``: those and the 6-trip batch;
* ``nothing new``: the same three batches again.

Each run's wall seconds, CPU seconds (user + sys of the process and its children, from
``wait4``), the whole tree's peak RSS (sampled every 0.2 s), the bytes it downloaded from the
roads prefix and from the coverage prefix, and uploaded to the coverage prefix. Prints a
Markdown table of the medians; each run's measures and ``unique_km`` (the same for both codes)
go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from pipeline.process_tree import TreeMemorySampler
from pipeline.roads import read_edges
from tests.builders import write_matched_batch

MIB = 1024 * 1024
HERE = Path(__file__).resolve().parents[1]


class CountingApp:
    """A WSGI middleware that adds up the bytes of objects sent and received, by request path.

    Sent: the response bodies of GET requests; received: the request bodies of PUT and POST
    requests (an upload, or a part of one).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.lock = app, threading.Lock()
        self.sent, self.received = Counter[str](), Counter[str]()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if method in ("PUT", "POST"):
            with self.lock:
                self.received[path] += int(environ.get("CONTENT_LENGTH") or 0)
        body = list(self.app(environ, start_response))
        if method == "GET":
            with self.lock:
                self.sent[path] += sum(len(part) for part in body)
        return body

    def take(self) -> tuple[Counter[str], Counter[str]]:
        """Return the bytes sent and received since the last call, and start again."""
        with self.lock:
            counted = self.sent, self.received
            self.sent, self.received = Counter(), Counter()
        return counted


def start_s3() -> tuple[Any, CountingApp]:
    """Start moto's S3 server on a free port; point the AWS_* variables at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    counting = CountingApp(server._server.app)  # the requests go through the counter
    server._server.app = counting
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    return server, counting


def upload_roads(roads: Path, prefix: str) -> None:
    """Upload the roads folder's files (not its hidden memos, lock or staging) to ``prefix``."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(prefix.split("/")[0])
    names = [
        path.relative_to(roads).as_posix()
        for path in sorted(roads.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(roads).parts)
    ]
    fs.put([str(roads / name) for name in names], [f"{prefix}/{name}" for name in names])


def write_batches(
    roads: Path, folder: Path, trips: list[int], edges_per_trip: int, nearby: int = 0
) -> list[Path]:
    """Write matched batches of ``trips`` trips each, each trip driving ``edges_per_trip`` edges.

    The edges of the last ``nearby`` batches are those nearest one edge drawn at random (a
    neighbourhood's drives), the others' drawn at random over the region.
    """
    edges = read_edges(roads)
    rng = np.random.default_rng(7)
    middle = shapely.centroid(edges.geometry.to_numpy())
    x, y = shapely.get_x(middle), shapely.get_y(middle)
    batches = []
    for number, count in enumerate(trips, start=1):
        rows = rng.choice(len(edges), size=count * edges_per_trip, replace=False)
        if number > len(trips) - nearby:
            near = np.hypot(x - x[rows[0]], y - y[rows[0]])  # degrees: near enough
            rows = np.argsort(near, kind="stable")[: count * edges_per_trip]
        when = pd.Timestamp(f"2026-10-0{number}T08:00Z")
        drives = pd.DataFrame({
            "edge_id": edges["edge_id"].to_numpy()[rows],
            "trip_id": [f"b{number}-t{i // edges_per_trip}" for i in range(len(rows))],
            "contributor_id": "c0",
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy()[rows],
            "entered_at": when, "exited_at": when + pd.Timedelta(seconds=5),
        })  # fmt: skip
        batches.append(
            write_matched_batch(folder / f"batch{number}", edges, drives, roads_dir=roads)
        )
    return batches


def run_coverage(code: Path, roads: str, batches: list[Path], out: str) -> dict[str, float]:
    """Run ``roadcover coverage`` with the code in ``code``; return its measures."""
    argv = [sys.executable, "-m", "pipeline.cli", "coverage", "--roads", roads, "-o", out]
    for batch in batches:
        argv += ["--matched", str(batch)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=code, stderr=subprocess.DEVNULL)
    with TreeMemorySampler(process.pid, include_shared_cluster=False) as sampler:
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode})")
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": sampler.snapshot().peak_rss_mb,
    }


PHASES = {"first": 1, "second": 2, "6 trips": 3, "nothing new": 3}
"""Each measured run, and how many of the batches it is given."""


def measure_runs(
    code: Path, roads: str, batches: list[Path], out: str, counting: CountingApp
) -> dict[str, dict[str, float]]:
    """Run coverage into ``out`` for every phase of :data:`PHASES`; return their measures."""
    measured = {}
    counting.take()
    for phase, count in PHASES.items():
        measures = run_coverage(code, roads, batches[:count], out)
        sent, received = counting.take()
        measures["roads_mib"] = sum(v for k, v in sent.items() if "/roads/" in k) / MIB
        measures["down_mib"] = sum(v for k, v in sent.items() if "/coverage-" in k) / MIB
        measures["up_mib"] = sum(v for k, v in received.items() if "/coverage-" in k) / MIB
        measured[phase] = measures
    return measured


def print_table(results: dict[str, list[dict[str, dict[str, float]]]]) -> None:
    """Print the medians of every measure, a row per phase and code."""
    print(
        "| run | code | wall s | CPU s | tree peak RSS MiB | MiB from roads "
        "| MiB from coverage | MiB to coverage |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for phase in PHASES:
        for name, runs in results.items():
            rows = [run[phase] for run in runs]
            med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            print(
                f"| {phase} | {name} | {med['wall_s']:.2f} | {med['cpu_s']:.2f} "
                f"| {med['peak_rss_mib']:,.0f} | {med['roads_mib']:.3f} "
                f"| {med['down_mib']:.3f} | {med['up_mib']:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roads", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="the code to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-stagein-", dir=args.scratch))
    server, counting = start_s3()
    try:
        roads_copy = scratch / "roads"  # the batches record a memo of the roads' sha256: a copy
        shutil.copytree(args.roads, roads_copy, ignore=shutil.ignore_patterns(".*"))
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        upload_roads(roads_copy, f"{bucket}/roads")
        batches = write_batches(roads_copy, scratch, [200, 200, 6], edges_per_trip=20, nearby=1)
        results: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
        for round_ in range(args.runs):
            for name, code in (("before", args.before), ("after", HERE)):
                out = f"s3://{bucket}/coverage-{name}-{round_}"
                measures = measure_runs(code, f"s3://{bucket}/roads", batches, out, counting)
                results[name].append(measures)
                unique_km = read_summary(out)["unique_km"]
                print(name, round_, unique_km, json.dumps(measures), file=sys.stderr, flush=True)
        print_table(results)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def read_summary(location: str) -> dict[str, Any]:
    """Return the ``summary.json`` of a coverage folder in the bucket."""
    import s3fs

    text = s3fs.S3FileSystem(skip_instance_cache=True).cat_file(f"{location}/summary.json")
    return dict(json.loads(text))


if __name__ == "__main__":
    main()
