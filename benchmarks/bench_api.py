"""Benchmark the HTTP API: requests/s and p50/p99 latency of coverage queries and tiles.

Usage: ``python benchmarks/bench_api.py REGION_DIR [REGION_DIR ...] [--workers 1 2]
[--users 50] [--think 0.5-1.5 0] [--targets coverage tiles] [--seconds 30] [--runs 3]``,
each REGION_DIR in the workflow's layout (``roads/``, ``export/releases/latest.json``,
``export/coverage.pmtiles``), e.g. ``results/demo/helsinki`` after ``make demo``;
``--build-osm EXTRACT`` first builds such a folder from an OSM extract with synthetic drives
on 60 % of its edges (roads, coverage, tiles, one release).

For each region and worker count it starts ``roadcover serve --workers N`` on a free port,
and runs locust headless (``--users`` clients) for ``--seconds`` against ``POST /v1/coverage``
with city-sized polygons (random boxes of 30 to 100 % of the region's extent, slanted), then
against ``GET /v1/tiles`` (every tile of the archive, cycled), after an unrecorded warm-up run
(every worker opens the release on its first request); each ``--runs`` times, and for
each ``--think`` time: ``0.5-1.5`` makes each client wait 0.5 to 1.5 s (uniform) between
requests (50 clients then offer about 50 requests/s: latency at that load), ``0`` is a closed
loop with no wait (the server's saturation: its most requests/s, and a latency that is
clients / throughput by Little's law). Prints the medians as a Markdown table for
docs/benchmarks.md, with the machine's 1-minute load average during the runs (their median of
the mean of its value at the start and end of each run). Locust runs on the same machine as
the server, so both share its cores.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import shapely
import yaml
from pmtiles.reader import MmapSource, all_tiles

from pipeline.serve.accounts import AccountStore

HERE = Path(__file__).parent
REPO = HERE.parent
LOCUSTFILE = HERE / "locust_api.py"
START_TIMEOUT_S = 180


def city_polygons(release_dir: Path, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Slanted boxes of 30-100 % of the covered extent, as GeoJSON."""
    import geopandas as gpd

    x0, y0, x1, y1 = gpd.read_parquet(release_dir / "segments").total_bounds
    rng = random.Random(seed)
    polygons = []
    for _ in range(count):
        share = rng.uniform(0.3, 1.0)
        w, h = (x1 - x0) * share, (y1 - y0) * share
        left, bottom = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - h)
        box = shapely.affinity.rotate(
            shapely.box(left, bottom, left + w, bottom + h), rng.uniform(-20, 20)
        )
        polygons.append(dict(shapely.geometry.mapping(box)))
    return polygons


