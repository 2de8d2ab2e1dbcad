"""A dashcam fleet simulator: realistic GPS traces on a real road graph, with their ground truth.

``roadcover simulate`` gives demos, tests and benchmarks data whose right answer is known.
Contributors live somewhere (a home node); each owns one or two dashcams. Every day a device
makes a Poisson number of trips in daytime, most starting near home, each along the shortest
route (by length, one-way streets respected) to a destination at a route distance between
``min_trip_m`` and ``max_trip_m``. Vehicles drive at a speed set by the road class or its
``maxspeed``, accelerate, brake for turns, stop now and then, and slow down at the trip ends.
The dashcam logs a fix every ``sample_interval_s`` with temporally correlated GPS noise (an
AR(1) process with the device's sigma), rare multipath outliers, and dropouts (tunnels) during
which nothing is logged.

``OUT_DIR`` layout::

    traces/<device_id>.<csv|gpx|nmea|geojson|parquet>   one file per device (its upload)
    truth.parquet                                        contract ``simulated_routes``
    simulation.json                                      parameters, per-device counts, totals

Every process that drives devices loads the driving network once and keeps it for the stage's
later tasks; when the stage ran on an existing cluster (the one ``roadcover run`` shares
between stages), its workers drop it at the end (:func:`release_network`), so that the later
stages' tasks do not run beside it.

On a sharded roads folder (``roadcover roads build --shard-resolution N``) each device lives
in one shard and drives on that shard's graph (its buffer included), never on the region's:
contributors are drawn to shards in proportion to the road km each shard owns (``meta.json``'s
shard list), a contributor's home is a node of an edge its shard owns, and the tasks are the
devices of one shard each, so that a process holds one shard's network at a time (two at
most, :func:`_network`). The stage process plans from the region's ``meta.json`` alone: it
never loads the region's graph. Edge ids are global, so the truth names the region's edges.

The stage process holds no fleet-sized table: each task writes its devices' traces and stages
their truth rows (``OUT_DIR/.staging/truth/``, one Arrow record batch per device) and returns
only their summary records; the stage process then writes ``truth.parquet`` device after
device, one row group at a time (:func:`write_truth`), and removes the staging folder.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same seed on the same roads
folder gives byte-identical files.

``OUT_DIR`` must be new or empty: a simulation never replaces files it finds there unless told
to (``overwrite``, ``roadcover simulate --overwrite``), and then it replaces the files of the
earlier simulation. Two simulations started into one folder at once cannot both write it: each
claims the folder by creating ``traces/`` (an atomic ``mkdir``), and the loser is refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from pipeline import __version__
from pipeline.config import SimulateSettings
from pipeline.contracts import SIMULATED_ROUTES
from pipeline.errors import OutputExistsError
from pipeline.io import (
    STAGED_SUFFIX,
    STAGING_DIR,
    lines_table,
    merged_geo_metadata,
    read_staged_batch,
    write_in_row_groups,
    write_json,
    write_staged,
)
from pipeline.parallel import SCHEDULER_ENV, dask_client, run_tasks
from pipeline.roads.store import read_roads_meta
from pipeline.simulate.drive import TripDrive, drive_route
from pipeline.simulate.network import DrivingNetwork
from pipeline.simulate.trace_writers import (
    FIX_DECIMALS,
    FORMAT_EXTENSIONS,
    GENERATOR,
    write_trace,
)

log = logging.getLogger(__name__)

TRACES_DIR = "traces"
TRUTH_FILE = "truth.parquet"
SUMMARY_FILE = "simulation.json"
CONTRIBUTOR_SHARE = 0.8  # contributors per device; the rest own a second dashcam
HOME_START_PROBABILITY = 0.7  # a trip starts near home, else where the last one ended
DRIVING_WINDOW_S = 16 * 3600.0  # trips start within 16 h of each day's start
MIN_PARKED_S = 600.0  # a vehicle is parked at least this long between trips
DEVICES_PER_TASK = 8
# a LocalCluster started for the stage pays off from this many tasks per worker
DASK_MIN_TASKS_PER_WORKER = 4
HOME_DRAWS = 2**53
"""A home in a shard is drawn from this many values, turned into a node by the shard's task."""
_ROUTE_COLUMNS: dict[str, Any] = {
    "trip_id": object,
    "seq": "int32",
    "edge": "int64",
    "entered_ms": "int64",
    "exited_ms": "int64",
}
_STALE_TRACE = re.compile(r"^dev-\d+\.(" + "|".join(FORMAT_EXTENSIONS.values()) + r")$")


