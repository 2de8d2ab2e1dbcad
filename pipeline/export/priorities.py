"""Where to drive next: roads ranked by the value of driving them now, cells, and tours.

A road (both directions of a two-way street are one road, as coverage counts them) is worth
driving for its **new** length (never driven) and its **stale** length (last driven longer
ago than ``priorities.freshness_target_days``). Its value is

    class weight x (new km + stale_weight x stale km) x (1 + new km nearby)

where the class weight is that of its OSM highway class (``priorities.class_weights``) and
"new km nearby" is the never-driven length of the roads in its H3 cell and the six cells
around it. Roads with new length rank before roads that are only stale; within each group,
by value. Each road belongs to the cell (``priorities.h3_resolution``, 7 or 8) of its
midpoint; a cell's km to gain are its roads' new and stale km, and cells rank by their roads'
summed value. For each of the top ``priorities.tours`` cells a tour
(:mod:`pipeline.export.tours`) drives every road of the cell with something to gain.

Outputs (``OUT``, written under its folder lock, each file atomically):

- ``roads.parquet``: the ``priority_roads`` table (see ``docs/priorities.md``);
- ``cells.geojson``: the cells with something to gain, ranked;
- ``tours.geojson`` and ``tours/tour-NN.gpx``: the tours as lines and as GPX 1.1 tracks;
- ``summary.json``: the totals, the settings, and per tour its length, km gained and cell.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import h3.api.numpy_int as h3int
import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from pipeline.config import PrioritySettings
from pipeline.contracts import PRIORITY_ROADS
from pipeline.coverage.cells import cell_polygons
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.edges import canonical_edges, road_pieces
from pipeline.coverage.intervals import to_mm
from pipeline.export.inputs import as_of_of, read_summary
from pipeline.export.tours import (
    EdgeKey,
    RouteFinder,
    Tour,
    approach_from_clear_node,
    plan_tour,
    reachable_roads,
)
from pipeline.geodesy import cells_of
from pipeline.ingest.privacy import end_radius_m
from pipeline.io import atomic_path, write_json, write_table
from pipeline.locking import DEFAULT_TIMEOUT_S, folder_lock
from pipeline.roads import read_edges
from pipeline.roads.identity import refuse_other_roads, roads_identity
from pipeline.roads.store import EDGES_FILE as ROADS_EDGES_FILE
from pipeline.roads.store import META_FILE

log = logging.getLogger(__name__)

ROADS_INPUTS = (META_FILE, ROADS_EDGES_FILE)
"""What priorities read of the roads folder (its identity, edges): all a stage-in downloads."""

DEFAULT_CLASS_WEIGHT = 0.5
"""Weight of a highway class that ``priorities.class_weights`` does not list."""
TRIM_MARGIN_M = 50.0
"""Metres beyond the privacy circle (trim plus GPS allowance) a tour starts and ends clear of."""
MS_PER_DAY = 86_400_000
GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
ROADS_FILE = "roads.parquet"
CELLS_FILE = "cells.geojson"
TOURS_FILE = "tours.geojson"
TOURS_FOLDER = "tours"
SUMMARY_FILE = "summary.json"


def export_priorities(
    coverage_dir: Path,
    roads_dir: Path,
    out_dir: Path,
    settings: PrioritySettings,
    privacy_trim_m: float = 200.0,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Rank roads and cells by the value of driving them now and plan tours of the top cells.

    Parameters
    ----------
    coverage_dir
        A coverage folder (``roadcover coverage``).
    roads_dir
        The roads folder the coverage was computed on.
    out_dir
        Output folder (created); the files of an earlier export in it are replaced.
    settings
        ``priorities`` of the config.
    privacy_trim_m
        ``ingest.privacy_trim_m``: each tour starts and ends at a node clear of its roads by
        the privacy circle (this plus the GPS allowance of an unknown HDOP) and
        ``TRIM_MARGIN_M``, so that no road of the tour is lost to the trimmed trip ends.
    lock_timeout_s
        How long to wait for another writer of ``out_dir``.

    Returns
    -------
    dict
        The content of ``summary.json``.

    Raises
    ------
    InputDataError
        If the coverage folder is incomplete or of other roads than ``roads_dir``.
    """
    coverage_dir, roads_dir, out_dir = Path(coverage_dir), Path(roads_dir), Path(out_dir)
    summary = read_summary(coverage_dir)
    _check_same_roads(coverage_dir, roads_dir, summary)
    edges = read_edges(roads_dir)
    as_of = as_of_of(summary)
    roads = rank_roads(_road_gains(coverage_dir, edges, as_of, settings), settings)
    cells = rank_cells(roads)
    graph = road_graph(edges)
    extra_m = _start_clearance_m(privacy_trim_m)
    tours = plan_cell_tours(graph, edges, roads, cells, settings, extra_m)
    roads["tour"] = _tour_of_roads(roads, tours)
    cells["tour"] = cells["cell"].map({t["cell"]: t["tour"] for t in tours}).astype("Int32")
    result = _summary(roads, cells, tours, settings, as_of, extra_m)
    for note in result["notes"]:
        log.warning("export priorities: %s", note)
    with folder_lock(out_dir, lock_timeout_s):
        _write_outputs(out_dir, roads, cells, tours, graph, result)
    log.info(
        "export priorities: %d roads, %.1f new km, %.1f stale km, %d tours -> %s",
        len(roads), result["new_km"], result["stale_km"], len(tours), out_dir,
    )  # fmt: skip
    return result


