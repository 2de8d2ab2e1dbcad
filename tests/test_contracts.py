"""Contract validation: key uniqueness, by one pass over sorted rows or by grouping."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contracts import Contract, in_key_order, unique_in_blocks, validate_table
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


@st.composite
def blocked_keys(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Keys in blocks per trace (blocks in any order), often spoilt by a swap or a copy."""
    times = st.lists(st.integers(-3, 3), min_size=1, max_size=4, unique=True).map(sorted)
    blocks = draw(st.dictionaries(st.sampled_from(["", "a", "ab", "b", "é"]), times, max_size=4))
    order = draw(st.permutations(sorted(blocks)))
    keys = [(trace, at) for trace in order for at in blocks[trace]]
    if keys and draw(st.booleans()):
        i, j = draw(st.integers(0, len(keys) - 1)), draw(st.integers(0, len(keys) - 1))
        if draw(st.booleans()):
            keys[i], keys[j] = keys[j], keys[i]
        else:
            keys.insert(j, keys[i])
    return keys


def in_blocks(keys: list[tuple[str, int]]) -> bool:
    """Each trace's rows one block, times strictly increasing in it, at least two rows."""
    runs = [list(run) for _, run in itertools.groupby(keys, key=lambda key: key[0])]
    increasing = all(a[1] < b[1] for run in runs for a, b in itertools.pairwise(run))
    return len(keys) >= 2 and len({run[0][0] for run in runs}) == len(runs) and increasing


@settings(deadline=None)
@given(blocked_keys())
def test_keys_in_blocks_are_unique_and_spoilt_blocks_still_checked(
    keys: list[tuple[str, int]],
) -> None:
    assert unique_in_blocks(visits(keys), VISITS.key) == in_blocks(keys)
    if len(set(keys)) < len(keys):
        with pytest.raises(ContractError, match=r"key \(trace, at\) is not unique"):
            validate_table(visits(keys), VISITS)
    else:
        validate_table(visits(keys), VISITS)


def test_blocks_need_a_key_of_two_columns_and_no_nulls() -> None:
    one_column = pa.table({"trace": ["a", "b"]})
    assert not unique_in_blocks(one_column, ["trace"])
    nulls = pa.table({"trace": pa.array([None, None], pa.string()), "at": [1, 2]})
    assert not unique_in_blocks(nulls, ["trace", "at"])
