"""A partition's ``edge_contributors`` kept as sorted runs: an update reads and writes its batch's.

A partition's rows by edge and contributor (passes and driven millimetres summed, first and
last observation: :func:`~pipeline.coverage.edges.merge_edge_contributors`) grow with the
history. They are kept in the partition's generation folder as runs: Arrow IPC files of rows
sorted by ``edge_id`` and ``contributor_id``, one record batch each, listed oldest first with
their row counts in :data:`RUNS_FILE`. The partition's table is the merge of its runs' rows
(an (edge, contributor) pair may have a row in several runs). An update of the partition:

- reads, of each run, the rows of its batch's edges alone (:func:`rows_of_edges`): the file
  is memory-mapped and its ``edge_id`` column bisected, so only the pages of these rows and
  of the bisection are read;
- keeps the runs before it, hard-linked into its own generation folder (never decoded nor
  written again), and writes its batch's rows as a new run (:func:`write_runs`), merged first
  with the newest runs while the one before is less than :data:`SIZE_RATIO` times as long:
  each run is then at least twice the next, a partition has at most log2 of its rows runs,
  and a row is merged again about that many times over its life, so an update's work is, over
  many updates, in proportion to its batch.

Beside them, :data:`TOTALS_FILE` holds :func:`~pipeline.coverage.tables.pair_totals` of the
merged rows (a row per driven edge of the partition, none per contributor): an update counts
the totals of its batch's edges from their merged rows and keeps the other edges'.

A partition written before this layout has its rows in one Parquet file (:data:`LEGACY_FILE`),
read whole and written as a run the first time an update rewrites the partition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.coverage.edges import merge_edge_contributors
from pipeline.io import atomic_path, link_or_copy, write_frame, write_json

RUNS_FILE = "edge_contributors.json"
"""The runs of a partition's generation, oldest first, with their row counts."""
RUN_PREFIX = "edge_contributors-"
"""A run's file name: this, the generation that wrote it, and ``.arrow``."""
TOTALS_FILE = "edge_totals.parquet"
"""The partition's edges' totals (:func:`~pipeline.coverage.tables.pair_totals`)."""
LEGACY_FILE = "edge_contributors.parquet"
"""A partition's rows in the layout before runs: one file, read and written whole."""
SIZE_RATIO = 2
"""A run is merged into the new one while it is less than this many times as long."""
RUN_SCHEMA = pa.schema(
    [
        ("edge_id", pa.int64()),
        ("contributor_id", pa.large_string()),
        ("passes", pa.int64()),
        ("driven_mm", pa.int64()),
        ("first_ms", pa.int64()),
        ("last_ms", pa.int64()),
    ]
)
RUN_COLUMNS = RUN_SCHEMA.names


@dataclass(frozen=True)
class Run:
    """A run of a partition: its file's name (in the generation folder) and its rows."""

    name: str
    rows: int


def has_runs(folder: Path) -> bool:
    """Whether a partition's generation folder keeps its rows as runs (not :data:`LEGACY_FILE`)."""
    return (folder / RUNS_FILE).is_file()


def list_runs(folder: Path) -> list[Run]:
    """Return the runs of a partition's generation folder, oldest first.

    Raises
    ------
    FileNotFoundError
        If the folder has no :data:`RUNS_FILE`, or a run it lists is missing.
    """
    listed = json.loads((folder / RUNS_FILE).read_text(encoding="utf-8"))["runs"]
    runs = [Run(str(run["name"]), int(run["rows"])) for run in listed]
    for run in runs:
        if not (folder / run.name).is_file():
            raise FileNotFoundError(folder / run.name)
    return runs


def rows_of_edges(folder: Path, runs: list[Run], edge_ids: np.ndarray) -> pd.DataFrame:
    """Return the runs' rows of edges ``edge_ids`` (not merged), run after run.

    Each run is memory-mapped and its ``edge_id`` column bisected for each edge: the rows of
    other edges are not read.
    """
    wanted = np.unique(np.asarray(edge_ids, dtype="int64"))
    tables = [_mapped(folder / run.name) for run in runs if run.rows]
    found = [table.take(_rows_at(table, wanted)) for table in tables]
    return _frame(pa.concat_tables(found) if found else RUN_SCHEMA.empty_table())


