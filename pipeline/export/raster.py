"""Raster coverage: Cloud-Optimized GeoTIFFs of coverage % and age, in Web Mercator.

The finest-resolution cells of the cell coverage are burnt into a float32 grid in EPSG:3857
whose pixels are the pixels of a Web Mercator zoom level (256-pixel tiles), so the raster
lines up with XYZ tiles. Pixels whose centre falls in no cell (no road there) are nodata
(:data:`NODATA`); so are ``age_days`` pixels of cells with roads that were never driven.

Each file is written with GDAL's COG driver (rasterio's bundled GDAL ≥ 3.1): internal
256 x 256 tiles, DEFLATE with the floating-point predictor, and overviews (nearest
resampling, so an overview pixel is a real cell value, never an average of percentages),
at least one level even for a small region.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from pipeline.export.inputs import read_cells, read_summary
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

NODATA = -9999.0
BLOCK_SIZE = 256
PIXELS_PER_HEX_EDGE = 4.0
"""The default zoom gives a hexagon edge at least this many pixels (about 8 across)."""
MAX_PIXELS = 400_000_000
"""Larger rasters are refused (the grid is built in memory); pass a coarser ``zoom``."""
HALF_WORLD_M = math.pi * 6_378_137.0
VALUES = ("coverage_pct", "age_days")
RASTER_SOURCE = "roadcover cell coverage (contract cell_coverage)"
"""The ``source`` tag of the rasters: what their pixels are read from."""


def pixel_size_m(zoom: int) -> float:
    """Return the Web Mercator pixel size of a zoom level of 256-pixel tiles, in metres."""
    return 2 * HALF_WORLD_M / (BLOCK_SIZE * 2**zoom)


def raster_zoom_for_resolution(resolution: int, latitude_deg: float) -> int:
    """Return the coarsest zoom whose pixels are small enough to draw cells of a resolution.

    The hexagon edge (``h3.average_hexagon_edge_length``) at ``latitude_deg`` in Web
    Mercator metres (ground metres / cos(latitude)) spans at least
    :data:`PIXELS_PER_HEX_EDGE` pixels. For resolution 9 that is z12 at the equator and z11 at 60°.
    """
    edge_merc_m = h3.average_hexagon_edge_length(resolution, unit="m") / max(
        math.cos(math.radians(latitude_deg)), 1e-6
    )
    for zoom in range(0, 25):
        if pixel_size_m(zoom) <= edge_merc_m / PIXELS_PER_HEX_EDGE:
            return zoom
    return 24


def write_coverage_rasters(
    coverage_dir: Path, out_dir: Path, zoom: int | None = None
) -> dict[str, Any]:
    """Write ``coverage_pct.tif`` and ``age_days.tif``, Cloud-Optimized GeoTIFFs in EPSG:3857.

    Parameters
    ----------
    coverage_dir
        A coverage folder (its cell coverage, ``summary.json``).
    out_dir
        Where to write the two files (atomically each).
    zoom
        Web Mercator zoom level whose pixel size to use; default
        :func:`raster_zoom_for_resolution` of the finest cell resolution at the data's
        central latitude.

    Returns
    -------
    dict
        ``files`` (value name → path), ``zoom``, ``pixel_size_m``, ``resolution`` (H3),
        ``width``, ``height``, ``bounds`` (EPSG:3857 west, south, east, north), ``crs``,
        ``nodata`` and ``as_of``.

    Raises
    ------
    ValueError
        If the zoom is outside 0..24 or the raster would exceed :data:`MAX_PIXELS`.
    """
    coverage_dir, out_dir = Path(coverage_dir), Path(out_dir)
    cells = read_cells(coverage_dir)
    summary = read_summary(coverage_dir)
    resolution = int(cells["resolution"].max())
    finest = cells[cells["resolution"] == resolution]
    if zoom is None:
        _west, south, _east, north = finest.total_bounds
        zoom = raster_zoom_for_resolution(resolution, (south + north) / 2)
    if not 0 <= zoom <= 24:
        raise ValueError(f"raster zoom {zoom} is outside 0..24")
    merc = gpd.GeoSeries(finest.geometry, crs="EPSG:4326").to_crs(3857)
    transform, width, height = _pixel_grid(merc.total_bounds, zoom)
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"a raster at zoom {zoom} would be {width} x {height} pixels (more than "
            f"{MAX_PIXELS:,}); pass a coarser zoom, e.g. {zoom - 2}"
        )
    files: dict[str, str] = {}
    geometries = merc.to_numpy()
    for value in VALUES:
        values = finest[value].to_numpy(dtype="float64")
        keep = ~np.isnan(values)
        grid = rasterize(
            zip(geometries[keep], values[keep], strict=True),
            out_shape=(height, width),
            transform=transform,
            fill=NODATA,
            dtype="float32",
        )
        path = out_dir / f"{value}.tif"
        _write_cog(grid, transform, path, value, summary, resolution)
        files[value] = str(path)
    report = {
        "files": files,
        "zoom": zoom,
        "pixel_size_m": pixel_size_m(zoom),
        "resolution": resolution,
        "width": width,
        "height": height,
        "bounds": _bounds(transform, width, height),
        "crs": "EPSG:3857",
        "nodata": NODATA,
        "as_of": summary.get("as_of"),
    }
    log.info("export raster: %s, %d x %d pixels at zoom %d", out_dir, width, height, zoom)
    return report


def _pixel_grid(bounds: np.ndarray, zoom: int) -> tuple[Affine, int, int]:
    """Return the transform and size of the zoom's pixels that cover ``bounds`` (EPSG:3857)."""
    size = pixel_size_m(zoom)
    west, south, east, north = (float(b) for b in bounds)
    col0 = math.floor((west + HALF_WORLD_M) / size)
    col1 = math.ceil((east + HALF_WORLD_M) / size)
    row0 = math.floor((HALF_WORLD_M - north) / size)
    row1 = math.ceil((HALF_WORLD_M - south) / size)
    transform = Affine(
        size, 0.0, -HALF_WORLD_M + col0 * size, 0.0, -size, HALF_WORLD_M - row0 * size
    )
    return transform, max(col1 - col0, 1), max(row1 - row0, 1)


def _bounds(transform: Affine, width: int, height: int) -> list[float]:
    west, north = transform.c, transform.f
    return [west, north + transform.e * height, west + transform.a * width, north]


def _write_cog(
    grid: np.ndarray,
    transform: Affine,
    path: Path,
    value: str,
    summary: dict[str, Any],
    resolution: int,
) -> None:
    height, width = grid.shape
    overviews = max(1, math.ceil(math.log2(max(width, height) / BLOCK_SIZE)))
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:3857",
        "transform": transform,
        "nodata": NODATA,
    }
    with MemoryFile() as memory, memory.open(**profile) as mem:
        mem.write(grid, 1)
        mem.set_band_description(1, value)
        mem.update_tags(
            1, units="percent" if value == "coverage_pct" else "days", h3_resolution=resolution
        )
        mem.update_tags(as_of=str(summary.get("as_of")), source=RASTER_SOURCE)
        with atomic_path(path) as temp:
            rasterio.shutil.copy(
                mem,
                temp,
                driver="COG",
                BLOCKSIZE=BLOCK_SIZE,
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                OVERVIEWS="AUTO",
                OVERVIEW_COUNT=overviews,
                OVERVIEW_RESAMPLING="NEAREST",
                BIGTIFF="IF_SAFER",
            )
