"""The Dask client of a stage: a LocalCluster by default, or an existing scheduler.

A scheduler address comes from the config (``dask.scheduler_address``, when the workflow passes
one) or the ``DASK_SCHEDULER_ADDRESS`` environment variable; point it at a cluster started by
dask-kubernetes or dask-jobqueue to scale out. Otherwise a LocalCluster of ``workers`` processes
(one thread each) is started for the duration of the stage, never more than the CPUs the
process may use (its CPU affinity within its cgroup's CPU quota, :func:`available_cpus`); with
one CPU, or little work, the tasks run in the stage's own process.

Its workers keep glibc's own memory tuning: Dask's nannies start workers with
``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes glibc's mmap threshold, so that every NumPy
or Arrow array over 128 KiB is mapped and unmapped anew, page faults included; the stages'
array-heavy tasks ran 30 % slower so. Memory stays bounded by the task (see
docs/benchmarks.md for the workers' peak RSS). Set ``MALLOC_TRIM_THRESHOLD_`` in the
environment to have it anyway; for a cluster of your own, see docs/workflow.md.

It also polls less often than Dask's defaults (:data:`LOCAL_POLLING`): the event loops' ticks
every 20 ms, the memory monitors every 100 ms and the worker profiler's samples every 10 ms
kept an idle 2-worker cluster at 18 % of a core, CPU the stages' tasks then lacked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:  # Dask is imported where it is used: the in-process path does without it
    from dask.distributed import Client, Future, LocalCluster

log = logging.getLogger(__name__)

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
ROOT = Path("/")  # where proc/ and sys/fs/cgroup/ are
# None removes a variable from what Dask's nannies set before starting a worker process
GLIBC_DEFAULTS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
# the LocalCluster's background polling, slower than Dask's defaults (in brackets): an idle
# scheduler with two nannies and two workers used 1.6 % + 2 x 0.9 % of a core, not 7.7 % + 2 x
# 5.4 %. The dashboard's charts and profiles still fill, at these rates; the memory limits
# are checked twice a second; tasks last seconds, so stealing them sooner gains nothing.
LOCAL_POLLING = {
    "distributed.admin.tick.interval": "500ms",  # (20ms) detects a blocked event loop
    "distributed.admin.system-monitor.interval": "1s",  # (500ms) CPU, memory, network charts
    "distributed.worker.memory.monitor-interval": "500ms",  # (100ms) nannies' and workers'
    "distributed.worker.profile.interval": "100ms",  # (10ms) the worker profiler's samples
    "distributed.scheduler.work-stealing-interval": "500ms",  # (100ms)
}
LOCAL_CLUSTER_CONFIG = {**GLIBC_DEFAULTS, **LOCAL_POLLING}
# what the workers of the shared cluster import as they start: the modules of the stages'
# tasks (the first task of each stage would import them otherwise)
STAGE_MODULES = ("pipeline.simulate.fleet", "pipeline.ingest.stage", "pipeline.snap.stage")
# a worker that fails to start is only logged by Dask: waiting longer than this means failure
WORKER_START_TIMEOUT_S = 120.0
Item = TypeVar("Item")
Result = TypeVar("Result")


def run_tasks(
    function: Callable[..., Result],
    tasks: list[Item],
    description: str,
    workers: int | None,
    scheduler_address: str | None = None,
    min_tasks_per_worker: int = 1,
    **arguments: Any,
) -> list[Result]:
    """Return ``function(task, **arguments)`` of every task, in order, with a progress bar.

    The tasks run on Dask when there is more than one of them and more than one worker, and
    either a scheduler is given (``scheduler_address``, else ``DASK_SCHEDULER_ADDRESS``: its
    workers are running already) or there are at least ``min_tasks_per_worker`` per worker of
    a LocalCluster (starting one costs seconds, worth it only for that much work); else in
    this process. ``workers`` caps a LocalCluster, which never has more workers than the CPUs
    this process may use (:func:`available_cpus`); None means that many. With a scheduler,
    None or more than 1 means its workers, 1 this process.
    """
    address = scheduler_address or os.environ.get(SCHEDULER_ENV)
    if address and workers != 1 and len(tasks) > 1:
        with dask_client(1, address) as client:
            return _map_on_dask(client, function, tasks, description, arguments)
    local = 1 if address else local_workers(workers, len(tasks))
    if local <= 1 or len(tasks) < max(2, min_tasks_per_worker * local):
        log.info("%s: %d task(s) in this process", description, len(tasks))
        return [function(task, **arguments) for task in with_progress(tasks, description)]
    with dask_client(local) as client:
        return _map_on_dask(client, function, tasks, description, arguments)


def _map_on_dask(
    client: Client,
    function: Callable[..., Result],
    tasks: list[Item],
    description: str,
    arguments: dict[str, Any],
) -> list[Result]:
    """Run ``function(task, **arguments)`` of every task on the client's workers, in order."""
    futures = client.map(function, tasks, pure=False, **arguments)
    results: list[Result] = gather_with_progress(futures, description)
    return results


