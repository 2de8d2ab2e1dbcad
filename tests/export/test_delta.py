"""table_delta on small hand-made tables: which keys are added, changed and removed.

The expected change of every row is written out by hand from how the two tables were built.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.export.feeds.delta import table_delta

Row = tuple[str, str, int, float, str | None, tuple[float, float]]


def table(rows: list[Row]) -> gpd.GeoDataFrame:
    """Rows of ``(cell_id, h3_parent, passes, age_days, last_seen, point)``."""
    frame = gpd.GeoDataFrame(
        {
            "cell_id": [r[0] for r in rows],
            "passes": np.array([r[2] for r in rows], dtype="int64"),
            "age_days": np.array([r[3] for r in rows], dtype="float64"),
            "last_seen": pd.to_datetime([r[4] for r in rows], utc=True),
        },
        geometry=[shapely.Point(*r[5]) for r in rows],
        crs="EPSG:4326",
    )
    return frame.assign(h3_parent=[r[1] for r in rows])  # after the geometry, as when read


PREVIOUS = table(
    [
        ("a", "p2", 1, np.nan, None, (0.0, 0.0)),  # kept: NaN and NaT on both sides
        ("b", "p1", 2, 3.0, "2026-11-01", (1.0, 1.0)),  # passes change
        ("c", "p1", 4, 5.0, "2026-11-02", (2.0, 2.0)),  # only the geometry moves
        ("d", "p2", 6, np.nan, None, (3.0, 3.0)),  # age and last seen appear
        ("e", "p3", 7, 8.0, "2026-11-03", (4.0, 4.0)),  # removed
        ("f", "p1", 9, 1.0, "2026-11-04", (5.0, 5.0)),  # kept
        ("i", "p1", 2, 1.0, "2026-11-04", (-0.0, 7.0)),  # changed: -0.0 is another WKB
        ("j", "p1", 2, 1.0, "2026-11-04", (9.0, 9.0)),  # only the partition changes
    ]
)
CURRENT = table(
    [
        ("f", "p1", 9, 1.0, "2026-11-04", (5.0, 5.0)),
        ("b", "p1", 3, 3.0, "2026-11-01", (1.0, 1.0)),
        ("c", "p1", 4, 5.0, "2026-11-02", (2.0, 2.0 + 1e-12)),
        ("a", "p2", 1, np.nan, None, (0.0, 0.0)),
        ("d", "p2", 6, 2.0, "2026-11-05", (3.0, 3.0)),
        ("g", "p0", 1, 0.5, "2026-11-06", (6.0, 6.0)),  # added
        ("h", "p9", 1, 0.5, "2026-11-06", (8.0, 8.0)),  # added, sorted after the others
        ("i", "p1", 2, 1.0, "2026-11-04", (0.0, 7.0)),
        ("j", "p2", 2, 1.0, "2026-11-04", (9.0, 9.0)),
    ]
)


def test_added_changed_and_removed_keys_sorted_by_partition_and_key() -> None:
    delta = table_delta(PREVIOUS, CURRENT, "cell_id")
    assert list(zip(delta["h3_parent"], delta["cell_id"], delta["change_type"], strict=True)) == [
        ("p0", "g", "added"),
        ("p1", "b", "changed"),
        ("p1", "c", "changed"),
        ("p1", "i", "changed"),
        ("p2", "d", "changed"),
        ("p2", "j", "changed"),
        ("p3", "e", "removed"),
        ("p9", "h", "added"),
    ]
    assert list(delta.index) == list(range(8))


def test_added_and_changed_rows_carry_the_new_values_removed_rows_the_previous() -> None:
    delta = table_delta(PREVIOUS, CURRENT, "cell_id").set_index("cell_id")
    passes = {"g": 1, "b": 3, "c": 4, "i": 2, "d": 6, "j": 2, "e": 7, "h": 1}
    assert delta["passes"].to_dict() == passes
    assert delta.loc["d", "age_days"] == 2.0
    assert delta.loc["d", "last_seen"] == pd.Timestamp("2026-11-05", tz="UTC")
    assert delta.loc["c"].geometry.equals_exact(shapely.Point(2.0, 2.0 + 1e-12), 0.0)
    assert delta.loc["e"].geometry.equals_exact(shapely.Point(4.0, 4.0), 0.0)
    assert isinstance(delta, gpd.GeoDataFrame) and delta.crs == "EPSG:4326"


def test_identical_tables_have_an_empty_delta() -> None:
    assert len(table_delta(PREVIOUS, PREVIOUS.iloc[::-1], "cell_id")) == 0
