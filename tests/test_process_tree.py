"""The memory of a whole process tree: a stage, its Dask workers, the shared cluster's workers."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.parallel import dask_client, run_tasks
from pipeline.process_tree import (
    CLUSTER_OWNER_ENV,
    MIB,
    RECORDS_ENV,
    TreeMemorySampler,
    command_output,
    own_peak_rss_mb,
    read_command_records,
    record_path,
)

HELD_BYTES = 300_000_000  # what a worker's task holds: 300 MB = 286.1 MiB
HELD_MIB = HELD_BYTES / MIB
REPO = Path(__file__).resolve().parents[1]


def hold_array(seconds: float) -> int:
    """Allocate and touch 300 MB in the calling process, hold it, and return its size."""
    array = np.ones(HELD_BYTES // 8, dtype=np.float64)  # ones: every page is written
    time.sleep(seconds)
    return int(array.nbytes)


def test_a_workers_array_shows_in_the_trees_peak() -> None:
    # run_tasks is what the stages call: two tasks on a LocalCluster of 2 worker processes
    with TreeMemorySampler(include_shared_cluster=False) as sampler:
        held = run_tasks(hold_array, [1.5, 1.5], "hold", workers=2)
    memory = sampler.snapshot()
    assert held == [HELD_BYTES, HELD_BYTES]
    # the workers held 2 x 286 MiB at once; the stage process held none of it
    assert memory.others_peak_rss_mb >= 2 * HELD_MIB
    assert memory.peak_rss_mb >= memory.own_peak_rss_mb + 2 * HELD_MIB
    assert memory.own_peak_rss_mb < memory.peak_rss_mb - 2 * HELD_MIB + 1
    assert memory.peak_pss_mb is not None and memory.peak_pss_mb >= 2 * HELD_MIB
    assert memory.peak_uss_mb is not None and memory.peak_uss_mb >= 2 * HELD_MIB
    assert memory.peak_processes >= 3  # this process, and a nanny and a worker at least


def test_the_root_alone_when_it_starts_nothing() -> None:
    with TreeMemorySampler() as sampler:
        held = hold_array(0.6)
    memory = sampler.snapshot()
    assert held == HELD_BYTES
    assert memory.own_peak_rss_mb >= HELD_MIB
    assert memory.others_peak_rss_mb < HELD_MIB
    assert memory.samples >= 3


STAGE_SCRIPT = """
import json, sys
from dask.distributed import Client
from pipeline.process_tree import TreeMemorySampler
from tests.test_process_tree import hold_array

with TreeMemorySampler(include_shared_cluster=sys.argv[2] != "own") as sampler:
    with Client(sys.argv[1]) as client:
        client.submit(hold_array, 1.5, pure=False).result()
print(json.dumps(sampler.snapshot().as_dict()))
"""


# Snakemake's place: a process between the owner and the stage, holding 300 MB of its own
INTERMEDIATE_SCRIPT = """
import subprocess, sys
from tests.test_process_tree import HELD_BYTES
import numpy as np