def _start_clearance_m(privacy_trim_m: float) -> float:
    """Return how far a tour starts and ends from its roads: 0 when ingest trims nothing."""
    if privacy_trim_m <= 0:
        return 0.0
    no_hdop = np.array([np.nan])
    return float(end_radius_m(privacy_trim_m, no_hdop, no_hdop)[0]) + TRIM_MARGIN_M


def _check_same_roads(coverage_dir: Path, roads_dir: Path, summary: Mapping[str, Any]) -> None:
    refuse_other_roads(
        summary.get("roads"), roads_identity(roads_dir), roads_dir,
        output=f"{coverage_dir} holds coverage of",
        fix="pass the roads folder the coverage was computed on",
    )  # fmt: skip


def _road_gains(
    coverage_dir: Path, edges: gpd.GeoDataFrame, as_of: pd.Timestamp, settings: PrioritySettings
) -> gpd.GeoDataFrame:
    """One row per road: its canonical edge, length, new and stale metres, age in days."""
    coverage = read_edge_table(coverage_dir)
    canonical = canonical_edges(edges)
    cutoff_ms = int(as_of.value // 1_000_000) - round(settings.freshness_target_days * MS_PER_DAY)
    pieces = road_pieces(_interval_pieces(coverage), canonical)
    length_mm = (pieces["to_mm"] - pieces["from_mm"]).to_numpy()
    covered = pd.Series(length_mm, index=pieces["key"]).groupby(level=0).sum()
    fresh_mm = np.where(pieces["last_ms"].to_numpy() >= cutoff_ms, length_mm, 0)
    fresh = pd.Series(fresh_mm, index=pieces["key"]).groupby(level=0).sum()
    last_ms = pieces.groupby("key")["last_ms"].max()

    first = edges[edges["edge_id"].isin(canonical["canonical_id"])].set_index("edge_id")
    road_mm = to_mm(first["length_m"]).astype("int64")
    covered_mm = covered.reindex(first.index, fill_value=0).to_numpy()
    fresh_mm = fresh.reindex(first.index, fill_value=0).to_numpy()
    last = last_ms.reindex(first.index)
    age_days = (as_of.value // 1_000_000 - last) / MS_PER_DAY
    return gpd.GeoDataFrame(
        {
            "road_id": first["road_id"].to_numpy(),
            "edge_id": first.index.to_numpy(),
            "highway": first["highway"].to_numpy(),
            "name": first["name"].to_numpy(),
            "oneway": first["oneway"].to_numpy(),
            "length_m": first["length_m"].to_numpy(),
            "new_m": np.maximum(road_mm - covered_mm, 0) / 1000.0,
            "stale_m": np.maximum(covered_mm - fresh_mm, 0) / 1000.0,
            "age_days": age_days.to_numpy(dtype="float64"),
        },
        geometry=first.geometry.to_numpy(),
        crs="EPSG:4326",
    )


def _interval_pieces(coverage: pa.Table) -> pd.DataFrame:
    """Return the covered intervals of the coverage's edges as pieces (edge key, mm, ms)."""
    intervals = coverage.column("intervals")
    owner = pc.list_parent_indices(intervals).to_numpy()
    flat = pc.list_flatten(intervals)
    first = pc.struct_field(flat, "first_seen").cast(pa.int64()).to_numpy()
    last = pc.struct_field(flat, "last_seen").cast(pa.int64()).to_numpy()
    pieces = pd.DataFrame(
        {
            "key": coverage.column("edge_id").to_numpy()[owner],
            "from_mm": to_mm(pc.struct_field(flat, "from_m").to_numpy()),
            "to_mm": to_mm(pc.struct_field(flat, "to_m").to_numpy()),
            "first_ms": first,
            "last_ms": last,
        }
    )
    return pieces[pieces["to_mm"] > pieces["from_mm"]]


def class_weight(highway: str, weights: Mapping[str, float]) -> float:
    """Return the weight of a highway class; a ``*_link`` takes its road's."""
    base = highway.removesuffix("_link")
    return float(weights.get(highway, weights.get(base, DEFAULT_CLASS_WEIGHT)))


def rank_roads(roads: gpd.GeoDataFrame, settings: PrioritySettings) -> gpd.GeoDataFrame:
    """Keep the roads with something to gain, value them and rank them (1 = drive first)."""
    weights = dict(settings.class_weights)
    roads = roads[(roads["new_m"] > 0) | (roads["stale_m"] > 0)].copy()
    midpoints = shapely.line_interpolate_point(roads.geometry.to_numpy(), 0.5, normalized=True)
    roads["cell"] = cells_of(
        shapely.get_x(midpoints), shapely.get_y(midpoints), settings.h3_resolution
    )
    new_km_of_cell = (roads.groupby("cell")["new_m"].sum() / 1000.0).to_dict()
    roads["nearby_new_km"] = [
        sum(new_km_of_cell.get(int(c), 0.0) for c in h3int.grid_disk(int(cell), 1))
        for cell in roads["cell"]
    ]
    roads["class_weight"] = [class_weight(h, weights) for h in roads["highway"]]
    gain_km = (roads["new_m"] + settings.stale_weight * roads["stale_m"]) / 1000.0
    roads["value"] = roads["class_weight"] * gain_km * (1 + roads["nearby_new_km"])
    roads["never_driven_first"] = roads["new_m"] > 0
    roads = roads.sort_values(
        ["never_driven_first", "value", "road_id"], ascending=[False, False, True]
    )
    roads["rank"] = np.arange(1, len(roads) + 1, dtype="int64")
    return roads.drop(columns="never_driven_first").reset_index(drop=True)


def rank_cells(roads: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Group ranked roads by cell: km to gain, summed value, rank (1 = most valuable)."""
    cells = (
        roads.groupby("cell")
        .agg(
            new_km=("new_m", "sum"),
            stale_km=("stale_m", "sum"),
            value=("value", "sum"),
            roads=("road_id", "size"),
        )
        .reset_index()
    )
    cells[["new_km", "stale_km"]] /= 1000.0
    cells = cells.sort_values(["value", "cell"], ascending=[False, True], ignore_index=True)
    cells["rank"] = np.arange(1, len(cells) + 1, dtype="int64")
    return gpd.GeoDataFrame(
        cells, geometry=cell_polygons(cells["cell"].to_numpy()), crs="EPSG:4326"
    )


def road_graph(edges: pd.DataFrame) -> nx.MultiDiGraph:
    """Return the directed road graph of an ``edges`` table: ``length_m`` and ``geometry``."""
    graph = nx.MultiDiGraph()
    graph.add_edges_from(
        (int(u), int(v), int(k), {"length_m": float(length), "geometry": line})
        for u, v, k, length, line in zip(
            edges["u"], edges["v"], edges["key"], edges["length_m"], edges.geometry, strict=True
        )
    )
    return graph


def plan_cell_tours(
    graph: nx.MultiDiGraph,
    edges: pd.DataFrame,
    roads: gpd.GeoDataFrame,
    cells: gpd.GeoDataFrame,
    settings: PrioritySettings,
    extra_m: float,
) -> list[dict[str, Any]]:
    """Plan one tour per top cell over its most valuable roads with something to gain.

    A tour is planned on the roads of its cell and the six cells around it (routes between
    its roads stay in that area), over at most ``max_tour_roads`` of the cell's roads, the
    most valuable, and driven from and back to a node of that area ``extra_m`` clear of its
    roads (:func:`~pipeline.export.tours.approach_from_clear_node`). A tour longer than
    ``max_tour_km``, way in and out included, leaves out its least valuable quarter of roads
    and is planned again, until it fits. Each record counts the cell's roads left out and why
    (``roads_over_limit``, ``roads_over_max_km``, ``unreachable_roads``).
    """
    options = _serving_edges(edges)
    area_of_edge = _edge_cells(edges, settings.h3_resolution)
    tours: list[dict[str, Any]] = []
    for cell in cells["cell"].head(settings.tours):
        in_cell = roads[roads["cell"] == cell].sort_values("value", ascending=False)
        wanted = [int(r) for r in in_cell["road_id"]]
        local = _area_graph(graph, edges, area_of_edge, int(cell))
        required, left_out = reachable_roads(
            local,
            {r: options[r] for r in wanted[: settings.max_tour_roads]},
            dict(zip(wanted, in_cell["value"], strict=True)),
        )
        ordered = [r for r in wanted if r in required]
        routes = RouteFinder(local)
        driven = _planned_tour(local, required, ordered, routes, extra_m)
        planned = len(ordered)
        while driven.length_m > settings.max_tour_km * 1000 and len(ordered) > 1:
            ordered = ordered[: max(1, len(ordered) * 3 // 4)]
            driven = _planned_tour(local, required, ordered, routes, extra_m)
        if not driven.edges:
            continue
        record = _tour_record(len(tours) + 1, int(cell), driven, roads, edges, left_out)
        record["cell_roads"] = len(wanted)
        record["roads_over_limit"] = max(0, len(wanted) - settings.max_tour_roads)
        record["roads_over_max_km"] = planned - len(ordered)
        tours.append(record)
    return tours


def _edge_cells(edges: pd.DataFrame, resolution: int) -> np.ndarray:
    """Return the H3 cell of each edge's midpoint, in the order of ``edges``."""
    midpoints = shapely.line_interpolate_point(edges.geometry.to_numpy(), 0.5, normalized=True)
    return np.asarray(cells_of(shapely.get_x(midpoints), shapely.get_y(midpoints), resolution))


def _area_graph(
    graph: nx.MultiDiGraph, edges: pd.DataFrame, area_of_edge: np.ndarray, cell: int
) -> nx.MultiDiGraph:
    """Return the part of ``graph`` whose edges lie (by midpoint) in ``cell`` or around it."""
    area = np.isin(area_of_edge, np.asarray(h3int.grid_disk(cell, 1), dtype=area_of_edge.dtype))
    keys = zip(edges["u"][area], edges["v"][area], edges["key"][area], strict=True)
    return graph.edge_subgraph((int(u), int(v), int(k)) for u, v, k in keys)


def tour_notes(tours: list[dict[str, Any]], settings: PrioritySettings) -> list[str]:
    """Return one line per tour that leaves roads of its cell out, saying how many and why."""
    notes = []
    for tour in tours:
        reasons = [
            f"{tour['roads_over_limit']:,} over priorities.max_tour_roads "
            f"({settings.max_tour_roads:,}, the cell's most valuable planned)",
            f"{tour['roads_over_max_km']:,} to keep it within priorities.max_tour_km "
            f"({settings.max_tour_km:g})",
            f"{tour['unreachable_roads']:,} not reachable from the others near the cell",
        ]
        counts = (tour["roads_over_limit"], tour["roads_over_max_km"], tour["unreachable_roads"])
        left = [reason for reason, count in zip(reasons, counts, strict=True) if count]
        if left:
            notes.append(
                f"tour {tour['tour']} (cell {tour['h3']}, {tour['cell_roads']:,} roads to gain) "
                f"leaves out: {'; '.join(left)}"
            )
    return notes


def _planned_tour(
    graph: nx.MultiDiGraph,
    required: Mapping[int, Sequence[EdgeKey]],
    ordered: list[int],
    routes: RouteFinder,
    clearance_m: float,
) -> Tour:
    """Return the tour of the ``ordered`` roads, with its way in and out clear of them."""
    tour = plan_tour(graph, {r: required[r] for r in ordered}, routes)
    return approach_from_clear_node(graph, tour, clearance_m, routes)


def _serving_edges(edges: pd.DataFrame) -> dict[int, list[EdgeKey]]:
    """Road id -> its directed edges (u, v, key)."""
    serving: dict[int, list[EdgeKey]] = {}
    for road, u, v, k in zip(edges["road_id"], edges["u"], edges["v"], edges["key"], strict=True):
        serving.setdefault(int(road), []).append((int(u), int(v), int(k)))
    return serving


def _tour_record(
    number: int,
    cell: int,
    tour: Tour,
    roads: gpd.GeoDataFrame,
    edges: pd.DataFrame,
    left_out: list[int],
) -> dict[str, Any]:
    """Return a tour's numbers: every road its circuit drives counts, served or on the way.

    The way in and out does not count: its start lies in the trip's privacy circles.
    """
    keys = zip(edges["u"], edges["v"], edges["key"], strict=True)
    ids = dict(zip(keys, zip(edges["edge_id"], edges["road_id"], strict=True), strict=True))
    driven_roads = {int(ids[edge][1]) for edge in tour.circuit}
    gained = roads[roads["road_id"].isin(driven_roads)]
    on_the_way = {int(ids[edge][1]) for edge in tour.edges} - driven_roads
    way_new_km = float(roads.loc[roads["road_id"].isin(on_the_way), "new_m"].sum() / 1000.0)
    new_km = float(gained["new_m"].sum() / 1000.0)
    stale_km = float(gained["stale_m"].sum() / 1000.0)
    length_km = tour.length_m / 1000.0
    return {
        "tour": number,
        "cell": cell,
        "h3": h3int.int_to_str(cell),
        "length_km": round(length_km, 3),
        "new_km": round(new_km, 3),
        "stale_km": round(stale_km, 3),
        "gain_km": round(new_km + stale_km, 3),
        "gain_per_km": round((new_km + stale_km) / length_km, 3) if length_km else 0.0,
        "roads": sorted(int(r) for r in gained["road_id"]),
        "way_in_out_new_km": round(way_new_km, 3),
        "unreachable_roads": len(left_out),
        "edges": [list(edge) for edge in tour.edges],
        "edge_ids": [int(ids[edge][0]) for edge in tour.edges],
        "gpx": f"{TOURS_FOLDER}/tour-{number:02d}.gpx",
    }


def _tour_of_roads(roads: gpd.GeoDataFrame, tours: list[dict[str, Any]]) -> pd.Series:
    """Return the first tour that drives each road (null: none)."""
    first: dict[int, int] = {}
    for tour in tours:
        for road in tour["roads"]:
            first.setdefault(road, tour["tour"])
    return roads["road_id"].map(first).astype("Int32")


def _summary(
    roads: gpd.GeoDataFrame,
    cells: gpd.GeoDataFrame,
    tours: list[dict[str, Any]],
    settings: PrioritySettings,
    as_of: pd.Timestamp,
    extra_m: float,
) -> dict[str, Any]:
    return {
        "as_of": as_of.isoformat(),
        "settings": {
            "freshness_target_days": settings.freshness_target_days,
            "stale_weight": settings.stale_weight,
            "class_weights": dict(settings.class_weights),
            "default_class_weight": DEFAULT_CLASS_WEIGHT,
            "h3_resolution": settings.h3_resolution,
            "tours": settings.tours,
            "max_tour_km": settings.max_tour_km,
            "max_tour_roads": settings.max_tour_roads,
            "start_clear_of_roads_m": extra_m,
        },
        "roads": len(roads),
        "cells": len(cells),
        "new_km": round(float(roads["new_m"].sum() / 1000.0), 3),
        "stale_km": round(float(roads["stale_m"].sum() / 1000.0), 3),
        "top_cells": [
            {
                "rank": int(row.rank),
                "h3": h3int.int_to_str(int(row.cell)),
                "new_km": round(float(row.new_km), 3),
                "stale_km": round(float(row.stale_km), 3),
                "value": round(float(row.value), 3),
            }
            for row in cells.head(max(settings.tours, 10)).itertuples()
        ],
        "tours": [
            {
                **{k: v for k, v in tour.items() if k not in ("edges", "edge_ids", "roads")},
                "roads": len(tour["roads"]),
            }
            for tour in tours
        ],
        "notes": tour_notes(tours, settings),
    }


def _write_outputs(
    out_dir: Path,
    roads: gpd.GeoDataFrame,
    cells: gpd.GeoDataFrame,
    tours: list[dict[str, Any]],
    graph: nx.MultiDiGraph,
    summary: dict[str, Any],
) -> None:
    write_table(roads[list(PRIORITY_ROADS.schema.names)], out_dir / ROADS_FILE, PRIORITY_ROADS)
    cell_table = cells.assign(h3=[h3int.int_to_str(int(c)) for c in cells["cell"]])
    cell_table["tour"] = cell_table["tour"].astype(object).where(cell_table["tour"].notna(), None)
    _write_text(out_dir / CELLS_FILE, cell_table.drop(columns="cell").to_json(drop_id=True))
    lines = [_tour_line(graph, tour) for tour in tours]
    _write_text(out_dir / TOURS_FILE, _tours_geojson(tours, lines))
    (out_dir / TOURS_FOLDER).mkdir(exist_ok=True)
    for stale in (out_dir / TOURS_FOLDER).glob("tour-*.gpx"):
        stale.unlink()
    for tour, line in zip(tours, lines, strict=True):
        _write_text(out_dir / tour["gpx"], tour_gpx(tour, line))
    write_json(summary, out_dir / SUMMARY_FILE)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def _tour_line(graph: nx.MultiDiGraph, tour: dict[str, Any]) -> np.ndarray:
    """Return the tour's points, lon/lat, along its edges' geometries in driving order."""
    parts = [graph.edges[tuple(edge)]["geometry"] for edge in tour["edges"]]
    coords = [shapely.get_coordinates(parts[0])]
    coords += [shapely.get_coordinates(part)[1:] for part in parts[1:]]
    return np.concatenate(coords)


def _tours_geojson(tours: list[dict[str, Any]], lines: list[np.ndarray]) -> str:
    features = [
        {
            "type": "Feature",
            "properties": {
                **{k: v for k, v in tour.items() if k not in ("edges", "roads")},
                "roads": len(tour["roads"]),
                "edge_ids": tour["edge_ids"],
            },
            "geometry": {"type": "LineString", "coordinates": np.round(line, 7).tolist()},
        }
        for tour, line in zip(tours, lines, strict=True)
    ]
    return json.dumps({"type": "FeatureCollection", "features": features})


def tour_gpx(tour: Mapping[str, Any], line: np.ndarray) -> str:
    """Return a tour as a GPX 1.1 document: one track of one segment, lat/lon to 1e-7 degree."""
    ET.register_namespace("", GPX_NAMESPACE)
    root = ET.Element(
        f"{{{GPX_NAMESPACE}}}gpx", {"version": "1.1", "creator": "roadcover export priorities"}
    )
    track = ET.SubElement(root, f"{{{GPX_NAMESPACE}}}trk")
    ET.SubElement(track, f"{{{GPX_NAMESPACE}}}name").text = f"roadcover tour {tour['tour']}"
    ET.SubElement(track, f"{{{GPX_NAMESPACE}}}desc").text = (
        f"{tour['length_km']:.1f} km drive, {tour['new_km']:.2f} km never driven, "
        f"{tour['stale_km']:.2f} km stale, H3 cell {tour['h3']}"
    )
    segment = ET.SubElement(track, f"{{{GPX_NAMESPACE}}}trkseg")
    for lon, lat in line:
        ET.SubElement(
            segment, f"{{{GPX_NAMESPACE}}}trkpt", {"lat": f"{lat:.7f}", "lon": f"{lon:.7f}"}
        )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
