"""The memory of a whole process tree: a stage, its Dask workers, the programs it starts.

Snakemake's ``benchmark:`` records measure a rule's own process tree, so they miss the workers
of the Dask cluster that ``roadcover run`` shares between stages (they are children of
``roadcover run``, not of the stage). :class:`TreeMemorySampler` samples, every
``interval_s``, the resident memory of a process, all its descendants and the processes of
that shared cluster (found through :data:`CLUSTER_OWNER_ENV`), and keeps the peak of their sum.

For every process it reads RSS and, where Linux provides them (``/proc/PID/smaps_rollup``),
PSS (shared pages divided among the processes sharing them: sums of PSS do not count a shared
library twice) and USS (pages of that process alone). A sum of RSS over a tree counts shared
pages once per process, so it is an upper bound; PSS sums are the tree's real footprint.

When :data:`RECORDS_ENV` names a folder (``roadcover run`` sets it to
``OUTPUT_DIR/benchmarks/_process_tree``), every stage command writes such a record there, one
JSON file per command line (:func:`record_path`), and ``roadcover run`` writes ``run.json``
for the whole run; the HTML report shows them.

psutil is imported where processes are sampled, not with this module: every command reads
:data:`RECORDS_ENV` from here, and a ``roadcover snap`` that records nothing would pay psutil's
import (about 0.01 s of CPU) for a name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)

RECORDS_ENV = "ROADCOVER_PROCESS_RECORDS"
CLUSTER_OWNER_ENV = "ROADCOVER_CLUSTER_OWNER_PID"
"""The process id of ``roadcover run`` while it runs the shared Dask cluster."""
RUN_RECORD = "run.json"
MIB = 1024 * 1024
DEFAULT_INTERVAL_S = 0.2


@dataclasses.dataclass
class TreeMemory:
    """Peaks of a process tree's memory over a sampled interval, in MiB.

    Attributes
    ----------
    peak_rss_mb
        Highest sum of the resident set sizes of the tree's processes at one sample.
    peak_pss_mb, peak_uss_mb
        Highest sums of proportional and unique set sizes (None where the system has none).
    own_peak_rss_mb
        Highest RSS of the root process alone (what Snakemake's ``max_rss`` sees of it).
    others_peak_rss_mb
        Highest RSS sum of every process but the root: workers, their nannies, tools.
    peak_processes
        Most processes seen in one sample.
    shared_cluster
        Whether the processes of ``roadcover run``'s shared Dask cluster were included.
    samples, wall_s, interval_s
        Number of samples, seconds sampled, seconds between samples.
    """

    peak_rss_mb: float = 0.0
    peak_pss_mb: float | None = None
    peak_uss_mb: float | None = None
    own_peak_rss_mb: float = 0.0
    others_peak_rss_mb: float = 0.0
    peak_processes: int = 0
    shared_cluster: bool = False
    samples: int = 0
    wall_s: float = 0.0
    interval_s: float = DEFAULT_INTERVAL_S

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict (MiB rounded to 0.1)."""
        values = dataclasses.asdict(self)
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()}


