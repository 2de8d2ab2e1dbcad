from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from pipeline.ingest.readers import UnreadableFileError, read_trace_file
from tests.ingest.readers.helpers import check_result, reasons

TIMES = pd.Series(
    pd.to_datetime(
        pd.Series(
            ["2024-05-01T08:00:00.250Z", "2024-05-01T08:00:01Z", None, "2024-05-01T08:00:03Z"]
        ),
        utc=True,
        format="ISO8601",
    )
)


def test_geoparquet_with_point_geometry(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {
            "observed_at": TIMES.to_numpy(),
            "hdop": [0.9, None, 1.0, 1.0],
            "speed_kmh": [36.0, 72.0, 0.0, 0.0],
            "device_id": ["cam-1", None, "cam-1", "cam-1"],
        },
        geometry=[
            shapely.Point(24.94, 60.17, 5.0),
            shapely.Point(24.95, 60.18, 6.0),
            shapely.Point(24.96, 60.19, 7.0),
            shapely.LineString([(0, 0), (1, 1)]),
        ],
        crs="EPSG:4326",
    )
    path = tmp_path / "trace.parquet"
    frame.to_parquet(path)
    result = read_trace_file(path)
    check_result(result)
    assert result.format == "parquet"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2]
    assert fixes["observed_at"].tolist() == list(TIMES[:2])
    np.testing.assert_allclose(fixes["lon"], [24.94, 24.95])
    np.testing.assert_allclose(fixes["lat"], [60.17, 60.18])
    np.testing.assert_allclose(fixes["elevation_m"], [5.0, 6.0])
    np.testing.assert_allclose(fixes["hdop"], [0.9, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [10.0, 20.0])
    assert fixes["device_id"].tolist() == ["cam-1", None]
    assert reasons(result) == {3: "missing_time", 4: "unparseable_coordinates"}


def test_geoparquet_in_another_crs_is_reprojected(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"observed_at": TIMES[:1].to_numpy()},
        geometry=[shapely.Point(24.94, 60.17)],
        crs="EPSG:4326",
    ).to_crs("EPSG:3857")
    path = tmp_path / "mercator.geoparquet"
    frame.to_parquet(path)
    result = read_trace_file(path)
    assert result.fixes[["lon", "lat"]].iloc[0].tolist() == pytest.approx([24.94, 60.17])


def test_plain_parquet_with_lat_lon_and_naive_or_string_times(tmp_path: Path) -> None:
    naive = pd.DataFrame(
        {
            "time": pd.to_datetime(["2024-05-01 08:00:00", "2024-05-01 08:00:01"]),
            "latitude": [60.17, None],
            "longitude": [24.94, 24.95],
            "user_id": ["frank", "frank"],
        }
    )
    path = tmp_path / "naive.parquet"
    naive.to_parquet(path)
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["observed_at"].tolist() == [pd.Timestamp("2024-05-01T08:00:00Z")]
    assert result.fixes["contributor_id"].tolist() == ["frank"]
    assert reasons(result) == {2: "missing_coordinates"}
    strings = pd.DataFrame(
        {"timestamp": ["2024-05-01T10:00:00+02:00", "1714550401000", "x"], "lat": 1.0, "lon": 2.0}
    )
    path = tmp_path / "strings.parquet"
    strings.to_parquet(path)
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),
    ]
    assert reasons(result) == {3: "unparseable_time"}


def test_parquet_with_wkb_geometry_column_without_geo_metadata(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts_ms": [1714550400000, 1714550401000],
            "geometry": shapely.to_wkb([shapely.Point(1.0, 2.0), None]),
        }
    )
    path = tmp_path / "wkb.parquet"
    pq.write_table(table, path)
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes[["lon", "lat"]].iloc[0].tolist() == [1.0, 2.0]
    assert reasons(result) == {2: "missing_coordinates"}


def test_corrupt_parquet_and_missing_columns_are_unreadable(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame({"a": range(100)}).to_parquet(good)
    with pytest.raises(UnreadableFileError, match=r"good\.parquet: no time or lat/lon column"):
        read_trace_file(good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(UnreadableFileError, match=r"cut\.parquet: not a readable Parquet file"):
        read_trace_file(cut)
