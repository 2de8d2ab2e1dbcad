"""Coverage truth: unique km of a simulated Monaco fleet against the road it really drove.

Usage: ``python benchmarks/bench_truth.py [--devices 60] [--days 10] [--seed 2412]
[--workdir DIR]`` (default: 60 devices for 10 days at 1 trip a day, about 600 drives, the
held-out seed 2412; Monaco 2016 from ``ROADCOVER_SHARED_DATA``).

A fleet is simulated (1 Hz, GPS noise sigma 5-15 m per device, the simulator's outliers and
dropouts) and run through ingest (privacy trim 200 m at each end), snap and coverage, one
worker each. The truth is the simulator's routes cut to the time window of each trip ingest
kept (``tests/truth.py``: shapely and pyproj, no pipeline code). Reported:

* ``unique_km / truth``;
* recall: the share of the true road that a counted trip's matched segments cover;
* precision: the share of the covered road that lies on the true road;
* the true road missed, by cause: trips coverage does not count (match confidence below
  ``coverage.min_match_confidence`` or implausible), trip ends (the true road up to 10 s after
  a trip's first matched fix, and from 10 s before its last), gaps between the HMM's runs
  (breaks, skipped outliers) and the rest (matched to another road);
* the covered road beside the true road, by where it lies: on a trip's first or last matched
  piece, or elsewhere.

Sets of road are compared as masks of 5 cm cells along each road (both directions of a
two-way road share theirs), built from the true routes' and the matched segments' offsets.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.config import Settings, settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, SIMULATED_ROUTES, TRIPS
from pipeline.coverage.stage import compute_coverage
from pipeline.ingest.stage import ingest_traces
from pipeline.io import read_table
from pipeline.roads import build_roads
from pipeline.simulate.fleet import simulate_fleet
from pipeline.snap.stage import snap_traces
from tests.truth import located_fractions, true_fixes, true_routes

SHARED = Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))
KEY = "bench-truth-key-0123456789"
CELL_M = 0.05  # resolution of the road masks
END_S = pd.Timedelta(seconds=10)  # a trip's ends: up to its first matched fix and 10 s on


def fleet_settings(devices: int, days: int, seed: int) -> Settings:
    """The benchmark's settings: 1 Hz, sigma 5-15 m, one worker per stage, the rest defaults."""
    return settings_from_mapping(
        {
            "regions": [{"name": "monaco", "osm": "monaco-2016.osm.pbf"}],
            "ingest": {"workers": 1},
            "snap": {"workers": 1},
            "simulate": {
                "devices": devices,
                "days": days,
                "seed": seed,
                "trips_per_device_day": 1.0,
                "sample_interval_s": 1.0,
                "noise_sigma_m": [5.0, 15.0],
                "formats": ["csv"],
            },
        }
    )


def run_pipeline(work: Path, settings: Settings, osm: Path) -> dict[str, float]:
    """Roads, fleet, ingest, snap and coverage into ``work``; return each stage's seconds."""
    os.environ["ROADCOVER_PSEUDONYM_KEY"] = KEY
    seconds: dict[str, float] = {}
    steps = [
        ("roads", lambda: build_roads(osm, work / "roads")),
        ("simulate", lambda: simulate_fleet(work / "roads", work / "fleet", settings.simulate, 1)),
        ("ingest", lambda: ingest_traces([work / "fleet/traces"], work / "traces",
                                         settings.ingest)),
        ("snap", lambda: snap_traces(work / "roads", work / "traces", work / "matched",
                                     settings.snap)),
        ("coverage", lambda: compute_coverage(work / "roads", [work / "matched"],
                                              work / "coverage", settings.coverage)),
    ]  # fmt: skip
    for name, step in steps:
        started = time.perf_counter()
        step()
        seconds[name] = round(time.perf_counter() - started, 1)
    return seconds


def _read_trips(work: Path) -> pd.DataFrame:
    files = sorted((work / "traces/trips").glob("*.parquet"))
    return pd.concat([pd.DataFrame(read_table(f, TRIPS)) for f in files], ignore_index=True)