def local_workers(requested: int | None, tasks: int | None = None, root: Path = ROOT) -> int:
    """Workers of a LocalCluster: ``requested`` (None: no cap) within the CPUs and the tasks.

    Parameters
    ----------
    requested
        The configured or given count, a cap; None for as many as there are CPUs.
    tasks
        The number of tasks, when known: no more workers than that.
    root
        The file system root holding ``proc/`` and ``sys/fs/cgroup/`` (tests give another).
    """
    count = available_cpus(root)
    if requested is not None:
        count = min(count, requested)
    if tasks is not None:
        count = min(count, tasks)
    return max(1, count)


def available_cpus(root: Path = ROOT) -> int:
    """Count the CPUs this process may use: its CPU affinity, within its cgroup's CPU quota.

    A quota of 1.5 CPUs counts as 2 (as Dask and the JVM count it).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = ROOT) -> float | None:
    """Return the CPU quota of this process's cgroups, in CPUs, or None when there is none.

    Reads ``proc/self/cgroup`` under ``root``, then, for cgroup v2, ``cpu.max`` (``max
    100000`` or ``200000 100000``) and for cgroup v1 ``cpu.cfs_quota_us`` (-1: none) over
    ``cpu.cfs_period_us``, in the process's cgroup folder and every folder above it (a
    parent's quota bounds its children's); the smallest wins. In a container the cgroup's
    own folder is often the mount itself, which is read too.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy-ID:controller-list:cgroup-path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2 (alone, or the unified tree of a hybrid setup)
            for mount in ("sys/fs/cgroup", "sys/fs/cgroup/unified"):
                quotas += _quotas(root / mount, path, _cpu_max)
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                quotas += _quotas(root / "sys/fs/cgroup" / mount, path, _cfs_quota)
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Read the quotas of the cgroup folder ``mount/path`` and of each folder above it."""
    folder = mount / path.strip("/")
    folders = [folder, *folder.parents[: len(folder.parents) - len(mount.parents)]]
    quotas = (read(candidate) for candidate in dict.fromkeys(folders) if candidate.is_dir())
    return [quota for quota in quotas if quota is not None]


def _cpu_max(folder: Path) -> float | None:
    """Read a cgroup v2 ``cpu.max`` as CPUs (``max``: no quota)."""
    fields = _read_fields(folder / "cpu.max")
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _cfs_quota(folder: Path) -> float | None:
    """Read cgroup v1's ``cpu.cfs_quota_us / cpu.cfs_period_us`` as CPUs (-1: no quota)."""
    quota = _read_fields(folder / "cpu.cfs_quota_us")
    period = _read_fields(folder / "cpu.cfs_period_us")
    if len(quota) != 1 or len(period) != 1:
        return None
    return _ratio(quota[0], period[0])


