"""Fixes counted once: copies of a fix already counted are rejected before trips are split.

Two fixes are copies of one fix when they have the same device pseudonym, the same time (to the
millisecond) and positions at most :data:`SAME_POSITION_M` (1 m) apart: what a re-upload, a
file with one more blank line or the same drive re-exported by another app gives. A new fix is
rejected when a copy of it is

* in the traces dataset already (an earlier batch): reason ``duplicate_of_earlier_batch``.
  Only the points partitions of the new fixes' dates (and the day before: a trip's partition is
  the date of its first fix) are read, only four columns, only the rows of the new fixes'
  devices;
* in an earlier file of the batch (files in sorted order) that read it as a valid fix (after
  the value checks): reason ``duplicate``, as for a repeated row of one file.

Both run before trips are split, so the copies never form trips of their own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contracts import POINTS
from pipeline.geodesy import distances_m
from pipeline.ingest.clean import epoch_seconds, live_positions, reject_at
from pipeline.io import read_arrow

SAME_POSITION_M = 1.0
EARLIER_BATCH_REASON = "duplicate_of_earlier_batch"
EARLIER_FILE_REASON = "duplicate"
KEY_COLUMNS = ["device_id", "observed_at", "lon", "lat"]
MATCH_ON = ["device_id", "at_ms"]


def fix_keys(rows: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Return the fixes at ``positions``: ``device_id``, ``at_ms`` (epoch ms), lon, lat, row.

    ``row`` is the position in ``rows``.
    """
    return _keys(rows.iloc[positions]).assign(row=positions)


def _keys(fixes: pd.DataFrame) -> pd.DataFrame:
    """Return ``device_id``, ``at_ms`` (``observed_at`` in epoch ms), ``lon`` and ``lat``."""
    return pd.DataFrame(
        {
            "device_id": fixes["device_id"].to_numpy(dtype=object),
            "at_ms": np.round(epoch_seconds(fixes["observed_at"]) * 1000).astype("int64"),
            "lon": fixes["lon"].to_numpy(dtype="float64"),
            "lat": fixes["lat"].to_numpy(dtype="float64"),
        }
    )


def _no_keys() -> pd.DataFrame:
    """Return :func:`_keys` of no fixes."""
    return pd.DataFrame(
        {
            "device_id": pd.Series(dtype=object),
            "at_ms": pd.Series(dtype="int64"),
            "lon": pd.Series(dtype="float64"),
            "lat": pd.Series(dtype="float64"),
        }
    )


def copies(new: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """Pairs of a new fix and a known copy of it (same device and time, within 1 m).

    Both tables have :func:`fix_keys` columns but ``row`` (``known`` may have more); the
    result has one row per pair, the known fix's columns suffixed ``_known`` where both have
    them.
    """
    pairs = new.merge(known, on=MATCH_ON, suffixes=("", "_known"))
    close = distances_m(
        pairs["lon"].to_numpy(),
        pairs["lat"].to_numpy(),
        pairs["lon_known"].to_numpy(),
        pairs["lat_known"].to_numpy(),
    )
    return pairs[close <= SAME_POSITION_M]


def reject_fixes_of_earlier_batches(rows: pd.DataFrame, traces_dir: Path) -> None:
    """Reject the still-accepted rows of which the ``points`` dataset holds a copy."""
    new = fix_keys(rows, live_positions(rows))
    if new.empty:
        return
    days = pd.to_datetime(new["at_ms"], unit="ms").dt.date.unique()
    known = earlier_fixes(traces_dir, days, sorted(set(new["device_id"])))
    found = copies(new, known).drop_duplicates("row")
    if len(found):
        details = ("same fix as one of batch " + found["batch"]).tolist()
        reject_at(rows, found["row"].to_numpy(), EARLIER_BATCH_REASON, details)


def earlier_fixes(traces_dir: Path, days: np.ndarray, devices: list[str]) -> pd.DataFrame:
    """Return the fixes of ``devices`` in the points partitions of ``days`` and days before.

    Returns :func:`fix_keys` columns (without ``row``) and ``batch``, the batch that wrote them.
    """
    parts = [_no_keys().assign(batch=pd.Series(dtype=object))]
    for path in partition_files(traces_dir, days):
        table = read_arrow(path, POINTS, KEY_COLUMNS, filters=[("device_id", "in", devices)])
        if table.num_rows:
            parts.append(_keys(table.to_pandas()).assign(batch=batch_of_part(path)))
    return pd.concat(parts, ignore_index=True)


def partition_files(traces_dir: Path, days: np.ndarray) -> list[Path]:
    """Return the points files of the partitions of ``days`` and of the day before each."""
    wanted = {day - offset for day in days for offset in (dt.timedelta(0), dt.timedelta(days=1))}
    files: list[Path] = []
    for day in sorted(wanted):
        folder = traces_dir / "points" / f"date={day.isoformat()}"
        files += sorted(folder.glob("h3=*/part-*.parquet"))
    return files


def batch_of_part(path: Path) -> str:
    """Return the batch id in a part file's name (``part-<batch>[-<chunk>].parquet``)."""
    return path.name.removeprefix("part-").split(".")[0].split("-")[0]


def reject_fixes_of_earlier_files(
    rows: pd.DataFrame, file_order: dict[str, int], earlier: pd.DataFrame | None = None
) -> None:
    """Reject still-accepted rows of which an earlier file of the batch read a valid copy.

    Parameters
    ----------
    rows
        The rows of some files, after the value checks; ``source_file`` names each row's file.
    file_order
        Each file's position in the batch (``source_file`` -> int).
    earlier
        Valid fixes of earlier files of the batch that are not in ``rows``
        (:func:`valid_fixes`); they come before every file of ``rows``.
    """
    live = live_positions(rows)
    new = fix_keys(rows, live)
    new["order"] = pd.Series(rows["source_file"].to_numpy()[live]).map(file_order).to_numpy()
    known = new.rename(columns={"row": "row_known", "order": "order_known"}).assign(detail=None)
    if earlier is not None and len(earlier):
        known = pd.concat([earlier.assign(order_known=-1, row_known=-1), known], ignore_index=True)
    if known["device_id"].nunique() == len(known.drop_duplicates(["device_id", "order_known"])):
        return  # no device in two files: the common case, nothing to compare
    found = copies(new, known)
    found = found[found["order_known"] < found["order"]].drop_duplicates("row")
    if len(found):
        here = found["row_known"].to_numpy() >= 0
        names = np.array(found["detail"], dtype=object)
        names[here] = _row_names(rows, found["row_known"].to_numpy()[here])
        details = [f"same fix as {name}" for name in names]
        reject_at(rows, found["row"].to_numpy(), EARLIER_FILE_REASON, details)


def valid_fixes(rows: pd.DataFrame) -> pd.DataFrame:
    """Return the still-accepted rows' :func:`fix_keys` and a ``detail`` naming their rows."""
    if rows.empty:
        return _no_keys().assign(detail=pd.Series(dtype=object))
    live = live_positions(rows)
    return fix_keys(rows, live).drop(columns="row").assign(detail=_row_names(rows, live))


def _row_names(rows: pd.DataFrame, positions: np.ndarray) -> list[str]:
    files = rows["source_file"].to_numpy(dtype=object)[positions]
    numbers = rows["source_row"].to_numpy()[positions]
    return [f"{f} row {n}" for f, n in zip(files, numbers, strict=True)]
