"""Exact coverage and segment answers from one feed release of one region.

:class:`RegionRelease` opens a release (``roadcover export feed``) with the roads folder it was
built from, once, and keeps in memory what every query needs, indexed by shapely STRtrees:

* the region's roads, each physical road once: its canonical edge (the lowest ``edge_id`` of
  its ``road_id``), its length rounded to the millimetre, as ``summary.json`` counts
  ``road_km``, for the road km of an area;
* its covered road pieces: the feed's segments (covered intervals of *directed* edges) mapped
  onto their road's canonical edge and merged, both directions into one (``road_pieces`` of the
  coverage stage), for unique covered km and freshness;
* the feed's segment partitions with their bounding boxes, for :meth:`RegionRelease.segments`,
  which reads a partition's full rows when an area first meets it
  (:mod:`pipeline.serve.partitions`).

Lengths follow :mod:`pipeline.serve.lines`: a line inside the area counts its stored length, a
line crossing the boundary its length times the share of its haversine length inside. With no
area the answer is the whole region, equal to the coverage stage's ``summary.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.contracts import FEED_SEGMENTS
from pipeline.coverage.edges import canonical_edges, road_pieces
from pipeline.coverage.intervals import to_mm
from pipeline.coverage.tables import FRESHNESS_DAYS, MS_PER_DAY
from pipeline.errors import InputDataError
from pipeline.export.feeds.tables import cut_lines
from pipeline.roads import read_edges
from pipeline.roads.identity import refuse_other_roads, roads_identity
from pipeline.serve.area import RequestError, parse_area
from pipeline.serve.lines import LineIndex, private_prepared
from pipeline.serve.partitions import (
    LoadedPartition,
    PartitionFile,
    SegmentPartitions,
    read_segment_keys,
)

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
FRESH_BUCKETS = tuple(f"{days}d" for days in FRESHNESS_DAYS)
# OSM's highway values for roads and paths (wiki: Key:highway); a region's own values are added
OSM_HIGHWAYS = frozenset(
    {
        "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential",
        "motorway_link", "trunk_link", "primary_link", "secondary_link", "tertiary_link",
        "living_street", "service", "pedestrian", "track", "bus_guideway", "escape", "raceway",
        "road", "busway", "footway", "bridleway", "steps", "corridor", "path", "cycleway",
        "via_ferrata", "sidewalk", "crossing", "traffic_island",
    }
)  # fmt: skip

__all__ = ["RegionRelease", "RequestError", "parse_area"]


class RegionRelease:
    """One release of one region, opened once and shared by the requests that use it.

    Build it with :meth:`open`. It is read-only after that, so threads may query it at once.

    Attributes
    ----------
    release_id
        The release's id (its folder name, as in ``manifest.json``).
    as_of
        The coverage's as-of time (ISO 8601, UTC) that freshness is measured from.
    manifest
        The release's ``manifest.json``.
    highways
        The OSM ``highway`` classes of the region's roads, sorted.
    segment_rows
        Rows of the release's segments table.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        roads: gpd.GeoDataFrame,
        pieces: pd.DataFrame,
        partitions: SegmentPartitions,
        segment_rows: int,
    ) -> None:
        self.manifest = manifest
        self.release_id = str(manifest["release_id"])
        self.as_of = str(manifest["as_of"])
        self.as_of_ms = int(pd.Timestamp(self.as_of).tz_convert("UTC").value // 1_000_000)
        self.highways = tuple(sorted(set(roads["highway"])))
        self._codes = {name: code for code, name in enumerate(self.highways)}
        self._bucket_limits_ms = np.array([days * MS_PER_DAY for days in FRESHNESS_DAYS])
        self._roads_index = LineIndex(roads.geometry.to_numpy())
        self._road_mm = to_mm(roads["length_m"]).astype("float64")  # whole mm: exact sums
        self._road_highway = self._code(roads["highway"])
        self._pieces_index = LineIndex(pieces["geometry"].to_numpy())
        self._piece_mm = (pieces["to_mm"] - pieces["from_mm"]).to_numpy(dtype="float64")
        self._piece_highway = self._code(pieces["highway"])
        self._piece_last_ms = pieces["last_ms"].to_numpy(dtype="int64")
        self._partitions = partitions
        self.segment_rows = segment_rows
        self._whole_region: dict[str, Any] | None = None
        self._whole_region = self.coverage(None)  # the most asked answer, computed once

    @classmethod
    def open(cls, release_dir: Path, roads_dir: Path) -> RegionRelease:
        """Open a feed release with the roads folder its coverage was computed on.

        Parameters
        ----------
        release_dir
            A release folder written by ``roadcover export feed`` (with ``manifest.json``).
        roads_dir
            The roads folder of the region (``roadcover roads build``).

        Raises
        ------
        InputDataError
            If the release has no readable manifest, the roads folder was built from another
            OSM extract than the release, or a segment lies on no edge of the roads folder.
        """
        release_dir, roads_dir = Path(release_dir), Path(roads_dir)
        manifest = _read_manifest(release_dir)
        _check_same_roads(manifest, release_dir, roads_dir)
        edges = read_edges(roads_dir)
        files = _segment_files(release_dir, manifest)
        keys = read_segment_keys(files)
        edge_rows = _edge_rows(edges, keys, files, roads_dir)
        canonical = canonical_edges(edges)
        pieces = _covered_road_pieces(edges, keys, edge_rows, canonical)
        partitions = SegmentPartitions(files, _partition_boxes(edges, keys, edge_rows, len(files)))
        is_road = canonical["canonical_id"].to_numpy() == edges["edge_id"].to_numpy()
        roads = edges.loc[is_road, ["highway", "length_m", "geometry"]]
        release = cls(manifest, roads.reset_index(drop=True), pieces, partitions, len(keys))
        log.info(
            "%s: release %s opened: %d roads, %d covered pieces, %d segments in %d partitions",
            release_dir, release.release_id, len(roads), len(pieces), len(keys), len(files),
        )  # fmt: skip
        return release

    def coverage(
        self,
        area: BaseGeometry | None,
        *,
        since: date | None = None,
        highways: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Return road km, unique covered km and fresh km in an area, overall and by class.

        Parameters
        ----------
        area
            A (Multi)Polygon in lon/lat (see :func:`parse_area`), or None for the whole region.
        since
            Count only coverage last seen on or after this day (00:00 UTC).
        highways
            Count only roads of these OSM ``highway`` classes.

        Returns
        -------
        dict
            ``release_id``, ``as_of``, ``road_km`` (each physical road once), ``covered_km``
            (road length driven at least once in either direction), ``coverage_pct`` (at most
            100), ``fresh_km`` (``{"7d": km, "28d": ..., "90d": ..., "365d": ...}``: covered km
            last seen within so many days of ``as_of``) and ``by_highway`` (the same figures
            per class present in the area).

        Raises
        ------
        RequestError
            For an unknown highway class or a ``since`` that is not a date.
        """
        if area is None and since is None and highways is None and self._whole_region:
            return copy.deepcopy(self._whole_region)
        road_mask = self._class_mask(self._road_highway, highways)
        piece_mask = self._class_mask(self._piece_highway, highways)
        since_ms = _since_ms(since)
        if since_ms is not None:
            piece_mask &= self._piece_last_ms >= since_ms
        if area is None:
            road_rows, piece_rows = np.flatnonzero(road_mask), np.flatnonzero(piece_mask)
            road_mm = self._road_mm[road_rows]
            piece_mm = self._piece_mm[piece_rows]
        else:
            area = private_prepared(area)
            roads = self._roads_index.clip(area, road_mask)
            pieces = self._pieces_index.clip(area, piece_mask)
            road_rows, piece_rows = roads.rows, pieces.rows
            road_mm = self._road_mm[road_rows] * roads.share
            piece_mm = self._piece_mm[piece_rows] * pieces.share
        totals = self._totals(road_rows, road_mm, piece_rows, piece_mm)
        return {"release_id": self.release_id, "as_of": self.as_of, **totals}

    def segments(
        self,
        area: BaseGeometry,
        *,
        since: date | None = None,
        highways: Sequence[str] | None = None,
    ) -> gpd.GeoDataFrame:
        """Return the feed's covered segments in an area, cut to it.

        A segment inside the area is returned as in the feed. A segment crossing the boundary
        is returned once per stretch of it inside the area, with the feed's ``segment_id`` and
        columns, its geometry cut to the area, and ``from_m``/``to_m``/``length_m`` narrowed to
        the stretch (positions in proportion to haversine length along the segment, to the
        millimetre). So ``segment_id`` is unique only among uncut segments.

        Parameters
        ----------
        area
            A (Multi)Polygon in lon/lat (see :func:`parse_area`).
        since
            Only segments last seen on or after this day (00:00 UTC).
        highways
            Only segments of these OSM ``highway`` classes.

        Returns
        -------
        geopandas.GeoDataFrame
            The ``feed_segments`` columns and ``h3_parent``, sorted by ``h3_parent``,
            ``segment_id`` and ``from_m``.
        """
        wanted = None if highways is None else self._highway_names(highways)
        since_ms = _since_ms(since)
        area = private_prepared(area)
        frames = [
            _cut_to_area(self._partitions.load(position), area, wanted, since_ms)
            for position in self._partitions.meeting(area)
        ]
        frames = [frame for frame in frames if len(frame)]
        if not frames:
            return self._partitions.empty()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _totals(
        self,
        road_rows: np.ndarray,
        road_mm: np.ndarray,
        piece_rows: np.ndarray,
        piece_mm: np.ndarray,
    ) -> dict[str, Any]:
        """Sum lengths of the given roads and covered pieces (mm) overall and by class.

        Each piece falls in one freshness bucket (within 7, 28, 90, 365 days of as-of, or
        older); one bincount over (class, bucket) gives every figure, cumulated over buckets.
        Whole millimetres sum exactly in any order, so the whole region equals summary.json.
        """
        size, buckets = len(self.highways), len(FRESHNESS_DAYS) + 1
        road_by = np.bincount(self._road_highway[road_rows], weights=road_mm, minlength=size)
        age_ms = self.as_of_ms - self._piece_last_ms[piece_rows]
        bucket = np.searchsorted(self._bucket_limits_ms, age_ms, side="left")
        cells = self._piece_highway[piece_rows] * buckets + bucket
        by_bucket = np.bincount(cells, weights=piece_mm, minlength=size * buckets).reshape(
            size, buckets
        )
        fresh_by = np.cumsum(by_bucket, axis=1)[:, :-1]  # km seen within each limit
        covered_by = by_bucket.sum(axis=1)
        overall = _figures(
            float(road_mm.sum()) / 1e6,
            float(covered_by.sum()) / 1e6,
            dict(zip(FRESH_BUCKETS, (fresh_by.sum(axis=0) / 1e6).tolist(), strict=True)),
        )
        overall["by_highway"] = {
            name: _figures(
                float(road_by[code]) / 1e6,
                float(covered_by[code]) / 1e6,
                dict(zip(FRESH_BUCKETS, (fresh_by[code] / 1e6).tolist(), strict=True)),
            )
            for code, name in enumerate(self.highways)
            if road_by[code] > 0 or covered_by[code] > 0
        }
        return overall

    def _class_mask(self, codes: np.ndarray, highways: Sequence[str] | None) -> np.ndarray:
        if highways is None:
            return np.ones(len(codes), dtype=bool)
        wanted = self._highway_codes(highways)
        return np.isin(codes, wanted)

    def _highway_names(self, highways: Sequence[str]) -> list[str]:
        self._highway_codes(highways)  # refuses what is not a list of known classes
        return list(highways)

    def _highway_codes(self, highways: Sequence[str]) -> np.ndarray:
        if isinstance(highways, str | bytes) or not isinstance(highways, Sequence):
            raise RequestError(
                "invalid_highway",
                f"highway must be a list of OSM highway classes, not {highways!r:.60}",
                "highway",
            )
        for i, name in enumerate(highways):
            if not isinstance(name, str) or name not in OSM_HIGHWAYS | set(self.highways):
                raise RequestError(
                    "invalid_highway",
                    f"{name!r:.60} is not an OSM highway class; use one of "
                    f"{', '.join(self.highways)} (the classes of this region's roads)",
                    f"highway[{i}]",
                )
        return np.array([self._codes[n] for n in highways if n in self._codes], dtype="int64")

    def _code(self, names: pd.Series) -> np.ndarray:
        return np.asarray(pd.Index(self.highways).get_indexer(names), dtype="int64")


def _cut_to_area(
    partition: LoadedPartition,
    area: BaseGeometry,
    highways: list[str] | None,
    since_ms: int | None,
) -> gpd.GeoDataFrame:
    """Return a partition's segments meeting ``area``, those crossing its boundary cut to it."""
    mask = np.ones(len(partition.frame), dtype=bool)
    if highways is not None:
        mask &= np.isin(partition.highway, highways)
    if since_ms is not None:
        mask &= partition.last_ms >= since_ms
    inside, crossing = partition.index.split(area, mask)
    parts = partition.index.crossing_parts(area, crossing)
    segments = partition.frame
    from_m = segments["from_m"].to_numpy(dtype="float64")
    length_m = segments["length_m"].to_numpy(dtype="float64")
    begin = np.round(from_m[parts.rows] + parts.start * length_m[parts.rows], 3)
    end = np.round(from_m[parts.rows] + parts.end * length_m[parts.rows], 3)
    kept = end - begin >= 0.001
    rows = np.concatenate([inside, parts.rows[kept]])
    starts = np.concatenate([from_m[inside], begin[kept]])
    ends = np.concatenate([segments["to_m"].to_numpy()[inside], end[kept]])
    geometry = np.concatenate([partition.index.lines[inside], parts.parts[kept]])
    order = np.lexsort((starts, rows))  # the frame is sorted by segment_id
    frame = segments.iloc[rows[order]].reset_index(drop=True)
    lengths = np.concatenate([length_m[inside], np.round(end - begin, 3)[kept]])
    frame["from_m"], frame["to_m"], frame["length_m"] = (
        starts[order], ends[order], lengths[order],
    )  # fmt: skip
    frame["geometry"] = geometry[order]
    return frame


def _figures(road_km: float, covered_km: float, fresh_km: dict[str, float]) -> dict[str, Any]:
    pct = min(100.0, 100.0 * covered_km / road_km) if road_km > 0 else 0.0
    return {
        "road_km": road_km,
        "covered_km": covered_km,
        "coverage_pct": pct,
        "fresh_km": fresh_km,
    }


def _since_ms(since: date | None) -> int | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if not isinstance(since, date):
        raise RequestError(
            "invalid_since", f"since must be a date (YYYY-MM-DD), not {since!r:.60}", "since"
        )
    return int(datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp()) * 1000


def _read_manifest(release_dir: Path) -> dict[str, Any]:
    path = release_dir / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputDataError(
            f"{path}: not found; pass a release folder written by `roadcover export feed`"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(
            f"{path}: not a JSON manifest ({error}); export the release again"
        ) from None
    if not isinstance(manifest, dict) or not {"release_id", "as_of", "files"} <= set(manifest):
        raise InputDataError(f"{path}: lacks release_id, as_of or files; export the release again")
    try:
        if pd.isna(pd.Timestamp(manifest["as_of"]).tz_convert("UTC")):
            raise ValueError("no time")
    except (TypeError, ValueError):
        raise InputDataError(
            f"{path}: as_of {manifest['as_of']!r:.60} is not a time with a zone; "
            "export the release again"
        ) from None
    return manifest


def _check_same_roads(manifest: dict[str, Any], release_dir: Path, roads_dir: Path) -> None:
    """Refuse a roads folder of another extract, or other roads of the same extract.

    The release's manifest records the identity of the roads its coverage was computed on
    (``source.roads``, :func:`pipeline.roads.identity.roads_identity`; a release exported
    before it was recorded is checked by the extract's sha256 alone).
    """
    source = manifest.get("source") or {}
    refuse_other_roads(
        source.get("roads"), roads_identity(roads_dir), roads_dir,
        output=f"{release_dir}: the release was made on",
        fix="pass the roads folder the release's coverage used",
        extract_sha256=source.get("osm_extract_sha256"),
    )  # fmt: skip


def _segment_files(release_dir: Path, manifest: dict[str, Any]) -> list[PartitionFile]:
    """Return the manifest's GeoParquet segment partitions, each with its path and h3_parent."""
    files = manifest["files"]
    entries = [e for e in files if isinstance(e, dict)] if isinstance(files, list) else []
    if not isinstance(files, list) or len(entries) < len(files):
        raise InputDataError(
            f"{release_dir / MANIFEST_FILE}: 'files' is not a list of objects; "
            "export the release again"
        )
    wanted = [
        e
        for e in entries
        if (e.get("table"), e.get("format")) == (FEED_SEGMENTS.name, "geoparquet")
    ]
    for entry in wanted:
        if not isinstance(entry.get("path"), str) or not isinstance(entry.get("h3_parent"), str):
            raise InputDataError(
                f"{release_dir / MANIFEST_FILE}: a segments file entry lacks its path or "
                f"h3_parent ({entry!r:.120}); export the release again"
            )
    return [PartitionFile(_inside(release_dir, e["path"]), e["h3_parent"]) for e in wanted]


def _inside(release_dir: Path, relative: str) -> Path:
    """Return ``release_dir / relative``, refusing a path that leads out of the release."""
    path = (release_dir / relative).resolve()
    if not path.is_relative_to(release_dir.resolve()):
        raise InputDataError(
            f"{release_dir / MANIFEST_FILE}: lists {relative!r}, outside the release; "
            "export the release again"
        )
    return path


def _edge_rows(
    edges: gpd.GeoDataFrame, keys: pd.DataFrame, files: list[PartitionFile], roads_dir: Path
) -> np.ndarray:
    """Return the row in ``edges`` of each segment's directed edge (u, v, key)."""
    lookup = pd.MultiIndex.from_arrays([edges["u"], edges["v"], edges["key"]])
    found = lookup.get_indexer(
        pd.MultiIndex.from_arrays([keys["osm_from_node"], keys["osm_to_node"], keys["edge_key"]])
    )
    if (found < 0).any():
        bad = keys.iloc[int(np.flatnonzero(found < 0)[0])]
        raise InputDataError(
            f"{files[int(bad['partition'])].path}: a segment lies on edge "
            f"{bad['osm_from_node']}->{bad['osm_to_node']} (key {bad['edge_key']}), which is not "
            f"in {roads_dir}; pass the roads folder the release was built from"
        )
    return np.asarray(found, dtype="int64")


def _covered_road_pieces(
    edges: gpd.GeoDataFrame, keys: pd.DataFrame, edge_rows: np.ndarray, canonical: pd.DataFrame
) -> pd.DataFrame:
    """Merge the segments of both directions of each road into unique covered pieces.

    Returns the pieces keyed by canonical edge id (``key``, ``from_mm``, ``to_mm``,
    ``first_ms``, ``last_ms``) with the road's ``highway`` and the piece's ``geometry``.
    """
    directed = pd.DataFrame(
        {
            "key": edges["edge_id"].to_numpy()[edge_rows],
            "from_mm": np.rint(keys["from_m"].to_numpy(dtype="float64") * 1000.0).astype("int64"),
            "to_mm": np.rint(keys["to_m"].to_numpy(dtype="float64") * 1000.0).astype("int64"),
            "first_ms": _epoch_ms(keys["first_seen"]),
            "last_ms": _epoch_ms(keys["last_seen"]),
        }
    )
    pieces = road_pieces(directed, canonical)
    owner = edges.set_index("edge_id").loc[pieces["key"].to_numpy()]
    length_mm = np.rint(owner["length_m"].to_numpy(dtype="float64") * 1000.0)
    length_mm = np.where(length_mm > 0, length_mm, 1.0)
    start = np.clip(pieces["from_mm"].to_numpy() / length_mm, 0.0, 1.0)
    end = np.clip(pieces["to_mm"].to_numpy() / length_mm, 0.0, 1.0)
    geometry = cut_lines(np.asarray(owner.geometry.to_numpy()), start, end)
    return pieces.assign(highway=owner["highway"].to_numpy(), geometry=geometry)


def _partition_boxes(
    edges: gpd.GeoDataFrame, keys: pd.DataFrame, edge_rows: np.ndarray, count: int
) -> np.ndarray:
    """Bounding box of each partition: of the edges its segments lie on (which hold them)."""
    bounds = shapely.bounds(np.asarray(edges.geometry.to_numpy())[edge_rows])
    boxes = np.zeros((count, 4))
    frame = pd.DataFrame(bounds, columns=["x0", "y0", "x1", "y1"]).assign(p=keys["partition"])
    grouped = frame.groupby("p").agg(
        x0=("x0", "min"), y0=("y0", "min"), x1=("x1", "max"), y1=("y1", "max")
    )
    boxes[grouped.index.to_numpy(dtype="int64")] = grouped.to_numpy()
    return boxes


def _epoch_ms(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, utc=True).dt.as_unit("ms").astype("int64").to_numpy()
