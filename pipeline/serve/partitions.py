"""A release's segment partitions, each read when a query first needs it.

Opening a release reads only the few columns of every segment that coverage needs (where each
covered stretch lies, and when it was seen). The full rows (ids, counts, buckets, geometry) of
a partition are read when a ``segments`` query's area first meets the partition's bounding box,
then kept, up to ``cache_size`` partitions, each with its own STRtree.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.contracts import FEED_SEGMENTS
from pipeline.io import read_table
from pipeline.serve.lines import LineIndex

TEXT_COLUMNS = ("segment_id", "highway", "contributors_bucket", "freshness_bucket", "h3_parent")
KEY_COLUMNS = [
    "osm_from_node",
    "osm_to_node",
    "edge_key",
    "from_m",
    "to_m",
    "first_seen",
    "last_seen",
]
COLUMNS = [*(f.name for f in FEED_SEGMENTS.schema if f.name != "geometry"), "h3_parent"]


@dataclass(frozen=True)
class PartitionFile:
    """One GeoParquet file of a release's segments and the H3 cell it holds."""

    path: Path
    h3_parent: str


@dataclass(frozen=True)
class LoadedPartition:
    """The full rows of one partition, sorted by ``segment_id``, with their STRtree."""

    frame: gpd.GeoDataFrame
    index: LineIndex
    last_ms: np.ndarray
    highway: np.ndarray


def read_segment_keys(files: list[PartitionFile]) -> pd.DataFrame:
    """Read the columns coverage needs of every segment, with its partition's position."""
    frames = [
        read_table(f.path, FEED_SEGMENTS, columns=KEY_COLUMNS).assign(partition=i)
        for i, f in enumerate(files)
    ]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in [*KEY_COLUMNS, "partition"]})
    return pd.concat(frames, ignore_index=True)


class SegmentPartitions:
    """The segment partitions of one release, found by bounding box and read on first use.

    Parameters
    ----------
    files
        The partitions' files.
    boxes
        One ``(xmin, ymin, xmax, ymax)`` per file that holds all its segments.
    cache_size
        Most partitions kept read at once (least recently used dropped first).
    """

    def __init__(self, files: list[PartitionFile], boxes: np.ndarray, cache_size: int = 16) -> None:
        order = sorted(range(len(files)), key=lambda i: files[i].h3_parent)
        self.files = [files[i] for i in order]
        boxes = np.asarray(boxes, dtype="float64").reshape(-1, 4)[order]
        self._tree = shapely.STRtree(shapely.box(*boxes.T) if len(boxes) else [])
        self._cache: OrderedDict[int, LoadedPartition] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def meeting(self, area: BaseGeometry) -> list[int]:
        """Return the positions (in ``h3_parent`` order) of partitions whose box meets ``area``."""
        return sorted(int(i) for i in self._tree.query(area, predicate="intersects"))

    def load(self, position: int) -> LoadedPartition:
        """Return a partition's rows, reading them on first use (one reader at a time)."""
        with self._lock:
            if position in self._cache:
                self._cache.move_to_end(position)
                return self._cache[position]
            loaded = _read_partition(self.files[position])
            self._cache[position] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return loaded

    def empty(self) -> gpd.GeoDataFrame:
        """Return a ``feed_segments`` frame with ``h3_parent`` and no rows."""
        columns = {
            f.name: pd.Series(dtype=f.type.to_pandas_dtype())
            for f in FEED_SEGMENTS.schema
            if f.name != "geometry"
        }
        frame = pd.DataFrame({**columns, "h3_parent": pd.Series(dtype=object)})
        return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs="EPSG:4326"))


def _read_partition(file: PartitionFile) -> LoadedPartition:
    frame = read_table(file.path, FEED_SEGMENTS).assign(h3_parent=file.h3_parent)
    frame = frame[[*COLUMNS, "geometry"]].sort_values("segment_id", ignore_index=True)
    for name in TEXT_COLUMNS:
        frame[name] = frame[name].astype(object)  # numpy takes rows faster than Arrow
    frame = gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")
    last = pd.to_datetime(frame["last_seen"], utc=True).dt.as_unit("ms").astype("int64")
    return LoadedPartition(
        frame=frame,
        index=LineIndex(frame.geometry.to_numpy()),
        last_ms=last.to_numpy(),
        highway=frame["highway"].to_numpy(dtype=object),
    )