class TreeMemorySampler:
    """Sample a process tree's memory in a background thread; use as a context manager.

    Parameters
    ----------
    pid
        The root process (default: this one); its descendants are found at every sample, so
        workers started later are counted.
    interval_s
        Seconds between samples. A peak shorter than this can be missed.
    include_shared_cluster
        Also count the processes of ``roadcover run``'s shared Dask cluster when
        :data:`CLUSTER_OWNER_ENV` names it (a stage run by ``roadcover run``).
    """

    def __init__(
        self,
        pid: int | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        include_shared_cluster: bool = True,
    ) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.memory = TreeMemory(interval_s=interval_s)
        self._owner = _cluster_owner() if include_shared_cluster else None
        self.memory.shared_cluster = self._owner is not None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self._started = 0.0

    def __enter__(self) -> TreeMemorySampler:
        self._started = time.perf_counter()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def snapshot(self) -> TreeMemory:
        """Return a copy of the peaks so far."""
        with self._lock:
            return dataclasses.replace(self.memory)

    def _run(self) -> None:
        while not self._stop.wait(self.memory.interval_s):
            self.sample()

    def sample(self) -> None:
        """Measure the tree once and update the peaks."""
        processes = self._processes()
        rss = pss = uss = 0.0
        own = others = 0.0
        has_pss = True
        for process in processes:
            figures = _memory(process)
            if figures is None:  # ended between listing and reading
                continue
            rss += figures[0]
            if figures[1] is None or figures[2] is None:
                has_pss = False
            else:
                pss += figures[1]
                uss += figures[2]
            if process.pid == self.root.pid:
                own = figures[0]
            else:
                others += figures[0]
        with self._lock:
            memory = self.memory
            memory.samples += 1
            memory.wall_s = time.perf_counter() - self._started
            memory.peak_rss_mb = max(memory.peak_rss_mb, rss / MIB)
            memory.own_peak_rss_mb = max(memory.own_peak_rss_mb, own / MIB)
            memory.others_peak_rss_mb = max(memory.others_peak_rss_mb, others / MIB)
            memory.peak_processes = max(memory.peak_processes, len(processes))
            if has_pss:
                memory.peak_pss_mb = max(memory.peak_pss_mb or 0.0, pss / MIB)
                memory.peak_uss_mb = max(memory.peak_uss_mb or 0.0, uss / MIB)

    def _processes(self) -> list[psutil.Process]:
        """Return the root, its descendants and the shared cluster's processes, each once."""
        import psutil

        found = {self.root.pid: self.root}
        with contextlib.suppress(psutil.Error):
            found.update((p.pid, p) for p in self.root.children(recursive=True))
        if self._owner is not None:
            found.update((p.pid, p) for p in _cluster_processes(self._owner, self.root))
        return list(found.values())


def own_peak_rss_mb() -> float:
    """Return this process's peak RSS (its ``VmHWM``), in MiB.

    Not ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps that maximum across
    ``exec``, so a child started by fork and exec from a large process (a benchmark) counts
    its parent's RSS at the fork as its own.
    """
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


def _memory(process: psutil.Process) -> tuple[float, float | None, float | None] | None:
    """RSS, PSS and USS of a process in bytes (PSS/USS None where unavailable), or None."""
    import psutil

    try:
        full = process.memory_full_info()
    except psutil.AccessDenied:
        try:
            return float(process.memory_info().rss), None, None
        except psutil.Error:
            return None
    except psutil.Error:
        return None
    pss = getattr(full, "pss", None)
    uss = getattr(full, "uss", None)
    return (
        float(full.rss),
        None if pss is None else float(pss),
        None if uss is None else float(uss),
    )


def _cluster_owner() -> psutil.Process | None:
    """Return the ``roadcover run`` process named by :data:`CLUSTER_OWNER_ENV`, if it runs."""
    import psutil

    text = os.environ.get(CLUSTER_OWNER_ENV, "")
    if not text.isdigit():
        return None
    try:
        return psutil.Process(int(text))
    except psutil.Error:
        return None


def _cluster_processes(owner: psutil.Process, root: psutil.Process) -> list[psutil.Process]:
    """Return the shared cluster's processes: the owner's descendants off the root's line.

    The owner (``roadcover run``) has two kinds of children: Snakemake, whose subtree holds
    the jobs (the root among them, counted already; other jobs are not this stage's), and the
    cluster's nannies with their workers. The child that is an ancestor of the root is
    Snakemake; every other child's subtree is the cluster's.
    """
    import psutil

    try:
        line = {process.pid for process in root.parents()}
        children = owner.children()
    except psutil.Error:
        return []
    found: list[psutil.Process] = []
    for child in children:
        if child.pid in line or child.pid == root.pid:
            continue
        found.append(child)
        with contextlib.suppress(psutil.Error):
            found.extend(child.children(recursive=True))
    return found


