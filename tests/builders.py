"""Builders of stage inputs for tests: traces batches as ingest writes them, matched batches
as `roadcover snap` writes them."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely

from pipeline.config import settings_from_mapping
from pipeline.contracts import MATCH_QUALITY, MATCHED_SEGMENTS, POINTS, TRIPS
from pipeline.coverage.stage import compute_coverage
from pipeline.io import write_json, write_table
from pipeline.roads import build_roads, load_road_graph, read_edges
from pipeline.roads.identity import roads_identity


def write_matched_batch(
    folder: Path,
    edges: gpd.GeoDataFrame,
    drives: pd.DataFrame,
    quality: Mapping[str, tuple[float, bool]] | None = None,
    *,
    roads_dir: Path,
) -> Path:
    """Write a matched folder (segments, quality and ``meta.json``) for drives on edges.

    Parameters
    ----------
    folder
        The matched folder to write.
    edges
        The roads' edge table (ids, nodes and geometry are taken from it).
    drives
        One row per traversed piece: ``edge_id, trip_id, contributor_id, from_offset_m,
        to_offset_m, entered_at, exited_at`` (and optionally ``trace_id``), in driving order.
    quality
        Per trip ``(confidence, plausible)``; default ``(0.9, True)``.
    roads_dir
        The roads folder ``edges`` comes from, recorded in ``meta.json`` as snap records it.
    """
    lookup = edges.set_index("edge_id")
    on = lookup.loc[drives["edge_id"].to_numpy()]
    segments = gpd.GeoDataFrame(
        {
            "trace_id": drives.get("trace_id", pd.Series("t", index=drives.index)).to_numpy(),
            "trip_id": drives["trip_id"].to_numpy(),
            "seq": drives.groupby("trip_id").cumcount().to_numpy(),
            "contributor_id": drives["contributor_id"].to_numpy(),
            "edge_id": drives["edge_id"].to_numpy(),
            "u": on["u"].to_numpy(),
            "v": on["v"].to_numpy(),
            "key": on["key"].to_numpy(),
            "osmid": on["osmid"].to_numpy(),
            "from_offset_m": drives["from_offset_m"].to_numpy(),
            "to_offset_m": drives["to_offset_m"].to_numpy(),
            "entered_at": drives["entered_at"].to_numpy(),
            "exited_at": drives["exited_at"].to_numpy(),
        },
        geometry=on.geometry.to_numpy(),
        crs="EPSG:4326",
    )
    trips = segments.groupby("trip_id", sort=True).agg(
        trace_id=("trace_id", "first"), contributor_id=("contributor_id", "first")
    )
    per_trip = quality or {}
    rows = [
        {
            "trace_id": row.trace_id,
            "trip_id": trip,
            "contributor_id": row.contributor_id,
            "points": 100,
            "matched_points": 98,
            "breaks": 0,
            "mean_distance_m": 4.0,
            "p95_distance_m": 9.0,
            "matched_km": 1.0,
            "confidence": per_trip.get(trip, (0.9, True))[0],
            "plausible": per_trip.get(trip, (0.9, True))[1],
            "trust_score": 1.0 if per_trip.get(trip, (0.9, True))[1] else 0.3,
        }
        for trip, row in trips.iterrows()
    ]
    write_table(segments, folder / "matched_segments.parquet", MATCHED_SEGMENTS)
    write_table(pd.DataFrame(rows), folder / "match_quality.parquet", MATCH_QUALITY)
    write_json({"roads": roads_identity(roads_dir)}, folder / "meta.json")
    return folder


def _long_path(graph: nx.MultiDiGraph, nodes: list[int], rng: np.random.Generator) -> list[int]:
    """Return the shortest path, of more than 8 nodes, between two random ``nodes``.

    Raises ``ValueError`` when 1,000 random pairs give none (a network too small to drive on).
    """
    for _ in range(1_000):
        a, b = rng.choice(nodes, 2, replace=False)
        path: list[int] = nx.shortest_path(graph, a, b, weight="length")
        if len(path) > 8:
            return path
    raise ValueError(f"no shortest path of more than 8 nodes among {len(nodes)} nodes: too small")


def drive_points(
    roads_dir: Path, trips: int, seed: int, first_trace: int = 0
) -> tuple[gpd.GeoDataFrame, list[list[int]]]:
    """Noisy fixes every 9 m along shortest paths between random nodes; also the edge routes.

    Trip ``i`` is the only trip of trace ``trace{first_trace + i}``, on 2026-10-01.
    """
    graph = load_road_graph(roads_dir)
    edges = read_edges(roads_dir).set_index(["u", "v", "key"])
    rng = np.random.default_rng(seed)
    nodes = sorted(max(nx.strongly_connected_components(graph), key=len))
    frames, routes = [], []
    for trip in range(first_trace, first_trace + trips):
        path = _long_path(graph, nodes, rng)
        hops = list(itertools.pairwise(path))
        keys = [min(graph[u][v], key=lambda k, u=u, v=v: graph[u][v][k]["length"]) for u, v in hops]
        route = [edges.loc[(u, v, k)] for (u, v), k in zip(hops, keys, strict=True)]
        routes.append([int(e.edge_id) for e in route])
        line = shapely.line_merge(shapely.MultiLineString([e.geometry for e in route]))
        metric = gpd.GeoSeries([line], crs=4326).to_crs(3067).iloc[0]
        along = shapely.line_interpolate_point(metric, np.arange(0, metric.length, 9.0))
        fixes = gpd.GeoSeries(along, crs=3067).to_crs(4326)
        noise = rng.normal(0, 4e-5, (len(fixes), 2))
        frames.append(
            pd.DataFrame(
                {
                    "trace_id": f"trace{trip}",
                    "trip_id": f"trace{trip}-001",
                    "contributor_id": "c1",
                    "device_id": "d1",
                    "observed_at": pd.date_range("2026-10-01T08:00Z", periods=len(fixes), freq="s"),
                    "lon": fixes.x.to_numpy() + 2 * noise[:, 0],
                    "lat": fixes.y.to_numpy() + noise[:, 1],
                    "hdop": 1.0,
                    "speed_mps": 9.0,
                    "heading_deg": 0.0,
                    "source_file": "sim.csv",
                    "source_row": np.arange(len(fixes)) + 2,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(
        frame, geometry=shapely.points(frame["lon"], frame["lat"]), crs=4326
    ), routes


def write_traces_batch(folder: Path, points: gpd.GeoDataFrame, batch_id: str) -> Path:
    """Write ``points`` as ingest batch ``batch_id`` of the traces dataset ``folder``.

    One points partition file, the batch's trips table (every trip plausible) and its report,
    the record that commits the batch.
    """
    partition = folder / "points" / "date=2026-10-01" / "h3=x"
    write_table(points, partition / f"part-{batch_id}-00000.parquet", POINTS)
    trips = points.groupby("trip_id", as_index=False).agg(
        trace_id=("trace_id", "first"), contributor_id=("contributor_id", "first"),
        device_id=("device_id", "first"), started_at=("observed_at", "min"),
        ended_at=("observed_at", "max"), points=("lon", "size"),
    )  # fmt: skip
    trips = trips.assign(
        length_m=1.0, fingerprint="f", flags=[[] for _ in range(len(trips))], trust_score=1.0,
        plausible=True, batch_id=batch_id,
    )  # fmt: skip
    lines = [shapely.LineString(g[["lon", "lat"]].to_numpy()) for _, g in points.groupby("trip_id")]
    write_table(
        gpd.GeoDataFrame(trips, geometry=lines, crs=4326),
        folder / "trips" / f"part-{batch_id}.parquet",
        TRIPS,
    )
    write_json({"batch_id": batch_id, "files": []}, folder / "reports" / f"{batch_id}.json")
    return folder


def write_osm_network(
    path: Path,
    nodes: Mapping[int, tuple[float, float]],
    ways: Mapping[int, tuple[Sequence[int], str, bool]],
) -> Path:
    """Write a hand-made road network as OSM XML and return its path.

    ``nodes``: node id -> (lat, lon); ``ways``: way id -> (node ids, highway, one-way).
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="tests">']
    for node, (lat, lon) in nodes.items():
        lines.append(f'  <node id="{node}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
    for way, (refs, highway, oneway) in ways.items():
        lines.append(f'  <way id="{way}" version="1">')
        lines += [f'    <nd ref="{ref}"/>' for ref in refs]
        lines.append(f'    <tag k="highway" v="{highway}"/>')
        if oneway:
            lines.append('    <tag k="oneway" v="yes"/>')
        lines.append("  </way>")
    lines.append("</osm>")
    path.write_text("\n".join(lines) + "\n")
    return path


# a meridian step whose edges are 100.16453 m long: 100,165 mm rounded, 0.47 mm up
ROUNDING_UP_STEP_DEG = 0.0009008


def write_fully_covered_region(root: Path) -> tuple[Path, Path]:
    """Build a hand-made network, drive every edge end to end, and compute its coverage.

    Two chains of five edges along meridians near Vaduz, ``ROUNDING_UP_STEP_DEG`` apart: a
    two-way residential street and a one-way primary. Every edge's length rounds *up* to the
    millimetre, so a share computed from covered millimetres over unrounded metres would
    read above 100 %. Returns the roads folder and the coverage folder.
    """
    lat, lon = 47.14, 9.52
    nodes = {}
    for i in range(6):
        nodes[i + 1] = (lat + i * ROUNDING_UP_STEP_DEG, lon)
        nodes[i + 11] = (lat + i * ROUNDING_UP_STEP_DEG, lon + 0.002)
    ways = {100 + i: ([i + 1, i + 2], "residential", False) for i in range(5)}
    ways |= {200 + i: ([i + 11, i + 12], "primary", True) for i in range(5)}
    roads = root / "roads"
    build_roads(write_osm_network(root / "region.osm", nodes, ways), roads)
    edges = read_edges(roads)
    when = pd.Timestamp("2026-10-01T08:00Z")
    drives = pd.DataFrame(
        {
            "edge_id": edges["edge_id"].to_numpy(),
            "trip_id": "trip0",
            "contributor_id": "c0",
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )
    matched = write_matched_batch(root / "matched", edges, drives, roads_dir=roads)
    settings = settings_from_mapping({"regions": [{"name": "region", "osm": "region.osm"}]})
    compute_coverage(roads, [matched], root / "coverage", settings.coverage)
    return roads, root / "coverage"


def full_drives(
    picked: pd.DataFrame, trips: list[str], minutes: Sequence[int], start: pd.Timestamp
) -> pd.DataFrame:
    """Drives of the ``picked`` edges, each whole, by ``trips`` (one per row), for
    :func:`write_matched_batch`: entered ``minutes`` after ``start``, 20 s on the edge; the
    contributor of a trip is ``c-`` and its id's last character."""
    when = start + pd.to_timedelta(np.asarray(minutes), "min")
    return pd.DataFrame(
        {
            "edge_id": picked["edge_id"].to_numpy(),
            "trip_id": trips,
            "contributor_id": [f"c-{trip[-1]}" for trip in trips],
            "from_offset_m": 0.0,
            "to_offset_m": picked["length_m"].to_numpy(),
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=20),
        }
    )
