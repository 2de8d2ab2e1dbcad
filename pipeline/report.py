"""The run report: one self-contained HTML page of plots (matplotlib) and tables per region.

Coverage map thumbnail, coverage % and fresh km week by week (as-of sweeps over the coverage
state, the weeks of the web map's time slider), freshness histogram, match-quality
distribution, rejects by reason and stage timings.
Images are embedded as base64 PNG, so the page is a single file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shapely
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.colors import Normalize
from matplotlib.patches import PathPatch
from matplotlib.path import Path as DrawingPath

from pipeline.contracts import MATCH_QUALITY
from pipeline.coverage.cell_reader import read_cell_table
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.edges import canonical_edges, road_lengths_mm, road_pieces
from pipeline.coverage.intervals import to_mm
from pipeline.coverage.state import read_state
from pipeline.coverage.summary import combine_summaries
from pipeline.export.inputs import edge_frame
from pipeline.export.viewer import week_ends
from pipeline.io import arrow_to_geodataframe, atomic_path, read_table, write_json
from pipeline.process_tree import read_command_records, read_run_record, records_folder

MS_PER_DAY = 86_400_000
PRIORITIES_FOLDER = "priorities"
"""Where the workflow writes ``roadcover export priorities`` in a region's ``export/``."""
STATE_COLUMNS = {"edge_trips": ["edge_id", "first_ms", "last_ms"], "cell_trips": []}
"""What the report reads of the coverage state (and all of ``edge_pieces``)."""


def write_report(region_dirs: dict[str, Path], out_path: Path) -> Path:
    """Write the HTML report of the given regions (name -> region output folder).

    Beside it, ``summary.json`` holds every region's summary and their combination
    (``all_regions``: km summed, shares recomputed).
    """
    summaries = {
        name: json.loads((folder / "coverage" / "summary.json").read_text())
        for name, folder in sorted(region_dirs.items())
    }
    combined = combine_summaries(summaries)
    write_json({"regions": summaries, "all_regions": combined}, out_path.with_name("summary.json"))
    sections = [_region_section(name, folder) for name, folder in sorted(region_dirs.items())]
    sections.insert(0, _run_memory(out_path.parent))
    if len(summaries) > 1:
        sections.insert(0, f"<section><h2>all regions</h2>{_summary_table(combined)}</section>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>roadcover report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}section{margin-bottom:3em}</style></head><body>"
        "<h1>roadcover report</h1>" + "".join(sections) + "</body></html>"
    )
    with atomic_path(out_path) as temp:
        temp.write_text(page, encoding="utf-8")
    return out_path


def _region_section(name: str, folder: Path) -> str:
    summary = json.loads((folder / "coverage" / "summary.json").read_text())
    edges = edge_frame(read_edge_table(folder / "coverage"))
    cells = arrow_to_geodataframe(read_cell_table(folder / "coverage"))
    figures = [
        ("Coverage map", _map_thumbnail(edges, cells)),
        (
            "Coverage and freshness, week by week",
            _coverage_over_time(folder, edges, summary.get("as_of")),
        ),
        ("Age of the newest observation", _freshness_histogram(edges)),
        ("Match quality", _match_quality(folder)),
        ("Rejected input rows by reason", _rejects(folder)),
        ("Where to drive next", _priorities(folder)),
        ("Stage timings", _timings(folder)),
        ("Memory of each stage's whole process tree, workers included", _tree_memory(folder)),
    ]
    body = "".join(f"<h3>{html.escape(title)}</h3>{content}" for title, content in figures)
    return f"<section><h2>{html.escape(name)}</h2>{_summary_table(summary)}{body}</section>"


def _summary_table(summary: dict[str, Any]) -> str:
    rows = [
        ("road km", summary["road_km"]), ("unique km", summary["unique_km"]),
        ("total km", summary["total_km"]), ("coverage %", summary["coverage_pct"]),
        ("fresh 28 days %", summary["fresh_28d_pct"]),
        ("share of world %", summary["percent_of_world"]),
    ]  # fmt: skip
    cells = "".join(f"<tr><th>{k}</th><td>{v:,.4g}</td></tr>" for k, v in rows)
    as_of = f"<p>as of {html.escape(summary['as_of'])}</p>" if "as_of" in summary else ""
    return f"<table>{cells}</table>{as_of}"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img src='data:image/png;base64,{data}'>"