def _read_fields(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _ratio(quota: str, period: str) -> float | None:
    """``quota / period`` when both are positive integers, else None (no quota)."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


@contextlib.contextmanager
def dask_client(workers: int, scheduler_address: str | None = None) -> Iterator[Client]:
    """Yield a Dask client; a LocalCluster it started is closed on exit.

    Parameters
    ----------
    workers
        Worker processes of the LocalCluster (ignored when a scheduler address is given).
    scheduler_address
        An existing scheduler, e.g. ``tcp://scheduler:8786``; falls back to the
        ``DASK_SCHEDULER_ADDRESS`` environment variable.
    """
    from dask.distributed import Client

    address = scheduler_address or os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address) as client:
            log.info("dask: using scheduler %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    with _local_cluster(workers) as cluster, Client(cluster) as client:
        log.info("dask: LocalCluster of %d worker(s), dashboard %s", workers, client.dashboard_link)
        yield client


@contextlib.contextmanager
def shared_local_cluster(workers: int | None) -> Iterator[str]:
    """Start a LocalCluster that several stages share; yield its scheduler address.

    It has ``workers`` workers (None: one per CPU), at most one per CPU this process may use.

    ``roadcover run`` starts one for the whole workflow and hands its address to every job
    (``DASK_SCHEDULER_ADDRESS``), so no stage pays for starting workers and importing the
    stack into them, and each worker keeps what it cached (e.g. the match network) between
    stages and batches. The scheduler is up at once; the workers start in the background,
    importing the stages' modules (:data:`STAGE_MODULES`) as they start, while the workflow
    starts and runs its first jobs, which need no workers (a stage's tasks wait for them). The
    cluster and its workers stop when the block ends.
    """
    workers = local_workers(workers)
    with _local_cluster(0, preload=STAGE_MODULES) as cluster:
        log.info(
            "dask: shared LocalCluster at %s (dashboard %s), starting %d worker(s)",
            cluster.scheduler_address,
            cluster.dashboard_link,
            workers,
        )
        starting = threading.Thread(
            target=_add_workers, args=(cluster, workers), name="dask-workers", daemon=True
        )
        starting.start()
        yield cluster.scheduler_address
        starting.join()


def _add_workers(cluster: LocalCluster, workers: int) -> None:
    """Scale a cluster up to ``workers``; close it if they fail to start, so its clients fail.

    A client of a scheduler without workers would wait for them forever. Dask only logs a
    worker that fails to start, so not all of them up within ``WORKER_START_TIMEOUT_S`` is
    taken as failure.
    """
    import dask

    try:
        with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read as the servers are made
            cluster.scale(workers)
            cluster.wait_for_workers(workers, timeout=WORKER_START_TIMEOUT_S)
    except Exception:
        log.exception("dask: the shared cluster's workers did not start; closing it")
        cluster.close()


@contextlib.contextmanager
def _local_cluster(workers: int, preload: Sequence[str] = ()) -> Iterator[LocalCluster]:
    """Start a LocalCluster of ``workers`` one-thread processes, quiet but for warnings.

    ``preload`` names modules every worker imports as it starts. Distributed's INFO logs
    (every worker and client coming and going, and the tracebacks of connections closed on
    shutdown) would drown the stage's own messages.
    """
    import dask
    from dask.distributed import LocalCluster

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read as the servers are made
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.WARNING,
                preload=list(preload),
            )
        with cluster:
            yield cluster
    finally:
        logger.setLevel(level)


def with_progress(
    items: Iterable[Item], description: str, total: int | None = None
) -> Iterator[Item]:
    """Iterate over ``items`` with a progress bar on stderr (a stage's in-process path)."""
    if total is None and isinstance(items, list):
        total = len(items)
    yield from tqdm(items, desc=description, total=total, file=sys.stderr, mininterval=1.0)


def gather_with_progress(futures: list[Future], description: str) -> list[Any]:
    """Results of Dask futures, in their order, with a progress bar on stderr as they finish.

    Raises
    ------
    Exception
        The first failed task's exception, as :meth:`Client.gather` would.
    """
    from dask.distributed import as_completed

    position = {future.key: i for i, future in enumerate(futures)}
    results: dict[int, Any] = {}
    # each result is fetched as its task ends, while the others run: 4 % off an ingest batch
    finished = as_completed(futures, with_results=True)
    for future, result in with_progress(finished, description, total=len(futures)):
        results[position[future.key]] = result
    return [results[i] for i in range(len(futures))]
