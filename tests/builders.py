"""Builders of stage inputs for tests: matched batches as `roadcover snap` writes them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.contracts import MATCH_QUALITY, MATCHED_SEGMENTS
from pipeline.io import write_table


def write_matched_batch(
    folder: Path,
    edges: gpd.GeoDataFrame,
    drives: pd.DataFrame,
    quality: Mapping[str, tuple[float, bool]] | None = None,
) -> Path:
    """Write ``matched_segments.parquet`` and ``match_quality.parquet`` for drives on edges.

    Parameters
    ----------
    folder
        The matched folder to write.
    edges
        The roads' edge table (ids, nodes and geometry are taken from it).
    drives
        One row per traversed piece: ``edge_id, trip_id, contributor_id, from_offset_m,
        to_offset_m, entered_at, exited_at`` (and optionally ``trace_id``), in driving order.
    quality
        Per trip ``(confidence, plausible)``; default ``(0.9, True)``.
    """
    lookup = edges.set_index("edge_id")
    on = lookup.loc[drives["edge_id"].to_numpy()]
    segments = gpd.GeoDataFrame(
        {
            "trace_id": drives.get("trace_id", pd.Series("t", index=drives.index)).to_numpy(),
            "trip_id": drives["trip_id"].to_numpy(),
            "seq": drives.groupby("trip_id").cumcount().to_numpy(),
            "contributor_id": drives["contributor_id"].to_numpy(),
            "edge_id": drives["edge_id"].to_numpy(),
            "u": on["u"].to_numpy(),
            "v": on["v"].to_numpy(),
            "key": on["key"].to_numpy(),
            "osmid": on["osmid"].to_numpy(),
            "from_offset_m": drives["from_offset_m"].to_numpy(),
            "to_offset_m": drives["to_offset_m"].to_numpy(),
            "entered_at": drives["entered_at"].to_numpy(),
            "exited_at": drives["exited_at"].to_numpy(),
        },
        geometry=on.geometry.to_numpy(),
        crs="EPSG:4326",
    )
    trips = segments.groupby("trip_id", sort=True).agg(
        trace_id=("trace_id", "first"), contributor_id=("contributor_id", "first")
    )
    per_trip = quality or {}
    rows = [
        {
            "trace_id": row.trace_id,
            "trip_id": trip,
            "contributor_id": row.contributor_id,
            "points": 100,
            "matched_points": 98,
            "breaks": 0,
            "mean_distance_m": 4.0,
            "p95_distance_m": 9.0,
            "matched_km": 1.0,
            "confidence": per_trip.get(trip, (0.9, True))[0],
            "plausible": per_trip.get(trip, (0.9, True))[1],
            "trust_score": 1.0 if per_trip.get(trip, (0.9, True))[1] else 0.3,
        }
        for trip, row in trips.iterrows()
    ]
    write_table(segments, folder / "matched_segments.parquet", MATCHED_SEGMENTS)
    write_table(pd.DataFrame(rows), folder / "match_quality.parquet", MATCH_QUALITY)
    return folder