def _map_thumbnail(edges: pd.DataFrame, cells: pd.DataFrame) -> str:
    """Return the map: the finest cells by coverage, roads over them (grey undriven, by age).

    It is the picture ``GeoDataFrame.plot`` draws of these layers in lon/lat (the same collections,
    aspect and colour bar), without the whole-figure draw it makes after each layer.
    """
    figure, axis = plt.subplots(figsize=(7, 6))
    finest = cells[cells["resolution"] == cells["resolution"].max()]
    if len(finest):
        _draw_cells(axis, finest["geometry"].to_numpy(), finest["coverage_pct"].to_numpy())
    undriven = edges[edges["covered_m"] == 0]
    if len(undriven):
        _draw_lines(axis, undriven["geometry"].to_numpy(), color="#bbbbbb", linewidth=0.5)
    driven = edges[edges["covered_m"] > 0]
    if len(driven):
        ages = driven["age_days"].to_numpy(dtype="float64")
        _draw_lines(axis, driven["geometry"].to_numpy(), ages, "autumn", linewidth=1.2)
    axis.set_axis_off()
    return _png(figure)


def _draw_cells(axis: Axes, polygons: np.ndarray, coverage_pct: np.ndarray) -> None:
    """Draw polygons coloured by coverage (0-100 %, viridis, half transparent), a colour bar."""
    _set_lonlat_aspect(axis, polygons)
    known = ~np.isnan(coverage_pct)
    patches = [PathPatch(_polygon_path(p)) for p in shapely.normalize(polygons[known])]
    collection = PatchCollection(patches, alpha=0.5)
    collection.set_cmap("viridis")
    collection.set_array(coverage_pct[known])
    collection.set_clim(0, 100)
    axis.add_collection(collection, autolim=True)
    axis.autoscale_view()
    below, above = coverage_pct[known].min() < 0, coverage_pct[known].max() > 100
    extend = "both" if below and above else "min" if below else "max" if above else "neither"
    ratio = axis.get_position().height / axis.get_position(original=True).height
    axis.figure.colorbar(
        ScalarMappable(norm=Normalize(vmin=0, vmax=100), cmap="viridis"),
        ax=axis,
        extend=extend,
        shrink=ratio,
        aspect=ratio * 20,
    )


def _polygon_path(polygon: shapely.Geometry) -> DrawingPath:
    """One path of every ring of a (multi)polygon, as matplotlib fills polygons with holes."""
    rings = [r for part in shapely.get_parts(polygon) for r in (part.exterior, *part.interiors)]
    return DrawingPath.make_compound_path(
        *(DrawingPath(np.asarray(ring.coords)[:, :2], closed=True) for ring in rings)
    )


def _draw_lines(
    axis: Axes,
    lines: np.ndarray,
    values: np.ndarray | None = None,
    cmap: str = "viridis",
    **style: Any,
) -> None:
    """Draw (multi)line strings as one collection, coloured by ``values`` (min to max) if given.

    Lines whose value is NaN are left out; ``cmap`` colours the values.
    """
    _set_lonlat_aspect(axis, lines)
    if values is not None:
        known = ~np.isnan(values)
        lines, values = lines[known], values[known]
    parts, owner = shapely.get_parts(shapely.normalize(lines), return_index=True)
    collection = LineCollection([np.array(part.coords)[:, :2] for part in parts], **style)
    if values is not None and len(values):
        collection.set_array(values[owner])
        collection.set_cmap(cmap)
        collection.set_clim(values.min(), values.max())
    axis.add_collection(collection, autolim=True)
    axis.autoscale_view()


def _set_lonlat_aspect(axis: Axes, geometry: np.ndarray) -> None:
    """Stretch lon/lat as geopandas does: 1 / cos(the data's middle latitude)."""
    _, south, _, north = shapely.total_bounds(geometry)
    axis.set_aspect(1 / np.cos(np.mean([south, north]) * np.pi / 180))


