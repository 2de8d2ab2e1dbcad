"""Contract validation: key uniqueness, by one pass over sorted rows or by grouping."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contracts import Contract, in_key_order, validate_table
from pipeline.errors import ContractError

VISITS = Contract(
    name="visits",
    version=1,
    schema=pa.schema(
        [
            pa.field("trace", pa.string(), nullable=False),
            pa.field("at", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("speed", pa.float64(), nullable=True),
        ]
    ),
    key=("trace", "at"),
    geometry_column=None,
)
KEYS = st.tuples(st.sampled_from(["", "a", "ab", "b", "é"]), st.integers(-3, 3))


def visits(keys: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "trace": pa.array([trace for trace, _ in keys], pa.string()),
            "at": pa.array([at for _, at in keys], pa.timestamp("ms", tz="UTC")),
            "speed": pa.array([1.0] * len(keys), pa.float64()),
        }
    )


@settings(deadline=None)  # the first call also warms up Arrow's compute functions
@given(st.lists(KEYS, max_size=12), st.booleans())
def test_a_key_is_reported_exactly_when_it_repeats(keys: list[tuple[str, int]], sort: bool) -> None:
    keys = sorted(keys) if sort else keys
    repeats = len(set(keys)) < len(keys)
    if repeats:
        with pytest.raises(ContractError, match=r"key \(trace, at\) is not unique"):
            validate_table(visits(keys), VISITS)
    else:
        validate_table(visits(keys), VISITS)


@settings(deadline=None)
@given(st.lists(KEYS, min_size=1, max_size=12))
def test_sorted_unique_keys_are_settled_without_grouping(keys: list[tuple[str, int]]) -> None:
    increasing = all(a < b for a, b in itertools.pairwise(keys))
    assert in_key_order(visits(keys), VISITS.key, strict=True) == increasing  # UTF-8 byte order
