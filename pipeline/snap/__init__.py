"""Map matching (the ``snap`` stage's core): Newson & Krumm HMM on a compiled match network."""

from pipeline.snap.match import (
    TripMatch,
    edge_substrings,
    match_trip,
    route_segments,
    traversed_segments,
)
from pipeline.snap.network import (
    MatchNetwork,
    Ubodt,
    build_match_network,
    build_ubodt,
    load_match_network,
    prepare_match_network,
    save_match_network,
)
from pipeline.snap.params import MatchParams

__all__ = [
    "MatchNetwork",
    "MatchParams",
    "TripMatch",
    "Ubodt",
    "build_match_network",
    "build_ubodt",
    "edge_substrings",
    "load_match_network",
    "match_trip",
    "prepare_match_network",
    "route_segments",
    "save_match_network",
    "traversed_segments",
]
