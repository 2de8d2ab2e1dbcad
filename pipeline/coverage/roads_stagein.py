"""Stage a roads folder in from object storage for coverage: its tables only when needed.

A coverage run reads the roads' records (:data:`~pipeline.coverage.stage.ROADS_RECORDS`:
``meta.json``, a sharded region's ``shards/plan.json``) every time, and their tables
(:data:`~pipeline.coverage.stage.ROADS_TABLES`) only to compute the coverage folder's network
cache and the sha256 of the edge table, the roads' identity. So the tables are downloaded
only when the run will compute the cache: on the first update, after the roads change, or
when the cache is missing, incomplete or of other roads (or resolutions).

Which roads the folder in storage holds is known without its edge table from the table
object's tag (:meth:`pipeline.storage.Staging.object_tag`: the ETag the store computes from
its bytes, and its size). A run that downloads the edge table records its tag with its sha256
in the coverage folder (:data:`ROADS_MEMO`); a later run whose edge table has the same tag
knows its sha256 from the record, and downloads no table when the cache of those roads is
complete. A tag that differs, a store without ETags, or no (or an unreadable) record: the
tables are downloaded and the identity computed from them, as for a local roads folder.
The coverage folder is staged (and, in storage, locked) before this decision, so the lock is
held from deciding to publishing; :func:`pipeline.coverage.stage.compute_coverage` checks
again under its own lock that the cache is complete when the tables are not there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.coverage.network_cache import NETWORK_DIR, network_current
from pipeline.coverage.stage import ROADS_RECORDS, ROADS_TABLES
from pipeline.io import write_json
from pipeline.roads.identity import roads_identity
from pipeline.roads.store import EDGES_FILE, read_roads_meta
from pipeline.storage import is_url, join

if TYPE_CHECKING:
    from pipeline.config import CoverageSettings
    from pipeline.storage import Staging

log = logging.getLogger(__name__)

ROADS_MEMO = f"{NETWORK_DIR}/roads-edges.json"
"""In a coverage folder: the tag of the roads' edge table object last downloaded, with its
sha256."""


def stage_roads(
    staging: Staging, location: str | Path, coverage_dir: Path, settings: CoverageSettings
) -> tuple[Path, dict[str, Any] | None]:
    """Stage in what a coverage run into ``coverage_dir`` reads of the roads at ``location``.

    Call it with ``coverage_dir`` staged (locked, when in storage).

    Parameters
    ----------
    staging
        The command's staging.
    location
        The roads folder: a URL, or a local path (returned as it is).
    coverage_dir
        The local coverage folder.
    settings
        The coverage settings (the resolutions name the cache).

    Returns
    -------
    tuple
        The local roads folder, and the roads' identity when its tables were not downloaded
        (for :func:`~pipeline.coverage.stage.compute_coverage`), else None.
    """
    if not is_url(location):
        return Path(location), None
    local = staging.input_folder(location, include=ROADS_RECORDS)
    edges = join(str(location), EDGES_FILE)
    tag = staging.object_tag(edges)
    known = _known_roads(local, coverage_dir, tag, settings)
    if known is not None:
        log.info("coverage: the network cache of %s is current; its tables stay in storage", edges)
        return local, known
    staging.input_folder(location, include=ROADS_TABLES)
    sha256 = roads_identity(local)["edges_sha256"]
    if tag is not None and staging.object_tag(edges) == tag:  # not rewritten meanwhile
        write_json({"edges_tag": tag, "edges_sha256": sha256}, coverage_dir / ROADS_MEMO)
    return local, None


def _known_roads(
    roads_dir: Path, coverage_dir: Path, tag: str | None, settings: CoverageSettings
) -> dict[str, Any] | None:
    """Return the roads' identity if the memo knows their edge table and its cache is complete."""
    try:
        memo = json.loads((coverage_dir / ROADS_MEMO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if tag is None or not isinstance(memo, dict) or memo.get("edges_tag") != tag:
        return None
    sha256 = memo.get("edges_sha256")
    if not isinstance(sha256, str) or not network_current(
        coverage_dir, sha256, settings.h3_resolution, settings.partition_resolution
    ):
        return None
    meta = read_roads_meta(roads_dir)  # as roads_identity, with the memo's sha256
    return {"edges_sha256": sha256, "source_sha256": meta["source_sha256"], "bbox": meta["bbox"]}
