"""Helpers of the workflow tests: ``roadcover run`` arguments, its environment, its output."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# the source checkout: its Snakefile (which includes the packaged one), configs/ and profiles
REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "ROADCOVER_PSEUDONYM_KEY"
TEST_KEY = "workflow-test-key-not-a-secret-0123"


def run_args(workdir: Path, config: Path, *extra: str, targets: tuple[str, ...] = ()) -> list[str]:
    """``roadcover run`` arguments: the repo's Snakefile, run in ``workdir``, up to ``targets``.

    Ingest and map matching get one thread, so they work in-process instead of starting a
    Dask LocalCluster: on a tiny fleet the cluster's start and stop cost more than the work
    (the Dask path is tested by the stages' own tests and by ``make demo``).
    """
    return [
        "run", "--config", str(config), "--cores", "2", "--directory", str(workdir), *targets,
        "--set-threads", "ingest_traces=1", "match_traces=1", *extra,
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    """The environment of a child ``roadcover``/``snakemake``: a pseudonym key, this env's PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, KEY_ENV: os.environ.get(KEY_ENV) or TEST_KEY, "PATH": path}


def job_counts(snakemake_output: str) -> dict[str, int]:
    """The "Job stats" table Snakemake prints before it runs jobs ({} when nothing ran)."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\n\s*\n", snakemake_output, re.S)
    if match is None:
        return {}
    rows = (line.split() for line in match.group(1).splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0] != "total"}


class Captured:
    """What was written to file descriptor 2, read back from its file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")


@contextlib.contextmanager
def capture_fd2() -> Iterator[Captured]:
    """Capture file descriptor 2 (Snakemake, a child process, logs there) and sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as handle:
        path = Path(handle.name)
        os.dup2(handle.fileno(), 2)
        # Python's own sys.stderr (replaced by pytest's capture) writes to fd 2 meanwhile too
        stream = open(2, "w", closefd=False, encoding="utf-8")  # noqa: SIM115
        try:
            with contextlib.redirect_stderr(stream):
                yield Captured(path)
        finally:
            stream.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
