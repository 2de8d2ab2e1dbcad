"""Edge pieces, per-trip rows and the canonical edge of each road, against hand-worked answers.

The network is a hand-written OSM file at 60° N: a straight two-way street (1-2), a one-way
street (2-3) and a two-way loop (3-4-5-3) whose both directions start and end at node 3.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest

from pipeline.coverage.edges import (
    canonical_edges,
    edge_trip_rows,
    merge_edge_contributors,
    road_lengths_mm,
    road_pieces,
    segment_pieces,
)
from pipeline.coverage.intervals import union_pieces
from pipeline.coverage.tables import edge_totals
from pipeline.roads import build_roads, read_edges
from tests.builders import write_osm_network

WHEN = pd.Timestamp("2026-10-10T10:00:00Z")
WHEN_MS = 1_791_626_400_000  # 2026-10-10T10:00:00Z: 20_736 days after 1970-01-01, plus 10 h
NODES = {
    1: (60.1700, 24.9400), 2: (60.1700, 24.9420), 3: (60.1700, 24.9440),
    4: (60.1710, 24.9450), 5: (60.1710, 24.9430),
}  # fmt: skip
WAYS = {
    200: ([1, 2], "residential", False),
    201: ([2, 3], "residential", True),
    202: ([3, 4, 5, 3], "residential", False),
}


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    folder = tmp_path_factory.mktemp("edges-roads")
    build_roads(write_osm_network(folder / "net.osm", NODES, WAYS), folder / "roads")
    return read_edges(folder / "roads")


def segment(edge_id: int, trip: str, from_m: float, to_m: float) -> dict[str, object]:
    return {
        "edge_id": edge_id,
        "trip_id": trip,
        "contributor_id": "c",
        "from_offset_m": from_m,
        "to_offset_m": to_m,
        "entered_at": WHEN,
        "exited_at": WHEN + pd.Timedelta(seconds=30),
    }


def test_driven_length_is_the_distance_between_the_offsets() -> None:
    segments = pd.DataFrame(
        [
            segment(7, "a", 10.0, 25.5),  # 15.5 m, not starting at the edge's start
            segment(7, "a", 40.0, 42.25),  # the same trip again: 2.25 m more, two passes
            segment(9, "b", 30.0, 12.0),  # offsets in reverse order: 18 m
        ]
    )
    rows = edge_trip_rows(segments).set_index(["edge_id", "trip_id"])
    assert rows.loc[(7, "a"), "driven_mm"] == 17_750
    assert rows.loc[(7, "a"), "passes"] == 2
    assert rows.loc[(9, "b"), "driven_mm"] == 18_000
    assert rows.loc[(9, "b"), "first_ms"] == WHEN_MS
    assert rows.loc[(9, "b"), "last_ms"] == WHEN_MS + 30_000
    pieces = segment_pieces(segments)
    assert pieces[["key", "from_mm", "to_mm"]].values.tolist() == [
        [7, 10_000, 25_500],
        [7, 40_000, 42_250],
        [9, 12_000, 30_000],
    ]


def test_edge_ids_of_any_integer_type_give_int64_keys() -> None:
    segments = pd.DataFrame([segment(7, "a", 0.0, 1.0)]).astype({"edge_id": "int32"})
    assert segment_pieces(segments)["key"].dtype == "int64"
    assert edge_trip_rows(segments)["edge_id"].dtype == "int64"


def test_canonical_edge_is_the_roads_lowest_id_and_flip_marks_the_other_direction(
    edges: gpd.GeoDataFrame,
) -> None:
    straight = edges[edges["u"].isin([1, 2]) & edges["v"].isin([1, 2])]
    oneway = edges[(edges["u"] == 2) & (edges["v"] == 3)]
    chosen = pd.concat([straight, oneway])
    low = int(straight["edge_id"].min())
    expected = pd.DataFrame(
        {
            "canonical_id": [low, low, int(oneway["edge_id"].iloc[0])],
            "flip": [edge_id != low for edge_id in straight["edge_id"]] + [False],
            "length_mm": (chosen["length_m"] * 1000).round().astype("int64").to_list(),
        },
        index=pd.Index(chosen["edge_id"].to_numpy(), name="edge_id"),
    )
    pd.testing.assert_frame_equal(canonical_edges(chosen), expected)


def test_both_directions_of_a_two_way_loop_cover_their_union(edges: gpd.GeoDataFrame) -> None:
    loop = edges[(edges["u"] == 3) & (edges["v"] == 3)]
    assert len(loop) == 2 and loop["road_id"].nunique() == 1
    length_m = float(loop["length_m"].iloc[0])
    # the first 30 % of each direction: 0-30 % and 70-100 % of the road, 60 % in all
    segments = pd.DataFrame([segment(int(e), "t", 0.0, 0.3 * length_m) for e in loop["edge_id"]])
    pieces = union_pieces(segment_pieces(segments))
    roads = road_pieces(pieces, canonical_edges(edges))
    covered_m = float((roads["to_mm"] - roads["from_mm"]).sum()) / 1000
    assert covered_m == pytest.approx(0.6 * length_m, abs=0.002)


def test_a_reverse_edge_longer_than_its_road_covers_the_road_once_and_no_more() -> None:
    # road 10: canonical edge 1 of 100.000 m; its reverse, edge 2, measured 1 mm longer
    canonical = pd.DataFrame(
        {"canonical_id": [1, 1], "flip": [False, True], "length_mm": [100_000, 100_001]},
        index=pd.Index([1, 2], name="edge_id"),
    )
    pieces = pd.DataFrame(
        {"key": [2], "from_mm": [0], "to_mm": [100_001], "first_ms": [5], "last_ms": [9]}
    )
    roads = road_pieces(pieces, canonical)
    # driven end to end against the road: all of road 10's 100,000 mm (not 100,001)
    assert roads.to_dict("records") == [
        {"key": 1, "from_mm": 0, "to_mm": 100_000, "first_ms": 5, "last_ms": 9}
    ]
    assert road_lengths_mm(canonical).to_dict() == {1: 100_000}


def test_an_edges_totals_from_its_contributors_rows_are_those_of_its_trips() -> None:
    trips = pd.DataFrame(
        {"edge_id": [1, 1, 1, 2], "trip_id": ["t1", "t2", "t3", "t1"],
         "contributor_id": ["x", "x", "y", "x"], "passes": [1, 2, 1, 1],
         "driven_mm": [100, 50, 70, 9], "first_ms": [10, 30, 5, 12], "last_ms": [20, 40, 15, 13]}
    )  # fmt: skip
    pairs = merge_edge_contributors(trips)
    assert list(pairs.itertuples(index=False, name=None)) == [
        (1, "x", 3, 150, 10, 40), (1, "y", 1, 70, 5, 15), (2, "x", 1, 9, 12, 13),
    ]  # fmt: skip
    totals = edge_totals(pairs)
    assert totals.loc[1].to_dict() == {
        "passes": 4, "contributors": 2, "driven_mm": 220, "first_ms": 5, "last_ms": 40,
    }  # fmt: skip
    assert totals.equals(edge_totals(trips))
