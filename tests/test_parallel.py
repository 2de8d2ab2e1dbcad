"""The Dask client of the stages: LocalCluster or an existing scheduler, and progress bars."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dask.distributed import Client, LocalCluster
from distributed.core import Status

from pipeline import parallel
from pipeline.config import settings_from_mapping
from pipeline.errors import ConfigError
from pipeline.parallel import (
    SCHEDULER_ENV,
    STAGE_MODULES,
    _add_workers,
    available_cpus,
    cgroup_cpu_quota,
    dask_client,
    gather_with_progress,
    local_workers,
    run_tasks,
    shared_local_cluster,
    with_progress,
)
from tests.imports import modules_imported_by


def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as running:
        yield running


def test_an_existing_scheduler_is_used_from_the_environment(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
    with dask_client(workers=4) as client:  # workers are ignored: the cluster is not ours
        assert client.scheduler.address == cluster.scheduler_address
        assert len(client.scheduler_info()["workers"]) == 1


def test_gathered_results_keep_their_order_and_show_progress(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with dask_client(1, cluster.scheduler_address) as client:
        futures = client.map(square, range(20), pure=False)
        assert gather_with_progress(futures, "squares") == [x * x for x in range(20)]
        # in the order given, not the order they finished in (the one worker runs 0, 1, ...)
        later = client.map(square, range(20, 40), pure=False)
        assert gather_with_progress(later[::-1], "squares") == [x * x for x in range(39, 19, -1)]
    err = capsys.readouterr().err
    assert "squares" in err and "20/20" in err


def test_a_failed_task_raises_its_error(cluster: LocalCluster) -> None:
    with dask_client(1, cluster.scheduler_address) as client:
        futures = client.map(square, [1, -2, 3], pure=False)
        with pytest.raises(ValueError, match="negative: -2"):
            gather_with_progress(futures, "squares")


def test_in_process_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(with_progress(iter([1, 2, 3]), "items", total=3)) == [1, 2, 3]
    assert "items" in capsys.readouterr().err


def thread_of(x: int, offset: int) -> tuple[int, int]:
    """``x + offset`` and the thread that computed it."""
    return x + offset, threading.get_ident()


def test_run_tasks_uses_dask_only_when_given_a_scheduler_or_enough_tasks(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    here = threading.get_ident()
    alone = run_tasks(thread_of, [1, 2, 3], "t", workers=2, min_tasks_per_worker=4, offset=10)
    assert alone == [(11, here), (12, here), (13, here)]  # too few for a LocalCluster
    one_worker = run_tasks(thread_of, [1, 2], "t", 1, cluster.scheduler_address, offset=0)
    assert {ident for _, ident in one_worker} == {here}
    shared = run_tasks(thread_of, [1, 2, 3], "t", 2, cluster.scheduler_address, 8, offset=10)
    assert [value for value, _ in shared] == [11, 12, 13]  # in order
    assert here not in {ident for _, ident in shared}  # on the cluster's worker threads


def worker_trim_thresholds(address: str) -> list[str | None]:
    with Client(address) as client:
        client.wait_for_workers(1)  # the shared cluster's workers start in the background
        found = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    return list(found.values())


def test_local_workers_keep_glibc_memory_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nannies would fix the trim threshold (and so glibc's mmap threshold)."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with shared_local_cluster(1) as address:
        assert worker_trim_thresholds(address) == [None]


def test_a_trim_threshold_in_the_environment_reaches_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with shared_local_cluster(1) as address:
        assert worker_trim_thresholds(address) == ["65536"]


def test_the_shared_clusters_workers_import_the_stages_modules_as_they_start() -> None:
    with shared_local_cluster(2) as address, Client(address) as client:
        client.wait_for_workers(2)
        imported = client.run(lambda: [name in sys.modules for name in STAGE_MODULES])
    assert list(imported.values()) == [[True] * len(STAGE_MODULES)] * 2


def polling_ms(server: Any) -> dict[str, float]:
    """The periodic callbacks of a Dask scheduler or worker: name -> interval in ms."""
    return {name: pc.callback_time for name, pc in server.periodic_callbacks.items()}


def worker_polling_ms(dask_worker: Any) -> dict[str, float]:
    return polling_ms(dask_worker)


def scheduler_polling_ms(dask_scheduler: Any) -> dict[str, float]:
    return polling_ms(dask_scheduler)


def test_the_shared_cluster_polls_at_the_slower_local_rates() -> None:
    """An idle cluster at Dask's default rates took 18 % of a core from the stages."""
    with shared_local_cluster(1) as address, Client(address) as client:
        client.wait_for_workers(1)
        (worker,) = client.run(worker_polling_ms).values()
        scheduler = client.run_on_scheduler(scheduler_polling_ms)
    assert (worker["tick"], worker["memory_monitor"], worker["profile"]) == (500, 500, 100)
    assert (scheduler["tick"], scheduler["monitor"], scheduler["stealing"]) == (500, 1000, 500)


