"""The feed export: a coverage folder -> one immutable, self-describing release for data buyers.

``RELEASES_DIR/<release_id>/`` holds::

    segments/h3_parent=<hex>/part-0.parquet   covered road pieces (contract feed_segments)
    cells/h3_parent=<hex>/part-0.parquet      H3 cell statistics (contract feed_cells)
    (part-0.csv, part-0.geojsonl beside them when those formats are asked for)
    delta/segments.parquet, delta/cells.parquet   changes since --previous (if given)
    stac/collection.json, stac/<item>/<item>.json  STAC Collection and one Item per partition
    manifest.json                              every file: path, size, sha256, rows; written last

The release is built in a hidden temporary folder beside it and renamed into place at the end,
so a half-written release never appears under its id; an existing release is never
overwritten, and none is ever deleted. One export at a time writes into a releases folder: it
holds the folder's lock (:func:`pipeline.locking.folder_lock`) for the whole export, and the
next holder removes the temporary folders of killed exports. The same inputs give
byte-identical files: nothing depends on the wall clock unless ``created_at`` is passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry import shape

import pipeline
from pipeline.contracts import (
    FEED_CELLS,
    FEED_CELLS_DELTA,
    FEED_SEGMENTS,
    FEED_SEGMENTS_DELTA,
)
from pipeline.coverage.cell_reader import read_cell_table
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.errors import ConfigError, InputDataError
from pipeline.export.feeds.delta import CHANGE_TYPES, read_release, table_delta
from pipeline.export.feeds.stac import STAC_DIR, write_stac
from pipeline.export.feeds.tables import (
    CONTRIBUTOR_BUCKETS,
    FRESHNESS_BUCKETS,
    ID_SCHEME,
    OLDER_BUCKET,
    clip_pieces,
    covered_pieces,
    feed_cells,
    feed_segments,
)
from pipeline.export.feeds.writers import (
    FORMATS,
    PARTITION_COLUMN,
    count_rows,
    file_record,
    read_partitioned,
    write_formats,
    write_partitioned,
)
from pipeline.export.inputs import edge_frame
from pipeline.io import arrow_to_geodataframe, write_json
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads import read_roads_meta
from pipeline.roads.identity import refuse_other_roads, roads_identity
from pipeline.roads.store import EDGES_FILE, META_FILE

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
DELTA_DIR = "delta"
ATTRIBUTION = "© OpenStreetMap contributors, ODbL 1.0"
DATA_LICENSE = "ODbL 1.0 (derived database)"
DEFAULT_PARTITION_RES = 4
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ROADS_INPUTS = (META_FILE, EDGES_FILE)
"""What a feed reads of the roads folder (its identity and extract): all a stage-in downloads."""
CONFIDENCE_PROXY = (
    "1 - (1 - min_match_confidence) ** passes: coverage counts only trips whose match "
    "confidence reached min_match_confidence, and keeps no per-segment confidence"
)


def export_feed(
    coverage_dir: str | Path,
    roads_dir: str | Path,
    releases_dir: str | Path,
    release_id: str | None = None,
    previous: str | Path | None = None,
    aoi: str | Path | shapely.Geometry | None = None,
    formats: Iterable[str] = ("geoparquet",),
    partition_res: int = DEFAULT_PARTITION_RES,
    created_at: str | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Export a coverage folder as a B2B feed release, holding the releases folder's lock.

    The parameters, result and errors are :func:`write_release`'s; ``lock_timeout_s`` is how
    long to wait for another writer of ``releases_dir`` (config ``lock_timeout_s``).

    Raises
    ------
    LockTimeoutError
        If another process held the releases folder's lock for longer than ``lock_timeout_s``.
    """
    with folder_lock(Path(releases_dir), lock_timeout_s):
        return write_release(
            coverage_dir, roads_dir, releases_dir, release_id, previous, aoi, formats,
            partition_res, created_at,
        )  # fmt: skip


