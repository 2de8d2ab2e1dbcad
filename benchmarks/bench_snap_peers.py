"""Map matching side by side: roadcover vs OSRM (MLD) vs Valhalla (meili), speed and accuracy.

Usage (Python 3.11 venv of the project; the peers run by subprocess under Python 3.12)::

    python benchmarks/bench_snap_peers.py monaco  [--runs 5] [--devices 20] [--days 3]
    python benchmarks/bench_snap_peers.py kubicka [--runs 3] [--drives 00000000 ...]
    python benchmarks/bench_snap_peers.py scale   [--drives ...]
    python benchmarks/bench_snap_peers.py process [--runs 5] [--devices 40] [--days 10]

The peers' venv (``--peers-python``, default ``/tmp/peers312/bin/python``)::

    PYENV_VERSION=3.12.1 pyenv exec python -m venv /tmp/peers312
    /tmp/peers312/bin/pip install osrm-bindings==26.10.0 pyvalhalla==3.9.1 osmium pandas pyarrow

``monaco``: roads of ``osm/monaco-2016.osm.pbf`` (network ``drive``), a simulated fleet (1 Hz,
noise sigma 5-15 m per device, no outliers; trips from the simulator's own drive functions, so
each fix keeps its trip id), the same trips matched by the three matchers, one thread each,
network preparation timed apart, median of ``--runs`` runs; RMF of every trip against the
simulator's truth route (its driven edges). ``kubicka``: the 20 Kubicka drives, the three
matchers side by side. ``scale``: per drive, in fresh processes, the roads build and the match
network build times and the peak RSS of each. ``process``: the Monaco fleet ingested once, then
``roadcover snap --workers 1`` timed as a whole process (start-up, reading, matching, writing;
the match network cached in the roads folder, as after a first run), against OSRM's in-process
matching (``tidy``) of the same clean fixes, the two in turns. Every subcommand prints Markdown
and writes it to ``--cache``/``<subcommand>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

sys.path.insert(0, str(Path(__file__).parent))
from bench_snap_kubicka import (
    KUBICKA,
    read_trace,
    read_truth,
    roads_folder,
    route_mismatch_fraction,
)

from pipeline.process_tree import own_peak_rss_mb
from pipeline.roads import build_roads, read_edges
from pipeline.snap import (
    MatchParams,
    build_match_network,
    match_trip,
    route_segments,
    traversed_segments,
)

SHARED = KUBICKA.parents[1]
MONACO_PBF = SHARED / "osm" / "monaco-2016.osm.pbf"
PEERS_DIR = Path(__file__).parent / "peers"
PEERS = {"osrm": "run_osrm.py", "valhalla": "run_valhalla.py"}
ROADCOVER = str(Path(sys.executable).with_name("roadcover"))
NAMES = {"roadcover": "roadcover", "osrm": "OSRM", "valhalla": "Valhalla"}


# --------------------------------------------------------------------------- helpers


def rmf_stats(values: list[float]) -> str:
    """``mean / median / p90`` of RMF values."""
    if not values:
        return "- / - / -"
    return (
        f"{statistics.mean(values):.4f} / {statistics.median(values):.4f} / "
        f"{np.percentile(values, 90):.4f}"
    )


def rss_mib() -> float:
    """Peak resident set size of this process (MiB): its own, not its parent's (VmHWM)."""
    return own_peak_rss_mb()


