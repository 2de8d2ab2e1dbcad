"""Which OSM ways form a road network: OSMnx's network types, as exact tag rules.

OSMnx expresses its network types as Overpass filters; roadcover reads local extracts, so the
same rules are written here as sets of excluded tag values. They are applied to whole words
(``service=parking`` is excluded, ``service=parking_entrance`` is not), where Overpass regexes
would also match substrings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NETWORK_TYPES = ("drive", "drive_service", "all")

_NEVER_ROADS = frozenset(
    {"abandoned", "construction", "no", "planned", "platform", "proposed", "raceway", "razed"}
)
_NOT_DRIVABLE = _NEVER_ROADS | frozenset(
    {
        "bridleway", "bus_guideway", "corridor", "cycleway", "elevator", "escalator", "footway",
        "path", "pedestrian", "rest_area", "services", "steps", "track",
    }
)  # fmt: skip


@dataclass(frozen=True)
class HighwayFilter:
    """Decide from its tags whether an OSM way belongs to the road graph.

    Attributes
    ----------
    excluded_highways
        ``highway`` values that are never kept (ignored when ``included_highways`` is set).
    included_highways
        If set, exactly these ``highway`` values are kept.
    excluded_services
        ``service`` values that are dropped (driveways, parking aisles...).
    motor_access_required
        Drop ways tagged ``motor_vehicle=no``, ``motorcar=no`` or ``access=private``.
    """

    excluded_highways: frozenset[str]
    included_highways: frozenset[str] | None
    excluded_services: frozenset[str]
    motor_access_required: bool

    def keeps(self, tags: Mapping[str, str]) -> bool:
        """Return True if a way with these tags is part of the network."""
        highway = tags.get("highway")
        if highway is None or tags.get("area") == "yes":
            return False
        if self.included_highways is not None:
            if highway not in self.included_highways:
                return False
        elif highway in self.excluded_highways:
            return False
        if tags.get("service") in self.excluded_services:
            return False
        if self.motor_access_required:
            if tags.get("motor_vehicle") == "no" or tags.get("motorcar") == "no":
                return False
            if tags.get("access") == "private":
                return False
        return True


def highway_filter_for(
    network: str, highway_include: tuple[str, ...] | None = None
) -> HighwayFilter:
    """Return the filter of an OSMnx-style network type.

    Parameters
    ----------
    network
        ``drive`` (public drivable streets, no service roads), ``drive_service`` (also service
        roads, but no parking aisles or private ones) or ``all`` (every highway).
    highway_include
        If given, keep exactly these ``highway`` classes instead of the network's own.
    """
    included = frozenset(highway_include) if highway_include is not None else None
    if network == "drive":
        return HighwayFilter(
            excluded_highways=_NOT_DRIVABLE | {"service"},
            included_highways=included,
            excluded_services=frozenset(
                {"alley", "driveway", "emergency_access", "parking", "parking_aisle", "private"}
            ),
            motor_access_required=True,
        )
    if network == "drive_service":
        return HighwayFilter(
            excluded_highways=_NOT_DRIVABLE,
            included_highways=included,
            excluded_services=frozenset(
                {"emergency_access", "parking", "parking_aisle", "private"}
            ),
            motor_access_required=True,
        )
    if network == "all":
        return HighwayFilter(
            excluded_highways=_NEVER_ROADS,
            included_highways=included,
            excluded_services=frozenset(),
            motor_access_required=False,
        )
    raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORK_TYPES)}")
