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
* the true metres the privacy trim removed at each end (along the road), and the true
  straight-line distance from each drive's true start and end to the nearest fix ingest kept;
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

from pipeline.config import Settings, settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, SIMULATED_ROUTES, TRIPS
from pipeline.coverage.stage import compute_coverage
from pipeline.ingest.stage import ingest_traces
from pipeline.io import read_table
from pipeline.roads import build_roads
from pipeline.simulate.fleet import simulate_fleet
from pipeline.snap.stage import snap_traces
from tests.truth import SPHERE, RoadRaster, masked_km, true_fixes, true_pieces, true_routes

SHARED = Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))
KEY = "bench-truth-key-0123456789"
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


def true_trimmed_m(trips: pd.DataFrame, fixes: pd.DataFrame) -> pd.Series:
    """True metres driven before each kept trip's first fix and after its last (both ends).

    Measured along the vehicles' true positions (``fixes``, every logged fix), from the start
    of the simulated trip: what ingest's privacy trim, measured along the noisy fixes,
    really removed.
    """
    fixes = fixes.sort_values(["device", "observed_at"], ignore_index=True)
    lon, lat = fixes["true_lon"].to_numpy(), fixes["true_lat"].to_numpy()
    step = np.r_[SPHERE.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])[2], 0.0]
    step[np.r_[fixes["trip_id"].to_numpy()[1:] != fixes["trip_id"].to_numpy()[:-1], True]] = 0
    by_trip = pd.Series(step).groupby(fixes["trip_id"].to_numpy())
    fixes["before_m"] = by_trip.cumsum().to_numpy() - step
    fixes["after_m"] = by_trip.transform("sum").to_numpy() - fixes["before_m"]
    where = fixes.set_index(["device", "observed_at"])
    first = where.loc[list(zip(trips["device_id"], trips["started_at"], strict=True)), "before_m"]
    last = where.loc[list(zip(trips["device_id"], trips["ended_at"], strict=True)), "after_m"]
    return pd.concat([first, last], ignore_index=True)


def true_end_clearance_m(kept: pd.DataFrame, fixes: pd.DataFrame) -> pd.Series:
    """Straight-line true metres from each drive's true start and end to its nearest kept fix.

    ``kept`` holds the ``device_id`` and ``observed_at`` of every fix ingest kept (its points);
    a drive's start and end are the true positions of the simulated trip's first and last
    logged fix. Two values per drive that kept a fix.
    """
    fixes = fixes.sort_values(["device", "observed_at"], ignore_index=True)
    kept = fixes.merge(
        kept.rename(columns={"device_id": "device"})[["device", "observed_at"]],
        on=["device", "observed_at"],
    )
    by_drive = fixes.groupby("trip_id")[["true_lon", "true_lat"]]
    clearance = []
    for end in (by_drive.first(), by_drive.last()):
        pairs = kept.join(end.add_suffix("_end"), on="trip_id")
        _, _, crow_m = SPHERE.inv(
            pairs["true_lon_end"].to_numpy(), pairs["true_lat_end"].to_numpy(),
            pairs["true_lon"].to_numpy(), pairs["true_lat"].to_numpy(),
        )  # fmt: skip
        clearance.append(pd.Series(crow_m).groupby(pairs["trip_id"].to_numpy()).min())
    return pd.concat(clearance, ignore_index=True)


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
        by_cause[cause] = round(masked_km(left & zone), 3)
        left &= ~zone
    by_cause["matched to another road"] = round(masked_km(left), 3)
    order = segments.sort_values(["trip_id", "seq"]).groupby("trip_id", sort=False)
    end_segments = pd.concat([order.head(1), order.tail(1)])
    ends = raster.mask(
        end_segments["edge_id"], end_segments["from_offset_m"], end_segments["to_offset_m"]
    )
    truth_km = masked_km(true_mask)
    trimmed = true_trimmed_m(trips, fixes)
    kept = pd.read_parquet(work / "traces/points", columns=["device_id", "observed_at"])
    clearance = true_end_clearance_m(kept, fixes)
    return {
        "drives": len(trips),
        "fixes": int(quality["points"].sum()),
        "unmatched_by_reason": points["unmatched_reason"].value_counts().to_dict(),
        "breaks": int(quality["breaks"].sum()),
        "trips_not_counted": int(len(quality) - len(counted)),
        "truth_km": round(truth_km, 3),
        "unique_km": summary["unique_km"],
        "ratio": round(summary["unique_km"] / truth_km, 4),
        "recall": round(1 - masked_km(missed) / truth_km, 4),
        "precision": round(1 - masked_km(beside) / masked_km(covered), 4),
        "missed_km": round(masked_km(missed), 3),
        "missed_by_cause_km": by_cause,
        "beside_km": round(masked_km(beside), 3),
        "true_m_trimmed_per_end": {
            "median": round(float(trimmed.median()), 1),
            "p5": round(float(trimmed.quantile(0.05)), 1),
            "below_trim": round(float((trimmed < settings.ingest.privacy_trim_m).mean()), 3),
        },
        "true_crow_m_to_nearest_kept_fix_per_end": {
            "min": round(float(clearance.min()), 1),
            "p5": round(float(clearance.quantile(0.05)), 1),
            "median": round(float(clearance.median()), 1),
            "below_trim": int((clearance < settings.ingest.privacy_trim_m).sum()),
        },
        "beside_by_place_km": {
            "trip's first or last piece": round(masked_km(beside & ends), 3),
            "elsewhere": round(masked_km(beside & ~ends), 3),
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
