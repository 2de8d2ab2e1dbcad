from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.readers import UnreadableFileError, gpx, read_trace_file, xml_tags
from pipeline.simulate.trace_writers import write_trace
from tests.ingest.readers.helpers import DATA, assert_same_reading, check_result, reasons


def test_gpx_1_1_with_garmin_extensions_and_bad_points() -> None:
    result = read_trace_file(DATA / "garmin_1_1.gpx")
    check_result(result)
    assert result.format == "gpx"
    fixes = result.fixes
    assert fixes["source_row"].tolist() == [1, 2, 7]
    assert fixes["observed_at"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00.500Z"),
        pd.Timestamp("2024-05-01T08:00:01Z"),  # +03:00 to UTC
        pd.Timestamp("2024-05-01T08:00:06Z"),
    ]
    np.testing.assert_allclose(fixes["lat"], [60.17, 60.1701, 95.0])
    np.testing.assert_allclose(fixes["lon"], [24.94, 24.9401, 0.0])
    np.testing.assert_allclose(fixes["elevation_m"], [12.5, np.nan, np.nan])
    np.testing.assert_allclose(fixes["hdop"], [0.9, np.nan, np.nan])
    np.testing.assert_allclose(fixes["speed_mps"], [13.4, np.nan, np.nan])
    np.testing.assert_allclose(fixes["heading_deg"], [271.5, np.nan, np.nan])
    assert set(fixes["device_id"]) == {"cam-0042"}
    assert set(fixes["contributor_id"]) == {"Ada Lovelace"}
    assert reasons(result) == {
        3: "missing_time",
        4: "unparseable_coordinates",
        5: "missing_coordinates",
        6: "unparseable_time",
    }
    assert result.ignored == {"rtept": 1, "wpt": 1}


def test_gpx_1_0_plain_speed_course_and_author() -> None:
    result = read_trace_file(DATA / "plain_1_0.gpx")
    check_result(result)
    fixes = result.fixes
    np.testing.assert_allclose(fixes["speed_mps"], [20.5, 21.0])
    np.testing.assert_allclose(fixes["heading_deg"], [45.0, 46.0])
    np.testing.assert_allclose(fixes["hdop"], [2.5, np.nan])
    np.testing.assert_allclose(fixes["elevation_m"], [3.0, np.nan])
    assert fixes["device_id"].tolist() == ["dashcam-7"] * 2
    assert fixes["contributor_id"].tolist() == ["bob"] * 2


def test_gpx_without_namespace_and_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bare.gpx"
    text = '<gpx><trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T08:00:00Z</time></trkpt>'
    path.write_bytes(b"\xef\xbb\xbf" + (text + "</trkseg></trk></gpx>").encode())
    result = read_trace_file(path)
    check_result(result)
    assert result.fixes[["lat", "lon"]].iloc[0].tolist() == [1.0, 2.0]
    assert result.fixes["device_id"].tolist() == [None]


def test_truncated_gpx_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.gpx"
    path.write_bytes((DATA / "garmin_1_1.gpx").read_bytes()[:900])
    with pytest.raises(UnreadableFileError, match=r"cut\.gpx: truncated .*GPX 1\.1"):
        read_trace_file(path)


def test_latin1_gpx_declared_utf8_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin.gpx"
    shutil.copy(DATA / "plain_1_0.gpx", path)
    text = path.read_text().replace("<author>bob</author>", "<author>Jos\u00e9</author>")
    path.write_bytes(
        text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-8"?>').encode(
            "latin-1"
        )
    )
    with pytest.raises(UnreadableFileError, match=r"latin\.gpx: not UTF-8 as its XML declaration"):
        read_trace_file(path)


def test_latin1_gpx_declared_as_such_is_read(tmp_path: Path) -> None:
    path = tmp_path / "latin.gpx"
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><gpx version="1.0"><author>Jos\u00e9</author>'
        '<trk><trkseg><trkpt lat="1" lon="2"><time>2024-05-01T08:00:00Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    path.write_bytes(text.encode("latin-1"))
    result = read_trace_file(path)
    assert result.fixes["contributor_id"].tolist() == ["Jos\u00e9"]


def test_xml_that_is_not_gpx_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "track.gpx"
    path.write_text('<kml xmlns="http://www.opengis.net/kml/2.2"><Document/></kml>')
    with pytest.raises(UnreadableFileError, match=r"not a GPX file \(root element <kml>\)"):
        read_trace_file(path)


