"""``roadcover run``'s own decisions: which Dask cluster the stages share, where outputs go."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pipeline.parallel import SCHEDULER_ENV
from pipeline.workflow import _stage_scheduler, _working_directory


def shared(args: list[str], cores: int = 2, configured: str | None = None) -> bool:
    """Whether ``roadcover run`` would start a shared LocalCluster for these arguments."""
    return not isinstance(_stage_scheduler(configured, cores, args), contextlib.nullcontext)


@pytest.fixture(autouse=True)
def no_scheduler_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)


def test_a_local_run_on_several_cores_shares_one_cluster() -> None:
    assert shared([])
    assert shared(["--profile", "configs/profiles/local"])
    assert shared(["--profile=configs/profiles/local/", "--keep-going"])


@pytest.mark.parametrize(
    "args",
    [
        ["-n"],
        ["--dry-run"],
        ["--executor", "slurm"],
        ["--executor=kubernetes"],
        ["--profile", "configs/profiles/slurm"],
        ["--profile=configs/profiles/kubernetes"],
    ],
)
def test_no_shared_cluster_for_dry_runs_and_cluster_executors(args: list[str]) -> None:
    assert not shared(args)


def test_no_shared_cluster_for_one_core_or_a_configured_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not shared([], cores=1)
    assert not shared([], configured="tcp://dask-scheduler:8786")
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://dask-scheduler:8786")
    assert not shared([])


def test_working_directory_follows_snakemakes_directory_option() -> None:
    assert _working_directory([]) == Path()
    assert _working_directory(["--directory", "/tmp/w"]) == Path("/tmp/w")
    assert _working_directory(["-d", "w", "-n"]) == Path("w")
    assert _working_directory(["--directory=/x"]) == Path("/x")
