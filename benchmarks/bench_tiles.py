"""Benchmark vector-tile building: tippecanoe against a pure-Python encoder, same features.

Usage: ``python benchmarks/bench_tiles.py [COVERAGE_DIR] [--runs N] [--min-zoom Z] [--max-zoom Z]``
(default: the demo's coverage, results/demo/helsinki/coverage, made by ``make demo``).

Engines:

``tippecanoe``
    :func:`pipeline.export.tiles.write_coverage_tiles` end to end (read the coverage folder,
    write GeoJSONSeq, run tippecanoe, PMTiles out).
``python``
    The same features (``cell_features`` / ``covered_segments`` / ``cell_zoom_ranges``), tiled
    in Python: per zoom, each feature goes to the tiles its bounding box touches, is clipped to
    the tile plus tippecanoe's default buffer (5/256), simplified to one tile unit (extent
    4096), encoded with ``mapbox-vector-tile``, gzipped, and written with the ``pmtiles``
    package's writer. No tiny-polygon reduction, no dropping.

Prints the median seconds of N runs, features per second (features in / seconds; a feature
shown at several zooms counts once), tiles and archive bytes, as a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import numpy as np
import shapely
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import write

from pipeline.export.inputs import (
    as_of_of,
    read_cells,
    read_edge_coverage,
    read_summary,
)
from pipeline.export.tiles import (
    COARSEST_CELL_RESOLUTION,
    SEGMENTS_MIN_ZOOM,
    cell_features,
    cell_zoom_ranges,
    covered_segments,
    find_tool,
    tool_version,
    write_coverage_tiles,
)

DEFAULT_COVERAGE = Path(__file__).parents[1] / "results" / "demo" / "helsinki" / "coverage"
HALF_WORLD_M = math.pi * 6_378_137.0
EXTENT = 4096
BUFFER = 5 / 256


def python_tiles(coverage: Path, out: Path, min_zoom: int, max_zoom: int) -> dict[str, Any]:
    """Build the same layers as write_coverage_tiles with mapbox-vector-tile + pmtiles."""
    cells = read_cells(coverage)
    as_of = as_of_of(read_summary(coverage))
    finest = int(cells["resolution"].max())
    coarsest = max(COARSEST_CELL_RESOLUTION, int(cells["resolution"].min()))
    ranges = cell_zoom_ranges(min_zoom, max_zoom, finest, coarsest)
    shown = cells[cells["resolution"].isin(list(ranges))].sort_values(["resolution", "cell"])
    segments = covered_segments(read_edge_coverage(coverage), as_of)
    layers = []
    cell_props = cell_features(shown).to_dict(orient="records")
    layers.append(
        (
            "cells",
            [_clean(p) for p in cell_props],
            shown.geometry.to_crs(3857).to_numpy(),
            np.array([ranges[int(r)][0] for r in shown["resolution"]]),
            np.array([ranges[int(r)][1] for r in shown["resolution"]]),
        )
    )
    if len(segments):
        first = max(SEGMENTS_MIN_ZOOM, min_zoom)
        layers.append(
            (
                "segments",
                [_clean(p) for p in segments.drop(columns="geometry").to_dict(orient="records")],
                segments.geometry.to_crs(3857).to_numpy(),
                np.full(len(segments), first),
                np.full(len(segments), max_zoom),
            )
        )
    tiles: dict[int, bytes] = {}
    for zoom in range(min_zoom, max_zoom + 1):
        size = 2 * HALF_WORLD_M / 2**zoom
        members: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for name, _props, geoms, zmin, zmax in layers:
            active = np.flatnonzero((zmin <= zoom) & (zoom <= zmax))
            if not len(active):
                continue
            bounds = shapely.bounds(geoms[active])
            x0 = np.floor((bounds[:, 0] + HALF_WORLD_M) / size - BUFFER).astype(int)
            x1 = np.floor((bounds[:, 2] + HALF_WORLD_M) / size + BUFFER).astype(int)
            y0 = np.floor((HALF_WORLD_M - bounds[:, 3]) / size - BUFFER).astype(int)
            y1 = np.floor((HALF_WORLD_M - bounds[:, 1]) / size + BUFFER).astype(int)
            pairs: dict[tuple[int, int], list[int]] = {}
            for index, a, b, c, d in zip(active, x0, x1, y0, y1, strict=True):
                for x in range(max(a, 0), min(b, 2**zoom - 1) + 1):
                    for y in range(max(c, 0), min(d, 2**zoom - 1) + 1):
                        pairs.setdefault((x, y), []).append(int(index))
            for key, indices in pairs.items():
                members.setdefault(key, {})[name] = np.array(indices)
        for (x, y), per_layer in members.items():
            west = -HALF_WORLD_M + x * size
            north = HALF_WORLD_M - y * size
            box = (west, north - size, west + size, north)
            pad = BUFFER * size
            encoded = []
            for name, props, geoms, _zmin, _zmax in layers:
                if name not in per_layer:
                    continue
                indices = per_layer[name]
                clipped = shapely.clip_by_rect(
                    geoms[indices], box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad
                )
                clipped = shapely.simplify(clipped, size / EXTENT)
                features = [
                    {"geometry": geom, "properties": props[i]}
                    for geom, i in zip(clipped, indices, strict=True)
                    if not geom.is_empty
                ]
                if features:
                    encoded.append({"name": name, "features": features})
            if encoded:
                data = mapbox_vector_tile.encode(
                    encoded, default_options={"quantize_bounds": box, "extents": EXTENT}
                )
                tiles[zxy_to_tileid(zoom, x, y)] = gzip.compress(data, mtime=0)
    west, south, east, north = shown.total_bounds
    with write(str(out)) as writer:
        for tile_id in sorted(tiles):
            writer.write_tile(tile_id, tiles[tile_id])
        writer.finalize(
            {
                "tile_type": TileType.MVT,
                "tile_compression": Compression.GZIP,
                "min_zoom": min_zoom,
                "max_zoom": max_zoom,
                "min_lon_e7": int(west * 1e7),
                "min_lat_e7": int(south * 1e7),
                "max_lon_e7": int(east * 1e7),
                "max_lat_e7": int(north * 1e7),
                "center_zoom": max_zoom,
                "center_lon_e7": int((west + east) / 2 * 1e7),
                "center_lat_e7": int((south + north) / 2 * 1e7),
            },
            {"name": "roadcover coverage (python engine)"},
        )
    return {"tiles": len(tiles), "features": sum(len(layer[1]) for layer in layers)}


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in record.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("coverage", nargs="?", type=Path, default=DEFAULT_COVERAGE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-zoom", type=int, default=0)
    parser.add_argument("--max-zoom", type=int, default=14)
    args = parser.parse_args()

    rows = []
    prepare = []
    for _ in range(args.runs):
        started = time.perf_counter()
        cells = read_cells(args.coverage)
        segments = covered_segments(
            read_edge_coverage(args.coverage), as_of_of(read_summary(args.coverage))
        )
        prepare.append(time.perf_counter() - started)
    n_in = len(cells) + len(segments)
    with tempfile.TemporaryDirectory() as folder:
        for engine in ("tippecanoe", "python"):
            seconds, out = [], Path(folder) / f"{engine}.pmtiles"
            for _ in range(args.runs):
                started = time.perf_counter()
                if engine == "tippecanoe":
                    report = write_coverage_tiles(args.coverage, out, args.min_zoom, args.max_zoom)
                    features = sum(layer["features"] for layer in report["layers"].values())
                    tiles = report["tiles"]
                else:
                    built = python_tiles(args.coverage, out, args.min_zoom, args.max_zoom)
                    features, tiles = built["features"], built["tiles"]
                seconds.append(time.perf_counter() - started)
            median = statistics.median(seconds)
            rows.append((engine, median, features, features / median, tiles, out.stat().st_size))

    print(
        f"\nCoverage {args.coverage}, zooms {args.min_zoom}-{args.max_zoom}, median of "
        f"{args.runs} runs; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {tool_version(find_tool('tippecanoe'))}\n"
    )
    print("| engine | median s | features | features/s | tiles | bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    median = statistics.median(prepare)
    print(f"| (read inputs, cut intervals: in both) | {median:.3f} | {n_in} | | | |")
    for engine, median, features, rate, tiles, size in rows:
        print(f"| {engine} | {median:.3f} | {features} | {rate:,.0f} | {tiles} | {size:,} |")


if __name__ == "__main__":
    main()