@dataclass(frozen=True)
class Device:
    """One simulated dashcam.

    Attributes
    ----------
    home_node
        The node index (in the network it drives on) of its contributor's home. Of a device in
        a shard, as planned, a draw below :data:`HOME_DRAWS` that the shard's task turns into
        a node of the shard's owned edges (:func:`settle_in_shard`).
    shard
        The shard cell it lives and drives in (a sharded roads folder); None: the region.
    """

    index: int
    device_id: str
    contributor_id: str
    fmt: str
    home_node: int
    noise_sigma_m: float
    shard: str | None = None

    @property
    def file_name(self) -> str:
        """Name of the device's trace file."""
        return f"{self.device_id}.{FORMAT_EXTENSIONS[self.fmt]}"


@dataclass
class DeviceDrive:
    """Everything one device did: its fixes (as logged), the true routes and counts.

    ``fixes`` has the columns the trace writers take (``trip_id``, ``observed_at``, ``lon``,
    ``lat``, ``elevation_m``, ``hdop``, ``speed_mps``, ``heading_deg``) plus, when driven with
    ``truth``, the truth: ``true_lon``, ``true_lat``, ``true_speed_mps`` and ``outlier``.
    ``routes`` has one row per
    driven edge (``trip_id``, ``seq``, ``edge`` (network row), ``entered_ms``, ``exited_ms``).
    """

    device: Device
    fixes: pd.DataFrame
    routes: pd.DataFrame
    trips: int
    outliers: int
    dropouts: int
    stops: int
    driven_m: float


