from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.readers import UnreadableFileError, read_trace_file
from tests.ingest.readers.helpers import check_result, reasons

FRAME = {
    "timestamp": 1714550400123,
    "device": "cam-3",
    "position": {"lat": 60.17, "lon": 24.94, "hdop": 0.8, "alt": 11.0},
    "speed": 12.0,
    "heading": 45.0,
    "imu": {"ax": 0.1},
}


def test_json_array_of_frames(tmp_path: Path) -> None:
    frames = [
        FRAME,
        {"timestamp": "2024-05-01T10:00:01+02:00", "lat": 60.18, "lng": 24.95, "speed_kmh": 36},
        {"timestamp": 1714550402, "position": {"lat": None, "lon": 24.96}},
        {"position": {"lat": 60.19, "lon": 24.97}},
        [1, 2, 3],
    ]
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(frames))
    result = read_trace_file(path)
    check_result(result)
    assert result.format == "framejson"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00.123Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),
    ]
    np.testing.assert_allclose(fixes["lat"], [60.17, 60.18])
    np.testing.assert_allclose(fixes["lon"], [24.94, 24.95])
    np.testing.assert_allclose(fixes["hdop"], [0.8, np.nan])
    np.testing.assert_allclose(fixes["elevation_m"], [11.0, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [12.0, 10.0])
    np.testing.assert_allclose(fixes["heading_deg"], [45.0, np.nan])
    assert fixes["device_id"].tolist() == ["cam-3", None]
    assert reasons(result) == {3: "missing_coordinates", 4: "missing_time", 5: "malformed_row"}


def test_object_with_frames_and_device(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    frame = {k: v for k, v in FRAME.items() if k != "device"}
    path.write_text(json.dumps({"device": "cam-8", "contributor_id": "erin", "frames": [frame]}))
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["device_id"].tolist() == ["cam-8"]
    assert result.fixes["contributor_id"].tolist() == ["erin"]


def test_jsonl_with_truncated_last_line(tmp_path: Path) -> None:
    second = dict(FRAME, timestamp=1714550401123)
    lines = [json.dumps(FRAME), "", json.dumps(second), '{"timestamp": 1714550402123, "posi']
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(lines))
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 3]
    assert reasons(result) == {4: "malformed_row"}
    assert result.rejects["detail"].iloc[0].startswith("invalid JSON")


def test_json_lines_in_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(FRAME) + "\n" + json.dumps(FRAME) + "\n")
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes["source_row"].tolist() == [1, 2]


def test_truncated_json_array_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    path.write_text(json.dumps([FRAME, FRAME])[:-30])
    with pytest.raises(UnreadableFileError, match=r"frames\.json: not valid JSON"):
        read_trace_file(path)
