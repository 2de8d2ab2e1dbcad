"""Deltas between two feed releases, and applying a delta to the release it was made against.

A delta table holds every row whose key was added, changed (any column differs, geometry
compared as WKB) or removed, with ``change_type`` and the row's ``h3_parent``. Added and
changed rows carry the new values, removed rows the previous ones. Applying the delta to the
previous release (drop every key in the delta, then add the added and changed rows) gives
the new release exactly.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.contracts import (
    FEED_CELLS,
    FEED_CELLS_DELTA,
    FEED_SEGMENTS,
    FEED_SEGMENTS_DELTA,
    Contract,
)
from pipeline.errors import InputDataError
from pipeline.export.feeds.writers import PARTITION_COLUMN, read_partitioned
from pipeline.io import read_table

ADDED, CHANGED, REMOVED = "added", "changed", "removed"
CHANGE_TYPES = (ADDED, CHANGED, REMOVED)
TABLES: dict[str, tuple[Contract, Contract]] = {
    "segments": (FEED_SEGMENTS, FEED_SEGMENTS_DELTA),
    "cells": (FEED_CELLS, FEED_CELLS_DELTA),
}


def read_release(release_dir: str | Path) -> dict[str, gpd.GeoDataFrame]:
    """Read the GeoParquet tables of a release, each with its ``h3_parent`` column.

    Returns
    -------
    dict
        ``{"segments": ..., "cells": ...}``, rows sorted by partition and key.
    """
    root = Path(release_dir)
    if not (root / "manifest.json").is_file():
        raise InputDataError(
            f"{root}: not a feed release (no manifest.json); pass a folder written by "
            "`roadcover export feed`"
        )
    return {name: read_partitioned(root, name, contract) for name, (contract, _) in TABLES.items()}


def table_delta(
    previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame, key: str
) -> gpd.GeoDataFrame:
    """Return the rows of ``current`` added or changed since ``previous``, and those removed.

    Both tables have the same columns, ``h3_parent`` included. The result has a
    ``change_type`` column and is sorted by ``h3_parent`` and ``key``.
    """
    before = previous.set_index(key)
    after = current.set_index(key)
    added = after.index.difference(before.index)
    removed = before.index.difference(after.index)
    common = after.index.intersection(before.index)
    differs = _rows_differ(before.loc[common], after.loc[common])
    changed = common[differs]
    parts = [
        after.loc[added].assign(change_type=ADDED),
        after.loc[changed].assign(change_type=CHANGED),
        before.loc[removed].assign(change_type=REMOVED),
    ]
    delta = pd.concat(parts).reset_index()
    delta = gpd.GeoDataFrame(delta, geometry="geometry", crs="EPSG:4326")
    return delta.sort_values([PARTITION_COLUMN, key], ignore_index=True)


def apply_delta(
    previous_release_dir: str | Path, delta_dir: str | Path
) -> dict[str, gpd.GeoDataFrame]:
    """Apply a release's ``delta/`` to the release it was made against.

    Parameters
    ----------
    previous_release_dir
        The previous release folder.
    delta_dir
        The ``delta`` folder of the new release.

    Returns
    -------
    dict
        ``{"segments": ..., "cells": ...}`` equal to :func:`read_release` of the new release.
    """
    previous = read_release(previous_release_dir)
    result = {}
    for name, (contract, delta_contract) in TABLES.items():
        key = contract.key[0]
        delta = read_table(Path(delta_dir) / f"{name}.parquet", delta_contract)
        kept = previous[name][~previous[name][key].isin(delta[key])]
        upserts = delta[delta["change_type"] != REMOVED].drop(columns=["change_type"])
        merged = pd.concat([kept, upserts[kept.columns]], ignore_index=True)
        merged = gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")
        result[name] = merged.sort_values([PARTITION_COLUMN, key], ignore_index=True)
    return result


def _rows_differ(before: pd.DataFrame, after: pd.DataFrame) -> np.ndarray:
    differs = np.zeros(len(after), dtype=bool)
    for name in after.columns:
        old, new = before[name], after[name]
        if name == "geometry":
            a = shapely.to_wkb(np.asarray(old.to_numpy()))
            b = shapely.to_wkb(np.asarray(new.to_numpy()))
            differs |= a != b
            continue
        same = (old.to_numpy() == new.to_numpy()) | (old.isna().to_numpy() & new.isna().to_numpy())
        differs |= ~np.asarray(same, dtype=bool)
    return differs