class RoadRaster:
    """Every road of the roads folder cut into cells of ``CELL_M``: sets of road as masks.

    Both directions of a two-way road (one ``road_id``) share their cells: a piece of an edge
    is mapped onto the orientation of the road's first edge (the lowest ``edge_id``), reversed
    when the edge's line starts where that one ends.
    """

    def __init__(self, edges: gpd.GeoDataFrame) -> None:
        edges = edges.sort_values("edge_id")
        first = edges.groupby("road_id")["edge_id"].transform("min")
        reference = edges.set_index("edge_id").loc[first.to_numpy()]
        starts = shapely.get_point(edges.geometry.to_numpy(), 0)
        ref_starts = shapely.get_point(reference.geometry.to_numpy(), 0)
        reverse = (first.to_numpy() != edges["edge_id"].to_numpy()) & ~shapely.equals(
            starts, ref_starts
        )
        roads = edges.drop_duplicates("road_id")
        cells = np.ceil(roads["length_m"].to_numpy() / CELL_M).astype(np.int64)
        road_start = pd.Series(np.r_[0, np.cumsum(cells)[:-1]], index=roads["road_id"])
        self.size = int(cells.sum())
        self.by_edge = pd.DataFrame(
            {
                "start": road_start.loc[edges["road_id"].to_numpy()].to_numpy(),
                "length_m": edges["length_m"].to_numpy(),
                "reverse": reverse,
            },
            index=edges["edge_id"].to_numpy(),
        )

    def mask(self, edge_id: np.ndarray, from_m: np.ndarray, to_m: np.ndarray) -> np.ndarray:
        """The cells whose centre lies within ``[from_m, to_m]`` (either order) of the edges."""
        edge = self.by_edge.loc[np.asarray(edge_id)]
        length = edge["length_m"].to_numpy()
        low = np.clip(np.minimum(from_m, to_m), 0, length)
        high = np.clip(np.maximum(from_m, to_m), 0, length)
        flip = edge["reverse"].to_numpy()
        low, high = np.where(flip, length - high, low), np.where(flip, length - low, high)
        first = edge["start"].to_numpy() + np.ceil(low / CELL_M - 0.5).astype(np.int64)
        stop = edge["start"].to_numpy() + np.ceil(high / CELL_M - 0.5).astype(np.int64)
        keep = stop > first
        change = np.zeros(self.size + 1, dtype=np.int64)
        np.add.at(change, first[keep], 1)
        np.add.at(change, stop[keep], -1)
        return np.cumsum(change[:-1]) > 0


def _km(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) * CELL_M / 1000.0


