"""The tags of plain XML documents, found with NumPy (pipeline.ingest.readers.xml_tags)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ingest.readers.xml_tags import tokenize


def test_tags_have_kinds_levels_and_local_names() -> None:
    tags = tokenize(b'<?xml version="1.0"?>\n<a xmlns:p="urn:p"><p:b x="1">hi<c/></p:b></a>')
    assert tags is not None
    assert tags.is_end.tolist() == [False, False, False, True, True]
    assert tags.is_empty.tolist() == [False, False, True, False, False]
    assert tags.level.tolist() == [0, 1, 2, 1, 0]
    assert np.flatnonzero(tags.named(b"b")).tolist() == [1, 3]  # prefix dropped
    assert tags.text(1) == "hi" and tags.text(2) is None
    assert tags.first_child(0, b"b") == 1 and tags.first_child(1, b"c") == 2
    assert tags.end_of(1) == 3


def test_long_names_are_compared_past_their_first_eight_bytes() -> None:
    tags = tokenize(b"<r><extensions/><extensionz/><extension/></r>")
    assert tags is not None
    assert np.flatnonzero(tags.named(b"extensions")).tolist() == [1]
    assert np.flatnonzero(tags.named(b"extension")).tolist() == [3]


def test_attributes_in_either_quotes_and_absent() -> None:
    tags = tokenize(b'<r><p lat="1.5" lon="2"/><p lon=\'3\' xlat=\'9\'/><p lat=""/></r>')
    assert tags is not None
    points = np.flatnonzero(tags.named(b"p") & ~tags.is_end)
    found = tags.attributes(points, (b"lat", b"lon"))
    assert found is not None
    assert found[b"lat"].to_pylist() == ["1.5", None, ""]
    assert found[b"lon"].to_pylist() == ["2", "3", None]


@pytest.mark.parametrize(
    "tag",
    [b'<p lat = "1"/>', b"<p lat=\"1\" lon='2'/>", b'<p lat="1\n2"/>', b"<p lat=1/>"],
)
def test_attributes_written_unusually_are_left_to_a_parser(tag: bytes) -> None:
    tags = tokenize(b"<r>" + tag + b"</r>")
    if tags is not None:  # (an unquoted value is not even well-formed)
        assert tags.attributes(np.array([1]), (b"lat",)) is None


def test_texts_gather_ranges_and_nulls() -> None:
    tags = tokenize(b"<r><a>one</a><a>two</a></r>")
    assert tags is not None
    starts, ends = tags.text_bounds(np.flatnonzero(tags.named(b"a") & ~tags.is_end))
    starts[0] = -1
    assert tags.texts(starts, ends).to_pylist() == [None, "two"]


def test_comments_and_line_ends_are_handled_as_a_parser_does() -> None:
    tags = tokenize(b"<r><a>x<!-- <b>not a tag</b> -->y\r\nz</a></r>")
    assert tags is not None
    assert len(tags) == 4
    assert tags.text(1) == "xy\nz"


@pytest.mark.parametrize(
    "document",
    [
        b"<r><a>1 &lt; 2</a></r>",  # a reference
        b"<r><![CDATA[x]]></r>",
        b"<!DOCTYPE r><r/>",
        b"<r><?pi x?></r>",
        b"<r>1 > 0</r>",  # '>' in text
        b'<r a="x>y"/>',  # '>' in a value
        '<?xml version="1.0" encoding="ISO-8859-1"?><r>\u00e9</r>'.encode("latin-1"),
        "<r>x</r>".encode("utf-16"),
        b"<r><a></r>",  # not well-formed
        b"<r><p:a/></r>",  # unbound prefix: not namespace-well-formed
        b"",
    ],
)
def test_documents_that_are_not_plain_are_left_to_a_parser(document: bytes) -> None:
    assert tokenize(document) is None
