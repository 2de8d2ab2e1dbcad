"""A row with several faults gets the first reason of docs/ingest.md's table that applies.

The table lists the reasons in the order ingest checks them, and a later check never
overwrites an earlier reason. Checked on the stage's own sequence of steps (``clean_rows``)
and on CSV files through the whole stage, whose rejects table must say the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import settings_from_mapping
from pipeline.contracts import REJECTS
from pipeline.ingest.stage import clean_rows, ingest_traces
from pipeline.io import read_table
from tests.ingest.frames import METRES_PER_DEGREE_LAT, drive, reasons

DOCS = Path(__file__).parents[2] / "docs" / "ingest.md"
NOW = pd.Timestamp("2026-11-25T00:00:00Z")
BEFORE_2000 = pd.Timestamp("1999-06-01T00:00:00Z")
FUTURE = pd.Timestamp("2027-01-01T00:00:00Z")
BAD_HDOP = 25.0
# a privacy zone around the fix 1,500 m along the drive (fixes are 10 m apart)
ZONE = {"name": "home", "lon": 24.94, "lat": 60.17 + 1500 / METRES_PER_DEGREE_LAT, "radius_m": 4}
SETTINGS = settings_from_mapping(
    {
        "regions": [{"name": "t", "osm": "t.osm"}],
        "ingest": {"max_hdop": 10.0, "privacy_trim_m": 200, "privacy_zones": [ZONE], "workers": 1},
    }
).ingest


def documented_order() -> list[str]:
    """The reasons in the order of docs/ingest.md's "Reject reasons" table."""
    section = DOCS.read_text().split("## Reject reasons", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| (`[^|]+`) \|", section, flags=re.MULTILINE)
    return [name for cell in cells for name in re.findall(r"`([a-z_0-9]+)`", cell)]


def first_documented(faults: set[str]) -> str:
    return next(reason for reason in documented_order() if reason in faults)


def faulty_drive() -> tuple[pd.DataFrame, dict[int, set[str]]]:
    """Two traces whose rows have several faults each, and those faults by source row.

    ``trace-a`` drives 4 km north at 10 m/s, ``trace-b`` 3 fixes (a short trip, all of it
    within the trimmed ends).
    """
    main = drive(400, speed_mps=10.0, noise_m=0.0)
    east = 1 / (METRES_PER_DEGREE_LAT * np.cos(np.radians(60.17)))
    faults: dict[int, set[str]] = {}

    def spoil(index: int, names: set[str], **values: object) -> None:
        for column, value in values.items():
            main.loc[index, column] = value
        faults[index] = names

    spoil(50, {"null_island", "time_before_2000", "high_hdop"}, lon=0.0, lat=0.0,
          observed_at=BEFORE_2000, hdop=BAD_HDOP)  # fmt: skip
    spoil(60, {"out_of_range", "time_in_future", "high_hdop"}, lat=95.0, observed_at=FUTURE,
          hdop=BAD_HDOP)  # fmt: skip
    spoil(70, {"time_before_2000", "high_hdop"}, observed_at=BEFORE_2000, hdop=BAD_HDOP)
    spoil(80, {"time_in_future", "high_hdop"}, observed_at=FUTURE, hdop=BAD_HDOP)
    spoil(90, {"high_hdop", "teleport"}, lon=main.loc[90, "lon"] + 3000 * east, hdop=BAD_HDOP)
    spoil(10, {"impossible_speed", "privacy"}, lon=main.loc[10, "lon"] + 300 * east)
    spoil(150, {"high_hdop", "privacy"}, hdop=BAD_HDOP)  # in the privacy zone
    spoil(200, {"high_hdop", "impossible_acceleration"}, speed_mps=60.0, hdop=BAD_HDOP)
    copies = main.loc[[100, 110]].assign(hdop=[BAD_HDOP, 1.0])
    copies.loc[110, "lon"] += 5000 * east  # same time, 5 km away: a repeat and a teleport
    short = drive(3, trace_id="trace-b", device_id="dev-b", lat0=60.3, noise_m=0.0)
    frame = pd.concat([main, copies, short], ignore_index=True)
    faults[400] = {"high_hdop", "duplicate"}
    faults[401] = {"repeated_timestamp", "teleport"}
    faults |= {402 + i: {"privacy", "short_trip"} for i in range(3)}
    frame["source_row"] = np.arange(2, len(frame) + 2)  # the line numbers of a CSV file
    return frame, {index + 2: names for index, names in faults.items()}


def test_the_documented_order_lists_every_reason_once() -> None:
    order = documented_order()
    assert len(order) == len(set(order)) > 15
    assert order.index("null_island") < order.index("high_hdop") < order.index("privacy")


def test_each_faulty_row_gets_its_first_documented_reason() -> None:
    frame, faults = faulty_drive()
    frame = frame.sort_values(["trace_id", "observed_at", "source_row"], ignore_index=True)
    clean_rows(frame, SETTINGS, NOW)
    got = reasons(frame)
    expected = {row: first_documented(names) for row, names in faults.items()}
    assert {row: got.get(row) for row in expected} == expected


def test_the_rejects_table_of_the_stage_gives_the_same_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "precedence-test-key-0123456789")
    frame, faults = faulty_drive()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    columns = ["device_id", "observed_at", "lat", "lon", "hdop", "speed_mps"]
    frame["observed_at"] = frame["observed_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame[columns].to_csv(inputs / "fixes.csv", index=False, float_format="%.9f")
    ingest_traces([inputs], tmp_path / "traces", SETTINGS, now=NOW)
    rejects = pd.concat(
        [read_table(p, REJECTS) for p in (tmp_path / "traces/rejects").glob("*.parquet")]
    )
    got = dict(zip(rejects["source_row"], rejects["reason"], strict=True))
    expected = {row: first_documented(names) for row, names in faults.items()}
    assert {row: got.get(row) for row in expected} == expected
