"""B2B data feed releases: stable road segments and H3 cells, partitioned, with STAC and deltas.

See :func:`export_feed` and ``docs/feeds.md``.
"""

from pipeline.export.feeds.delta import apply_delta, read_release, table_delta
from pipeline.export.feeds.latest import publish_release, read_latest_release
from pipeline.export.feeds.stage import default_release_id, export_feed, verify_release

__all__ = [
    "apply_delta",
    "default_release_id",
    "export_feed",
    "publish_release",
    "read_latest_release",
    "read_release",
    "table_delta",
    "verify_release",
]