def simulate_fleet(
    roads_dir: str | Path,
    out_dir: str | Path,
    params: SimulateSettings,
    workers: int | None = None,
    scheduler_address: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate a dashcam fleet on a roads folder; write its traces and ground truth.

    Devices are driven ``DEVICES_PER_TASK`` at a time, on Dask workers when there are enough
    of them (see :func:`pipeline.parallel.run_tasks`); every device has its own random stream,
    so the outputs are the same however many workers drive them.

    Parameters
    ----------
    roads_dir
        A roads folder written by ``roadcover roads build``.
    out_dir
        Output folder: ``traces/``, ``truth.parquet`` and ``simulation.json``. It must be new
        or empty, unless ``overwrite``.
    params
        Simulator settings (``simulate`` in the config).
    workers
        Cap of the Dask workers (1: drive every device in this process; None: one per CPU
        this process may use).
    scheduler_address
        An existing Dask scheduler (config ``dask.scheduler_address``); default: the
        ``DASK_SCHEDULER_ADDRESS`` environment variable, else a LocalCluster.
    overwrite
        Replace the simulation in ``out_dir``: its files are overwritten, and trace files of
        devices this simulation does not have are removed.

    Returns
    -------
    dict
        The content of ``simulation.json`` without the per-device list.

    Raises
    ------
    InputDataError
        If the roads folder is missing or has nothing drivable.
    OutputExistsError
        If ``out_dir`` is a file, or holds anything and ``overwrite`` is false.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    roads_meta = read_roads_meta(roads_dir)
    roads = str(Path(roads_dir).absolute())  # a shared worker may run in another folder
    devices = plan_devices(roads, roads_meta, params)
    traces_dir = _claim_output(out_dir, overwrite)
    _remove_stale_traces(traces_dir, {device.file_name for device in devices})
    staging = out_dir.absolute() / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted simulation's, when overwriting
    tasks = device_tasks(roads, traces_dir, devices, staging / "truth")
    driven = run_tasks(
        drive_devices, tasks, "simulate devices", workers, scheduler_address,
        min_tasks_per_worker=DASK_MIN_TASKS_PER_WORKER, params=params,
    )  # fmt: skip
    release_network_on_workers(workers, scheduler_address)
    write_truth(driven, out_dir / TRUTH_FILE)
    shutil.rmtree(staging)
    order = np.argsort([index for task in driven for index in task.indexes], kind="stable")
    records = [record for task in driven for record in task.records]
    summary = _summary(params, roads_meta, [records[i] for i in order])  # device order
    write_json(summary, out_dir / SUMMARY_FILE)
    totals = summary["totals"]
    log.info(
        "simulate: %d devices, %d trips, %d fixes, %.1f km driven -> %s in %.1f s",
        len(devices), totals["trips"], totals["fixes"], totals["driven_km"], out_dir,
        time.perf_counter() - started,
    )  # fmt: skip
    return {key: value for key, value in summary.items() if key != "devices"}


@dataclass(frozen=True)
class DeviceTask:
    """Devices to drive in one task, the roads folder they drive on, where their files go.

    The task's traces go to ``traces_dir``, its devices' truth rows to ``truth_part`` (a
    staged Arrow IPC file, one record batch per device).
    """

    roads_dir: str
    traces_dir: Path
    devices: list[Device]
    truth_part: Path


@dataclass(frozen=True)
class DrivenEdges:
    """Edges that devices drove: global ids (sorted, each once) and what the truth takes of them.

    ``u`` and ``v`` are node ids; ``geometry`` the edges' lines (shapely, degrees).
    """

    edge_id: np.ndarray
    u: np.ndarray
    v: np.ndarray
    key: np.ndarray
    length_m: np.ndarray
    geometry: np.ndarray

    @classmethod
    def of(cls, network: DrivingNetwork, rows: np.ndarray) -> DrivenEdges:
        """Return the edges of a network's rows ``rows``."""
        rows = np.unique(np.asarray(rows, dtype="int64"))
        rows = rows[np.argsort(network.edge_id[rows], kind="stable")]
        return cls(
            edge_id=network.edge_id[rows],
            u=network.node_ids[network.edge_u[rows]],
            v=network.node_ids[network.edge_v[rows]],
            key=network.edge_key[rows],
            length_m=network.edge_length_m[rows],
            geometry=network.edge_geometry[rows],
        )

    def rows_of(self, edge_id: np.ndarray) -> np.ndarray:
        """Return the row of each of ``edge_id`` (every one an edge of these)."""
        return np.searchsorted(self.edge_id, edge_id)


@dataclass(frozen=True)
class TaskDrive:
    """What a task's devices did: their indexes, summary records, and where their truth is.

    ``truth_part`` holds one record batch of truth rows per device, in the order of
    ``indexes``; ``geo`` is the GeoParquet ``geo`` metadata of all of them.
    """

    indexes: list[int]
    records: list[dict[str, Any]]
    truth_part: Path
    geo: bytes


def device_tasks(
    roads_dir: str, traces_dir: Path, devices: list[Device], truth_dir: Path
) -> list[DeviceTask]:
    """Cut the fleet into tasks of at most ``DEVICES_PER_TASK`` devices of one network each.

    In a region, the devices in order; in a sharded region, shard after shard (cells in
    order), each task's roads folder its shard's, so that a process loads one shard's network
    for consecutive tasks. A task stages its truth in ``truth_dir``, in a file named after its
    first device.
    """
    by_shard: dict[str | None, list[Device]] = {}
    for device in devices:
        by_shard.setdefault(device.shard, []).append(device)
    tasks = []
    for shard in sorted(by_shard, key=lambda cell: cell or ""):
        folder = roads_dir if shard is None else str(shard_folder(roads_dir, shard))
        group = by_shard[shard]
        tasks += [
            DeviceTask(folder, traces_dir, part, truth_dir / f"{part[0].index:06d}{STAGED_SUFFIX}")
            for part in (
                group[start : start + DEVICES_PER_TASK]
                for start in range(0, len(group), DEVICES_PER_TASK)
            )
        ]
    return tasks


def shard_folder(roads_dir: str, cell: str) -> Path:
    """Return the folder of shard ``cell`` of a sharded roads folder.

    The shards' module (which imports osmium and OSMnx) is imported only for a sharded region.
    """
    from pipeline.roads.shards import SHARDS_DIR

    return Path(roads_dir) / SHARDS_DIR / cell


def drive_devices(task: DeviceTask, params: SimulateSettings) -> TaskDrive:
    """Drive a task's devices, write their traces and stage their truth (in a worker or here).

    Returns each device's summary record, and where its truth rows are.
    """
    network = _network(task.roads_dir)
    records: list[dict[str, Any]] = []
    routes: list[pd.DataFrame] = []
    for device in settle_in_shard(network, task.roads_dir, task.devices):
        drive = drive_device(network, device, params, truth=False)  # the files have none
        write_trace(
            drive.fixes, task.traces_dir / device.file_name, device.fmt,
            device.device_id, device.contributor_id,
        )  # fmt: skip
        records.append(_device_record(drive))
        routes.append(drive.routes)
        log.debug("%s: %d trips, %d fixes", device.device_id, drive.trips, len(drive.fixes))
    rows = np.concatenate([route["edge"].to_numpy("int64") for route in routes])
    global_routes = [
        route.assign(edge=network.edge_id[route["edge"].to_numpy("int64")]).rename(
            columns={"edge": "edge_id"}
        )
        for route in routes
    ]
    truth = truth_table(DrivenEdges.of(network, rows), global_routes, records)
    geo = truth.schema.metadata[b"geo"]
    stage_by_device(truth, [len(route) for route in routes], task.truth_part)
    return TaskDrive([device.index for device in task.devices], records, task.truth_part, geo)


def stage_by_device(truth: pa.Table, rows: list[int], path: Path) -> None:
    """Write a task's truth rows as a staged Arrow IPC file, one record batch per device.

    ``rows`` are the rows of each device, which come one device after the other.
    """
    plain = truth.replace_schema_metadata(None).combine_chunks()
    whole = (
        plain.to_batches()[0] if plain.num_rows else pa.RecordBatch.from_pylist([], plain.schema)
    )
    starts = np.cumsum([0, *rows[:-1]]).tolist()
    write_staged([whole.slice(at, count) for at, count in zip(starts, rows, strict=True)], path)


def settle_in_shard(network: DrivingNetwork, shard_dir: str, devices: list[Device]) -> list[Device]:
    """Give devices planned in a shard their homes: nodes of the edges the shard owns.

    A device's draw (``home_node`` as planned) picks one of the shard network's nodes that
    end an owned edge; devices of a region are returned as they are.
    """
    if not devices or devices[0].shard is None:
        return devices
    homes = owned_nodes(network, shard_dir)
    return [replace(d, home_node=int(homes[d.home_node % len(homes)])) for d in devices]


def owned_nodes(network: DrivingNetwork, shard_dir: str) -> np.ndarray:
    """Return the node indexes of a shard's network that end an edge the shard owns.

    A shard whose owned edges all lie outside its network's largest strongly connected
    component (a few short roads at the region's edge) gives every node of its network.
    """
    from pipeline.roads.shards import read_owners

    owners = read_owners(shard_dir)
    owned = np.isin(network.edge_id, owners.loc[owners["owned"], "edge_id"].to_numpy("int64"))
    nodes = np.unique(np.concatenate([network.edge_u[owned], network.edge_v[owned]]))
    if len(nodes) == 0:
        log.info("%s: no owned edge is drivable; homes anywhere in the shard", shard_dir)
        return np.arange(len(network.node_ids))
    return nodes


@functools.lru_cache(maxsize=2)
def _network(roads_dir: str) -> DrivingNetwork:
    """Return the driving network of a roads folder (a region's, or a shard's), loaded once.

    A process keeps the last two it loaded: the tasks of a sharded region come shard after
    shard, so it holds one shard's network, and the next one's while it moves on.
    """
    return DrivingNetwork.from_roads_dir(roads_dir)


def release_network() -> int:
    """Drop this process's cached driving networks; return how many there were.

    The freed arrays' memory is handed back to the system (glibc's ``malloc_trim``), not kept
    in the process's heap for later tasks.
    """
    held = _network.cache_info().currsize
    _network.cache_clear()
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    return held


def release_network_on_workers(workers: int | None, scheduler_address: str | None) -> None:
    """Have an existing cluster's workers drop the networks they loaded for this stage.

    Only a cluster that outlives the stage (a scheduler address, given or from
    ``DASK_SCHEDULER_ADDRESS``) keeps them; a LocalCluster of the stage's own is closed with it.
    """
    address = scheduler_address or os.environ.get(SCHEDULER_ENV)
    if not address or workers == 1:
        return
    with dask_client(1, address) as client:
        released = client.run(release_network)
    log.info("simulate: %d worker(s) released the driving network", sum(released.values()))


def plan_devices(
    roads_dir: str, roads_meta: dict[str, Any], params: SimulateSettings
) -> list[Device]:
    """Draw the fleet of a roads folder: on its network, or, sharded, from its shard list."""
    if "shards" in roads_meta:
        return plan_sharded_fleet(roads_meta["shards"]["cells"], params)
    return plan_fleet(_network(roads_dir), params)


def plan_fleet(network: DrivingNetwork, params: SimulateSettings) -> list[Device]:
    """Draw the fleet: contributors, their homes, devices, formats and noise levels."""

    def homes(rng: np.random.Generator, contributors: int) -> tuple[np.ndarray, list[None]]:
        return rng.integers(0, len(network.node_ids), size=contributors), [None] * contributors

    return _draw_fleet(params, homes)


def plan_sharded_fleet(cells: list[dict[str, Any]], params: SimulateSettings) -> list[Device]:
    """Draw the fleet of a sharded region from its shard list (``meta.json``'s ``cells``).

    Each contributor, and so each of its devices, lives in one shard, drawn in proportion to
    the road km the shard owns (``owned_road_km``); its home is a draw that the shard's task
    turns into a node of the shard (:func:`settle_in_shard`).
    """
    owned_km = np.array([cell["owned_road_km"] for cell in cells], dtype="float64")

    def homes(rng: np.random.Generator, contributors: int) -> tuple[np.ndarray, list[str]]:
        shard = rng.choice(len(cells), size=contributors, p=owned_km / owned_km.sum())
        draws = rng.integers(0, HOME_DRAWS, size=contributors)
        return draws, [str(cells[i]["cell"]) for i in shard.tolist()]

    return _draw_fleet(params, homes)


def _draw_fleet(
    params: SimulateSettings,
    draw_homes: Callable[[np.random.Generator, int], tuple[np.ndarray, list[Any]]],
) -> list[Device]:
    """Draw contributors, devices, formats and noise; ``draw_homes`` each contributor's home.

    ``draw_homes(rng, contributors)`` returns each contributor's home node and shard.
    """
    rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(0,)))
    contributors = max(1, math.ceil(params.devices * CONTRIBUTOR_SHARE))
    second = rng.choice(contributors, size=params.devices - contributors, replace=False)
    owners = rng.permutation(np.concatenate([np.arange(contributors), second]))
    numbering: dict[int, int] = {}
    for owner in owners.tolist():  # contributors numbered in order of their first device
        numbering.setdefault(owner, len(numbering) + 1)
    homes, shards = draw_homes(rng, contributors)
    low, high = sorted(params.noise_sigma_m)
    sigmas = rng.uniform(low, high, size=params.devices)
    return [
        Device(
            index=i,
            device_id=f"dev-{i + 1:04d}",
            contributor_id=f"contrib-{numbering[int(owner)]:04d}",
            fmt=params.formats[i % len(params.formats)],
            home_node=int(homes[owner]),
            noise_sigma_m=float(sigmas[i]),
            shard=shards[owner],
        )
        for i, owner in enumerate(owners.tolist())
    ]


