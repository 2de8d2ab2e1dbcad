"""The simulator's trace writers: field formatting checked against the standard library."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.trace_writers import _nmea_degrees, _nmea_times

# 1900-01-01 to 2099-12-31, in Unix milliseconds
MILLIS = st.integers(-2_208_988_800_000, 4_102_444_799_999)


@given(st.lists(MILLIS, max_size=50))
def test_nmea_times_and_dates_are_those_of_strftime(unix_ms: list[int]) -> None:
    times, dates = _nmea_times(np.array(unix_ms, dtype="int64"))
    stamps = pd.to_datetime(pd.Series(unix_ms, dtype="int64"), unit="ms", utc=True)
    expected_times = [f"{t:%H%M%S}.{t.microsecond // 1000:03d}" for t in stamps]
    assert times == expected_times
    assert dates == [f"{t:%d%m%y}" for t in stamps]


@given(st.lists(st.floats(-180.0, 180.0), max_size=50))
def test_nmea_degrees_read_back_to_the_coordinate(values: list[float]) -> None:
    texts, hemispheres = _nmea_degrees(np.array(values, dtype="float64"), 3, "E", "W")
    for value, text, hemisphere in zip(values, texts, hemispheres, strict=True):
        degrees, minutes = int(text[:3]), float(text[3:])
        assert len(text) == 3 + 2 + 1 + 4 and minutes < 60.0
        sign = -1.0 if hemisphere == "W" else 1.0
        # 4 decimals of a minute: within half a ten-thousandth of a minute
        assert abs(sign * (degrees + minutes / 60.0) - value) <= 0.5e-4 / 60.0 + 1e-12
