"""When does the second decoding (``snap.estimate_beta``) change a trip's path?

Usage: ``python benchmarks/bench_snap_beta.py [--cache DIR] [--fleets 40x10 60x21]
[--no-kubicka]`` (the Monaco fleets of ``bench_snap_peers.py process``, simulated and ingested
into ``--cache`` if not there yet, and the 20 Kubicka drives).

For every trip the matcher's kernels are called as :func:`pipeline.snap.match_trip` calls
them: one decoding with the prior ``beta_m``, the transition scale fitted to it, a second
decoding with that scale. Reported:

* how often the second decoding's path (chosen candidates, statuses and the kinds of their
  transitions) equals the first's, by ``|log(beta_fit / beta_m)|``: a tolerance band around the
  prior inside which the second decoding could be skipped;
* on the fleets, a device's trips in time order decoded once with the scale fitted on the
  device's previous trip (its first trip decoded twice): how often that path equals the two
  decodings' path, how many fixes differ, and how many trips have an earlier trip of their
  device in their partition file (which the snap stage matches in one task);
* on the simulated (not ingested) fixes of the fleets, the share of fixes matched to the road
  the simulator drove at the fix's time (either direction), for one decoding with ``beta_m``,
  the two decodings and the device's scale reused.

Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from bench_snap_kubicka import KUBICKA, read_trace, roads_folder
from bench_snap_peers import ingest_monaco, simulate_monaco

from pipeline.roads import read_edges
from pipeline.snap import MatchParams, build_match_network
from pipeline.snap.graph_kernels import search_candidates
from pipeline.snap.hmm_kernels import (
    decode_viterbi,
    fitted_beta_m,
    new_network_workspace,
    with_beta,
)
from pipeline.snap.network import MatchNetwork, prepare_match_network
from pipeline.snap.stage import batch_trip_files

PARAMS = MatchParams()
BANDS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, np.inf)


class Decoder:
    """One trip's candidates, decoded with any transition scale (as ``match_trip`` does)."""

    def __init__(self, net: MatchNetwork, workspace: tuple, lon: np.ndarray, lat: np.ndarray,
                 t_s: np.ndarray) -> None:  # fmt: skip
        x, y = net.transformer().transform(lon, lat)
        self.x, self.y, self.t_s = np.asarray(x, "float64"), np.asarray(y, "float64"), t_s
        self.cand = search_candidates(
            self.x, self.y, np.full(len(self.x), PARAMS.search_radius_m),
            PARAMS.max_search_radius_m, PARAMS.max_candidates, net.vert_x, net.vert_y,
            net.vert_off_m, net.seg_vert, net.seg_edge, net.grid_keys, net.grid_ptr,
            net.grid_seg, float(net.grid_origin[0]), float(net.grid_origin[1]),
            net.grid_cell_m, net.grid_ncols,
        )  # fmt: skip
        self.cand_point = np.repeat(np.arange(len(self.x), dtype=np.int64), np.diff(self.cand[0]))
        self.net, self.workspace = net, workspace

    def decode(self, beta_m: float) -> tuple[np.ndarray, ...]:
        """Return ``decode_viterbi``'s outputs with the transition scale ``beta_m``."""
        prm = with_beta(PARAMS.kernel_array(), beta_m)
        return tuple(
            decode_viterbi(
                self.x, self.y, self.t_s, self.cand, self.cand_point, self.net.routing_arrays(),
                self.net.ubodt_arrays(), prm, self.workspace,
            )
        )  # fmt: skip


def fitted(decoding: tuple[np.ndarray, ...], prior_m: float) -> float:
    """The transition scale fitted to a decoding (prior ``prior_m``)."""
    chosen, _status, segment, _kind, deviation = decoding
    return float(fitted_beta_m(prior_m, chosen, segment, deviation))


