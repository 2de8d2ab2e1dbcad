"""The readers' shared value parsing: Arrow fast paths agree with the general paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.readers import base
from pipeline.ingest.readers.base import (
    MISSING_TIME,
    UNPARSEABLE_TIME,
    _numbers_to_float,
    _parse_times_arrow,
    identity_values,
    parse_times,
    repeated,
    to_float,
)

ZONED = [
    "2026-10-02T17:29:57.000Z",
    " 2026-10-02T17:29:58Z ",
    "2026-10-02T19:29:59+02:00",
    "2026-10-02 17:30:00.1239Z",
    "2026-10-02T17:30Z",
]
ZONED_UTC = [
    "2026-10-02T17:29:57.000",
    "2026-10-02T17:29:58.000",
    "2026-10-02T17:29:59.000",
    "2026-10-02T17:30:00.123",
    "2026-10-02T17:30:00.000",
]


def test_zoned_times_parse_to_utc_milliseconds() -> None:
    times, reasons, _ = parse_times([*ZONED, None, "null"])
    assert str(times.dtype) == "datetime64[ms, UTC]"
    expected = pd.to_datetime(ZONED_UTC).tz_localize("UTC")
    assert times.iloc[:5].tolist() == expected.tolist()
    assert times.iloc[5:].isna().all()
    assert reasons.tolist() == [None] * 5 + [MISSING_TIME] * 2


def test_fast_and_general_time_paths_agree() -> None:
    # a naive time sends the whole column through the general (pandas) path
    general, reasons, details = parse_times([*ZONED, "2026-10-02T17:31:00", "yesterday"])
    fast, _, _ = parse_times(ZONED)
    assert _parse_times_arrow(ZONED) is not None  # all zoned: Arrow parses them
    assert _parse_times_arrow([*ZONED, "2026-10-02T17:31:00"]) is None
    assert general.iloc[:5].tolist() == fast.tolist()
    assert general.iloc[5] == pd.Timestamp("2026-10-02T17:31:00Z")
    assert reasons[6] == UNPARSEABLE_TIME and details[6] == "time='yesterday'"


def test_epoch_integers_beyond_int64_take_the_general_path() -> None:
    # JSON readers give Python ints; one over 2**63 - 1 does not fit Arrow's int64
    times, reasons, _ = parse_times([1714550401000, 2**63, 10**30])
    assert times.iloc[0] == pd.Timestamp("2024-05-01T08:00:01Z")
    assert times.iloc[1] == pd.Timestamp("2262-04-11T23:47:16.854Z")  # taken as nanoseconds
    assert pd.isna(times.iloc[2]) and reasons[2] == UNPARSEABLE_TIME  # beyond any date


def test_string_series_and_lists_parse_alike() -> None:
    arrow_backed = pd.Series(ZONED, dtype="string[pyarrow]")
    assert parse_times(arrow_backed)[0].tolist() == parse_times(ZONED)[0].tolist()
    values, bad = to_float(pd.Series([" 1.5", "NaN", "x", None], dtype="string[pyarrow]"))
    np.testing.assert_array_equal(values[:1], [1.5])
    assert np.isnan(values[1:]).all()
    assert bad.tolist() == [False, False, True, False]


def test_json_numbers_parse_as_their_text_does() -> None:
    numbers = [1.5, -3, None, float("nan"), 1e308, float("inf")]
    assert _numbers_to_float(numbers) is not None  # the Arrow path takes them
    values, bad = to_float(numbers)
    text_values, text_bad = to_float([None if v is None else repr(v) for v in numbers])
    np.testing.assert_array_equal(values, text_values)
    assert not bad.any() and not text_bad.any()
    for mixed in ([1.0, True], [1.0, "2"], [1.0, [2.0]], [10**30], [0.5, 2**60 + 1]):
        assert _numbers_to_float(mixed) is None  # left to the general path
    assert to_float([1.0, True])[1].tolist() == [False, True]


def test_identity_values_strip_and_blank_to_none() -> None:
    assert identity_values([" cam-1 ", "", None, "cam-2"], 4).tolist() == [
        "cam-1",
        None,
        None,
        "cam-2",
    ]
    arrow_backed = pd.Series([" a", "  "], dtype="string[pyarrow]")
    assert identity_values(arrow_backed, 2).tolist() == ["a", None]
    assert identity_values("cam-9", 2).tolist() == ["cam-9", "cam-9"]


def test_repeated_ids_are_one_object() -> None:
    ids = repeated("3f2a9c0d11b4e7a8", 4)
    assert ids.dtype == object and ids.tolist() == ["3f2a9c0d11b4e7a8"] * 4
    assert all(value is ids[0] for value in ids)  # not a new str per row, as np.full makes


FIELD_TEXTS = st.sampled_from(
    [
        "", " ", "nan", " NaN ", "-nan", "+nan", "nan(1)", "null", "None", "na", "N/A", "inf",
        "-Infinity", "1", " 2.5 ", "-0", "1e400", "60,17", "x", "2024-05-01T08:00:00Z",
        "2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00", "2024-05-01", "1700000000",
    ]
)  # fmt: skip


@given(texts=st.lists(FIELD_TEXTS | st.none(), max_size=8))
@settings(max_examples=300, deadline=None)
def test_strings_that_all_cast_are_read_as_when_null_words_are_looked_for(
    texts: list[str | None],
) -> None:
    """The quick cast (every string casts, none to NaN) equals looking for null words first."""
    for target in (pa.float64(), pa.timestamp("ns", tz="UTC")):
        quick = base._cast_strings(texts, target)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(base, "_cast_every_one", lambda *_: None)
            full = base._cast_strings(texts, target)
        assert (quick is None) == (full is None)
        if quick is not None and full is not None:
            assert quick[0].tolist() == full[0].tolist()
            assert quick[1].type == full[1].type
            assert repr(quick[1].to_pylist()) == repr(full[1].to_pylist())  # NaN equals NaN