def read_rows(folder: Path) -> pd.DataFrame:
    """Return a partition generation's rows by edge and contributor, merged (of either layout)."""
    if not has_runs(folder):
        return pq.read_table(folder / LEGACY_FILE).to_pandas()
    tables = [_mapped(folder / run.name) for run in list_runs(folder) if run.rows]
    if not tables:
        return _frame(RUN_SCHEMA.empty_table())
    return merge_edge_contributors(_frame(pa.concat_tables(tables)))


def write_runs(
    folder: Path, before: Path | None, runs: list[Run], rows: pd.DataFrame, generation: str
) -> list[Run]:
    """Write a partition's runs into generation folder ``folder``: ``runs`` and ``rows``'.

    Parameters
    ----------
    folder
        The new generation's folder.
    before
        The folder of ``runs`` (the generation before), or None when there are none.
    runs
        The runs before, oldest first: the newest are merged with ``rows`` while shorter than
        :data:`SIZE_RATIO` times the rows merged so far; the others are hard-linked.
    rows
        The new rows by edge and contributor (any order; pairs may have rows in ``runs``).
    generation
        The new generation (the new run's name).

    Returns
    -------
    list of Run
        The runs written, as listed in the folder's :data:`RUNS_FILE`.
    """
    if runs and before is None:
        raise ValueError("write_runs: runs before need the folder they are in (before)")
    kept = list(runs)
    pending = rows[RUN_COLUMNS]
    while kept and len(pending) and kept[-1].rows < SIZE_RATIO * len(pending):
        older = _frame(_mapped(Path(str(before)) / kept.pop().name))
        pending = merge_edge_contributors(pd.concat([older, pending], ignore_index=True))
    folder.mkdir(parents=True, exist_ok=True)
    for run in kept:
        link_or_copy(Path(str(before)) / run.name, folder / run.name)
    if len(pending):
        kept.append(Run(f"{RUN_PREFIX}{generation}.arrow", len(pending)))
        _write_run(pending, folder / kept[-1].name)
    write_json({"runs": [{"name": run.name, "rows": run.rows} for run in kept]}, folder / RUNS_FILE)
    return kept


def write_totals(totals: pd.DataFrame, path: Path) -> None:
    """Write a partition's edge totals (indexed by ``edge_id``) as :data:`TOTALS_FILE`."""
    write_frame(totals.reset_index(), path)


def read_totals(path: Path) -> pd.DataFrame:
    """Read a partition's edge totals, indexed by ``edge_id``."""
    return pq.read_table(path).to_pandas().set_index("edge_id")


def _rows_at(table: pa.Table, wanted: np.ndarray) -> pa.Array:
    """Return the positions of the rows of edges ``wanted`` (sorted) in a run (sorted by edge)."""
    ids = table.column("edge_id").chunk(0).to_numpy(zero_copy_only=True)
    start = np.searchsorted(ids, wanted, "left")
    stop = np.searchsorted(ids, wanted, "right")
    counts = stop - start
    offsets = np.repeat(start - (np.cumsum(counts) - counts), counts)
    return pa.array(offsets + np.arange(int(counts.sum())), pa.int64())


def _mapped(path: Path) -> pa.Table:
    """Return a run's rows, memory-mapped (one chunk a column; nothing read until used)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _frame(table: pa.Table) -> pd.DataFrame:
    """Return a run's rows as pandas types them (as a Parquet file of them is read)."""
    return table.to_pandas()


def _write_run(rows: pd.DataFrame, path: Path) -> None:
    """Write rows as a run: sorted by edge and contributor, one record batch, atomically."""
    table = pa.Table.from_pandas(rows[RUN_COLUMNS], schema=RUN_SCHEMA, preserve_index=False)
    table = table.sort_by([("edge_id", "ascending"), ("contributor_id", "ascending")])
    with atomic_path(path) as temp, pa.ipc.new_file(str(temp), RUN_SCHEMA) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=max(len(table), 1))
