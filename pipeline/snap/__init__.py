"""Map matching (the ``snap`` stage's core): Newson & Krumm HMM on a compiled match network."""

from pipeline.snap.match import (
    TripMatch,
    TripsMatch,
    edge_substrings,
    match_trip,
    match_trips,
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
    "TripsMatch",
    "Ubodt",
    "build_match_network",
    "build_ubodt",
    "edge_substrings",
    "load_match_network",
    "match_trip",
    "match_trips",
    "prepare_match_network",
    "route_segments",
    "save_match_network",
    "traversed_segments",
]