def same_path(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    """Whether two decodings chose the same candidates, statuses and transition kinds."""
    return (
        np.array_equal(a[0], b[0])
        and np.array_equal(a[1], b[1])
        and np.array_equal(a[3][a[0][a[0] >= 0]], b[3][b[0][b[0] >= 0]])
    )


def trip_rows(
    net: MatchNetwork,
    trips: list[tuple[str, str, pd.DataFrame]],
    truth: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Decode each trip (``(device, trip, fixes)``, in time order per device) every way.

    With ``truth`` (the simulator's route rows of each trip), count each way's fixes matched to
    the true road.
    """
    workspace = new_network_workspace(net.n_nodes, net.n_edges)
    device_beta: dict[str, float] = {}
    rows = []
    for device, trip, fixes in trips:
        decoder = Decoder(net, workspace, *(fixes[c].to_numpy() for c in ("lon", "lat", "t")))
        first = decoder.decode(PARAMS.beta_m)
        beta = fitted(first, PARAMS.beta_m)
        second = decoder.decode(beta)
        row = {"trip": trip, "fixes": len(fixes), "beta_m": beta, "same": same_path(first, second)}
        reused = second
        if device in device_beta:
            reused = decoder.decode(device_beta[device])
            row["reused_same"] = same_path(second, reused)
            row["reused_fixes_differing"] = int((second[0] != reused[0]).sum())
            device_beta[device] = fitted(reused, device_beta[device])
        else:
            device_beta[device] = beta
        if truth is not None:
            for name, decoding in (("one", first), ("two", second), ("reused", reused)):
                row[f"on_road_{name}"] = on_true_road(net, decoder, decoding, truth[trip])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["log_ratio"] = np.abs(np.log(table["beta_m"] / PARAMS.beta_m))
    return table


def on_true_road(
    net: MatchNetwork, decoder: Decoder, decoding: tuple[np.ndarray, ...], route: pd.DataFrame
) -> int:
    """How many fixes are matched to the edge (either direction) the vehicle was on then."""
    chosen = decoding[0]
    edge = decoder.cand[1][np.maximum(chosen, 0)]
    entered = route["entered_at"].astype("int64").to_numpy() / 1000.0
    row = np.clip(np.searchsorted(entered, decoder.t_s, side="right") - 1, 0, len(route) - 1)
    true_u, true_v = route["u"].to_numpy()[row], route["v"].to_numpy()[row]
    u, v = net.edge_u_id[edge], net.edge_v_id[edge]
    same_road = ((u == true_u) & (v == true_v)) | ((u == true_v) & (v == true_u))
    return int((same_road & (chosen >= 0)).sum())


def simulated_trips(
    cache: Path, fleet: str
) -> tuple[MatchNetwork, list[tuple[str, str, pd.DataFrame]], dict[str, pd.DataFrame]]:
    """The simulated fixes of a Monaco fleet, device by device in time order, and their truth."""
    devices, days = (int(n) for n in fleet.split("x"))
    roads, truth_path, trips_path = simulate_monaco(cache, devices, days)
    columns = ["trip_id", "device_id", "u", "v", "entered_at"]
    truth = dict(tuple(pd.read_parquet(truth_path, columns=columns).groupby("trip_id")))
    trips = [
        (str(truth[trip]["device_id"].iloc[0]), str(trip), group)
        for trip, group in pd.read_parquet(trips_path).groupby("trip_id", sort=False)
    ]
    trips.sort(key=lambda item: (item[0], float(item[2]["t"].iloc[0])))
    return prepare_match_network(roads), trips, truth


def trips_after_device_trip_in_file(cache: Path, fleet: str) -> int:
    """Trips whose partition file holds an earlier trip of their device (its trips' tasks)."""
    devices, days = (int(n) for n in fleet.split("x"))
    _roads, traces, _clean = ingest_monaco(cache, devices, days)
    trip_files = batch_trip_files(traces, None)
    device = [str(trip).rsplit("-", 1)[0] for trip in trip_files["trip_id"]]
    pairs = pd.DataFrame({"device": device, "file": trip_files["file"]})
    return len(pairs) - len(pairs.drop_duplicates())


def fleet_trips(
    cache: Path, fleet: str
) -> tuple[MatchNetwork, list[tuple[str, str, pd.DataFrame]]]:
    """The match network and the clean trips of a Monaco fleet, device by device in time order."""
    devices, days = (int(n) for n in fleet.split("x"))
    roads, _traces, clean = ingest_monaco(cache, devices, days)
    fixes = pd.read_parquet(clean)
    trips = [
        (str(trip).rsplit("-", 1)[0], str(trip), group)  # trip ids are <trace id>-<seq>
        for trip, group in fixes.groupby("trip_id", sort=False)
    ]
    trips.sort(key=lambda item: (item[0], float(item[2]["t"].iloc[0])))
    return prepare_match_network(roads), trips


def band_table(name: str, table: pd.DataFrame) -> str:
    """A Markdown row: the trips, those whose second decoding kept the path, per band."""
    counts = []
    for low, high in itertools.pairwise(BANDS):
        inside = table[(table["log_ratio"] >= low) & (table["log_ratio"] < high)]
        counts.append(f"{int(inside['same'].sum())} / {len(inside)}")
    return (
        f"| {name} | {len(table)} | {int(table['same'].sum())} | "
        f"{table['beta_m'].median():.2f} | " + " | ".join(counts) + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/roadcover_bench_peers"))
    parser.add_argument("--fleets", nargs="*", default=["40x10", "60x21"])
    parser.add_argument("--no-kubicka", action="store_true")
    args = parser.parse_args()
    bands = " | ".join(f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(BANDS))
    lines = [
        f"| trips | count | second path = first | median fitted beta m | {bands} |",
        "|---|---:|---:|---:|" + "---:|" * (len(BANDS) - 1),
    ]
    reuse = ["| fleet | trips decoded once with the device's beta | same path as two decodings "
             "| fixes differing | fixes | trips after a trip of their device in their file |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for fleet in args.fleets:
        net, trips = fleet_trips(args.cache, fleet)
        table = trip_rows(net, trips)
        lines.append(band_table(f"Monaco {fleet}", table))
        reused = table.dropna(subset=["reused_same"])
        reuse.append(
            f"| Monaco {fleet} | {len(reused)} of {len(table)} | "
            f"{int(reused['reused_same'].sum())} | "
            f"{int(reused['reused_fixes_differing'].sum()):,} | {int(table['fixes'].sum()):,} | "
            f"{trips_after_device_trip_in_file(args.cache, fleet)} |"
        )
    if not args.no_kubicka:
        drives = sorted(p.name for p in KUBICKA.iterdir() if p.is_dir())
        tables = []
        for drive in drives:
            net = build_match_network(read_edges(roads_folder(drive, args.cache / "kubicka_roads")))
            lon, lat, t_s = read_trace(KUBICKA / drive)
            fixes = pd.DataFrame({"lon": lon, "lat": lat, "t": t_s})
            tables.append(trip_rows(net, [(drive, drive, fixes)]))
        lines.append(band_table("Kubicka drives", pd.concat(tables, ignore_index=True)))
    truth_lines = ["| fleet (simulated fixes) | fixes | one decoding, beta 10 m | two decodings "
                   "| device's beta reused |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for fleet in args.fleets:
        table = trip_rows(*simulated_trips(args.cache, fleet))
        fixes = int(table["fixes"].sum())
        shares = [
            f"{table[f'on_road_{name}'].sum() / fixes:.4%}" for name in ("one", "two", "reused")
        ]
        truth_lines.append(f"| Monaco {fleet} | {fixes:,} | " + " | ".join(shares) + " |")
    print("\n".join([*lines, "", *reuse, "", *truth_lines]))


if __name__ == "__main__":
    main()