def test_entity_declarations_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gpx"
    path.write_text('<!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>')
    with pytest.raises(UnreadableFileError, match="entity"):
        read_trace_file(path)


# --- the tag reader (plain XML, arrays) gives what the ElementTree reader gives ---------------


@pytest.mark.parametrize("name", ["garmin_1_1.gpx", "plain_1_0.gpx"])
def test_tag_reader_reads_the_fixtures_as_the_tree_does(name: str) -> None:
    assert assert_same_reading((DATA / name).read_bytes())


def test_tag_reader_reads_the_fleet_simulators_gpx(tmp_path: Path) -> None:
    times = pd.date_range("2024-05-01T08:00:00Z", periods=5, freq="1s", unit="ms")
    fixes = pd.DataFrame(
        {
            "trace_id": "dev-1",
            "trip_id": ["t1"] * 3 + ["t2"] * 2,
            "observed_at": times,
            "lon": np.linspace(24.9, 24.91, 5),
            "lat": np.linspace(60.1, 60.11, 5),
            "hdop": [0.9, 1.0, 1.1, np.nan, 1.2],
            "speed_mps": [0.0, 5.5, np.nan, 7.0, 8.0],
            "heading_deg": [90.0, 91.0, 92.0, np.nan, 94.0],
            "elevation_m": [10.0, np.nan, 12.0, 13.0, 14.0],
        }
    )
    write_trace(fixes, tmp_path / "dev-1.gpx", "gpx", "dev-1", "contrib-1")
    assert assert_same_reading((tmp_path / "dev-1.gpx").read_bytes())


@pytest.mark.parametrize(
    ("case", "read_by_tags"),
    [
        ('<trkpt lat="1" lon="2"/>', True),  # self-closing
        ("<trkpt lat='1' lon='2'><time>2024-05-01T08:00:00Z</time></trkpt>", True),
        (
            '<trkpt lat="1" lon="2"><speed>3</speed><extensions><speed>4</speed></extensions>'
            "</trkpt>",
            True,
        ),  # the first candidate wins
        (
            '<trkpt lat="1" lon="2"><extensions><a><b><heading>7</heading></b></a></extensions>'
            "<course>8</course></trkpt>",
            True,
        ),  # extension at any depth, before the child
        ('<trkpt lat="1" lon="2"><speed/><speed></speed><speed>5</speed></trkpt>', True),
        ('<trkpt lat="1" lon="2"><link><time>x</time></link><heading>3</heading></trkpt>', True),
        ('<g:trkpt lat="1" lon="2" xmlns:g="urn:g"><g:time>t</g:time></g:trkpt>', True),
        ('<trkpt lat="1" lon="2"><time>2024<!-- c -->-05</time></trkpt>', True),
        ('<trkpt\r\n lat="1"\r\n lon="2"><ele>3\r\n</ele></trkpt>', True),  # CRLF
        ('<trkpt desc="a lat=9" lat="1" lon="2"/>', True),  # lat= inside another value
        ('<trkpt latitude="5" lon="2"/>', True),  # no lat
        ('<trkpt lat = "1" lon="2"/>', False),  # spaces around =
        ('<trkpt lat="1" lon="2" desc="it\'s"/>', False),  # both quotes in one tag
        ('<trkpt lat="1\t" lon="2"/>', False),  # a tab in a value (a parser makes it a space)
        ('<trkpt lat="1" lon="2"><time>a &amp; b</time></trkpt>', False),  # a reference
        ('<trkpt lat="1" lon="2"><time><![CDATA[x]]></time></trkpt>', False),
        ('<trkpt lat="1" lon="2"><desc>1 > 0</desc></trkpt>', False),  # ">" in text
        ('<trkpt lat="1" lon="2"><trkpt lat="3" lon="4"/></trkpt>', False),  # nested points
        ('<trkpt lat="1" lon="2">', False),  # not well-formed: the tree refuses it too
    ],
)
def test_tag_reader_agrees_with_the_tree_or_leaves_the_file_to_it(
    case: str, read_by_tags: bool
) -> None:
    document = f'<?xml version="1.0"?><gpx><trk><trkseg>{case}</trkseg></trk></gpx>'
    assert assert_same_reading(document.encode()) is read_by_tags