def drive_device(
    network: DrivingNetwork, device: Device, params: SimulateSettings, truth: bool = True
) -> DeviceDrive:
    """Simulate every trip of one device over the simulated days.

    The device's random stream depends only on the seed and the device's index, so adding
    devices does not change the existing ones.

    Parameters
    ----------
    network
        The driving network.
    device
        The device (from :func:`plan_fleet`).
    params
        Simulator settings.
    truth
        Give the fixes the per-fix truth columns (``true_lon``, ``true_lat``,
        ``true_speed_mps``, ``outlier``); without, the other columns are the same.
    """
    rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(1, device.index)))
    home_nodes = network.nodes_within(device.home_node, params.home_radius_m)
    start_s = math.floor(params.start.astimezone(UTC).timestamp())
    free_from_s = float(start_s) - 86_400.0
    position: int | None = None
    trips: list[tuple[str, int, TripDrive]] = []
    trip_edges: list[np.ndarray] = []
    driven_m = 0.0
    for day in range(params.days):
        offsets = np.sort(
            rng.uniform(0.0, DRIVING_WINDOW_S, rng.poisson(params.trips_per_device_day))
        )
        for offset in offsets:
            parked_s = MIN_PARKED_S + rng.exponential(MIN_PARKED_S)
            depart_s = max(
                start_s + day * 86_400 + round(offset), math.ceil(free_from_s + parked_s)
            )
            if position is None or rng.random() < HOME_START_PROBABILITY:
                origin = int(pick(rng, home_nodes))
            else:
                origin = position
            destination, edges = _pick_destination(network, origin, params, rng)
            trip = drive_route(network, network.route(edges), params, device.noise_sigma_m, rng)
            trips.append((f"{device.device_id}-t{len(trips) + 1:04d}", depart_s, trip))
            trip_edges.append(edges)
            driven_m += float(network.edge_length_m[edges].sum())
            free_from_s = depart_s + trip.duration_s
            position = destination
    return DeviceDrive(
        device=device,
        fixes=_fixes_frame(network, trips, truth),
        routes=_route_table(trips, trip_edges),
        trips=len(trips),
        outliers=sum(int(np.count_nonzero(trip.outlier)) for _, _, trip in trips),
        dropouts=sum(trip.dropouts for _, _, trip in trips),
        stops=sum(trip.stops for _, _, trip in trips),
        driven_m=driven_m,
    )


