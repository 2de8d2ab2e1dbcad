"""Builders of small working frames for the cleaning tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRES_PER_DEGREE_LAT = 111_195.0


def drive(
    n: int = 60,
    speed_mps: float = 10.0,
    start: str = "2026-10-01T08:00:00Z",
    trace_id: str = "trace-a",
    device_id: str = "dev-a",
    lat0: float = 60.17,
    lon0: float = 24.94,
    noise_m: float = 3.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A northbound drive at constant speed, 1 Hz, with Gaussian noise, as a working frame."""
    rng = np.random.default_rng(seed)
    north_m = np.arange(n) * speed_mps + rng.normal(0, noise_m, n)
    east_m = rng.normal(0, noise_m, n)
    frame = pd.DataFrame(
        {
            "source_file": "f.csv",
            "source_row": np.arange(2, n + 2),
            "observed_at": pd.date_range(start, periods=n, freq="1s", unit="ms"),
            "lon": lon0 + east_m / (METRES_PER_DEGREE_LAT * np.cos(np.radians(lat0))),
            "lat": lat0 + north_m / METRES_PER_DEGREE_LAT,
            "hdop": 1.0,
            "speed_mps": speed_mps,
            "heading_deg": 0.0,
            "trace_id": trace_id,
            "device_id": device_id,
            "contributor_id": "contrib-" + device_id,
        }
    )
    frame["reason"] = pd.Series(None, index=frame.index, dtype=object)
    frame["detail"] = pd.Series(None, index=frame.index, dtype=object)
    return frame


def reasons(frame: pd.DataFrame) -> dict[int, str]:
    """Source row -> reason of every rejected row."""
    rejected = frame[frame["reason"].notna()]
    return dict(zip(rejected["source_row"], rejected["reason"], strict=True))
