"""Shared helpers of the peer map-matcher runners (run under Python 3.12, /tmp/peers312).

A runner reads an OSM extract and a traces file (Parquet or CSV with ``trip_id, t, lon, lat``,
``t`` in seconds), builds its engine's data once (timed), matches every trip ``--runs`` times
in one process on one thread (timed per run) and writes:

- ``OUT`` (Parquet): ``trip_id, points, status, error, wkt`` — the matched geometry of the last
  run as a WKT (Multi)LineString in EPSG:4326 (empty when nothing was matched);
- ``OUT.json``: ``prepare_s`` (per build step), ``load_s``, ``run_s`` and ``run_cpu_s`` (wall
  and CPU seconds, lists), ``points``,
  ``trips``, ``failed_trips``, the engine's version and its settings.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def arguments(description: str) -> argparse.Namespace:
    """Parse the command line shared by the runners."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--osm", type=Path, required=True, help="OSM extract (.osm.pbf/.osm.bz2)")
    parser.add_argument("--traces", type=Path, required=True, help="trip_id,t,lon,lat table")
    parser.add_argument("--work", type=Path, required=True, help="folder for the engine's data")
    parser.add_argument("--out", type=Path, required=True, help="output Parquet")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=10.0, help="GPS accuracy (m)")
    parser.add_argument("--radius", type=float, default=50.0, help="search radius (m)")
    parser.add_argument("--tidy", action="store_true", help="OSRM: tidy the trace first")
    return parser.parse_args()


def read_trips(path: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Return ``(trip_id, t, lon, lat)`` per trip, in file order, sorted by time."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    trips = []
    for trip_id, group in frame.groupby("trip_id", sort=False):
        group = group.sort_values("t", kind="stable")
        trips.append(
            (
                str(trip_id),
                group["t"].to_numpy("float64"),
                group["lon"].to_numpy("float64"),
                group["lat"].to_numpy("float64"),
            )
        )
    return trips


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``step`` and return its result and its wall seconds."""
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def wkt_of(lines: list[list[tuple[float, float]]]) -> str:
    """WKT MultiLineString of coordinate lists (parts with < 2 points dropped)."""
    parts = [line for line in lines if len(line) >= 2]
    if not parts:
        return "MULTILINESTRING EMPTY"
    body = ", ".join("(" + ", ".join(f"{x:.7f} {y:.7f}" for x, y in p) + ")" for p in parts)
    return f"MULTILINESTRING ({body})"


def match_all(
    trips: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    match: Callable[[np.ndarray, np.ndarray, np.ndarray], list[list[tuple[float, float]]]],
    runs: int,
    cpu_s: list[float] | None = None,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Match every trip ``runs`` times; return the last run's rows and each run's seconds.

    The seconds are wall times; each run's CPU seconds of this process (all its threads) are
    appended to ``cpu_s`` when a list is given.
    """
    run_s: list[float] = []
    rows: list[dict[str, Any]] = []
    for _ in range(max(runs, 1)):
        rows = []
        started, cpu_started = time.perf_counter(), time.process_time()
        for trip_id, t, lon, lat in trips:
            try:
                lines, status, error = match(t, lon, lat), "ok", ""
            except Exception as exc:
                lines, status, error = [], "error", str(exc)[:300]
            rows.append(
                {"trip_id": trip_id, "points": len(t), "status": status, "error": error,
                 "lines": lines}
            )  # fmt: skip
        run_s.append(time.perf_counter() - started)
        if cpu_s is not None:
            cpu_s.append(time.process_time() - cpu_started)
    return rows, run_s


def match_and_write(
    args: argparse.Namespace,
    match: Callable[[np.ndarray, np.ndarray, np.ndarray], list[list[tuple[float, float]]]],
    info: dict[str, Any],
) -> None:
    """Match every trip of ``args.traces`` ``args.runs`` times and write ``args.out``."""
    cpu_s: list[float] = []
    rows, run_s = match_all(read_trips(args.traces), match, args.runs, cpu_s)
    write_outputs(args.out, rows, {**info, "run_s": run_s, "run_cpu_s": cpu_s})


def write_outputs(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Write the per-trip geometries (Parquet) and the timing sidecar (``OUT.json``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "trip_id": [r["trip_id"] for r in rows],
            "points": [r["points"] for r in rows],
            "status": [r["status"] for r in rows],
            "error": [r["error"] for r in rows],
            "wkt": [wkt_of(r["lines"]) for r in rows],
        }
    )
    frame.to_parquet(out, index=False)
    info = {
        **info,
        "trips": len(rows),
        "points": int(sum(r["points"] for r in rows)),
        "failed_trips": int(sum(r["status"] != "ok" for r in rows)),
    }
    Path(f"{out}.json").write_text(json.dumps(info, indent=1))


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices of at most ``size`` covering ``0..n``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
