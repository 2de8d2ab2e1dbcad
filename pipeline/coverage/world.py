"""The world's road length the region's share is of, and the check of the configured one."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError

WORLD_ROAD_KM = 64_285_009.0
WORLD_ROAD_KM_SOURCE = "CIA World Factbook, Roadways: total (world), 64,285,009 km"


def check_world_road_km(road_km: float, world_road_km: float, roads_dir: Path | str) -> None:
    """Refuse a world road length shorter than the region's roads (a share above 100 %).

    Raises
    ------
    ConfigError
        If ``world_road_km`` is less than ``road_km``; the message names the setting, both
        lengths and the roads folder.
    """
    if world_road_km < road_km:
        raise ConfigError(
            f"coverage.world_road_km is {world_road_km:,.3f} km, less than the "
            f"{road_km:,.3f} km of roads of {roads_dir} (its share of the world would exceed "
            f"100 %): set it to the world's road length (default {WORLD_ROAD_KM:,.0f} km)"
        )