def pick(rng: np.random.Generator, values: np.ndarray) -> Any:
    """Return ``rng.choice(values)``: the same draw (``rng.integers(len(values))``), faster."""
    return values[rng.integers(len(values))]


def _route_table(
    trips: list[tuple[str, int, TripDrive]], trip_edges: list[np.ndarray]
) -> pd.DataFrame:
    """Return a device's driven edges: ``trip_id``, ``seq``, ``edge`` and edge times (ms)."""
    if not trips:
        return pd.DataFrame(
            {key: np.array([], dtype=dtype) for key, dtype in _ROUTE_COLUMNS.items()}
        )
    edge_counts = [len(edges) for edges in trip_edges]
    first_row = np.repeat(np.cumsum(edge_counts) - edge_counts, edge_counts)
    depart_s = np.repeat(np.array([depart for _, depart, _ in trips], dtype="int64"), edge_counts)
    return pd.DataFrame(
        {
            "trip_id": np.repeat(
                np.array([trip_id for trip_id, _, _ in trips], object), edge_counts
            ),
            "seq": (np.arange(len(first_row)) - first_row).astype("int32"),
            "edge": np.concatenate(trip_edges),
            "entered_ms": _to_ms(depart_s, np.concatenate([t.entered_s for _, _, t in trips])),
            "exited_ms": _to_ms(depart_s, np.concatenate([t.exited_s for _, _, t in trips])),
        }
    )