def run_peer(
    peer: str, osm: Path, traces: Path, work: Path, out: Path, runs: int, peers_python: str,
    sigma: float, tidy: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run a peer runner by subprocess; return its timing sidecar plus per-trip geometries."""
    cmd = [
        peers_python, str(PEERS_DIR / PEERS[peer]), "--osm", str(osm), "--traces", str(traces),
        "--work", str(work), "--out", str(out), "--runs", str(runs), "--sigma", str(sigma),
        *(["--tidy"] if tidy else []),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    info = json.loads(Path(f"{out}.json").read_text())
    frame = pd.read_parquet(out)
    info["geometry"] = dict(
        zip(frame["trip_id"], shapely.from_wkt(frame["wkt"].to_numpy()), strict=True)
    )
    info["status"] = dict(zip(frame["trip_id"], frame["status"], strict=True))
    info["errors"] = frame.loc[frame["status"] != "ok", "error"].value_counts().to_dict()
    return info


def geoseries(geom: shapely.Geometry | None) -> gpd.GeoSeries:
    """A one-row (or empty) GeoSeries in EPSG:4326."""
    parts = [] if geom is None or geom.is_empty else [geom]
    return gpd.GeoSeries(parts, crs="EPSG:4326")


def write_markdown(cache: Path, name: str, text: str) -> None:
    """Print ``text`` and save it as ``cache/name.md``."""
    print(text)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{name}.md").write_text(text)


# --------------------------------------------------------------------------- monaco


def simulate_monaco(cache: Path, devices: int, days: int) -> tuple[Path, Path, Path]:
    """Roads, truth (simulate_fleet) and a trip_id,t,lon,lat table of the same fleet."""
    from pipeline.config import load_config
    from pipeline.simulate.fleet import drive_device, plan_fleet, simulate_fleet
    from pipeline.simulate.network import DrivingNetwork

    roads = cache / "monaco_roads"
    if not (roads / "meta.json").exists():
        build_roads(MONACO_PBF, roads, network="drive")
    params = dataclasses.replace(
        load_config().simulate, devices=devices, days=days, noise_sigma_m=(5.0, 15.0),
        outlier_rate=0.0, formats=("parquet",),
    )  # fmt: skip
    sim = cache / f"monaco_sim_{devices}x{days}"
    trips_path = sim / "trips.parquet"
    if not trips_path.exists():
        simulate_fleet(roads, sim, params, overwrite=True)  # its own cache folder
        network = DrivingNetwork.from_roads_dir(roads)
        frames = []
        for device in plan_fleet(network, params):
            fixes = drive_device(network, device, params).fixes
            t_s = fixes["observed_at"].astype("int64").to_numpy() / 1000.0
            frames.append(
                pd.DataFrame(
                    {
                        "trip_id": fixes["trip_id"].astype(str),
                        "t": t_s,
                        "lon": fixes["lon"].to_numpy(),
                        "lat": fixes["lat"].to_numpy(),
                    }
                )
            )
        pd.concat(frames, ignore_index=True).to_parquet(trips_path, index=False)
    return roads, sim / "truth.parquet", trips_path


def bench_roadcover_trips(
    roads: Path, trips: pd.DataFrame, runs: int, params: MatchParams
) -> dict[str, Any]:
    """Time roadcover on a table of trips: network build, then match_trip in a loop."""
    started = time.perf_counter()
    edges = read_edges(roads)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    net = build_match_network(edges)
    build_s = time.perf_counter() - started
    groups = [
        (str(k), g["lon"].to_numpy(), g["lat"].to_numpy(), g["t"].to_numpy())
        for k, g in trips.groupby("trip_id", sort=False)
    ]
    match_trip(net, *groups[0][1:], params)  # JIT compile / cache load, not timed
    match_s, total_s, results = [], [], {}
    for _ in range(runs):
        started = time.perf_counter()
        results = {k: match_trip(net, lon, lat, t, params) for k, lon, lat, t in groups}
        match_s.append(time.perf_counter() - started)
        geoms = {}
        for k, trip in results.items():
            geoms[k] = route_segments(net, trip.route).geometry
        total_s.append(time.perf_counter() - started)
    return {
        "prepare_s": {"read_edges": read_s, "build_match_network": build_s},
        "run_s": match_s,
        "run_with_geometry_s": total_s,
        "geometry": {k: shapely.union_all(g.to_numpy()) for k, g in geoms.items()},
        "edges": net.n_edges,
        "points": len(trips),
        "trips": len(groups),
    }


def monaco(args: argparse.Namespace) -> None:
    """Speed and RMF on a simulated Monaco fleet."""
    roads, truth_path, trips_path = simulate_monaco(args.cache, args.devices, args.days)
    trips = pd.read_parquet(trips_path)
    truth = gpd.read_parquet(truth_path)
    truth_geom = {k: shapely.union_all(g.geometry.to_numpy()) for k, g in truth.groupby("trip_id")}
    if set(truth_geom) != set(trips["trip_id"]):
        raise SystemExit("trip ids of truth.parquet and the simulated trips differ")
    params = MatchParams()
    results = {"roadcover": bench_roadcover_trips(roads, trips, args.runs, params)}
    for peer in args.peers:
        results[peer] = run_peer(
            peer, MONACO_PBF, trips_path, args.cache / f"{peer}_monaco", args.cache /
            f"{peer}_monaco.parquet", args.runs, args.peers_python, params.sigma_m,
        )  # fmt: skip
    lines = [
        f"Monaco 2016 (`osm/monaco-2016.osm.pbf`, roadcover network `drive`: "
        f"{results['roadcover']['edges']} edges); simulated fleet {args.devices} devices x "
        f"{args.days} days, 1 Hz, noise sigma 5-15 m, no outliers: "
        f"{results['roadcover']['trips']} trips, {results['roadcover']['points']:,} fixes. "
        f"One thread, one process, median of {args.runs} runs.\n",
        "| matcher | precompute s (steps) | load s | match s | points/s | failed trips "
        "| RMF mean / median / p90 | RMF total (length-weighted) |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    pps = {}
    for name, res in results.items():
        if "error" in res:
            lines.append(f"| {NAMES[name]} | could not run: {res['error']} |")
            continue
        rmf, extra_missed, truth_len = [], 0.0, 0.0
        for trip_id, tgeom in truth_geom.items():
            rmf.append(route_mismatch_fraction(geoseries(res["geometry"].get(trip_id)), tgeom))
            length = float(geoseries(tgeom).to_crs(32632).length.iloc[0])
            extra_missed += rmf[-1] * length
            truth_len += length
        seconds = statistics.median(res["run_s"])
        pps[name] = res["points"] / seconds
        steps = ", ".join(f"{k} {v:.2f}" for k, v in res["prepare_s"].items())
        failed = res.get("failed_trips", 0)
        lines.append(
            f"| {NAMES[name]} | {sum(res['prepare_s'].values()):.2f} ({steps}) | "
            f"{res.get('load_s', 0.0):.3f} | {seconds:.2f} | {pps[name]:,.0f} | {failed} | "
            f"{rmf_stats(rmf)} | {extra_missed / truth_len:.4f} |"
        )
        res["rmf"] = rmf
    rc = results["roadcover"]
    geo_pps = rc["points"] / statistics.median(rc["run_with_geometry_s"])
    lines.append(
        f"\nroadcover `match_trip` only; with `route_segments` geometry of every trip (as the "
        f"peers return geometry): {geo_pps:,.0f} points/s. Runs (s): roadcover "
        f"{[round(s, 3) for s in rc['run_s']]}; "
        + "; ".join(
            f"{NAMES[p]} {[round(s, 3) for s in results[p]['run_s']]}"
            for p in args.peers
            if "run_s" in results[p]
        )
    )
    if "osrm" in pps:
        lines.append(
            f"\n**roadcover / OSRM = {pps['roadcover'] / pps['osrm']:.2f}x** (target >= 1.2x); "
            f"with geometry {geo_pps / pps['osrm']:.2f}x."
        )
    if "valhalla" in pps:
        lines.append(f"roadcover / Valhalla = {pps['roadcover'] / pps['valhalla']:.2f}x.")
    for name, res in results.items():
        if res.get("errors"):
            lines.append(f"\n{NAMES[name]} failures: {res['errors']}")
    write_markdown(args.cache, "monaco", "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- process


def ingest_monaco(cache: Path, devices: int, days: int) -> tuple[Path, Path, Path]:
    """Roads, the fleet's traces ingested (once), and their clean fixes as trip_id,t,lon,lat."""
    roads, _truth, _trips = simulate_monaco(cache, devices, days)
    sim = cache / f"monaco_sim_{devices}x{days}"
    traces = cache / f"monaco_traces_{devices}x{days}"
    if not (traces / "points").exists():
        subprocess.run(
            [ROADCOVER, "ingest", str(sim / "traces"), "-o", str(traces), "--workers", "1"],
            check=True, env=bench_env(),
        )  # fmt: skip
    clean = cache / f"monaco_clean_{devices}x{days}.parquet"
    if not clean.exists():
        columns = ["trip_id", "observed_at", "lon", "lat"]
        points = pd.read_parquet(traces / "points", columns=columns)
        points = points.sort_values(["trip_id", "observed_at"], kind="stable")
        t_s = points["observed_at"].astype("datetime64[ms, UTC]").astype("int64") / 1000.0
        pd.DataFrame(
            {"trip_id": points["trip_id"].astype(str), "t": t_s.to_numpy(),
             "lon": points["lon"].to_numpy(), "lat": points["lat"].to_numpy()}
        ).to_parquet(clean, index=False)  # fmt: skip
    return roads, traces, clean


def bench_env() -> dict[str, str]:
    """This environment with one numba thread (as the peers' one thread) and a pseudonym key.

    Without ``PYTHONDONTWRITEBYTECODE``: the modules' bytecode is cached by the first run, as
    in an installed package, not compiled from source again by every timed run.
    """
    key = os.environ.get("ROADCOVER_PSEUDONYM_KEY", "bench-key-not-a-secret-0123456789abcdef")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "NUMBA_NUM_THREADS": "1", "ROADCOVER_PSEUDONYM_KEY": key}


