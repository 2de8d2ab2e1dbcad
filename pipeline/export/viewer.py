"""The web viewer: a self-contained static site over the coverage vector tiles.

``write_viewer`` writes ``index.html`` (with the region summary and the data bounds inlined
as JSON), ``app.js``, ``style.css``, the vendored MapLibre GL JS and pmtiles libraries with
their licences (``vendor/``, see ``static/VENDORED.md``) and the PMTiles archive itself into
one folder. No CDN and no basemap: it works offline, from any static HTTP server that answers
Range requests (pmtiles needs them; ``file://`` does not work), for instance
:func:`pipeline.export.server.serve_directory`.

The page draws every road (the tiles' ``roads`` layer, grey, wider for larger classes), the
covered pieces over them by freshness, and the H3 cells by coverage or by fresh 28-day share.
A class filter hides road classes; a time slider shows the covered network as of the end of a
past week (:func:`week_ends`): pieces first seen later are hidden, from the tiles alone.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import shapely

from pipeline.coverage.edge_reader import read_edge_table
from pipeline.errors import InputDataError
from pipeline.export.inputs import read_cell_table, read_summary
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

SECONDS_PER_WEEK = 7 * 86_400
MONDAY_EPOCH_S = 4 * 86_400
"""1970-01-05T00:00Z, a Monday: weeks end on Mondays at 00:00 UTC (ISO weeks)."""

STATIC_PACKAGE = "pipeline.export"
STATIC_FOLDER = "static"
SITE_FILES = ("app.js", "style.css")
VENDOR_FOLDER = "vendor"
PRIORITY_FILES = (("cells", "priorities-cells.geojson"), ("tours", "priorities-tours.geojson"))
"""The "where to drive next" layers: the priorities file (stem) and its copy in the site."""
SUMMARY_KEYS = (
    "coverage_pct",
    "fresh_28d_pct",
    "unique_km",
    "road_km",
    "total_km",
    "percent_of_world",
    "as_of",
    "world_road_km",
)


def static_files() -> Traversable:
    """Return the folder of the viewer's static files inside the installed package."""
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)


def write_viewer(
    coverage_dir: Path,
    tiles_path: Path,
    out_dir: Path,
    title: str | None = None,
    priorities_dir: Path | None = None,
) -> Path:
    """Write the static web viewer of a coverage folder and its tiles.

    Parameters
    ----------
    coverage_dir
        The coverage folder the tiles were made from (``summary.json``, the cell coverage).
    tiles_path
        The PMTiles archive of :func:`pipeline.export.tiles.write_coverage_tiles`; copied into
        ``out_dir`` unless it is already there.
    out_dir
        The site's folder (created); existing viewer files in it are replaced.
    title
        The page title; default ``"Road coverage"``.
    priorities_dir
        The output of ``roadcover export priorities`` for this coverage: its cells and tours
        are copied into the site and drawn as the "where to drive next" layer.

    Returns
    -------
    Path
        The site's ``index.html``.

    Raises
    ------
    InputDataError
        If the tiles, the coverage folder's files or the priorities' files are missing.
    """
    coverage_dir, tiles_path, out_dir = Path(coverage_dir), Path(tiles_path), Path(out_dir)
    if not tiles_path.is_file():
        raise InputDataError(f"{tiles_path}: no such tiles file; run `roadcover export tiles`")
    summary = read_summary(coverage_dir)
    west, south, east, north = finest_cell_bounds(read_cell_table(coverage_dir))
    out_dir.mkdir(parents=True, exist_ok=True)

    site_tiles = out_dir / tiles_path.name
    if not (site_tiles.exists() and os.path.samefile(site_tiles, tiles_path)):
        with atomic_path(site_tiles) as temp:
            shutil.copyfile(tiles_path, temp)
    static = static_files()
    for name in SITE_FILES:
        _copy_resource(static.joinpath(name), out_dir / name)
    for resource in _vendor_files():
        _copy_resource(resource, out_dir / VENDOR_FOLDER / resource.name)
    if priorities_dir is not None:
        _copy_priorities(Path(priorities_dir), out_dir)

    config: dict[str, Any] = {
        "title": title or "Road coverage",
        "tiles": tiles_path.name,
        "bounds": [[west, south], [east, north]],
        "summary": {key: summary.get(key) for key in SUMMARY_KEYS},
        "weeks": _weeks_of(coverage_dir, summary),
        "priorities": dict(PRIORITY_FILES) if priorities_dir is not None else None,
    }
    template = static.joinpath("index.html").read_text(encoding="utf-8")
    page = template.replace("{{TITLE}}", html.escape(config["title"])).replace(
        "{{CONFIG}}", _script_json(config)
    )
    index = out_dir / "index.html"
    with atomic_path(index) as temp:
        temp.write_text(page, encoding="utf-8")
    log.info("export viewer: %s (serve the folder over HTTP with Range support)", index)
    return index


