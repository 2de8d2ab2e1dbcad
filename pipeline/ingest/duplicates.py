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
import pyarrow as pa

from pipeline.contracts import POINTS
from pipeline.geodesy import distances_m
from pipeline.ingest.clean import live_positions, reject_at
from pipeline.io import batch_of_part, read_arrow

SAME_POSITION_M = 1.0
EARLIER_BATCH_REASON = "duplicate_of_earlier_batch"
EARLIER_FILE_REASON = "duplicate"
KEY_COLUMNS = ["device_id", "observed_at", "lon", "lat"]
MS_PER_DAY = 86_400_000
TIME_BITS = 42  # epoch milliseconds below 2**42: until the year 2109
EPOCH = dt.date(1970, 1, 1)


def fix_keys(rows: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Return the fixes at ``positions``: ``device_id``, ``at_ms`` (epoch ms), lon, lat, row.

    ``row`` is the position in ``rows``.
    """
    chosen = rows.iloc[positions]
    return pd.DataFrame(
        {
            "device_id": chosen["device_id"].to_numpy(dtype=object),
            "at_ms": epoch_ms(chosen["observed_at"]),
            "lon": chosen["lon"].to_numpy(dtype="float64"),
            "lat": chosen["lat"].to_numpy(dtype="float64"),
            "row": positions,
        }
    )


def epoch_ms(times: pd.Series) -> np.ndarray:
    """Return milliseconds since 1970 of a UTC timestamp column, as int64."""
    return times.dt.as_unit("ms").astype("int64").to_numpy()


def copies(new: pd.DataFrame, known: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return the pairs (position in ``new``, position in ``known``) of copies of one fix.

    Both tables have ``device_id``, ``at_ms``, ``lon`` and ``lat``. Device and time are joined
    as one int64 (device code above :data:`TIME_BITS` bits of time), then the positions
    compared.
    """
    devices = np.concatenate(
        [new["device_id"].to_numpy(object), known["device_id"].to_numpy(object)]
    )
    codes = pd.factorize(devices)[0].astype("int64") << TIME_BITS
    new_keys = codes[: len(new)] | new["at_ms"].to_numpy()
    known_keys = codes[len(new) :] | known["at_ms"].to_numpy()
    pairs = pd.DataFrame({"key": new_keys, "new": np.arange(len(new))}).merge(
        pd.DataFrame({"key": known_keys, "known": np.arange(len(known))}), on="key"
    )
    i, j = pairs["new"].to_numpy(), pairs["known"].to_numpy()
    apart_m = distances_m(
        new["lon"].to_numpy()[i],
        new["lat"].to_numpy()[i],
        known["lon"].to_numpy()[j],
        known["lat"].to_numpy()[j],
    )
    close = apart_m <= SAME_POSITION_M
    return i[close], j[close]


def reject_fixes_of_earlier_batches(rows: pd.DataFrame, traces_dir: Path) -> None:
    """Reject the still-accepted rows of which the ``points`` dataset holds a copy."""
    live = live_positions(rows)
    if not len(live):
        return
    days = np.unique(epoch_ms(rows["observed_at"].iloc[live]) // MS_PER_DAY)
    files = partition_files(traces_dir, days)
    if not files:  # nothing earlier on those days: the common case of a first batch
        return
    new = fix_keys(rows, live)
    known = earlier_fixes(files, list(pd.unique(new["device_id"])))
    i, j = copies(new, known)
    if len(i):
        first = np.unique(i, return_index=True)[1]  # one copy per new fix is enough
        details = [f"same fix as one of batch {b}" for b in known["batch"].to_numpy()[j[first]]]
        reject_at(rows, new["row"].to_numpy()[i[first]], EARLIER_BATCH_REASON, details)


def earlier_fixes(files: list[Path], devices: list[str]) -> pd.DataFrame:
    """Return the fixes of ``devices`` in points ``files``.

    Columns ``device_id``, ``at_ms``, ``lon``, ``lat`` and ``batch`` (that wrote the fix).
    """
    tables, batches = [], []
    for path in files:
        table = read_arrow(path, POINTS, KEY_COLUMNS, filters=[("device_id", "in", devices)])
        tables.append(table.select(KEY_COLUMNS))
        batches.append(np.full(table.num_rows, batch_of_part(path), dtype=object))
    table = pa.concat_tables(tables)
    times = table.column("observed_at").cast(pa.timestamp("ms", "UTC")).cast(pa.int64())
    return pd.DataFrame(
        {
            "device_id": table.column("device_id").to_numpy(zero_copy_only=False),
            "at_ms": times.to_numpy(),
            "lon": table.column("lon").to_numpy(),
            "lat": table.column("lat").to_numpy(),
            "batch": np.concatenate(batches),
        }
    )


def partition_files(traces_dir: Path, days: np.ndarray) -> list[Path]:
    """Return the points files of the partitions of ``days`` (since 1970) and the days before."""
    wanted = sorted({int(day) - back for day in days for back in (0, 1)})
    files: list[Path] = []
    for day in wanted:
        date = EPOCH + dt.timedelta(days=day)
        files += sorted((traces_dir / "points" / f"date={date.isoformat()}").glob("h3=*/part-*"))
    return files


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
    names, uniques = pd.factorize(rows["source_file"].to_numpy()[live])
    files = np.array([file_order[name] for name in uniques], dtype="int64")[names]
    if earlier is None or earlier.empty:
        if not _a_device_in_two_files(rows["device_id"].to_numpy()[live], files):
            return  # the common case: nothing to compare
        earlier = valid_fixes(rows.iloc[:0])
    new = fix_keys(rows, live)
    known = pd.concat(
        [earlier.assign(file=-1), new.assign(file=files, detail=None)], ignore_index=True
    )
    i, j = copies(new, known)
    before = known["file"].to_numpy()[j] < files[i]
    i, j = i[before], j[before]
    if len(i):
        first = np.unique(i, return_index=True)[1]
        i, j = i[first], j[first]
        names = known["detail"].to_numpy(dtype=object)[j]
        here = pd.isna(names)  # a copy in ``rows``: named now, only the few that are copied
        names[here] = _row_names(rows, known["row"].to_numpy()[j[here]].astype("int64"))
        details = [f"same fix as {name}" for name in names]
        reject_at(rows, new["row"].to_numpy()[i], EARLIER_FILE_REASON, details)


def _a_device_in_two_files(devices: np.ndarray, files: np.ndarray) -> bool:
    """Whether a device has fixes in two files (integer codes compared, not strings)."""
    codes, uniques = pd.factorize(devices)
    pairs = np.unique(codes.astype("int64") * (int(files.max(initial=0)) + 1) + files)
    return len(pairs) > len(uniques)


def valid_fixes(rows: pd.DataFrame) -> pd.DataFrame:
    """Return the still-accepted rows' :func:`fix_keys` and a ``detail`` naming their rows."""
    if rows.empty:
        return pd.DataFrame(
            {
                "device_id": pd.Series(dtype=object),
                "at_ms": pd.Series(dtype="int64"),
                "lon": pd.Series(dtype="float64"),
                "lat": pd.Series(dtype="float64"),
                "row": pd.Series(dtype="int64"),
                "detail": pd.Series(dtype=object),
            }
        )
    live = live_positions(rows)
    return fix_keys(rows, live).assign(detail=_row_names(rows, live))


def _row_names(rows: pd.DataFrame, positions: np.ndarray) -> list[str]:
    files = rows["source_file"].to_numpy(dtype=object)[positions]
    numbers = rows["source_row"].to_numpy()[positions]
    return [f"{f} row {n}" for f, n in zip(files, numbers, strict=True)]
