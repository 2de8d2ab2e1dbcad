"""The Dask client of the stages: LocalCluster or an existing scheduler, and progress bars."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dask.distributed import Client, LocalCluster
from distributed.core import Status

from pipeline import parallel
from pipeline.parallel import (
    SCHEDULER_ENV,
    STAGE_MODULES,
    _add_workers,
    dask_client,
    gather_with_progress,
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
    alone = run_tasks(thread_of, [1, 2, 3], "t", workers=2, min_tasks=8, offset=10)
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