def _pick_destination(
    network: DrivingNetwork, origin: int, params: SimulateSettings, rng: np.random.Generator
) -> tuple[int, np.ndarray]:
    """Pick a destination at a route distance in [min_trip_m, max_trip_m] from ``origin``.

    When the graph is too small for that, one of the farthest reachable nodes is taken; a
    route is never empty.
    """
    distance, via_edge = network.shortest_paths(origin, params.max_trip_m)
    reachable = np.flatnonzero(np.isfinite(distance) & (distance > 0))
    if len(reachable) == 0:  # every edge out of origin is longer than max_trip_m
        distance, via_edge = network.shortest_paths(origin, math.inf)
        reachable = np.flatnonzero(np.isfinite(distance) & (distance > 0))
    in_band = reachable[distance[reachable] >= params.min_trip_m]
    if len(in_band):
        destination = int(pick(rng, in_band))
    else:
        by_distance = reachable[np.argsort(distance[reachable], kind="stable")]
        destination = int(pick(rng, by_distance[(3 * len(by_distance)) // 4 :]))
    return destination, network.path_edges(via_edge, origin, destination)


def _fixes_frame(
    network: DrivingNetwork, trips: list[tuple[str, int, TripDrive]], truth: bool
) -> pd.DataFrame:
    """Return the logged fixes of a device's trips, rounded as a receiver writes them.

    With ``truth``, also the true positions and speeds and the outlier flags.
    """

    def gather(name: str) -> np.ndarray:
        parts = [getattr(trip, name) for _, _, trip in trips]
        return np.concatenate(parts) if parts else np.empty((0, 2) if "xy" in name else 0)

    def unproject(name: str) -> tuple[np.ndarray, np.ndarray]:
        xy = gather(name)
        # one contiguous array per axis (pyproj copies strided ones)
        return network.to_lonlat(np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]))

    lon, lat = unproject("noisy_xy")
    counts = [len(trip.t_s) for _, _, trip in trips]
    observed_ms = np.concatenate(
        [_to_ms(depart_s, trip.t_s) for _, depart_s, trip in trips] or [np.empty(0, "int64")]
    )
    places = FIX_DECIMALS  # the writers format numbers of these decimals fastest
    columns = {
        "trip_id": np.repeat(np.array([t for t, _, _ in trips], dtype=object), counts),
        "observed_at": _ms_times(observed_ms),
        "lon": np.round(lon, places["lon"]),
        "lat": np.round(lat, places["lat"]),
        "elevation_m": np.round(gather("elevation_m"), places["elevation_m"]),
        "hdop": np.round(gather("hdop"), places["hdop"]),
        "speed_mps": np.round(gather("speed_mps"), places["speed_mps"]),
        "heading_deg": np.mod(np.round(gather("heading_deg"), places["heading_deg"]), 360.0),
    }
    if truth:
        true_lon, true_lat = unproject("true_xy")
        columns.update(
            true_lon=true_lon,
            true_lat=true_lat,
            true_speed_mps=gather("true_speed_mps"),
            outlier=gather("outlier").astype(bool),
        )
    return pd.DataFrame(columns)


def _to_ms(depart_s: int | np.ndarray, offsets_s: np.ndarray) -> np.ndarray:
    return depart_s * 1000 + np.round(np.asarray(offsets_s) * 1000.0).astype("int64")


def _device_record(drive: DeviceDrive) -> dict[str, Any]:
    device = drive.device
    return {
        "device_id": device.device_id,
        "contributor_id": device.contributor_id,
        "format": device.fmt,
        "file": f"{TRACES_DIR}/{device.file_name}",
        **({"shard": device.shard} if device.shard is not None else {}),
        "noise_sigma_m": round(device.noise_sigma_m, 3),
        "fixes": len(drive.fixes),
        "trips": drive.trips,
        "outliers": drive.outliers,
        "dropouts": drive.dropouts,
        "stops": drive.stops,
        "driven_km": round(drive.driven_m / 1000.0, 3),
    }


def write_truth(driven: list[TaskDrive], path: Path) -> None:
    """Write the ``simulated_routes`` table from the tasks' staged truth, devices in order.

    One device's rows are in memory at a time, and one row group
    (:func:`pipeline.io.write_in_row_groups`): the file is that of the whole table, whatever
    the fleet's size.
    """
    blocks = sorted(
        (index, task.truth_part, batch)
        for task in driven
        for batch, index in enumerate(task.indexes)
    )
    geo = merged_geo_metadata([task.geo for task in driven])
    tables = (pa.Table.from_batches([read_staged_batch(part, batch)]) for _, part, batch in blocks)
    write_in_row_groups(tables, path, SIMULATED_ROUTES, {b"geo": geo})


def truth_table(
    edges: DrivenEdges, routes: list[pd.DataFrame], records: list[dict[str, Any]]
) -> pa.Table:
    """Return devices' rows of the ``simulated_routes`` table: one per driven edge, in order.

    Each row's geometry is its edge's: every edge is encoded once and taken by the rows
    (:func:`pipeline.io.lines_table`), not encoded again for every row from a shapely object.

    Parameters
    ----------
    edges
        The edges driven (those of every route).
    routes
        Each device's route table, edges by global id.
    records
        Each device's summary record (its ``device_id`` and ``contributor_id``).
    """
    frame = pd.concat(routes, ignore_index=True)
    edge = edges.rows_of(frame["edge_id"].to_numpy("int64"))
    rows = [len(table) for table in routes]
    device_id, contributor_id = (
        pa.array(np.repeat(np.array([record[key] for record in records], dtype=object), rows))
        for key in ("device_id", "contributor_id")
    )
    table = pa.table(
        {
            "trace_id": device_id,
            "trip_id": pa.array(frame["trip_id"], pa.string()),
            "seq": pa.array(frame["seq"], pa.int32()),
            "device_id": device_id,
            "contributor_id": contributor_id,
            "edge_id": edges.edge_id[edge],
            "u": edges.u[edge],
            "v": edges.v[edge],
            "key": edges.key[edge],
            "length_m": edges.length_m[edge],
            "entered_at": _utc_ms(frame["entered_ms"]),
            "exited_at": _utc_ms(frame["exited_ms"]),
        }
    )
    edge_coords, owner = shapely.get_coordinates(edges.geometry, return_index=True)
    edge_start = np.searchsorted(owner, np.arange(len(edges.geometry) + 1))
    return lines_table(table, edge_coords, edge_start, SIMULATED_ROUTES, index=edge)


def _utc_ms(ms: pd.Series) -> pa.Array:
    """Milliseconds since the epoch as an Arrow ``timestamp[ms, tz=UTC]`` column."""
    return pa.array(ms.to_numpy("int64")).cast(pa.timestamp("ms", tz="UTC"))


def _ms_times(ms: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True)).as_unit("ms")