def write_release(
    coverage_dir: str | Path,
    roads_dir: str | Path,
    releases_dir: str | Path,
    release_id: str | None = None,
    previous: str | Path | None = None,
    aoi: str | Path | shapely.Geometry | None = None,
    formats: Iterable[str] = ("geoparquet",),
    partition_res: int = DEFAULT_PARTITION_RES,
    created_at: str | None = None,
) -> dict[str, Any]:
    """Export a coverage folder as a B2B feed release; the caller holds the folder's lock.

    Temporary folders of killed exports (``.<release_id>.*.tmp``) are removed first: under the
    lock no other export is under way.

    Parameters
    ----------
    coverage_dir
        Output of ``roadcover coverage`` (its edge and cell coverage, ``summary.json``).
    roads_dir
        The roads folder the coverage was computed on (for the OSM extract's name and sha256).
    releases_dir
        Where releases live; the release is written to ``releases_dir/release_id``.
    release_id
        Default: the coverage as-of time, e.g. ``20261201T000000Z``.
    previous
        A previous release folder: a ``delta/`` against it is written.
    aoi
        A GeoJSON file (Geometry, Feature or FeatureCollection, lon/lat) or a shapely geometry:
        segments are cut to it along their edges, and only cells whose centre is inside it kept.
    formats
        Any of ``geoparquet``, ``csv``, ``geojsonseq``; GeoParquet is always written.
    partition_res
        H3 resolution of the partition cells (``h3_parent``).
    created_at
        An explicit creation time to record in the manifest; none is recorded by default, so
        that the same inputs give the same bytes.

    Returns
    -------
    dict
        The manifest, as written to ``manifest.json``.

    Raises
    ------
    ConfigError
        For an unknown format, a bad release id or partition resolution, or an existing
        release.
    InputDataError
        If the coverage and roads folders do not belong together, or an input is missing.
    """
    coverage_dir, roads_dir, releases_dir = Path(coverage_dir), Path(roads_dir), Path(releases_dir)
    summary = _read_json(coverage_dir / "summary.json", "roadcover coverage")
    roads_meta = read_roads_meta(roads_dir)
    roads = roads_identity(roads_dir)
    refuse_other_roads(
        summary.get("roads"), roads, roads_dir, output=f"{coverage_dir} holds coverage of",
        fix="pass the roads folder the coverage was computed on",
        extract_sha256=summary.get("roads_sha256"),
    )  # fmt: skip
    as_of = pd.Timestamp(summary["as_of"]).tz_convert("UTC")
    as_of_ms = int(as_of.value // 1_000_000)
    release_id = release_id or default_release_id(coverage_dir)
    fmts = _check_formats(formats)
    criteria = summary.get("criteria", {})
    _check_settings(release_id, partition_res, criteria)
    release_dir = releases_dir / release_id
    if release_dir.exists():
        raise ConfigError(
            f"{release_dir}: release {release_id!r} already exists; releases are immutable, "
            "choose another --release-id"
        )
    if previous is not None and not (Path(previous) / MANIFEST_FILE).is_file():
        raise InputDataError(
            f"{previous}: not a feed release (no {MANIFEST_FILE}); pass a folder written by "
            "`roadcover export feed` as --previous"
        )
    aoi_geometry, aoi_sha256 = _load_aoi(aoi)

    edge_table = read_edge_table(coverage_dir)
    edges = edge_frame(edge_table)
    pieces = covered_pieces(edges, edge_table["intervals"])
    if aoi_geometry is not None:
        pieces = clip_pieces(pieces, edges, aoi_geometry)
    min_confidence = float(criteria.get("min_match_confidence", 0.0))
    segments = feed_segments(edges, pieces, as_of_ms, min_confidence, partition_res)
    cells = feed_cells(_read_cells(coverage_dir), as_of_ms, partition_res, aoi_geometry)
    log.info("feed: %d segments, %d cells", len(segments), len(cells))

    settings = {
        "coverage_criteria": criteria,
        "partition": {"column": PARTITION_COLUMN, "h3_resolution": partition_res},
        "formats": list(fmts),
        "aoi_sha256": aoi_sha256,
        "segment_id_scheme": ID_SCHEME,
        "freshness_buckets": [label for _, label in FRESHNESS_BUCKETS] + [OLDER_BUCKET],
        "contributors_buckets": list(CONTRIBUTOR_BUCKETS),
        "cell_resolutions": f">= {partition_res}",
    }
    releases_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_release_folders(releases_dir)
    temp = Path(tempfile.mkdtemp(prefix=f".{release_id}.", suffix=".tmp", dir=releases_dir))
    try:
        manifest = _write_release(
            temp,
            release_id,
            segments,
            cells,
            fmts,
            previous=Path(previous) if previous is not None else None,
            as_of=as_of,
            header={
                "manifest_version": MANIFEST_VERSION,
                "release_id": release_id,
                "as_of": as_of.isoformat(),
                "created_at": created_at,
                "pipeline_version": pipeline.__version__,
                "source": {
                    "osm_extract": roads_meta.get("source_file"),
                    "osm_extract_sha256": roads_meta.get("source_sha256"),
                    "roads": roads,
                    "coverage_batches": summary.get("batches", []),
                },
                "config": settings,
                "config_sha256": hashlib.sha256(_canonical_json(settings)).hexdigest(),
                "license": {
                    "data": DATA_LICENSE,
                    "spdx": "ODbL-1.0",
                    "attribution": ATTRIBUTION,
                    "url": "https://opendatacommons.org/licenses/odbl/1-0/",
                },
                "partitioning": {
                    "style": "hive",
                    "column": PARTITION_COLUMN,
                    "h3_resolution": partition_res,
                    "segments": "H3 cell of the segment's midpoint",
                    "cells": "H3 parent of the cell",
                },
                "segment_id": ID_SCHEME,
                "match_confidence": CONFIDENCE_PROXY,
                "aoi": (
                    None
                    if aoi_geometry is None
                    else {
                        "sha256": aoi_sha256,
                        "segments": "cut to the AOI along their edges",
                        "cells": "centre inside the AOI",
                    }
                ),
            },
        )
        os.chmod(temp, 0o755)
        os.rename(temp, release_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    log.info("feed: release %s written to %s", release_id, release_dir)
    return manifest


def remove_dead_release_folders(releases_dir: Path) -> list[Path]:
    """Remove the temporary release folders of killed exports; call it holding the lock.

    Returns
    -------
    list of Path
        The folders removed. Symbolic links are neither followed nor removed.
    """
    dead = [p for p in sorted(releases_dir.glob(".*.tmp")) if p.is_dir() and not p.is_symlink()]
    for folder in dead:
        shutil.rmtree(folder)
        log.info("feed: removed %s, left by a killed export", folder)
    return dead


def default_release_id(coverage_dir: str | Path) -> str:
    """Return the default release id of a coverage folder: its as-of time (20261201T000000Z)."""
    summary = _read_json(Path(coverage_dir) / "summary.json", "roadcover coverage")
    return str(pd.Timestamp(summary["as_of"]).tz_convert("UTC").strftime("%Y%m%dT%H%M%SZ"))


def verify_release(release_dir: str | Path) -> list[str]:
    """Check every file of a release against its manifest.

    Returns
    -------
    list of str
        One line per problem (missing file, wrong size or sha256, a data file whose row count
        is not the manifest's, file not in the manifest); empty if the release is intact.
    """
    root = Path(release_dir)
    manifest = _read_json(root / MANIFEST_FILE, "roadcover export feed")
    problems = []
    listed = set()
    for record in manifest["files"]:
        listed.add(record["path"])
        path = root / record["path"]
        if not path.is_file():
            problems.append(f"{record['path']}: missing")
            continue
        actual = file_record(root, path)
        fields = [field for field in ("size_bytes", "sha256") if actual[field] != record[field]]
        if not fields and record.get("rows") is not None:  # intact bytes: the rows can be read
            actual["rows"] = count_rows(path, record["format"])
            fields = ["rows"] if actual["rows"] != record["rows"] else []
        problems += [
            f"{record['path']}: {field} is {actual[field]}, manifest says {record[field]}"
            for field in fields
        ]
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative != MANIFEST_FILE and relative not in listed:
            problems.append(f"{relative}: not in the manifest")
    return problems


def _write_release(
    root: Path,
    release_id: str,
    segments: gpd.GeoDataFrame,
    cells: gpd.GeoDataFrame,
    formats: tuple[str, ...],
    previous: Path | None,
    as_of: pd.Timestamp,
    header: dict[str, Any],
) -> dict[str, Any]:
    data_files = write_partitioned(segments, FEED_SEGMENTS, root, "segments", formats)
    data_files += write_partitioned(cells, FEED_CELLS, root, "cells", formats)
    files = list(data_files)
    delta_counts = None
    previous_info = None
    if previous is not None:
        previous_tables = read_release(previous)
        previous_manifest = previous / MANIFEST_FILE
        previous_info = {
            "release_id": _read_json(previous_manifest, "roadcover export feed").get("release_id"),
            "manifest_sha256": file_record(previous, previous_manifest)["sha256"],
        }
        delta_counts = {}
        for name, contract, delta_contract in (
            ("segments", FEED_SEGMENTS, FEED_SEGMENTS_DELTA),
            ("cells", FEED_CELLS, FEED_CELLS_DELTA),
        ):
            current = read_partitioned(root, name, contract)
            delta = table_delta(previous_tables[name], current, contract.key[0])
            files += write_formats(
                delta, delta_contract, root, root / DELTA_DIR / name, ("geoparquet",)
            )
            counts = delta["change_type"].value_counts()
            delta_counts[name] = {kind: int(counts.get(kind, 0)) for kind in CHANGE_TYPES}
    bounds = {}
    for name, frame in (("segments", segments), ("cells", cells)):
        for parent, part in frame.groupby(PARTITION_COLUMN, sort=True):
            minx, miny, maxx, maxy = (float(b) for b in part.total_bounds)
            bounds[(name, str(parent))] = (minx, miny, maxx, maxy)
    first_seen = segments["first_seen"].min() if len(segments) else None
    stac_files = write_stac(
        root,
        release_id,
        data_files,
        bounds,
        as_of.to_pydatetime(),
        first_seen.to_pydatetime() if first_seen is not None else None,
        ATTRIBUTION,
    )
    files += [file_record(root, path, table=None, format="stac") for path in stac_files]
    manifest = {
        **header,
        "schema_versions": {
            c.name: c.version
            for c in (FEED_SEGMENTS, FEED_CELLS, FEED_SEGMENTS_DELTA, FEED_CELLS_DELTA)
        },
        "previous_release": previous_info,
        "delta": delta_counts,
        "tables": {
            "segments": {
                "rows": len(segments),
                "partitions": int(segments[PARTITION_COLUMN].nunique()),
            },
            "cells": {"rows": len(cells), "partitions": int(cells[PARTITION_COLUMN].nunique())},
        },
        "stac": f"{STAC_DIR}/collection.json",
        "files": sorted(files, key=lambda r: r["path"]),
    }
    write_json(manifest, root / MANIFEST_FILE)
    return json.loads(json.dumps(manifest, default=str))


def _read_cells(coverage_dir: Path) -> gpd.GeoDataFrame:
    return arrow_to_geodataframe(read_cell_table(coverage_dir))


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    asked = [f.strip().lower() for f in formats if f.strip()]
    unknown = sorted(set(asked) - set(FORMATS))
    if unknown:
        raise ConfigError(
            f"unknown feed format(s) {unknown}; choose from {sorted(FORMATS)} "
            "(e.g. --formats geoparquet,csv,geojsonseq)"
        )
    return tuple(f for f in FORMATS if f == "geoparquet" or f in asked)


def _check_settings(release_id: str, partition_res: int, criteria: dict[str, Any]) -> None:
    if not RELEASE_ID.match(release_id):
        raise ConfigError(
            f"release id {release_id!r} is not a safe folder name; use letters, digits, "
            "'.', '_' and '-' (e.g. 2026-12-01)"
        )
    finest = int(criteria.get("h3_resolution", 15))
    if not 0 <= partition_res <= finest:
        raise ConfigError(
            f"partition resolution {partition_res} must be between 0 and the coverage's H3 "
            f"resolution {finest}; e.g. 4 or 5"
        )


def _load_aoi(
    aoi: str | Path | shapely.Geometry | None,
) -> tuple[shapely.Geometry | None, str | None]:
    if aoi is None:
        return None, None
    if isinstance(aoi, shapely.Geometry):
        geometry = aoi
    else:
        data = _read_json(Path(aoi), "a GeoJSON AOI")
        if data.get("type") == "FeatureCollection":
            parts = [shape(f["geometry"]) for f in data.get("features", []) if f.get("geometry")]
        elif data.get("type") == "Feature":
            parts = [shape(data["geometry"])] if data.get("geometry") else []
        else:
            parts = [shape(data)]
        geometry = shapely.union_all(parts) if parts else shapely.Polygon()
    if geometry.is_empty or shapely.get_dimensions(geometry) != 2:
        raise InputDataError(f"AOI {aoi}: must be a non-empty (Multi)Polygon in lon/lat")
    geometry = shapely.make_valid(shapely.normalize(geometry))
    return geometry, hashlib.sha256(shapely.to_wkb(geometry, byte_order=1)).hexdigest()


def _read_json(path: Path, writer: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputDataError(f"{path}: not found; it is written by {writer}") from None
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{path}: not valid JSON ({exc})") from None
    return data


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