def true_pieces(
    routes: gpd.GeoDataFrame, windows: pd.DataFrame, fixes: pd.DataFrame
) -> pd.DataFrame:
    """The pieces of edges the devices drove within time windows (``device``, ``start``, ``stop``).

    An edge driven at a window's start or stop is cut where the vehicle truly was then
    (``fixes``, :func:`tests.truth.true_fixes`), else at the position interpolated linearly in
    time within the edge (as ``tests/truth.py`` does).
    """
    where = fixes.rename(columns={"observed_at": "at"})
    for side in ("start", "stop"):
        named = where.rename(columns={"at": side, "true_lon": f"{side}_lon",
                                      "true_lat": f"{side}_lat"})  # fmt: skip
        windows = windows.merge(named, on=["device", side], how="left")
    rows = windows.merge(pd.DataFrame(routes.drop(columns="geometry")).assign(
        line=routes.geometry.to_numpy()), on="device")  # fmt: skip
    rows = rows[(rows["exited_at"] > rows["start"]) & (rows["entered_at"] < rows["stop"])]
    span = (rows["exited_at"] - rows["entered_at"]).dt.total_seconds().clip(lower=1e-3)
    begin = ((rows["start"] - rows["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    end = ((rows["stop"] - rows["entered_at"]).dt.total_seconds() / span).clip(0, 1)
    begin, end = begin.to_numpy(copy=True), end.to_numpy(copy=True)
    for side, fraction in (("start", begin), ("stop", end)):
        cut = ((rows["entered_at"] <= rows[side]) & (rows[side] < rows["exited_at"])
               & rows[f"{side}_lon"].notna()).to_numpy()  # fmt: skip
        fraction[cut] = located_fractions(
            rows["line"].to_numpy()[cut], rows[f"{side}_lon"].to_numpy()[cut],
            rows[f"{side}_lat"].to_numpy()[cut], routes.crs,
        )  # fmt: skip
    return pd.DataFrame(
        {
            "trip_id": rows["trip_id"].to_numpy(),
            "edge_id": rows["edge_id"].to_numpy(),
            "from_m": begin * rows["length_m"].to_numpy(),
            "to_m": end * rows["length_m"].to_numpy(),
        }
    )


def fix_windows(trips: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Per trip, the time windows without a matched route: its ends and the gaps between runs.

    Columns ``trip_id``, ``device``, ``start``, ``stop``, ``kind`` (``ends`` or ``gaps``).
    """
    matched = points.dropna(subset=["edge_id"])
    runs = matched.groupby(["trip_id", "run"])["observed_at"].agg(["min", "max"]).reset_index()
    runs = runs.sort_values(["trip_id", "min"])
    span = runs.groupby("trip_id").agg(first=("min", "min"), last=("max", "max"))
    gaps = runs.assign(start=runs["max"], stop=runs.groupby("trip_id")["min"].shift(-1))
    gaps = gaps.dropna(subset=["stop"])[["trip_id", "start", "stop"]].assign(kind="gaps")
    trips = trips.set_index("trip_id").join(span)
    trips["first"] = trips["first"].fillna(trips["ended_at"]) + END_S
    trips["last"] = trips["last"].fillna(trips["ended_at"]) - END_S
    ends = (
        pd.concat(
            [
                pd.DataFrame({"start": trips["started_at"], "stop": trips["first"]}),
                pd.DataFrame({"start": trips["last"], "stop": trips["ended_at"]}),
            ]
        )
        .reset_index()
        .assign(kind="ends")
    )
    windows = pd.concat([ends, gaps], ignore_index=True)
    return windows.merge(trips["device_id"].rename("device").reset_index(), on="trip_id")


def analyse(work: Path, settings: Settings) -> dict[str, Any]:
    """Compare the coverage in ``work`` with the simulator's truth."""
    summary = json.loads((work / "coverage/summary.json").read_text())
    trips = _read_trips(work)
    truth = true_routes(read_table(work / "fleet/truth.parquet", SIMULATED_ROUTES), KEY)
    truth = truth.drop(columns=["trip_id"])
    fixes = true_fixes(work / "roads", settings.simulate, KEY)
    raster = RoadRaster(gpd.read_parquet(work / "roads/edges.parquet"))
    quality = read_table(work / "matched/match_quality.parquet", MATCH_QUALITY)
    counts = quality["confidence"] >= settings.coverage.min_match_confidence
    if not settings.coverage.include_flagged_trips:
        counts &= quality["plausible"]
    counted = set(quality.loc[counts, "trip_id"])
    segments = pd.read_parquet(work / "matched/matched_segments.parquet")
    segments = segments[segments["trip_id"].isin(counted)]
    points = pd.read_parquet(
        work / "matched/matched_points.parquet",
        columns=["trip_id", "observed_at", "edge_id", "run", "unmatched_reason"],
    )
    kept = trips[["trip_id", "started_at", "ended_at"]].rename(
        columns={"started_at": "start", "ended_at": "stop"}
    )
    pieces = true_pieces(truth, kept.assign(device=trips["device_id"]), fixes)
    true_mask = raster.mask(pieces["edge_id"], pieces["from_m"], pieces["to_m"])
    covered = raster.mask(segments["edge_id"], segments["from_offset_m"], segments["to_offset_m"])
    missed = true_mask & ~covered
    beside = covered & ~true_mask
    windows = fix_windows(trips[trips["trip_id"].isin(counted)], points)
    causes = {
        "trip not counted": pieces[~pieces["trip_id"].isin(counted)],
        "trip ends": true_pieces(truth, windows[windows["kind"] == "ends"], fixes),
        "gaps between runs": true_pieces(truth, windows[windows["kind"] == "gaps"], fixes),
    }
    left = missed.copy()
    by_cause = {}
    for cause, part in causes.items():
        zone = raster.mask(part["edge_id"], part["from_m"], part["to_m"])
        by_cause[cause] = round(_km(left & zone), 3)
        left &= ~zone
    by_cause["matched to another road"] = round(_km(left), 3)
    order = segments.sort_values(["trip_id", "seq"]).groupby("trip_id", sort=False)
    end_segments = pd.concat([order.head(1), order.tail(1)])
    ends = raster.mask(
        end_segments["edge_id"], end_segments["from_offset_m"], end_segments["to_offset_m"]
    )
    truth_km = _km(true_mask)
    return {
        "drives": len(trips),
        "fixes": int(quality["points"].sum()),
        "unmatched_by_reason": points["unmatched_reason"].value_counts().to_dict(),
        "trips_not_counted": int(len(quality) - len(counted)),
        "truth_km": round(truth_km, 3),
        "unique_km": summary["unique_km"],
        "ratio": round(summary["unique_km"] / truth_km, 4),
        "recall": round(1 - _km(missed) / truth_km, 4),
        "precision": round(1 - _km(beside) / _km(covered), 4),
        "missed_km": round(_km(missed), 3),
        "missed_by_cause_km": by_cause,
        "beside_km": round(_km(beside), 3),
        "beside_by_place_km": {
            "trip's first or last piece": round(_km(beside & ends), 3),
            "elsewhere": round(_km(beside & ~ends), 3),
        },
    }


def main() -> None:
    """Run the benchmark and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2412)
    parser.add_argument("--osm", type=Path, default=SHARED / "osm/monaco-2016.osm.pbf")
    parser.add_argument("--workdir", type=Path, help="keep the outputs here (default: a temp dir)")
    parser.add_argument("--analyse-only", action="store_true", help="reuse --workdir's outputs")
    args = parser.parse_args()
    settings = fleet_settings(args.devices, args.days, args.seed)
    with tempfile.TemporaryDirectory() as temp:
        work = args.workdir or Path(temp)
        seconds = {} if args.analyse_only else run_pipeline(work, settings, args.osm)
        result = analyse(work, settings)
    result["seconds"] = seconds
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
