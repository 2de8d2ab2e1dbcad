"""Where a coverage folder keeps the cache of its roads' network, and whether it is complete.

Read without a data library: a run decides from these alone whether it will compute the
cache (:func:`pipeline.coverage.partitions.load_network`), and so whether it needs the roads'
tables (:mod:`pipeline.coverage.roads_stagein`).
"""

from __future__ import annotations

import json
from pathlib import Path

NETWORK_DIR = "network"
NETWORK_META = "network.json"
NETWORK_FORMAT = 8  # 8: a record an edge; 7: runs per partition, a fence; 6: edge arrays


def network_folder(
    coverage_dir: Path, edges_sha256: str, resolution: int, partition_resolution: int | str
) -> Path:
    """Return the cache folder of roads (by their edge table's sha256) at these resolutions."""
    name = f"{edges_sha256[:16]}-r{resolution}-p{partition_resolution}"
    return coverage_dir / NETWORK_DIR / name


def network_format(folder: Path) -> int | None:
    """Return the format of the cache in ``folder``; None if there is none, or not complete."""
    try:
        meta = json.loads((folder / NETWORK_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def network_current(
    coverage_dir: Path, edges_sha256: str, resolution: int, partition_resolution: int | str
) -> bool:
    """Whether the cache of these roads and resolutions is complete (it is not computed again)."""
    folder = network_folder(coverage_dir, edges_sha256, resolution, partition_resolution)
    return network_format(folder) == NETWORK_FORMAT
