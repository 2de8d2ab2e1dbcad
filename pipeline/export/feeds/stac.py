"""The STAC catalogue of a feed release: one Collection, one Item per table and partition.

Each Item covers one ``h3_parent`` partition of one table (``segments-<hex>``,
``cells-<hex>``); its assets are that partition's files, one per format, with the File
extension's ``file:size`` and ``file:checksum`` (a sha2-256 multihash: ``1220`` + hex digest).
Its bbox and geometry are the bounds of the partition's features and its datetime is the
coverage's as-of time. The catalogue is self-contained (relative links, no absolute paths),
so the release folder can be moved or uploaded as it is.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.file import FileExtension
from pystac.stac_io import DefaultStacIO

from pipeline.export.feeds.writers import PARTITION_COLUMN
from pipeline.io import atomic_path

STAC_DIR = "stac"
COLLECTION_FILE = "collection.json"
SHA2_256_MULTIHASH_PREFIX = "1220"  # multihash: code 0x12 (sha2-256), length 0x20 (32 bytes)
LICENSE = "ODbL-1.0"
OSM_COPYRIGHT_URL = "https://www.openstreetmap.org/copyright"


class AtomicStacIO(DefaultStacIO):
    """pystac I/O that writes every JSON file through :func:`pipeline.io.atomic_path`."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        """Write ``txt`` to the local file ``href`` atomically."""
        with atomic_path(href) as temp:
            temp.write_text(txt, encoding="utf-8")


def multihash_sha256(hex_digest: str) -> str:
    """Return the multihash (hex) of a sha2-256 digest, as ``file:checksum`` wants it."""
    return SHA2_256_MULTIHASH_PREFIX + hex_digest


def write_stac(
    root: Path,
    release_id: str,
    files: list[dict[str, Any]],
    bounds: dict[tuple[str, str], tuple[float, float, float, float]],
    as_of: datetime,
    first_seen: datetime | None,
    attribution: str,
) -> list[Path]:
    """Write the release's STAC Collection and Items under ``root/stac``.

    Parameters
    ----------
    root
        The release folder.
    release_id
        Used in the Collection id and title.
    files
        Manifest records of the partitioned table files (``table``, ``h3_parent``, ``format``,
        ``path``, ``size_bytes``, ``sha256``, ``rows``, ``media_type``).
    bounds
        ``(table folder, h3_parent) -> (minx, miny, maxx, maxy)`` of each partition's rows.
    as_of
        The coverage as-of time: every Item's datetime and the end of the temporal extent.
    first_seen
        The earliest observation in the release, the start of the temporal extent.
    attribution
        The attribution text required by the licence.

    Returns
    -------
    list of Path
        The JSON files written.
    """
    stac_root = root / STAC_DIR
    overall = _union_bounds(list(bounds.values())) or (0.0, 0.0, 0.0, 0.0)
    collection = pystac.Collection(
        id=f"roadcover-feed-{release_id}",
        title=f"roadcover road coverage feed, release {release_id}",
        description=(
            "Road coverage from crowdsourced dashcam traces: covered pieces of OpenStreetMap "
            "roads (segments) and H3 cell statistics (cells), partitioned by H3 parent cell. "
            + attribution
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([list(overall)]),
            pystac.TemporalExtent([[first_seen or as_of, as_of]]),
        ),
        license=LICENSE,
        providers=[
            pystac.Provider(
                "OpenStreetMap contributors",
                roles=[pystac.ProviderRole.LICENSOR],
                url=OSM_COPYRIGHT_URL,
            ),
            pystac.Provider(
                "roadcover", roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.PROCESSOR]
            ),
        ],
    )
    collection.add_link(
        pystac.Link(
            rel="license",
            target=OSM_COPYRIGHT_URL,
            media_type="text/html",
            title="ODbL 1.0; © OpenStreetMap contributors",
        )
    )
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in files:
        table_dir = record["path"].split("/", 1)[0]
        grouped[(table_dir, record[PARTITION_COLUMN])].append(record)
    for (table_dir, parent), records in sorted(grouped.items()):
        minx, miny, maxx, maxy = bounds[(table_dir, parent)]
        item = pystac.Item(
            id=f"{table_dir}-{parent}",
            geometry=_box(minx, miny, maxx, maxy),
            bbox=[minx, miny, maxx, maxy],
            datetime=as_of,
            properties={
                "title": f"{table_dir} in H3 cell {parent}",
                "roadcover:table": records[0]["table"],
                "roadcover:h3_parent": parent,
                "roadcover:rows": records[0]["rows"],
            },
        )
        FileExtension.add_to(item)
        for record in sorted(records, key=lambda r: r["format"]):
            asset = pystac.Asset(
                href=str((root / record["path"]).resolve()),  # absolute: made relative below
                media_type=record["media_type"],
                roles=["data"],
                title=f"{table_dir} ({record['format']})",
            )
            item.add_asset(record["format"], asset)
            file_ext = FileExtension.ext(asset)
            file_ext.size = int(record["size_bytes"])
            file_ext.checksum = multihash_sha256(record["sha256"])
        collection.add_item(item)
    collection.normalize_hrefs(str(stac_root.resolve()))
    collection.make_all_asset_hrefs_relative()
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=AtomicStacIO())
    return sorted(stac_root.rglob("*.json"))


def _box(minx: float, miny: float, maxx: float, maxy: float) -> dict[str, Any]:
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def _union_bounds(
    boxes: list[tuple[float, float, float, float]],
) -> tuple[float, float, float, float] | None:
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
