"""Tests of pipeline.roads.identity: which roads an output was made with, and the refusal."""

from __future__ import annotations

import pytest

from pipeline.errors import InputDataError
from pipeline.roads.identity import refuse_other_roads

ROADS = {"edges_sha256": "e" * 64, "source_sha256": "s" * 64, "bbox": [7.4, 43.7, 7.5, 43.8]}
OTHER_EDGES = {**ROADS, "edges_sha256": "f" * 64}


def refuse(made_with: object, extract_sha256: object = None) -> None:
    refuse_other_roads(
        made_with, ROADS, "/roads/monaco", output="COVERAGE holds coverage of",
        fix="pass the roads folder it was made with", extract_sha256=extract_sha256,
    )  # fmt: skip


def test_same_roads_pass() -> None:
    refuse(dict(ROADS))
    refuse(dict(ROADS), extract_sha256="s" * 64)


def test_other_edges_of_the_same_extract_are_refused_in_one_line_naming_both() -> None:
    with pytest.raises(InputDataError) as caught:
        refuse(OTHER_EDGES, extract_sha256="s" * 64)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("COVERAGE holds coverage of other roads (edges sha256 ffffffffffff")
    assert "than /roads/monaco (edges sha256 eeeeeeeeeeee" in message
    assert message.endswith("; pass the roads folder it was made with")


def test_an_output_without_identity_is_checked_by_its_extract() -> None:
    with pytest.raises(InputDataError, match=r"other roads \(extract sha256 xxxxxxxxxxxx\)"):
        refuse(None, extract_sha256="x" * 64)
    refuse(None, extract_sha256="s" * 64)


def test_an_output_that_recorded_nothing_is_not_refused() -> None:
    refuse(None)
    refuse("not an identity")


def test_the_same_edges_said_to_come_from_another_extract_are_other_roads() -> None:
    with pytest.raises(InputDataError, match=r"extract sha256 tttttttttttt"):
        refuse({**ROADS, "source_sha256": "t" * 64})
