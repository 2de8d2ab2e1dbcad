"""The folder lock: one writer at a time across processes, released by a killed holder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.locking import (
    LOCK_FILE,
    SCRATCH_LOCK,
    LockError,
    LockTimeoutError,
    folder_lock,
    scratch_folder,
)

HOLD_SCRIPT = """
import sys, time
from pathlib import Path
from pipeline.locking import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(folder: Path, seconds: float) -> subprocess.Popen[str]:
    """A real second process holding the folder's lock; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_writer_times_out_naming_the_holder(tmp_path: Path) -> None:
    holder = _hold(tmp_path, 30)
    try:
        with pytest.raises(LockTimeoutError) as caught, folder_lock(tmp_path, timeout_s=0.3):
            pass
        message = str(caught.value)
        assert f"pid {holder.pid}" in message
        assert "lock_timeout_s" in message
        assert isinstance(caught.value, PipelineError)
    finally:
        holder.kill()
        holder.wait()


def test_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    holder = _hold(tmp_path, 0.5)
    started = time.monotonic()
    with folder_lock(tmp_path, timeout_s=20):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.2  # it did wait for the holder


def test_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    holder = _hold(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with folder_lock(tmp_path, timeout_s=5):
        pass


def _count(folder: str, rounds: int) -> None:
    counter = Path(folder) / "counter.txt"
    for _ in range(rounds):
        with folder_lock(Path(folder), timeout_s=60):
            value = int(counter.read_text()) if counter.exists() else 0
            time.sleep(0.001)  # widen the read-modify-write window
            counter.write_text(str(value + 1))


def test_concurrent_read_modify_writes_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count, args=(str(tmp_path), 25)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert (tmp_path / "counter.txt").read_text() == "75"


def test_leftover_temporaries_are_removed_but_not_links(tmp_path: Path) -> None:
    (tmp_path / "state" / "v1").mkdir(parents=True)
    leftover = tmp_path / "state" / "v1" / ".edges.parquet.abc123.tmp"
    leftover.write_bytes(b"half a file")
    keep = tmp_path / "edges.parquet"
    keep.write_bytes(b"data")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.tmp"
    outside.write_text("not ours")
    (tmp_path / ".link.tmp").symlink_to(outside)
    with folder_lock(tmp_path, timeout_s=1):
        pass
    assert not leftover.exists()
    assert keep.read_bytes() == b"data"
    assert outside.read_text() == "not ours"


def test_a_planted_symlink_lock_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.write_text("precious")
    (tmp_path / LOCK_FILE).symlink_to(target)
    with pytest.raises(LockError, match="regular file"), folder_lock(tmp_path, timeout_s=1):
        pass
    assert target.read_text() == "precious"


SCRATCH_SCRIPT = """
import sys, time
from pathlib import Path
from pipeline.locking import scratch_folder
with scratch_folder("roadcover-test-", Path(sys.argv[1])) as folder:
    (folder / "chunk").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(60)
"""


def _scratch_holder(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real process inside a scratch folder under ``parent``; returns it and its folder."""
    holder = subprocess.Popen(
        [sys.executable, "-c", SCRATCH_SCRIPT, str(parent)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    return holder, Path(holder.stdout.readline().strip())


def test_a_killed_holders_scratch_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    killed, killed_folder = _scratch_holder(tmp_path)
    alive, alive_folder = _scratch_holder(tmp_path)
    foreign = tmp_path / "roadcover-test-foreign"  # no lock file: not a scratch folder's
    foreign.mkdir()
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert (killed_folder / "chunk").exists()  # SIGKILL ran no clean-up
        with scratch_folder("roadcover-test-", tmp_path) as mine:
            assert (mine / SCRATCH_LOCK).is_file()
            assert not killed_folder.exists()
            assert (alive_folder / "chunk").exists()
            assert foreign.is_dir()
        assert not mine.exists()
    finally:
        alive.kill()
        alive.wait()
