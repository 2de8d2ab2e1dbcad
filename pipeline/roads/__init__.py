"""Road graphs from local OSM extracts (the ``roads`` stage).

The names below are imported on first use (PEP 562): a stage that only reads the edge table
(or hashes a file) does not pay for importing OSMnx, which the graph build needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.roads.build import build_roads, road_length_km
    from pipeline.roads.extracts import resolve_extract
    from pipeline.roads.store import load_road_graph, read_edges, read_nodes, read_roads_meta

_MODULE_OF = {
    "build_roads": "pipeline.roads.build",
    "road_length_km": "pipeline.roads.build",
    "resolve_extract": "pipeline.roads.extracts",
    "load_road_graph": "pipeline.roads.store",
    "read_edges": "pipeline.roads.store",
    "read_nodes": "pipeline.roads.store",
    "read_roads_meta": "pipeline.roads.store",
}
__all__ = [
    "build_roads",
    "load_road_graph",
    "read_edges",
    "read_nodes",
    "read_roads_meta",
    "resolve_extract",
    "road_length_km",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