def record_path(folder: Path, argv: Sequence[str]) -> Path:
    """Where the record of the command ``roadcover ARGV`` goes: one file per command line.

    The name is the subcommand's words and a digest of the whole command line, so running
    the same command again replaces its record and two commands never share one.
    """
    words = [word for word in argv[:2] if word.isidentifier()]
    digest = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:12]
    return folder / f"{'-'.join(words) or 'roadcover'}-{digest}.json"


def command_record(argv: Sequence[str], memory: TreeMemory, status: int) -> dict[str, Any]:
    """Return the JSON record of a command: its command line, exit status and memory."""
    return {
        "command": list(argv),
        "output": command_output(argv),
        "exit_status": status,
        "cwd": str(Path.cwd()),
        **memory.as_dict(),
    }


def command_output(argv: Sequence[str]) -> str | None:
    """Return what a stage command writes: its ``-o``/``--out`` value, else its last argument."""
    for i, word in enumerate(argv[:-1]):
        if word in ("-o", "--out"):
            return argv[i + 1]
    for word in argv:
        if word.startswith("--out="):
            return word.split("=", 1)[1]
    return argv[-1] if argv and not argv[-1].startswith("-") else None


@contextlib.contextmanager
def recording_run(
    path: Path, argv: Sequence[str], write_every_s: float = 2.0
) -> Iterator[TreeMemorySampler]:
    """Sample this process's whole tree while a workflow runs; keep its record at ``path``.

    The record is rewritten every ``write_every_s`` seconds (so the report, written by the
    run's last job, shows the run up to then) and once more when the block ends, with
    ``finished`` true.
    """

    def write(sampler: TreeMemorySampler, finished: bool) -> None:
        record = command_record(argv, sampler.snapshot(), 0)
        del record["exit_status"]
        write_record({**record, "output": None, "finished": finished}, path)

    with TreeMemorySampler(include_shared_cluster=False) as sampler:
        stop = threading.Event()

        def keep_writing() -> None:
            while not stop.wait(write_every_s):
                write(sampler, finished=False)

        writer = threading.Thread(target=keep_writing, name="run-record", daemon=True)
        writer.start()
        try:
            yield sampler
        finally:
            stop.set()
            writer.join()
    write(sampler, finished=True)


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write a record atomically; a record that cannot be written is a warning, not a failure."""
    from pipeline.io import write_json

    try:
        write_json(record, path)
    except OSError as exc:
        log.warning("process record not written: %s: %s", path, exc.strerror or exc)


def records_folder(output_dir: Path) -> Path:
    """Return the folder of the process records of a run writing into ``output_dir``."""
    return Path(os.environ.get(RECORDS_ENV) or output_dir / "benchmarks" / "_process_tree")


def read_command_records(folder: Path, under: Path) -> list[dict[str, Any]]:
    """Return the records in ``folder`` of the commands writing inside ``under``, by output.

    Each record gets ``label``: the subcommand and its output relative to ``under``. A file
    that is not a record (unreadable, not JSON, another shape) is skipped.
    """
    import json

    found = []
    under = under.resolve()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == RUN_RECORD:
            continue
        try:
            record = json.loads(path.read_text())
            output = (Path(record["cwd"]) / record["output"]).resolve()
            words = [word for word in record["command"][:2] if word.isidentifier()]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if output == under or under in output.parents:
            record["label"] = f"{' '.join(words)} → {output.relative_to(under)}"
            found.append(record)
    return sorted(found, key=lambda record: record["label"])


def read_run_record(folder: Path) -> dict[str, Any] | None:
    """Return the record of the whole ``roadcover run`` in ``folder``, if there is one."""
    import json

    try:
        record: dict[str, Any] = json.loads((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record
