"""The tags of plain XML documents, found with NumPy (pipeline.ingest.readers.xml_tags)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


VALUE = st.text(alphabet=["1", ".", "-", " ", "'", "\t", "\n", "/", "=", "l", "a", "t"], max_size=4)
ATTRIBUTE = st.tuples(
    st.sampled_from([" ", "  ", "\t", "\n"]),
    st.sampled_from(["lat", "lon", "xlat", "la"]),
    st.sampled_from(["=", " = "]),
    st.sampled_from(['"', "'"]),
    VALUE,
)
IN_ORDER = st.tuples(
    st.tuples(st.just(" "), st.just("lat"), st.just("="), st.just('"'), VALUE),
    st.tuples(st.just(" "), st.just("lon"), st.just("="), st.just('"'), VALUE),
).map(list)
END = st.sampled_from(["/>", "></p>", " />", ">x</p>"])
POINT = st.tuples(st.lists(ATTRIBUTE, max_size=3), END)


@given(
    points=st.lists(POINT, min_size=1, max_size=4)
    | st.lists(st.tuples(IN_ORDER, END), min_size=1, max_size=4),
    prefix=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_attributes_in_order_are_those_found_by_search(
    points: list[tuple[list[tuple[str, str, str, str, str]], str]], prefix: bool
) -> None:
    """The fast reading of ``<p lat="..." lon="...">`` tags gives what the search gives."""
    name = "g:p" if prefix else "p"
    body = "".join(
        f"<{name}"
        + "".join(f"{s}{a}{e}{q}{v.replace(q, '')}{q}" for s, a, e, q, v in attributes)
        + end.replace("</p>", f"</{name}>")
        for attributes, end in points
    )
    tags = tokenize(f'<r xmlns:g="urn:g">{body}</r>'.encode())
    if tags is None:
        return  # not well-formed (e.g. an attribute twice)
    starts = np.flatnonzero(tags.named(b"p") & ~tags.is_end)
    names = (b"lat", b"lon")
    fast, searched = tags.attributes(starts, names), tags._attributes_by_search(starts, names)
    if searched is None:
        assert fast is None
    else:
        assert fast is not None
        assert {k: v.to_pylist() for k, v in fast.items()} == {
            k: v.to_pylist() for k, v in searched.items()
        }


def test_attributes_in_order_read_plain_points() -> None:
    tags = tokenize(b'<r><p lat="1.5" lon="-2"/><p lat="" lon="3"></p></r>')
    assert tags is not None
    starts = np.flatnonzero(tags.named(b"p") & ~tags.is_end)
    found = tags._attributes_in_order(starts, (b"lat", b"lon"))
    assert found is not None
    assert found[b"lat"].to_pylist() == ["1.5", ""]
    assert found[b"lon"].to_pylist() == ["-2", "3"]


def test_rows_of_tags_alike_or_not() -> None:
    tags = tokenize(
        b"<r><p><a/></p><p><a/></p><p><b/></p><p><extensionsA/></p><p><extensionsB/></p>"
        b"<p><a></a></p><p></p></r>"
    )
    assert tags is not None
    rows = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]])
    assert tags.alike(rows[[0, 1]])
    assert not tags.alike(rows[[0, 2]])  # another name
    assert not tags.alike(rows[[3, 4]])  # a long name differing past its first eight bytes
    assert not tags.alike(np.array([[16, 17, 18], [19, 20, 21]]))  # <a></a></p> vs </p><p>
    assert tags.between(4, 7).level.tolist() == [1, 2, 1]