def time_snap_process(roads: Path, traces: Path, out: Path) -> dict[str, float]:
    """Run ``roadcover snap --workers 1`` once; return its wall, user and system seconds."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(
        [ROADCOVER, "snap", "--roads", str(roads), "--traces", str(traces), "-o", str(out),
         "--workers", "1"],
        check=True, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime,
            "sys": after.ru_stime - before.ru_stime}  # fmt: skip


def process(args: argparse.Namespace) -> None:
    """``roadcover snap --workers 1`` as a whole process against OSRM's in-process matching.

    The two run in turns, a roadcover process then one OSRM ``Match`` loop over every trip (a
    runner process of one run), ``--runs`` times: on a shared machine both see the same load.
    """
    roads, traces, clean = ingest_monaco(args.cache, args.devices, args.days)
    out = args.cache / f"monaco_matched_{args.devices}x{args.days}"
    time_snap_process(roads, traces, out)  # caches the match network, loads the JIT cache
    runs, osrm_runs = [], []
    for _ in range(args.runs):
        runs.append(time_snap_process(roads, traces, out))
        if "osrm" in args.peers:
            osrm_runs.append(osrm_process_run(args, clean))
    meta = json.loads((out / "meta.json").read_text())
    wall = statistics.median(r["wall"] for r in runs)
    cpu = statistics.median(r["user"] + r["sys"] for r in runs)
    lines = [
        f"Monaco 2016 (network `drive`), simulated fleet {args.devices} devices x {args.days} "
        f"days (1 Hz, noise sigma 5-15 m, no outliers), ingested: {meta['trips']:,} trips, "
        f"{meta['points']:,} clean fixes. `roadcover snap --workers 1`, a whole process, median "
        f"of {args.runs} runs (after one that cached the match network), each followed by "
        "an OSRM run.\n",
        "| matcher | runs s | median s | fixes/s |",
        "|---|---|---:|---:|",
        f"| roadcover snap (process wall) | {[round(r['wall'], 2) for r in runs]} | {wall:.2f} | "
        f"{meta['points'] / wall:,.0f} |",
        f"| roadcover snap (process user+sys) | "
        f"{[round(r['user'] + r['sys'], 2) for r in runs]} | {cpu:.2f} | "
        f"{meta['points'] / cpu:,.0f} |",
    ]
    errors = [r["error"] for r in osrm_runs if "error" in r]
    if errors:
        lines.append(f"| OSRM | could not run: {errors[0]} | | |")
    elif osrm_runs:
        osrm_wall = [r["run_s"][0] for r in osrm_runs]
        osrm_cpu = [r["run_cpu_s"][0] for r in osrm_runs]
        osrm_s, osrm_c = statistics.median(osrm_wall), statistics.median(osrm_cpu)
        points, failed = osrm_runs[0]["points"], osrm_runs[0]["failed_trips"]
        lines += [
            f"| OSRM in-process `Match` (tidy) wall, {failed} failed trips | "
            f"{[round(s, 2) for s in osrm_wall]} | {osrm_s:.2f} | {points / osrm_s:,.0f} |",
            f"| OSRM in-process `Match` (tidy) CPU | "
            f"{[round(s, 2) for s in osrm_cpu]} | {osrm_c:.2f} | {points / osrm_c:,.0f} |",
            f"\n**roadcover snap (whole process) / OSRM = {osrm_s / wall:.2f}x by wall time, "
            f"{osrm_c / cpu:.2f}x by CPU time** (aims: >= 1.2x; >= 1.5x at 1 M fixes).",
        ]
    write_markdown(args.cache, f"process_{args.devices}x{args.days}", "\n".join(lines) + "\n")


def osrm_process_run(args: argparse.Namespace, clean: Path) -> dict[str, Any]:
    """One OSRM runner process matching every trip of ``clean`` once (``tidy``)."""
    return run_peer(
        "osrm", MONACO_PBF, clean, args.cache / "osrm_process",
        args.cache / "osrm_process.parquet", 1, args.peers_python, MatchParams().sigma_m,
        tidy=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- kubicka


def kubicka(args: argparse.Namespace) -> None:
    """The three matchers on the Kubicka drives."""
    drives = args.drives or sorted(p.name for p in KUBICKA.iterdir() if p.is_dir())
    params = MatchParams()
    rows = []
    for drive in drives:
        lon, lat, t_s = read_trace(KUBICKA / drive)
        truth = read_truth(KUBICKA / drive)
        net = build_match_network(read_edges(roads_folder(drive, args.cache / "kubicka_roads")))
        match_trip(net, lon, lat, t_s, params)  # JIT / warm-up
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            trip = match_trip(net, lon, lat, t_s, params)
            seconds.append(time.perf_counter() - started)
        row: dict[str, Any] = {"drive": drive, "edges": net.n_edges, "points": len(lon)}
        row["roadcover"] = (
            statistics.median(seconds),
            route_mismatch_fraction(traversed_segments(net, trip).geometry, truth),
        )
        traces = args.cache / "kubicka_traces" / f"{drive}.parquet"
        traces.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"trip_id": drive, "t": t_s, "lon": lon, "lat": lat}).to_parquet(traces)
        for peer in args.peers:
            res = run_peer(
                peer, KUBICKA / drive / "network.osm.bz2", traces,
                args.cache / f"{peer}_kubicka" / drive,
                args.cache / f"{peer}_kubicka" / f"{drive}.parquet", args.runs,
                args.peers_python, params.sigma_m,
            )  # fmt: skip
            if "error" in res or res["status"][drive] != "ok":
                row[peer] = (None, None, res.get("error") or res["errors"])
            else:
                rmf = route_mismatch_fraction(geoseries(res["geometry"][drive]), truth)
                row[peer] = (statistics.median(res["run_s"]), rmf, res["prepare_s"])
        rows.append(row)
        print(drive, {k: v for k, v in row.items() if k in ("roadcover", *args.peers)},
              flush=True)  # fmt: skip
    names = ["roadcover", *args.peers]
    head = " | ".join(f"{NAMES[n]} RMF | {NAMES[n]} pts/s" for n in names)
    lines = [
        f"| drive | edges | points | {head} |",
        "|---|---:|---:|" + "---:|---:|" * len(names),
    ]
    for r in rows:
        cells = []
        for n in names:
            s, rmf = r[n][0], r[n][1]
            cells += ["skipped" if rmf is None else f"{rmf:.4f}",
                      "-" if s is None else f"{r['points'] / s:,.0f}"]  # fmt: skip
        lines.append(f"| {r['drive']} | {r['edges']} | {r['points']} | " + " | ".join(cells) + " |")
    lines += ["", "| matcher | drives | RMF mean / median / p90 | points/s (sum of drives) |",
              "|---|---:|---|---:|"]  # fmt: skip
    for n in names:
        ok = [r for r in rows if r[n][1] is not None]
        pts = sum(r["points"] for r in ok)
        sec = sum(r[n][0] for r in ok)
        lines.append(
            f"| {NAMES[n]} | {len(ok)} | {rmf_stats([r[n][1] for r in ok])} | {pts / sec:,.0f} |"
        )
        common = [r for r in rows if all(r[m][1] is not None for m in names)]
        if len(common) != len(rows):
            lines.append(
                f"| {NAMES[n]} (drives all matchers did) | {len(common)} | "
                f"{rmf_stats([r[n][1] for r in common])} | |"
            )
    for r in rows:
        for n in args.peers:
            if r[n][1] is None:
                lines.append(f"\n{NAMES[n]} skipped {r['drive']}: {r[n][2]}")
    write_markdown(args.cache, "kubicka", "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- scale


def scale_one(args: argparse.Namespace) -> None:
    """(Subprocess) one phase of one drive; prints a JSON line."""
    roads = args.cache / "scale_roads" / args.drive
    out: dict[str, Any] = {"drive": args.drive}
    if args.phase == "roads":
        started = time.perf_counter()
        build_roads(KUBICKA / args.drive / "network.osm.bz2", roads, network="all")
        out["roads_s"] = time.perf_counter() - started
    else:
        edges = read_edges(roads)
        out["read_s"] = 0.0
        started = time.perf_counter()
        net = build_match_network(edges)
        out["net_cold_s"] = time.perf_counter() - started  # incl. numba cache load
        del net
        started = time.perf_counter()
        net = build_match_network(edges)
        out["net_s"] = time.perf_counter() - started
        out["net_mib"] = (
            sum(
                getattr(net, f.name).nbytes
                for f in dataclasses.fields(net)
                if isinstance(getattr(net, f.name), np.ndarray)
            )
            / 2**20
        )
        out["edges"] = net.n_edges
        out["rss_after_build_mib"] = rss_mib()
        lon, lat, t_s = read_trace(KUBICKA / args.drive)
        match_trip(net, lon, lat, t_s)
        started = time.perf_counter()
        match_trip(net, lon, lat, t_s)
        out["match_s"] = time.perf_counter() - started
        out["points"] = len(lon)
    out["peak_rss_mib"] = rss_mib()
    print(json.dumps(out))


def scale(args: argparse.Namespace) -> None:
    """Roads build, match network build and peak RSS per drive, each phase in a fresh process."""
    drives = args.drives or sorted(p.name for p in KUBICKA.iterdir() if p.is_dir())
    rows = []
    for drive in drives:
        row: dict[str, Any] = {}
        for phase in ("roads", "match"):
            cmd = [sys.executable, __file__, "--cache", str(args.cache), "scale-one", drive, phase]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            got[f"{phase}_peak_rss_mib"] = got.pop("peak_rss_mib")
            row.update(got)
        rows.append(row)
        print(row, flush=True)
    rows.sort(key=lambda r: r["edges"])
    lines = [
        "| drive | edges | roads build s | roads peak RSS MiB | match net build s (cold) | "
        "net arrays MiB | RSS after net build MiB | match s | peak RSS matching MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['drive']} | {r['edges']:,} | {r['roads_s']:.2f} | "
            f"{r['roads_peak_rss_mib']:.0f} | {r['net_s']:.3f} ({r['net_cold_s']:.1f}) | "
            f"{r['net_mib']:.1f} | "
            f"{r['rss_after_build_mib']:.0f} | {r['match_s']:.3f} | "
            f"{r['match_peak_rss_mib']:.0f} |"
        )
    if len(rows) >= 3:
        e = np.log([r["edges"] for r in rows])
        fit = {
            key: np.polyfit(e, np.log([max(r[key], 1e-3) for r in rows]), 1)[0]
            for key in ("roads_s", "roads_peak_rss_mib", "net_s", "match_peak_rss_mib")
        }
        big = [r for r in rows if r["edges"] >= 5000]
        if len(big) >= 2:
            eb = np.log([r["edges"] for r in big])
            fit_big = {
                key: np.polyfit(eb, np.log([r[key] for r in big]), 1)[0]
                for key in ("roads_s", "roads_peak_rss_mib", "net_s", "match_peak_rss_mib")
            }
            lines.append(
                "\nlog-log slope over drives with >= 5,000 edges: "
                + ", ".join(f"{k} ~ edges^{v:.2f}" for k, v in fit_big.items())
            )
        lines.append(
            "log-log slope over all drives: "
            + ", ".join(f"{k} ~ edges^{v:.2f}" for k, v in fit.items())
        )
    write_markdown(args.cache, "scale", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/roadcover_bench_peers"))
    parser.add_argument("--peers-python", default="/tmp/peers312/bin/python")
    parser.add_argument("--peers", nargs="*", default=["osrm", "valhalla"], choices=list(PEERS))
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("monaco")
    m.add_argument("--runs", type=int, default=5)
    m.add_argument("--devices", type=int, default=20)
    m.add_argument("--days", type=int, default=3)
    k = sub.add_parser("kubicka")
    k.add_argument("--runs", type=int, default=3)
    k.add_argument("--drives", nargs="*", default=None)
    s = sub.add_parser("scale")
    s.add_argument("--drives", nargs="*", default=None)
    p = sub.add_parser("process")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--devices", type=int, default=40)
    p.add_argument("--days", type=int, default=10)
    one = sub.add_parser("scale-one")
    one.add_argument("drive")
    one.add_argument("phase", choices=["roads", "match"])
    args = parser.parse_args()
    if not Path(args.peers_python).exists() and args.command in ("monaco", "kubicka", "process"):
        print(f"peers' python {args.peers_python} missing: running roadcover only")
        args.peers = []
    commands = {"monaco": monaco, "kubicka": kubicka, "scale": scale, "scale-one": scale_one,
                "process": process}  # fmt: skip
    commands[args.command](args)


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    main()