def _coverage_over_time(folder: Path, edges: pd.DataFrame, as_of: str | None) -> str:
    state = read_state(folder / "coverage" / "state", columns=STATE_COLUMNS)
    if state.edge_pieces.empty or as_of is None:
        return "<p>no coverage yet</p>"
    as_of_ms = pd.Timestamp(as_of).value // 1_000_000
    history = weekly_history(state.edge_pieces, state.edge_trips, edges, as_of_ms)
    figure, (share_axis, km_axis) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    dates = pd.to_datetime(history["week_end"], unit="ms")
    share_axis.plot(dates, history["coverage_pct"], marker=".", label="covered at least once")
    share_axis.plot(dates, history["fresh_edge_pct"], marker=".", label="edges driven in 28 days")
    share_axis.set_ylim(0, 100)
    share_axis.set_ylabel("% of road length")
    share_axis.legend()
    km_axis.plot(dates, history["fresh_km"], marker=".", color="tab:green")
    km_axis.set_ylabel("fresh km (28 days)")
    figure.autofmt_xdate()
    return _png(figure) + _history_table(history)


def weekly_history(
    edge_pieces: pd.DataFrame, edge_trips: pd.DataFrame, edges: pd.DataFrame, as_of_ms: int
) -> pd.DataFrame:
    """Return coverage and freshness at the end of every week, from the coverage state.

    Weeks are those of :func:`pipeline.export.viewer.week_ends` (ISO weeks ending Mondays
    00:00 UTC, the last entry ``as_of``): what the web map's time slider steps through. At each
    end ``t`` (observations before ``t``; at or before it for ``as_of``):

    - ``coverage_pct``: the road length first observed by then over the road length, in integer
      millimetres (roads counted once whichever direction, as ``summary.json``);
    - ``fresh_km``: of that covered length, the part on roads some trip drove (on either
      direction) in the 28 days before ``t``;
    - ``fresh_edge_pct``: the share of directed edge length a trip drove in those 28 days.

    Parameters
    ----------
    edge_pieces, edge_trips
        The coverage state's tables (``edge_trips``: ``edge_id``, ``first_ms``, ``last_ms``).
    edges
        The ``edge_coverage`` table.
    as_of_ms
        The coverage's ``as_of``, epoch milliseconds.

    Returns
    -------
    pandas.DataFrame
        ``week_end`` (epoch ms), ``coverage_pct``, ``fresh_km``, ``fresh_edge_pct``.
    """
    canonical = canonical_edges(edges)
    roads = road_pieces(edge_pieces, canonical)
    length = (roads["to_mm"] - roads["from_mm"]).to_numpy()
    first = roads["first_ms"].to_numpy()
    road_mm = max(int(road_lengths_mm(canonical).sum()), 1)
    ends = np.array(week_ends(int(first.min()) // 1000, as_of_ms // 1000), dtype="int64") * 1000
    ends[-1] = as_of_ms
    times = np.append(ends[:-1] - 1, as_of_ms)  # before a week's end; as_of itself included
    known = canonical.index.get_indexer(pd.Index(edge_trips["edge_id"])) >= 0
    trips = edge_trips[known]
    trip_road = canonical.loc[trips["edge_id"].to_numpy(), "canonical_id"].to_numpy()
    coverage, fresh_km = [], []
    for time in times:
        seen = first <= time
        window = (trips["first_ms"].to_numpy() <= time) & (
            trips["last_ms"].to_numpy() >= time - 28 * MS_PER_DAY
        )
        fresh_roads = np.isin(roads["key"].to_numpy(), trip_road[window])
        coverage.append(100 * int(length[seen].sum()) / road_mm)
        fresh_km.append(int(length[seen & fresh_roads].sum()) / 1e6)
    return pd.DataFrame(
        {
            "week_end": ends,
            "coverage_pct": coverage,
            "fresh_km": fresh_km,
            "fresh_edge_pct": _edge_fresh_pct(edge_trips, edges, times.astype("float64")),
        }
    )


def _history_table(history: pd.DataFrame) -> str:
    dates = pd.to_datetime(history["week_end"], unit="ms").dt.strftime("%Y-%m-%d")
    rows = "".join(
        f"<tr><td>{date}</td><td>{pct:.2f}</td><td>{km:,.3f}</td></tr>"
        for date, pct, km in zip(dates, history["coverage_pct"], history["fresh_km"], strict=True)
    )
    return (
        "<table><tr><th>week ending</th><th>coverage %</th><th>fresh km (28 days)</th></tr>"
        f"{rows}</table>"
    )


def _edge_fresh_pct(trips: pd.DataFrame, edges: pd.DataFrame, days: np.ndarray) -> list[float]:
    """For each time (epoch ms), the % of edge length some trip drove in the 28 days before.

    A trip makes its edge fresh at the times ``t`` with ``first_ms <= t`` and
    ``last_ms >= t - 28 days``: a run of the sorted ``days``, found by binary search, so each
    trip is looked at once whatever the number of times.

    Parameters
    ----------
    trips
        The coverage state's ``edge_trips``: ``edge_id``, ``first_ms``, ``last_ms``.
    edges
        The ``edge_coverage`` table (edge ids unique, as its contract keys them).
    days
        The times, ascending.
    """
    rows = pd.Index(edges["edge_id"]).get_indexer(trips["edge_id"])
    known = rows >= 0
    first = np.searchsorted(days, trips["first_ms"].to_numpy()[known], side="left")
    stop = np.searchsorted(days - 28 * MS_PER_DAY, trips["last_ms"].to_numpy()[known], "right")
    starts = np.zeros((len(edges), len(days) + 1), dtype="int64")
    np.add.at(starts, (rows[known], first), 1)
    np.add.at(starts, (rows[known], np.maximum(stop, first)), -1)
    driven = np.cumsum(starts[:, :-1], axis=1) > 0
    length = to_mm(edges["length_m"])  # integer sums: a part never exceeds the whole
    total = max(int(length.sum()), 1)
    return [float(100 * int(length[driven[:, day]].sum()) / total) for day in range(len(days))]


def _freshness_histogram(edges: pd.DataFrame) -> str:
    ages = edges.loc[edges["covered_m"] > 0, "age_days"]
    figure, axis = plt.subplots(figsize=(7, 3))
    axis.hist(ages, bins=30, weights=edges.loc[ages.index, "covered_m"] / 1000)
    axis.set_xlabel("days since last observation")
    axis.set_ylabel("covered km")
    return _png(figure)


def _match_quality(folder: Path) -> str:
    files = sorted((folder / "matched").glob("*/match_quality.parquet"))
    if not files:
        return "<p>no matched batch</p>"
    quality = pd.concat(
        [pd.DataFrame(read_table(f, MATCH_QUALITY)) for f in files], ignore_index=True
    )
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.hist(quality["confidence"], bins=20, range=(0, 1))
    left.set_xlabel("match confidence per trip")
    right.hist(quality["mean_distance_m"].dropna(), bins=30)
    right.set_xlabel("mean fix-to-road distance (m)")
    return _png(figure)


def _rejects(folder: Path) -> str:
    reports = sorted((folder / "traces" / "reports").glob("*.json"))
    counts: dict[str, int] = {}
    for report in reports:
        for reason, count in json.loads(report.read_text()).get("rejected_by_reason", {}).items():
            counts[reason] = counts.get(reason, 0) + count
    if not counts:
        return "<p>no rejected rows</p>"
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(counts) + 1))
    names = sorted(counts, key=counts.__getitem__)
    axis.barh(names, [counts[n] for n in names])
    axis.set_xlabel("rows")
    return _png(figure)