def _summary(
    params: SimulateSettings, roads_meta: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    settings = asdict(params)
    settings["start"] = params.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    settings["noise_sigma_m"] = list(params.noise_sigma_m)
    settings["formats"] = list(params.formats)
    return {
        "simulated": True,
        "generator": GENERATOR,
        "roadcover_version": __version__,
        "seed": params.seed,
        "params": settings,
        "roads": {
            "source_file": Path(str(roads_meta.get("source_file", ""))).name,
            "source_sha256": roads_meta.get("source_sha256"),
            "node_count": roads_meta.get("node_count"),
            "edge_count": roads_meta.get("edge_count"),
        },
        "files": {"traces": TRACES_DIR, "truth": TRUTH_FILE},
        "devices": records,
        "totals": {
            "devices": len(records),
            "contributors": len({r["contributor_id"] for r in records}),
            "fixes": sum(r["fixes"] for r in records),
            "trips": sum(r["trips"] for r in records),
            "driven_km": round(sum(r["driven_km"] for r in records), 3),
            "outliers": sum(r["outliers"] for r in records),
            "dropouts": sum(r["dropouts"] for r in records),
            "stops": sum(r["stops"] for r in records),
        },
    }


def _claim_output(out_dir: Path, overwrite: bool) -> Path:
    """Make ``out_dir/traces`` and return it (absolute); refuse a folder that holds anything.

    Without ``overwrite`` the traces folder is created exclusively, so of two simulations
    started into one empty folder at once, one is refused.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: is a file; give a folder to simulate into")
    held = sorted(path.name for path in out_dir.iterdir()) if out_dir.is_dir() else []
    if held and not overwrite:
        raise _not_empty(out_dir, held)
    traces_dir = (out_dir / TRACES_DIR).absolute()
    try:
        traces_dir.mkdir(parents=True, exist_ok=overwrite)
    except FileExistsError:  # another simulation claimed the folder since it was looked at
        raise _not_empty(out_dir, [TRACES_DIR]) from None
    return traces_dir


def _not_empty(out_dir: Path, held: list[str]) -> OutputExistsError:
    names = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    return OutputExistsError(
        f"{out_dir}: the folder is not empty (it holds {names}); simulate into a new or empty "
        "folder, or pass --overwrite to replace the simulation in it"
    )


def _remove_stale_traces(traces_dir: Path, keep: set[str]) -> None:
    """Delete trace files of an earlier, larger simulation into the same folder."""
    for path in sorted(traces_dir.iterdir()):
        if path.is_file() and _STALE_TRACE.match(path.name) and path.name not in keep:
            log.info("simulate: removing %s, a trace of an earlier simulation", path)
            path.unlink()