@pytest.mark.parametrize("failure", ["raises", "only logged"])
def test_a_shared_cluster_whose_workers_fail_to_start_is_closed(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its clients must fail rather than wait forever for workers.

    Dask may raise, or only log a nanny that failed to start (then no worker ever comes).
    """
    scale = LocalCluster.scale

    def fail_to_add(self: LocalCluster, n: int) -> None:
        if n == 0:
            scale(self, n)  # closing scales to 0
        elif failure == "raises":
            raise OSError("no more processes")

    monkeypatch.setattr(LocalCluster, "scale", fail_to_add)
    monkeypatch.setattr(parallel, "WORKER_START_TIMEOUT_S", 0.5)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        _add_workers(empty, 1)
        assert empty.status == Status.closed


def test_the_in_process_path_does_not_import_dask() -> None:
    """Importing Dask costs about half a second, for nothing when the tasks run in-process."""
    code = (
        "from pipeline.parallel import run_tasks\n"
        "assert run_tasks(abs, [-1, -2], 'in-process', workers=1) == [1, 2]"
    )
    assert modules_imported_by(code, ("dask", "distributed")) == []


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path under ``root`` -> text) as a fake /proc and /sys/fs/cgroup."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


ROOT_CGROUP = {"proc/self/cgroup": "0::/\n"}
CGROUP_V2 = "0::/user.slice/job.scope\n"
CGROUP_V1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        # cgroup v2: the parent's 1.5 CPUs bound the child's "max"
        (
            {
                "proc/self/cgroup": CGROUP_V2,
                "sys/fs/cgroup/cpu.max": "max 100000\n",
                "sys/fs/cgroup/user.slice/cpu.max": "150000 100000\n",
                "sys/fs/cgroup/user.slice/job.scope/cpu.max": "max 100000\n",
            },
            1.5,
        ),
        # cgroup v2: the child's quota below its parent's
        (
            {
                "proc/self/cgroup": CGROUP_V2,
                "sys/fs/cgroup/user.slice/cpu.max": "400000 100000\n",
                "sys/fs/cgroup/user.slice/job.scope/cpu.max": "50000 50000\n",
            },
            1.0,
        ),
        # cgroup v2 without any quota
        ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"}, None),
        # cgroup v1 in a container: its own cgroup is the mount (the host path is absent)
        (
            {
                "proc/self/cgroup": CGROUP_V1,
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "250000\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            2.5,
        ),
        # cgroup v1, quota -1: none
        (
            {
                "proc/self/cgroup": "3:cpu:/\n",
                "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
            },
            None,
        ),
        # hybrid: v1 cpu controller, v2 tree without cpu.max
        (
            {
                "proc/self/cgroup": "0::/\n3:cpu:/batch\n",
                "sys/fs/cgroup/unified/cgroup.procs": "",
                "sys/fs/cgroup/cpu/batch/cpu.cfs_quota_us": "100000\n",
                "sys/fs/cgroup/cpu/batch/cpu.cfs_period_us": "100000\n",
            },
            1.0,
        ),
        ({}, None),  # no /proc (not Linux)
        # a line that is not hierarchy:controllers:path is skipped
        (
            {
                "proc/self/cgroup": "garbage\n0::/\n",
                "sys/fs/cgroup/cpu.max": "300000 100000\n",
            },
            3.0,
        ),
    ],
)
def test_cgroup_cpu_quota_reads_v1_and_v2_files(
    files: dict[str, str], cpus: float | None, tmp_path: Path
) -> None:
    assert cgroup_cpu_quota(write_files(tmp_path, files)) == cpus


def test_workers_are_capped_by_the_quota_the_request_and_the_tasks(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    half = write_files(tmp_path / "half", {**ROOT_CGROUP, "sys/fs/cgroup/cpu.max": "50000 100000"})
    assert available_cpus(half) == 1  # half a CPU is one worker
    assert local_workers(None, 10, half) == 1 and local_workers(4, None, half) == 1
    sixty_four = {**ROOT_CGROUP, "sys/fs/cgroup/cpu.max": "6400000 100000"}
    many = write_files(tmp_path / "many", sixty_four)
    assert available_cpus(many) == affinity  # 64 CPUs of quota: the affinity decides
    assert local_workers(None, None, many) == affinity
    assert local_workers(1, None, many) == 1
    assert local_workers(None, 1, many) == 1


def test_workers_setting_is_auto_by_default_and_an_integer_is_a_cap() -> None:
    regions = [{"name": "tiny", "osm": "x.osm"}]
    default = settings_from_mapping({"regions": regions})
    assert default.ingest.workers is None and default.snap.workers is None
    capped = settings_from_mapping(
        {"regions": regions, "ingest": {"workers": 3}, "snap": {"workers": "auto"}}
    )
    assert capped.ingest.workers == 3 and capped.snap.workers is None
    with pytest.raises(ConfigError, match="snap.workers"):
        settings_from_mapping({"regions": regions, "snap": {"workers": 0}})


@pytest.fixture(scope="module")
def grid_roads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.roads import build_roads
    from pipeline.warmup import write_grid_osm

    folder = tmp_path_factory.mktemp("grid")
    build_roads(write_grid_osm(folder / "grid.osm"), folder / "roads")
    return folder / "roads"


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
@pytest.mark.parametrize("cpus", ["0", "0,1"])
def test_a_stage_pinned_to_one_cpu_runs_its_tasks_in_process(
    cpus: str, grid_roads: Path, tmp_path: Path
) -> None:
    """`--workers 2` under `taskset -c 0`: no LocalCluster; with two CPUs, one of 2 workers."""
    if len(cpus.split(",")) > len(os.sched_getaffinity(0)):
        pytest.skip("this machine lets the tests use fewer CPUs")
    command = [
        *("taskset", "-c", cpus, sys.executable, "-m", "pipeline.cli", "simulate"),
        *("--roads", str(grid_roads), "-o", str(tmp_path / "out")),
        *("--devices", "72", "--days", "1", "--workers", "2"),  # 9 tasks of 8 devices
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(parallel.__file__).parent.parent)}
    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if cpus == "0":
        assert "simulate devices: 9 task(s) in this process" in result.stderr
        assert "LocalCluster" not in result.stderr
    else:
        assert "dask: LocalCluster of 2 worker(s)" in result.stderr


@contextlib.contextmanager
def subprocess_cluster(folder: Path, workers: int, env: dict[str, str]) -> Iterator[str]:
    """Start ``dask scheduler`` and ``dask worker`` as processes on localhost: a cluster.

    Yields the scheduler's address once ``workers`` workers are connected; stops both after.
    """
    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    common = {"env": env, "cwd": folder, "stdout": subprocess.DEVNULL}
    logs = [(folder / name).open("wb") for name in ("scheduler.log", "worker.log")]
    scheduler = subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stderr=logs[0], **common,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*dask, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", str(workers),
         "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
        stderr=logs[1], **common,
    )  # fmt: skip
    try:
        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
            yield client.scheduler.address
    finally:
        for process in (worker, scheduler):
            process.terminate()
        for process in (worker, scheduler):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def test_a_stage_on_a_cluster_of_processes_writes_what_it_writes_alone(
    grid_roads: Path, tmp_path: Path
) -> None:
    """A real ``dask scheduler`` and 2 ``dask worker`` processes: same files, byte for byte."""
    env = {**os.environ, "PYTHONPATH": str(Path(parallel.__file__).parent.parent)}
    env.pop(SCHEDULER_ENV, None)
    simulate = [
        *(sys.executable, "-m", "pipeline.cli", "simulate", "--roads", str(grid_roads)),
        *("--devices", "24", "--days", "1", "--format", "parquet"),  # 3 tasks of 8 devices
    ]
    alone = subprocess.run(
        [*simulate, "-o", str(tmp_path / "alone"), "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "3 task(s) in this process" in alone.stderr
    (tmp_path / "cluster").mkdir()
    with subprocess_cluster(tmp_path / "cluster", 2, env) as address:
        on_cluster = subprocess.run(
            [*simulate, "-o", str(tmp_path / "on_cluster"), "--workers", "2"],
            env={**env, SCHEDULER_ENV: address}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    assert f"dask: using scheduler {address}" in on_cluster.stderr
    assert "in this process" not in on_cluster.stderr
    written = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*"))
    assert written == sorted(
        p.relative_to(tmp_path / "on_cluster") for p in (tmp_path / "on_cluster").rglob("*")
    )
    files = [name for name in written if (tmp_path / "alone" / name).is_file()]
    assert len([name for name in files if name.suffix == ".parquet"]) >= 24  # traces + truth
    for name in files:
        assert (tmp_path / "alone" / name).read_bytes() == (
            tmp_path / "on_cluster" / name
        ).read_bytes(), name