NAMES = st.sampled_from(
    ["time", "ele", "hdop", "speed", "course", "heading", "bearing", "name", "sat", "x:speed"]
)
TEXTS = st.sampled_from(["", " ", "12.5", "2024-05-01T08:00:00Z", "-3", "nope", "\u00e9"])


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> str:
    """A child of a point: a leaf with text, an empty element or an element with children."""
    name = draw(NAMES if depth == 0 else st.one_of(NAMES, st.just("extensions")))
    if draw(st.booleans()) or depth >= 2:
        return draw(st.sampled_from([f"<{name}>{draw(TEXTS)}</{name}>", f"<{name}/>"]))
    inner = "".join(draw(st.lists(elements(depth + 1), max_size=3)))
    return f"<{name}>{draw(TEXTS)}{inner}</{name}>"


@st.composite
def points(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(['"', "'"]))
    attributes = "".join(
        f" {name}={quote}{draw(st.sampled_from(['60.1', '-24.9', '', 'x']))}{quote}"
        for name in draw(st.permutations(["lat", "lon", "foo"]))[: draw(st.integers(1, 3))]
    )
    children = draw(
        st.lists(
            st.one_of(elements(), elements(1).map("<extensions>{}</extensions>".format)), max_size=5
        )
    )
    separator = draw(st.sampled_from(["", "\n", "\r\n", " <!-- c --> "]))
    return f"<trkpt{attributes}>{separator.join(children)}</trkpt>"


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    header = draw(
        st.sampled_from(
            [
                "<metadata><name>cam-1</name><author><name>ann</name></author></metadata>",
                "<name> dev-2 </name><author>bob</author>",
                "<author><name>carl</name></author>",
                "",
            ]
        )
    )
    extra = draw(st.sampled_from(["", '<wpt lat="1" lon="2"/>', "<rte><rtept/></rte>"]))
    body = "".join(draw(st.lists(points(), max_size=6)))
    root = '<gpx xmlns="http://www.topografix.com/GPX/1/1" xmlns:x="urn:x">'
    text = f"{root}{header}{extra}<trk><trkseg>{body}</trkseg></trk></gpx>"
    prefix = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>\n', "\ufeff"]))
    return (prefix + text).encode()


@given(documents())
@settings(max_examples=300, deadline=None)
def test_tag_reader_agrees_with_the_tree_on_generated_documents(document: bytes) -> None:
    """Every generated document is plain XML, so the tag reader must read it, and alike."""
    assert assert_same_reading(document)


@given(point=points(), texts=st.lists(TEXTS, min_size=1, max_size=60), count=st.integers(1, 5))
@settings(max_examples=300, deadline=None)
def test_points_written_alike_are_read_as_any_points(
    point: str, texts: list[str], count: int
) -> None:
    """Points with the same tags, texts aside, give the same fields as points read one by one."""
    draws = iter(texts * 5 * count)
    alike = "".join(
        re.sub(r">[^<]*<", lambda _: f">{next(draws, '')}<", point) for _ in range(count)
    )
    root = '<gpx xmlns="http://www.topografix.com/GPX/1/1" xmlns:x="urn:x">'
    document = f"{root}<trk><trkseg>{alike}</trkseg></trk></gpx>".encode()
    assert assert_same_reading(document)
    tags = xml_tags.tokenize(document)
    assert tags is not None
    is_point = tags.named(b"trkpt")
    starts = np.flatnonzero(~tags.is_end & is_point)
    ends = np.flatnonzero(tags.is_end & is_point)
    by_place = gpx._text_bounds_of_alike_points(tags, starts, ends)
    assert by_place is not None
    by_owner = gpx._text_bounds_by_owner(tags, starts, ends)
    for name, (text_starts, text_ends) in by_owner.items():
        assert by_place[name][0].tolist() == text_starts.tolist()
        assert by_place[name][1].tolist() == text_ends.tolist()


def test_gpx_declaring_an_encoding_expat_cannot_read_is_unreadable(tmp_path: Path) -> None:
    """``encoding="UTF-16-BE"`` made expat raise ``ValueError: multi-byte encodings ...``."""
    path = tmp_path / "be.gpx"
    text = '<?xml version="1.0" encoding="UTF-16-BE"?><gpx version="1.1"></gpx>'
    path.write_bytes(text.encode("utf-16-be"))
    with pytest.raises(UnreadableFileError, match="be.gpx: XML declares an encoding expat"):
        read_trace_file(path)
