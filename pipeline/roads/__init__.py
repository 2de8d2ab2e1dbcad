"""Road graphs from local OSM extracts (the ``roads`` stage)."""

from pipeline.roads.build import build_roads, road_length_km
from pipeline.roads.extracts import resolve_extract
from pipeline.roads.store import load_road_graph, read_edges, read_nodes, read_roads_meta

__all__ = [
    "build_roads",
    "load_road_graph",
    "read_edges",
    "read_nodes",
    "read_roads_meta",
    "resolve_extract",
    "road_length_km",
]