held = np.ones(HELD_BYTES // 8)
sys.exit(subprocess.run([sys.executable, *sys.argv[1:]]).returncode)
"""


@pytest.mark.parametrize("included", ["shared", "own", "shared-below-another"])
def test_a_stage_counts_the_shared_clusters_workers(included: str) -> None:
    """A stage (a child process) on a cluster this process runs, as under ``roadcover run``."""
    env = {**os.environ, CLUSTER_OWNER_ENV: str(os.getpid()), "PYTHONPATH": str(REPO)}
    with dask_client(1) as client:
        stage = ["-c", STAGE_SCRIPT, client.scheduler.address, included]
        if included == "shared-below-another":
            stage = ["-c", INTERMEDIATE_SCRIPT, *stage]
        done = subprocess.run(
            [sys.executable, *stage], env=env, capture_output=True, text=True, timeout=120,
            check=True,
        )  # fmt: skip
    memory = json.loads(done.stdout)
    assert memory["shared_cluster"] is (included != "own")
    if included == "own":  # the workers are not the stage's descendants: they are missed
        assert memory["others_peak_rss_mb"] < HELD_MIB
    else:
        assert memory["others_peak_rss_mb"] >= HELD_MIB
        assert memory["peak_rss_mb"] >= memory["own_peak_rss_mb"] + HELD_MIB
    if included == "shared-below-another":  # the stage's ancestors are not its workers
        assert memory["others_peak_rss_mb"] < 2 * HELD_MIB


def test_a_stage_command_writes_its_record(tmp_path: Path, tiny_osm: Path) -> None:
    records = tmp_path / "records"
    argv = ["roads", "build", "-o", str(tmp_path / "roads"), "--", str(tiny_osm)]
    env = {**os.environ, RECORDS_ENV: str(records), "PYTHONPATH": str(REPO)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    child_max_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = json.loads(record_path(records, argv).read_text())
    assert record["command"] == argv and record["exit_status"] == 0
    assert record["output"] == str(tmp_path / "roads")
    assert record["cwd"] == str(tmp_path)
    # the kernel's own peak of the command's process (largest child so far, this one if it
    # is the largest): sampling every 0.2 s sees at least 90 % of it
    if child_max_kib > before:
        assert record["own_peak_rss_mb"] >= 0.9 * child_max_kib / 1024
    assert record["peak_rss_mb"] >= record["own_peak_rss_mb"] > 50
    found = read_command_records(records, tmp_path)
    assert [r["label"] for r in found] == ["roads build → roads"]
    assert read_command_records(records, tmp_path / "elsewhere") == []


def test_help_and_run_write_no_record(tmp_path: Path) -> None:
    env = {**os.environ, RECORDS_ENV: str(tmp_path), "PYTHONPATH": str(REPO)}
    for argv in (["snap", "--help"], ["--version"]):
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *argv], env=env, check=True,
            capture_output=True, timeout=60,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_record_names_and_outputs() -> None:
    one = record_path(Path("r"), ["snap", "-o", "a b"])
    assert one == record_path(Path("r"), ["snap", "-o", "a b"])
    assert one != record_path(Path("r"), ["snap", "-o", "a", "b"])
    assert one.name.startswith("snap-") and one.parent == Path("r")
    assert record_path(Path("r"), ["export", "tiles", "--", "c", "t"]).name.startswith(
        "export-tiles-"
    )
    assert record_path(Path("r"), ["../../x", "y"]).parent == Path("r")
    assert command_output(["snap", "--roads", "r", "-o", "m"]) == "m"
    assert command_output(["ingest", "--out=t", "x"]) == "t"
    assert command_output(["export", "tiles", "--", "cov", "a.pmtiles"]) == "a.pmtiles"


def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"command": 3}))
    good = {"command": ["coverage", "-o", "cov"], "output": "cov", "cwd": str(tmp_path)}
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert [r["label"] for r in read_command_records(tmp_path, tmp_path)] == ["coverage → cov"]


def test_a_record_that_cannot_be_written_does_not_fail_the_stage(
    tmp_path: Path, tiny_osm: Path
) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    env = {**os.environ, RECORDS_ENV: str(blocker / "records"), "PYTHONPATH": str(REPO)}
    argv = ["roads", "build", "-o", str(tmp_path / "roads"), "--", str(tiny_osm)]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "roads" / "meta.json").is_file()
    assert f"process record not written: {blocker / 'records'}" in done.stderr


def test_own_peak_is_the_childs_not_what_it_inherits_from_a_large_parent() -> None:
    """A child of a process holding 300 MB: its VmHWM is its own; ru_maxrss counts the parent's."""
    array = np.ones(HELD_BYTES // 8, dtype=np.float64)  # the parent's RSS, at the fork
    child = (
        "import resource; from pipeline.process_tree import own_peak_rss_mb; "
        "print(own_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
    own, inherited = (float(value) for value in done.stdout.split())
    assert inherited > HELD_MIB  # the maximum Linux keeps across exec: the parent's
    assert 5 < own < HELD_MIB / 3  # a Python with psutil: tens of MiB
    assert own_peak_rss_mb() > HELD_MIB  # the parent's own peak holds the array
    del array


def test_importing_the_module_loads_no_psutil() -> None:
    # every command imports it for RECORDS_ENV; psutil is for the sampling, when it is asked for
    from tests.imports import modules_imported_by

    loaded = modules_imported_by("import pipeline.process_tree", ("pipeline", "psutil"))
    assert "pipeline.process_tree" in loaded
    assert [name for name in loaded if name.split(".")[0] == "psutil"] == []