def _priorities(folder: Path) -> str:
    """Return the where-to-drive-next section: km to gain per top cell, the tours' numbers.

    It reads ``export/priorities/summary.json`` of the region folder (``roadcover export
    priorities``).
    """
    path = folder / "export" / PRIORITIES_FOLDER / "summary.json"
    if not path.is_file():
        return "<p>no priorities (run <code>roadcover export priorities</code>)</p>"
    summary = json.loads(path.read_text())
    cells = summary["top_cells"]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(cells) + 1))
    names = [f"{c['rank']}. {c['h3']}" for c in cells][::-1]
    axis.barh(names, [c["new_km"] for c in cells][::-1], label="never driven")
    axis.barh(
        names, [c["stale_km"] for c in cells][::-1], left=[c["new_km"] for c in cells][::-1],
        label=f"stale (over {summary['settings']['freshness_target_days']:g} days)",
    )  # fmt: skip
    axis.set_xlabel("km to gain per H3 cell")
    axis.legend()
    rows = "".join(
        f"<tr><td>{t['tour']}</td><td>{html.escape(t['h3'])}</td><td>{t['length_km']:.1f}</td>"
        f"<td>{t['new_km']:.2f}</td><td>{t['stale_km']:.2f}</td><td>{t['gain_per_km']:.2f}</td>"
        f"<td>{html.escape(t['gpx'])}</td></tr>"
        for t in summary["tours"]
    )
    totals = (
        f"<p>{summary['new_km']:,.1f} km never driven and {summary['stale_km']:,.1f} km stale "
        f"in {summary['cells']:,} cells (as of {html.escape(summary['as_of'])})</p>"
    )
    tours = (
        "<table><tr><th>tour</th><th>cell</th><th>length km</th><th>never driven km</th>"
        f"<th>stale km</th><th>km gained per km driven</th><th>GPX</th></tr>{rows}</table>"
    )
    return totals + _png(figure) + tours