def archive_tiles(tiles_path: Path) -> list[tuple[int, int, int]]:
    """Every tile address of the archive."""
    with tiles_path.open("rb") as handle:
        return [zxy for zxy, _ in all_tiles(MmapSource(handle))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(config: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``roadcover serve`` and wait until it answers /healthz."""
    port = free_port()
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--config", str(config),
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server did not start; see {log}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


SPAWN_RATE_PER_S = 10
"""Clients started per second; statistics are reset once all run (steady state only)."""
WARM_UP_S = 10
"""Length of the unrecorded run that opens the release in every worker before the runs."""


def run_locust(
    base: str, target: str, env: dict[str, str], users: int, seconds: int, folder: Path
) -> dict[str, float]:
    """One headless locust run; return requests/s, p50, p99 (ms), failures and the load.

    Clients start at ``SPAWN_RATE_PER_S`` and the statistics cover the run once all of them
    are running (locust's ``--reset-stats``), for ``seconds``: a steady state, not the burst
    of 50 first requests sent at once.
    """
    prefix = folder / f"locust-{target}"
    ramp_s = -(-users // SPAWN_RATE_PER_S)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "-u", str(users), "-r", str(SPAWN_RATE_PER_S), "--reset-stats",
               "-t", f"{seconds + ramp_s}s", "--host", base,
               "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
    load_before = os.getloadavg()[0]
    subprocess.run(
        command, env={**env, "BENCH_API_TARGET": target}, check=False, capture_output=True
    )
    load = (load_before + os.getloadavg()[0]) / 2
    with open(f"{prefix}_stats.csv", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return {
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "requests": float(row["Request Count"]),
        "failures": float(row["Failure Count"]),
        "load": load,
    }


def bench_region(
    region_dir: Path, workers: list[int], args: argparse.Namespace, database_url: str | None
) -> list[str]:
    """Benchmark one region (accounts in ``database_url``, default SQLite); return its rows."""
    name = region_dir.name
    releases = region_dir / "export" / "releases"
    release_id = json.loads((releases / "latest.json").read_text())["release_id"]
    tiles_path = region_dir / "export" / "coverage.pmtiles"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        url = database_url or f"sqlite:///{folder / 'accounts.sqlite'}"
        key = AccountStore(url).create_key(f"bench-{name}", credits=Decimal(0))
        config = folder / "serve.yaml"
        served = {"releases": str(releases), "roads": str(region_dir / "roads"),
                  "tiles": str(tiles_path)}  # fmt: skip
        config.write_text(yaml.safe_dump({
            "regions": [{"name": name, "osm": "unused.osm"}],
            "api": {"database_url": url, "regions": {name: served},
                    "rate_limit_per_s": 1e6, "rate_limit_burst": 1_000_000},
        }))  # fmt: skip
        polygons, tiles = folder / "polygons.json", folder / "tiles.json"
        polygons.write_text(json.dumps(city_polygons(releases / release_id, 50)))
        tiles.write_text(json.dumps(archive_tiles(tiles_path)))
        road_km = json.loads((region_dir / "coverage" / "summary.json").read_text())["road_km"]
        env = {**os.environ, "BENCH_API_ORG": key.org_id, "BENCH_API_SECRET": key.secret,
               "BENCH_API_REGION": name}  # fmt: skip
        for count in workers:
            process, base = start_server(config, count, folder / f"serve-{count}.log")
            try:
                for target, work in (("coverage", polygons), ("tiles", tiles)):
                    if target not in args.targets:
                        continue
                    env["BENCH_API_WORK"] = str(work)
                    env["BENCH_API_THINK"] = args.think[0]
                    run_locust(base, target, env, args.users, WARM_UP_S, folder)  # unrecorded
                    for think in args.think:
                        env["BENCH_API_THINK"] = think
                        runs = [
                            run_locust(base, target, env, args.users, args.seconds, folder)
                            for _ in range(args.runs)
                        ]
                        rows.append(_row(name, road_km, count, target, think, runs))
                        print(rows[-1], flush=True)
            finally:
                stop_server(process)
    return rows


def _row(
    name: str, road_km: float, workers: int, target: str, think: str, runs: list[dict[str, float]]
) -> str:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    failures = sum(run["failures"] for run in runs)
    waits = "none" if think == "0" else f"{think} s"
    return (
        f"| {name} ({road_km:,.0f} road km) | {target} | {workers} | {waits} | "
        f"{median('rps'):,.0f} | {median('p50'):.0f} | {median('p99'):.0f} | {failures:.0f} | "
        f"{median('load'):.1f} |"
    )


def build_region(osm: Path, folder: Path, seed: int = 0) -> Path:
    """Build a region folder from an extract: roads, synthetic drives on 60 % of the edges."""
    from pipeline.config import settings_from_mapping
    from pipeline.coverage.stage import compute_coverage
    from pipeline.export.feeds import publish_release
    from pipeline.export.tiles import write_coverage_tiles
    from pipeline.roads import build_roads, read_edges
    from tests.builders import write_matched_batch

    region = folder / osm.name.split(".")[0]
    roads = region / "roads"
    build_roads(osm, roads)
    edges = read_edges(roads)
    rng = np.random.default_rng(seed)
    pick = edges.sample(frac=0.6, random_state=seed)
    when = pd.Timestamp("2026-10-01T08:00Z") + pd.to_timedelta(rng.integers(0, 60, len(pick)), "D")
    drives = pd.DataFrame({
        "edge_id": pick["edge_id"].to_numpy(),
        "trip_id": [f"trip{i // 20}" for i in range(len(pick))],
        "contributor_id": [f"c{i % 7}" for i in range(len(pick))],
        "from_offset_m": np.zeros(len(pick)), "to_offset_m": pick["length_m"].to_numpy(),
        "entered_at": when, "exited_at": when + pd.Timedelta(seconds=5),
    })  # fmt: skip
    matched = write_matched_batch(region / "matched", edges, drives, roads_dir=roads)
    coverage_settings = settings_from_mapping({"regions": [{"name": "x", "osm": "x"}]}).coverage
    compute_coverage(roads, [matched], region / "coverage", coverage_settings,
                     pd.Timestamp("2026-12-01T00:00Z"))  # fmt: skip
    export = region / "export"
    write_coverage_tiles(region / "coverage", export / "coverage.pmtiles")
    releases = export / "releases"
    publish_release(region / "coverage", roads, releases, releases / "latest.json")
    return region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("regions", nargs="*", type=Path)
    parser.add_argument("--build-osm", type=Path, action="append", default=[])
    parser.add_argument("--build-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_api")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument(
        "--think", nargs="+", default=["0.5-1.5", "0"],
        help="Each client's wait between requests: MIN-MAX seconds, or 0 (none, saturation).",
    )  # fmt: skip
    parser.add_argument("--targets", nargs="+", default=["coverage", "tiles"])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="Accounts in a local PostgreSQL.")
    args = parser.parse_args()
    regions = list(args.regions)
    for osm in args.build_osm:
        regions.append(build_region(osm, args.build_dir))
    machine = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    print(f"{machine}, {os.cpu_count()} CPUs, load {load:.1f}, {args.users} users, "
          f"{args.seconds} s x {args.runs}")  # fmt: skip
    print("| region | requests | workers | think time | requests/s | p50 ms | p99 ms | failures "
          "| load |")  # fmt: skip
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.postgres:
            from tests.serve.postgres import start_postgres

            server = stack.enter_context(start_postgres(Path(tempfile.mkdtemp())))
            if isinstance(server, str):
                raise SystemExit(f"no PostgreSQL: {server}")
            database_url = server.create_database()
        print(f"accounts database: {'PostgreSQL' if database_url else 'SQLite'}")
        for region in regions:
            bench_region(region, args.workers, args, database_url)


if __name__ == "__main__":
    main()