def week_ends(first_s: int, as_of_s: int) -> list[int]:
    """Return the ends of the weeks from a first observation to ``as_of`` (epoch seconds).

    Weeks are ISO weeks: each ends on a Monday at 00:00 UTC. The list holds every week end
    after ``first_s`` and before ``as_of_s``, then ``as_of_s`` itself (the week in progress).

    Parameters
    ----------
    first_s
        The first observation, epoch seconds.
    as_of_s
        The coverage's ``as_of``, epoch seconds (not before ``first_s``).
    """
    weeks_before = (first_s - MONDAY_EPOCH_S) // SECONDS_PER_WEEK
    end = MONDAY_EPOCH_S + (weeks_before + 1) * SECONDS_PER_WEEK
    ends = []
    while end < as_of_s:
        ends.append(end)
        end += SECONDS_PER_WEEK
    return [*ends, as_of_s]


def _weeks_of(coverage_dir: Path, summary: dict[str, Any]) -> list[int]:
    """Return :func:`week_ends` of a coverage folder; empty if nothing was ever seen."""
    first_seen = read_edge_table(coverage_dir, columns=["first_seen"])
    first = pc.min(first_seen.column("first_seen").cast(pa.int64())).as_py()
    as_of = summary.get("as_of")
    if first is None or as_of is None:
        return []
    as_of_s = int(datetime.fromisoformat(str(as_of).replace("Z", "+00:00")).timestamp())
    return week_ends(int(first) // 1000, max(as_of_s, int(first) // 1000))


def viewer_files(tiles_path: Path, priorities: bool = False) -> list[str]:
    """Return the files :func:`write_viewer` writes for ``tiles_path``, relative to the site.

    ``priorities``: the site was written with a priorities folder. This is what
    :func:`pipeline.export.server.serve_directory` may send and nothing more.
    """
    vendor = [f"{VENDOR_FOLDER}/{resource.name}" for resource in _vendor_files()]
    layers = [name for _, name in PRIORITY_FILES] if priorities else []
    return ["index.html", *SITE_FILES, *vendor, Path(tiles_path).name, *layers]


def _copy_priorities(priorities_dir: Path, out_dir: Path) -> None:
    """Copy the priorities' cells and tours (GeoJSON) into the site, tours without edge ids."""
    for kind, name in PRIORITY_FILES:
        source = priorities_dir / f"{kind}.geojson"
        try:
            collection = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputDataError(
                f"{source}: file not found; run `roadcover export priorities` first"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputDataError(
                f"{source}: not valid GeoJSON ({exc}); run `roadcover export priorities` again"
            ) from None
        for feature in collection.get("features", []):
            feature.get("properties", {}).pop("edge_ids", None)
        with atomic_path(out_dir / name) as temp:
            temp.write_text(json.dumps(collection), encoding="utf-8")


def _vendor_files() -> list[Traversable]:
    return [r for r in static_files().joinpath(VENDOR_FOLDER).iterdir() if r.is_file()]


def finest_cell_bounds(cells: pa.Table) -> tuple[float, float, float, float]:
    """Return west, south, east, north of the finest-resolution cells, rounded to 7 decimals.

    Parameters
    ----------
    cells
        A non-empty ``cell_coverage`` table as Arrow, from
        :func:`~pipeline.export.inputs.read_cell_table`.
    """
    resolution = cells.column("resolution")
    finest = cells.filter(pc.equal(resolution, pc.max(resolution)))
    polygons = shapely.from_wkb(finest.column("geometry").to_numpy(zero_copy_only=False))
    west, south, east, north = (round(float(v), 7) for v in shapely.total_bounds(polygons))
    return west, south, east, north


def _script_json(data: dict[str, Any]) -> str:
    """Return JSON safe to inline in a ``<script>`` element."""
    text = json.dumps(data, sort_keys=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _copy_resource(resource: Traversable, target: Path) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(resource.read_bytes())
