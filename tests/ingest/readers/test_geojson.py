from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.readers import UnreadableFileError, geojson, read_trace_file
from pipeline.ingest.readers.base import MAX_JSON_DEPTH, json_nesting_depth, normalize_name
from pipeline.ingest.readers.columns import ALIASES
from tests.ingest.readers.helpers import check_result, reasons


def write(tmp_path: Path, document: Any, name: str = "trace.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def point(coordinates: Any, **properties: Any) -> dict[str, Any]:
    geometry = None if coordinates is None else {"type": "Point", "coordinates": coordinates}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_point_features_with_properties(tmp_path: Path) -> None:
    collection = {
        "type": "FeatureCollection",
        "device_id": "cam-9",
        "features": [
            point(
                [24.94, 60.17, 12.0],
                time="2024-05-01T10:00:00+02:00",
                hdop=0.7,
                speed=9.5,
                heading=180,
            ),
            point(
                [24.95, 60.18],
                timestamp=1714550401000,
                contributor_id="carol",
                device_id="cam-10",
                speed_kmh=36,
            ),
            point([24.96, 60.19]),
            point(None, time="2024-05-01T08:00:03Z"),
            point(["x", 60.2], time="2024-05-01T08:00:04Z"),
            point([24.97, 60.21], observed_at="soon"),
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}},
        ],
    }
    result = read_trace_file(write(tmp_path, collection))
    check_result(result)
    assert result.format == "geojson"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),
    ]
    np.testing.assert_allclose(fixes["elevation_m"], [12.0, np.nan])
    np.testing.assert_allclose(fixes["hdop"], [0.7, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [9.5, 10.0])
    np.testing.assert_allclose(fixes["heading_deg"], [180.0, np.nan])
    assert fixes["device_id"].tolist() == ["cam-9", "cam-10"]
    assert fixes["contributor_id"].tolist() == [None, "carol"]
    assert reasons(result) == {
        3: "missing_time",
        4: "missing_coordinates",
        5: "unparseable_coordinates",
        6: "unparseable_time",
    }
    assert result.ignored == {"Polygon": 1}


def test_linestring_with_coord_times_and_vertex_lists(tmp_path: Path) -> None:
    line = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[24.9, 60.1, 5.0], [24.91, 60.11, 6.0]]},
        "properties": {
            "coordTimes": ["2024-05-01T08:00:00Z", "2024-05-01T08:00:01.5Z"],
            "hdop": [1.0, 1.5],
            "speed_mps": [10.0, 11.0],
            "heading_deg": [0.0, 5.0, 9.0],  # wrong length: ignored
            "contributor_id": "dave",
        },
    }
    multi = {
        "type": "Feature",
        "geometry": {
            "type": "MultiLineString",
            "coordinates": [[[25.0, 61.0], [25.1, 61.1]], [[25.2, 61.2]]],
        },
        "properties": {"times": [[1714550410, 1714550411], [1714550412]]},
    }
    mismatched = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
        "properties": {"coordTimes": ["2024-05-01T08:00:00Z"]},
    }
    collection = {"type": "FeatureCollection", "features": [line, multi, mismatched]}
    result = read_trace_file(write(tmp_path, collection))
    check_result(result)
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2, 3, 4, 5]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00Z"),
        pd.Timestamp("2024-05-01T08:00:01.500Z"),
        pd.Timestamp("2024-05-01T08:00:10Z"),
        pd.Timestamp("2024-05-01T08:00:11Z"),
        pd.Timestamp("2024-05-01T08:00:12Z"),
    ]
    np.testing.assert_allclose(fixes["lon"], [24.9, 24.91, 25.0, 25.1, 25.2])
    np.testing.assert_allclose(fixes["elevation_m"], [5.0, 6.0, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(fixes["hdop"], [1.0, 1.5, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [10.0, 11.0, np.nan, np.nan, np.nan])
    assert fixes["heading_deg"].isna().all()
    assert fixes["contributor_id"].tolist() == ["dave", "dave", None, None, None]
    assert reasons(result) == {6: "missing_time", 7: "missing_time"}
    assert result.rejects["detail"].iloc[0] == "1 per-vertex times for 2 vertices"
    assert result.ignored == {"property_length_mismatch": 1}


def test_single_feature(tmp_path: Path) -> None:
    result = read_trace_file(write(tmp_path, point([1, 2], time="2024-05-01T08:00:00Z")))
    check_result(result)
    assert len(result.fixes) == 1


def test_truncated_geojson_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Fea')
    with pytest.raises(UnreadableFileError, match=r"cut\.geojson: not valid JSON at line 1"):
        read_trace_file(path)


def test_json_that_is_not_geojson_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match="not a GeoJSON FeatureCollection"):
        read_trace_file(write(tmp_path, {"type": "Topology"}))


VERTICES = st.lists(
    st.one_of(
        st.lists(st.floats(-200, 200) | st.integers(-200, 200), min_size=2, max_size=3),
        st.sampled_from([None, [], [1.0], [True, 2.0], ["24.9", "60.1"], [1, 2, 3, 4], 7]),
    ),
    max_size=8,
)


def assert_read_at_once_as_one_by_one(path: Path) -> None:
    """A file's lines added at once read as the same fixes and rejects as vertex by vertex."""
    at_once = read_trace_file(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(geojson._Rows, "add_positions", lambda *_: False)
        one_by_one = read_trace_file(path)
    check_result(at_once)
    pd.testing.assert_frame_equal(at_once.fixes, one_by_one.fixes)
    pd.testing.assert_frame_equal(at_once.rejects, one_by_one.rejects)


@given(vertices=VERTICES, with_times=st.booleans(), with_speeds=st.booleans())
@settings(max_examples=150, deadline=None)
def test_a_line_read_at_once_reads_as_vertex_by_vertex(
    tmp_path_factory: pytest.TempPathFactory,
    vertices: list[Any],
    with_times: bool,
    with_speeds: bool,
) -> None:
    """Lines of plain positions are added at once; the result is that of one by one."""
    properties: dict[str, Any] = {"device_id": "cam-1"}
    if with_times:
        properties["coordTimes"] = [f"2024-05-01T08:00:{i:02d}Z" for i in range(len(vertices))]
    if with_speeds:
        properties["speed"] = [float(i) for i in range(len(vertices))]
    line = {"type": "Feature", "geometry": {"type": "LineString", "coordinates": vertices}}
    path = write(tmp_path_factory.mktemp("line"), {**line, "properties": properties})
    assert_read_at_once_as_one_by_one(path)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()  # NaN and infinities too, which json writes and reads but msgspec refuses
    | st.integers(-(2**70), 2**70)  # past 64 bits too
    | st.text(),  # lone surrogates too (json writes them as escapes)
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


def same_json(a: Any, b: Any) -> bool:
    """Equal values of the same types, floats to the bit (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def parse_or_error(text: str) -> Any:
    try:
        return geojson._parse_json(text.encode("utf-8", "surrogatepass"), text, "f")
    except UnreadableFileError as exc:
        return str(exc)


@given(value=JSON_VALUES, indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
@settings(max_examples=300, deadline=None)
def test_json_is_parsed_as_json_parses_it(value: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    if not ascii_only and any("\ud800" <= c <= "\udfff" for c in text):
        return  # a lone surrogate written raw is not UTF-8: decode_text refuses such files
    assert same_json(parse_or_error(text), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": 2, "a": 3}',  # duplicate keys: the last value, at the first key's place
        "[1e400, -1e400, 1e-400, -0, -0.0, 5e-324, 2.4703282292062328e-324]",
        "[18446744073709551616, -9223372036854775809, 18446744073709551615]",
        "[NaN, Infinity, -Infinity]",
        '["\\ud800", "\\ud83d\\ude00", "\\u00e9", "a\\"]]", "\\\\"]',
    ],
)
def test_json_edge_cases_are_parsed_as_json_parses_them(text: str) -> None:
    assert same_json(parse_or_error(text), json.loads(text))


@pytest.mark.parametrize(
    "text", ["", "[1,]", '{"a":1,}', "01", "1.", "[1 2]", "\x0b[1]", "[1]\u2028", '"a\x01"', "tru"]
)
def test_invalid_json_gets_json_s_message(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    error = expected.value
    assert parse_or_error(text) == (
        f"f: not valid JSON at line {error.lineno}, column {error.colno} ({error.msg}); "
        f"{geojson.FIX_HINT}"
    )


def depth(value: Any) -> int:
    if isinstance(value, list | dict):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(child) for child in children), default=0)
    return 0


@given(value=JSON_VALUES)
@settings(max_examples=200, deadline=None)
def test_nesting_depth(value: Any) -> None:
    text = json.dumps(value)
    assert json_nesting_depth(text.encode()) == depth(value)


def test_documents_deeper_than_max_json_depth_are_unreadable() -> None:
    """Python's json raises RecursionError at a depth that depends on the caller's stack."""
    limit = MAX_JSON_DEPTH
    deepest = "[" * limit + "]" * limit
    assert same_json(parse_or_error(deepest), json.loads(deepest))
    deeper = "[" * (limit + 1) + "]" * (limit + 1)
    assert parse_or_error(deeper) == f"f: JSON nests deeper than 64 levels; {geojson.FIX_HINT}"


FLOAT_VERTICES = st.lists(
    st.lists(
        st.floats(-200, 200) | st.sampled_from([float("nan"), float("inf")]), min_size=2, max_size=3
    )
    | st.lists(st.integers(-200, 200), min_size=2, max_size=2),
    max_size=5,
)
VERTEX_FLOATS = st.sampled_from([None, 2.5, float("nan"), 3, " 4 ", True])


@given(
    lines=st.lists(st.tuples(FLOAT_VERTICES, st.lists(VERTEX_FLOATS, max_size=5)), max_size=4),
    device=st.sampled_from([None, " cam-1 ", "", 12]),
)
@settings(max_examples=150, deadline=None)
def test_float_lines_read_at_once_read_as_vertex_by_vertex(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[tuple[list[Any], list[Any]]],
    device: Any,
) -> None:
    """Lines of floats kept as arrays read as the same lines added vertex by vertex."""
    features = []
    for vertices, hdops in lines:
        properties: dict[str, Any] = {
            "coordTimes": [f"2024-05-01T08:00:{i:02d}Z" for i in range(len(vertices))],
            "hdop": [float(i) for i in range(len(vertices))] if len(hdops) % 2 else hdops,
            "device_id": device,
        }
        geometry = {"type": "LineString", "coordinates": vertices}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    collection = {"type": "FeatureCollection", "features": features}
    path = write(tmp_path_factory.mktemp("lines"), collection)
    assert_read_at_once_as_one_by_one(path)


PROPERTY_NAMES = st.sampled_from(
    [
        "time", "Time", "TIME ", "timestamp", "ts_ms", "observed_at", "hdop", "HDOP", "gps-hdop",
        "speed", "Speed (km/h)", "speed_kmh", "speed knots", "heading", "Course", "ele",
        "Elevation", "alt", "device", "Device ID", "device_id", "camera", "user", "Contributor",
        "x", "other",
    ]
)  # fmt: skip
PROPERTY_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [None, 1, 2.5, True, "a", " b ", [], {}, "2024-05-01T08:00:00Z", 1714550400000]
)


def normalized_properties(properties: dict[str, Any]) -> dict[str, Any]:
    return {normalize_name(key): value for key, value in properties.items()}


@given(properties=st.dictionaries(PROPERTY_NAMES, PROPERTY_VALUES, max_size=8))
@settings(max_examples=300, deadline=None)
def test_properties_are_found_as_by_their_normalized_names(properties: dict[str, Any]) -> None:
    """The keys found once per set of names give what normalizing every feature's names gives."""
    normal = normalized_properties(properties)
    expected_ids: dict[str, Any] = {}
    for field in ("contributor_id", "device_id"):
        found = [normal[a] for a in ALIASES[field] if isinstance(normal.get(a), str | int)]
        found = [value for value in found if not isinstance(value, bool)]
        if found:
            expected_ids[field] = found[0]
    assert geojson._identity(properties) == expected_ids
    expected_values: dict[str, Any] = {}
    for field in ("hdop", "speed_mps", "heading_deg", "elevation_m"):
        for alias, scale in ALIASES[field].items():
            value = normal.get(alias)
            if value is not None and not isinstance(value, list | dict | bool):
                scaled = isinstance(scale, float) and isinstance(value, int | float)
                expected_values[field] = value * scale if scaled else value
                break
    time = next((normal[a] for a in ALIASES["time"] if normal.get(a) is not None), None)
    assert geojson._point_values(properties) == (time, expected_values)
