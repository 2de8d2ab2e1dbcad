"""Raster export: COGs in EPSG:3857, read back with rasterio and checked by rio-cogeo."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

from pipeline.export.inputs import read_cells
from pipeline.export.raster import NODATA, raster_zoom_for_resolution, write_coverage_rasters
from tests.builders import write_fully_covered_region
from tests.export.coverage_builder import helsinki_coverage

TO_MERCATOR = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


@pytest.fixture(scope="module")
def coverage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


@pytest.fixture(scope="module")
def rasters(coverage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_coverage_rasters(coverage_dir, tmp_path_factory.mktemp("raster"), zoom=13)


def test_default_zoom_matches_the_hexagon_size() -> None:
    assert raster_zoom_for_resolution(9, 0.0) == 12
    assert raster_zoom_for_resolution(9, 60.0) == 11
    assert raster_zoom_for_resolution(8, 0.0) < raster_zoom_for_resolution(9, 0.0)


@pytest.mark.parametrize("value", ["coverage_pct", "age_days"])
def test_cogs_are_valid_tiled_web_mercator_with_overviews(
    rasters: dict, coverage_dir: Path, value: str
) -> None:
    path = rasters["files"][value]
    valid, errors, _warnings = cog_validate(path)
    assert valid, errors
    with rasterio.open(path) as dataset:
        assert dataset.crs.to_epsg() == 3857
        assert dataset.profile["tiled"] and dataset.block_shapes == [(256, 256)]
        assert dataset.overviews(1)
        assert dataset.nodata == NODATA
        assert dataset.dtypes == ("float32",)
        assert dataset.res[0] == pytest.approx(rasters["pixel_size_m"])
        # pixels are the pixels of the zoom level: the origin is on its grid
        assert (dataset.transform.c + 20037508.342789244) / dataset.res[0] == pytest.approx(
            round((dataset.transform.c + 20037508.342789244) / dataset.res[0]), abs=1e-6
        )
        band = dataset.read(1)
        assert (band == NODATA).any() and (band != NODATA).any()
        summary = json.loads((coverage_dir / "summary.json").read_text(encoding="utf-8"))
        assert dataset.tags()["as_of"] == str(summary["as_of"])
        assert dataset.tags(1)["units"] == ("percent" if value == "coverage_pct" else "days")


def test_pixel_under_a_cell_centroid_has_its_values(rasters: dict, coverage_dir: Path) -> None:
    cells = read_cells(coverage_dir)
    finest = cells[cells["resolution"] == rasters["resolution"]]
    checked = 0
    for cell in finest.itertuples():
        lat, lon = h3.cell_to_latlng(h3.int_to_str(int(cell.cell)))
        x, y = TO_MERCATOR.transform(lon, lat)
        with rasterio.open(rasters["files"]["coverage_pct"]) as dataset:
            coverage = next(dataset.sample([(x, y)]))[0]
        with rasterio.open(rasters["files"]["age_days"]) as dataset:
            age = next(dataset.sample([(x, y)]))[0]
        assert coverage == pytest.approx(cell.coverage_pct, rel=1e-5)
        if np.isnan(cell.age_days):
            assert age == NODATA
        else:
            assert age == pytest.approx(cell.age_days, rel=1e-5)
        checked += 1
    assert checked == len(finest) > 5


def test_rewriting_replaces_the_files(coverage_dir: Path, tmp_path: Path) -> None:
    first = write_coverage_rasters(coverage_dir, tmp_path)
    assert first["zoom"] == 11  # Helsinki, resolution 9
    again = write_coverage_rasters(coverage_dir, tmp_path, zoom=12)
    out = tmp_path
    assert again["zoom"] == 12
    assert sorted(p.name for p in out.iterdir()) == ["age_days.tif", "coverage_pct.tif"]
    with rasterio.open(again["files"]["coverage_pct"]) as dataset:
        assert dataset.res[0] == pytest.approx(again["pixel_size_m"])


def test_a_fully_covered_region_rasters_to_100_percent(tmp_path: Path) -> None:
    _, coverage = write_fully_covered_region(tmp_path)  # every length rounds up to the mm
    files = write_coverage_rasters(coverage, tmp_path / "raster", zoom=16)["files"]
    with rasterio.open(files["coverage_pct"]) as dataset:
        values = dataset.read(1)
    covered = values[values != NODATA]
    assert covered.size and (covered == 100.0).all()