def _timings(folder: Path) -> str:
    root = folder.parent / "benchmarks" / folder.name
    rows = []
    for tsv in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        rows.append(
            (
                str(tsv.relative_to(root).with_suffix("")),
                float(table["s"].iloc[-1]),
                float(table["max_rss"].iloc[-1]),
            )
        )
    if not rows:
        return "<p>no timings (run through Snakemake to record them)</p>"
    body = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{s:.1f} s</td><td>{m:.0f} MB</td></tr>"
        for n, s, m in rows
    )
    return f"<table><tr><th>step</th><th>time</th><th>peak memory</th></tr>{body}</table>"


MEMORY_COLUMNS = (
    ("wall_s", "time", "{:.1f} s"),
    ("peak_rss_mb", "tree peak RSS", "{:,.0f} MiB"),
    ("peak_pss_mb", "tree peak PSS", "{:,.0f} MiB"),
    ("peak_uss_mb", "tree peak USS", "{:,.0f} MiB"),
    ("own_peak_rss_mb", "stage process", "{:,.0f} MiB"),
    ("others_peak_rss_mb", "workers and tools", "{:,.0f} MiB"),
    ("peak_processes", "processes", "{:.0f}"),
)
"""What the memory tables show of a process record: key, heading, format."""


def _tree_memory(folder: Path) -> str:
    """Tabulate the process-tree memory of the stage commands that wrote into the region."""
    records = read_command_records(records_folder(folder.parent), folder)
    if not records:
        return "<p>no records (`roadcover run` records every stage's process tree)</p>"
    return _memory_table(records)


def _run_memory(output_dir: Path) -> str:
    """Return the section of the whole run's process-tree memory, "" without a record."""
    record = read_run_record(records_folder(output_dir))
    if record is None:
        return ""
    record["label"] = "roadcover run" + ("" if record.get("finished") else " (up to this report)")
    return f"<section><h2>the whole run's memory</h2>{_memory_table([record])}</section>"


def _memory_table(records: list[dict[str, Any]]) -> str:
    """Return an HTML table of process records: a row each, a cell per :data:`MEMORY_COLUMNS`."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in MEMORY_COLUMNS)
    rows = []
    for record in records:
        cells = []
        for key, _, form in MEMORY_COLUMNS:
            value = record.get(key)
            text = "n/a" if not isinstance(value, int | float) else form.format(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append(f"<tr><th>{html.escape(str(record['label']))}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>command</th>{head}</tr>{''.join(rows)}</table>"
