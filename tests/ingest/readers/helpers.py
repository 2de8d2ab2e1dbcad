"""Shared checks and builders for the reader tests."""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.ingest.readers import (
    FIX_COLUMNS,
    REJECT_COLUMNS,
    ReadResult,
    UnreadableFileError,
    gpx,
)

DATA = Path(__file__).parent / "data"


def check_result(result: ReadResult) -> None:
    """The invariants every reader guarantees."""
    assert result.rows_read == len(result.fixes) + len(result.rejects)
    fixes, rejects = result.fixes, result.rejects
    assert list(fixes.columns) == FIX_COLUMNS
    assert list(rejects.columns) == REJECT_COLUMNS
    assert str(fixes["observed_at"].dtype) == "datetime64[ms, UTC]"
    assert fixes["source_row"].dtype == "int64"
    assert rejects["source_row"].dtype == "int64"
    for column in ("lon", "lat", "hdop", "speed_mps", "heading_deg", "elevation_m"):
        assert fixes[column].dtype == "float64", column
    for column in ("source_file", "contributor_id", "device_id"):
        assert fixes[column].dtype == object, column
        assert all(v is None or isinstance(v, str) for v in fixes[column]), column
    assert not fixes["observed_at"].isna().any()
    assert not fixes[["lon", "lat"]].isna().any().any()
    assert not rejects.duplicated(["source_row", "reason"]).any()
    assert rejects["reason"].notna().all()


def reasons(result: ReadResult) -> dict[int, str]:
    """Source row -> reason of every reject."""
    return dict(zip(result.rejects["source_row"], result.rejects["reason"], strict=True))


def utc(text: str) -> pd.Timestamp:
    return (
        pd.Timestamp(text).tz_convert("UTC")
        if "+" in text or "Z" in text
        else pd.Timestamp(text, tz="UTC")
    )


def nmea(body: str) -> str:
    """A sentence with its correct checksum."""
    checksum = reduce(lambda a, b: a ^ b, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}"


def values_of(points: gpx.Points) -> tuple[dict[str, list[str | None]], dict[str, Any], dict]:
    """A reading's fields as lists (None for absent), its identity and ignored counts."""
    fields, identity, ignored = points
    listed = {
        name: [None if pd.isna(value) else value for value in values]
        for name, values in fields.items()
    }
    return listed, identity, dict(ignored)


def assert_same_reading(data: bytes) -> bool:
    """Check the tag reader gives the tree reader's points; return whether it read them.

    A document the tree reader refuses must not be read by the tag reader either.
    """
    by_tags = gpx._points_by_tags(data)
    try:
        by_tree = gpx._points_by_tree(data, "doc.gpx")
    except UnreadableFileError:
        assert by_tags is None
        return False
    if by_tags is None:
        return False
    assert values_of(by_tags) == values_of(by_tree)
    return True
