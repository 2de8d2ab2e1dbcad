from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.readers import UnreadableFileError, read_trace_file
from tests.ingest.readers.helpers import DATA, check_result, reasons


def test_gpx_1_1_with_garmin_extensions_and_bad_points() -> None:
    result = read_trace_file(DATA / "garmin_1_1.gpx")
    check_result(result)
    assert result.format == "gpx"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2, 7]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00.500Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),  # +03:00 to UTC
        pd.Timestamp("2024-05-01T08:00:06Z"),
    ]
    np.testing.assert_allclose(fixes["lat"], [60.17, 60.1701, 95.0])
    np.testing.assert_allclose(fixes["lon"], [24.94, 24.9401, 0.0])
    np.testing.assert_allclose(fixes["elevation_m"], [12.5, np.nan, np.nan])
    np.testing.assert_allclose(fixes["hdop"], [0.9, np.nan, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [13.4, np.nan, np.nan])
    np.testing.assert_allclose(fixes["heading_deg"], [271.5, np.nan, np.nan])
    assert set(fixes["device_id"]) == {"cam-0042"}
    assert set(fixes["contributor_id"]) == {"Ada Lovelace"}
    assert reasons(result) == {
        3: "missing_time",
        4: "unparseable_coordinates",
        5: "missing_coordinates",
        6: "unparseable_time",
    }
    assert result.ignored == {"rtept": 1, "wpt": 1}


def test_gpx_1_0_plain_speed_course_and_author() -> None:
    result = read_trace_file(DATA / "plain_1_0.gpx")
    check_result(result)
    fixes = result.fixes
    np.testing.assert_allclose(fixes["speed_mps"], [20.5, 21.0])
    np.testing.assert_allclose(fixes["heading_deg"], [45.0, 46.0])
    np.testing.assert_allclose(fixes["hdop"], [2.5, np.nan])
    np.testing.assert_allclose(fixes["elevation_m"], [3.0, np.nan])
    assert fixes["device_id"].tolist() == ["dashcam-7"] * 2
    assert fixes["contributor_id"].tolist() == ["bob"] * 2


def test_gpx_without_namespace_and_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bare.gpx"
    text = '<gpx><trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T08:00:00Z</time></trkpt>'
    path.write_bytes(b"\xef\xbb\xbf" + (text + "</trkseg></trk></gpx>").encode())
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes[["lat", "lon"]].iloc[0].tolist() == [1.0, 2.0]
    assert result.fixes["device_id"].tolist() == [None]


def test_truncated_gpx_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.gpx"
    path.write_bytes((DATA / "garmin_1_1.gpx").read_bytes()[:900])
    with pytest.raises(UnreadableFileError, match=r"cut\.gpx: truncated .*GPX 1\.1"):
        read_trace_file(path)


def test_latin1_gpx_declared_utf8_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin.gpx"
    shutil.copy(DATA / "plain_1_0.gpx", path)
    text = path.read_text().replace("<author>bob</author>", "<author>Jos\u00e9</author>")
    path.write_bytes(
        text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-8"?>').encode(
            "latin-1"
        )
    )
    with pytest.raises(UnreadableFileError, match=r"latin\.gpx: not UTF-8 as its XML declaration"):
        read_trace_file(path)


def test_latin1_gpx_declared_as_such_is_read(tmp_path: Path) -> None:
    path = tmp_path / "latin.gpx"
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><gpx version="1.0"><author>Jos\u00e9</author>'
        '<trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T08:00:00Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    path.write_bytes(text.encode("latin-1"))
    result = read_trace_file(path)
    assert result.fixes["contributor_id"].tolist() == ["Jos\u00e9"]


def test_xml_that_is_not_gpx_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "track.gpx"
    path.write_text('<kml xmlns="http://www.opengis.net/kml/2.2"><Document/></kml>')
    with pytest.raises(UnreadableFileError, match=r"not a GPX file \(root element <kml>\)"):
        read_trace_file(path)


def test_entity_declarations_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gpx"
    path.write_text('<!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>')
    with pytest.raises(UnreadableFileError, match="entity"):
        read_trace_file(path)
