"""Benchmark the map matcher on the 20 Kubicka drives: accuracy (RMF) and speed (points/s).

Usage: ``python benchmarks/bench_snap_kubicka.py [--drives 00000000 ...] [--cache DIR]
[--ubodt-delta M] [--sigma M] [--beta M] [--fixed-beta] [--radius M] [--runs N]``

For each drive: build the roads folder (cached in ``--cache``), build the match network (timed,
optionally with a full UBODT), match the 1 Hz trace (best of ``--runs``, single thread) and
score it with the route mismatch fraction of Newson & Krumm measured geometrically with a
7.5 m buffer in the drive's UTM zone:
``(matched length > 7.5 m from truth + truth length > 7.5 m from matched) / truth length``.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.roads import build_roads, read_edges
from pipeline.snap import MatchParams, build_match_network, match_trip, traversed_segments

KUBICKA = (
    Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "mapmatch"
    / "kubicka-dev"
)
BUFFER_M = 7.5


def read_trace(drive_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return lon, lat and Unix seconds of a drive's trace."""
    trace = pd.read_csv(drive_dir / "trace.csv")
    observed = pd.to_datetime(trace["timestamp"], utc=True)
    seconds = (observed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    return trace["lon"].to_numpy(), trace["lat"].to_numpy(), seconds.to_numpy()


def read_truth(drive_dir: Path) -> shapely.Geometry:
    """Return the ground-truth route (MultiLineString, EPSG:4326)."""
    feature = json.loads((drive_dir / "truth.geojson").read_text())
    return shapely.geometry.shape(feature["geometry"])


def route_mismatch_fraction(matched: gpd.GeoSeries, truth: shapely.Geometry) -> float:
    """RMF with a 7.5 m buffer, in the UTM zone of the truth."""
    truth_gs = gpd.GeoSeries([truth], crs="EPSG:4326")
    crs = truth_gs.estimate_utm_crs()
    truth_m = truth_gs.to_crs(crs).iloc[0]
    matched_m = shapely.union_all(matched.to_crs(crs).to_numpy()) if len(matched) else None
    if matched_m is None or matched_m.is_empty:
        return 1.0
    extra = matched_m.difference(truth_m.buffer(BUFFER_M)).length
    missed = truth_m.difference(matched_m.buffer(BUFFER_M)).length
    return float((extra + missed) / truth_m.length)


def roads_folder(drive: str, cache: Path) -> Path:
    """Build (once) the roads folder of a drive; all of its arcs are highway=unclassified."""
    roads_dir = cache / drive
    if not (roads_dir / "meta.json").exists():
        build_roads(KUBICKA / drive / "network.osm.bz2", roads_dir, network="all")
    return roads_dir


def bench_drive(
    drive: str, cache: Path, params: MatchParams, ubodt_delta: float | None, runs: int
) -> dict[str, float | str]:
    """Build, match and score one drive."""
    edges = read_edges(roads_folder(drive, cache))
    started = time.perf_counter()
    net = build_match_network(edges, ubodt_delta_m=ubodt_delta)
    build_s = time.perf_counter() - started
    lon, lat, t_s = read_trace(KUBICKA / drive)
    best = np.inf
    for _ in range(runs):
        started = time.perf_counter()
        trip = match_trip(net, lon, lat, t_s, params)
        best = min(best, time.perf_counter() - started)
    rmf = route_mismatch_fraction(
        traversed_segments(net, trip).geometry, read_truth(KUBICKA / drive)
    )
    return {
        "drive": drive,
        "edges": net.n_edges,
        "points": len(lon),
        "build_s": build_s,
        "ubodt_mib": (net.ubodt.nbytes / 2**20) if net.ubodt else 0.0,
        "ubodt_s": net.ubodt.build_s if net.ubodt else 0.0,
        "match_s": best,
        "unmatched": int((trip.edge < 0).sum()),
        "breaks": int(trip.is_break.sum()),
        "rmf": rmf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drives", nargs="*", default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/roadcover_bench_snap"))
    parser.add_argument("--ubodt-delta", type=float, default=None)
    parser.add_argument("--sigma", type=float, default=MatchParams.sigma_m)
    parser.add_argument("--beta", type=float, default=MatchParams.beta_m)
    parser.add_argument("--radius", type=float, default=MatchParams.search_radius_m)
    parser.add_argument("--uturn", type=float, default=MatchParams.uturn_penalty)
    parser.add_argument("--k", type=int, default=MatchParams.max_candidates)
    parser.add_argument("--tol", type=float, default=MatchParams.backward_tolerance_m)
    parser.add_argument("--slack", type=float, default=MatchParams.route_slack_m)
    parser.add_argument("--vmax", type=float, default=MatchParams.max_speed_mps)
    parser.add_argument("--beam", type=float, default=MatchParams.beam_log)
    parser.add_argument("--max-radius", type=float, default=MatchParams.max_search_radius_m)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--fixed-beta", action="store_true", help="no per-trip fit of beta (estimate_beta=False)"
    )
    args = parser.parse_args()
    params = MatchParams(
        sigma_m=args.sigma, beta_m=args.beta, search_radius_m=args.radius,
        uturn_penalty=None if args.uturn is not None and args.uturn < 0 else args.uturn,
        max_candidates=args.k, backward_tolerance_m=args.tol, route_slack_m=args.slack,
        max_speed_mps=args.vmax, beam_log=args.beam, max_search_radius_m=args.max_radius,
        estimate_beta=not args.fixed_beta,
    )  # fmt: skip
    drives = args.drives or sorted(p.name for p in KUBICKA.iterdir() if p.is_dir())
    started = time.perf_counter()
    bench_drive(drives[0], args.cache, params, None, 1)  # JIT compile (or load from cache)
    warmup_s = time.perf_counter() - started
    print(f"warm-up (numba compile or cache load + first drive): {warmup_s:.1f} s")
    print(f"params: {params}\n")
    rows = [bench_drive(d, args.cache, params, args.ubodt_delta, args.runs) for d in drives]
    print_table(rows)


def print_table(rows: list[dict[str, float | str]]) -> None:
    """Print per-drive rows and the summary as Markdown."""
    print(
        "| drive | edges | points | net build s | UBODT MiB | match ms | points/s "
        "| unmatched | breaks | RMF |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['drive']} | {r['edges']} | {r['points']} | {r['build_s']:.2f} | "
            f"{r['ubodt_mib']:.1f} | {1000 * float(r['match_s']):.1f} | "
            f"{float(r['points']) / float(r['match_s']):,.0f} | {r['unmatched']} | {r['breaks']} | "
            f"{float(r['rmf']):.4f} |"
        )
    rmf = [float(r["rmf"]) for r in rows]
    points = sum(float(r["points"]) for r in rows)
    seconds = sum(float(r["match_s"]) for r in rows)
    print(
        f"\nRMF mean {statistics.mean(rmf):.4f} / median {statistics.median(rmf):.4f} / "
        f"p90 {np.percentile(rmf, 90):.4f}; {points:.0f} points in {seconds:.3f} s = "
        f"{points / seconds:,.0f} points/s (1 thread, excl. network build)"
    )


if __name__ == "__main__":
    main()
