"""Feed tables built from the coverage tables: stable segments and hex-id H3 cells.

A *segment* is one covered interval of one directed edge (``edge_coverage.intervals``), cut
out of the edge's LineString. Its id hashes what identifies that piece of road in OSM:

``segment_id`` = the first 16 hex digits of the sha256 of
``"v1:{osm_way_id}:{osm_from_node}:{osm_to_node}:{edge_key}:{from_mm}:{to_mm}"``

OSM way and node ids are stable across extracts unless the way is edited, and offsets are
whole millimetres along the directed edge (as the coverage state stores them), so the same
covered piece keeps its id from release to release. A piece whose extent changes (driven
further, or merged with a neighbour) is a new piece: the old id is removed, the new one added.

Offsets along an edge are mapped to the geometry as fractions of ``length_m`` of its planar
(lon/lat) length, the convention the coverage stage uses to bin edges into H3 cells.
"""

from __future__ import annotations

import hashlib

import geopandas as gpd
import h3
import h3.api.numpy_int as h3int
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

ID_SCHEME = "v1:osm_way_id:osm_from_node:osm_to_node:edge_key:from_mm:to_mm"
FRESHNESS_BUCKETS = ((7, "7d"), (28, "28d"), (90, "90d"), (365, "365d"))
OLDER_BUCKET = "older"
CONTRIBUTOR_BUCKETS = ("0", "1", "2-4", "5+")
MS_PER_DAY = 86_400_000
MIN_PIECE_MM = 1
VERTEX_EPSILON = 1e-9  # a vertex this close (as a fraction) to a cut is the cut point


def contributor_buckets(counts: np.ndarray) -> np.ndarray:
    """Return ``"0"``, ``"1"``, ``"2-4"`` or ``"5+"`` for each contributor count."""
    counts = np.asarray(counts)
    return np.select(
        [counts <= 0, counts == 1, counts <= 4], list(CONTRIBUTOR_BUCKETS[:3]), "5+"
    ).astype(object)


def freshness_buckets(last_seen_ms: np.ndarray, as_of_ms: int) -> np.ndarray:
    """Return the freshness bucket of each last observation (None where never seen).

    A piece seen at most 7 days before ``as_of`` is ``"7d"``, else at most 28 days ``"28d"``,
    then ``"90d"``, ``"365d"`` and ``"older"``: the same thresholds as the coverage stage's
    ``fresh_{d}d_km`` columns.
    """
    last = np.asarray(last_seen_ms, dtype="float64")
    age_ms = as_of_ms - last
    labels = np.select(
        [age_ms <= days * MS_PER_DAY for days, _ in FRESHNESS_BUCKETS],
        [label for _, label in FRESHNESS_BUCKETS],
        OLDER_BUCKET,
    ).astype(object)
    labels[np.isnan(last)] = None
    return labels


def match_confidence_proxy(passes: np.ndarray, min_confidence: float) -> np.ndarray:
    """Return ``1 - (1 - min_confidence) ** passes``, the documented confidence proxy.

    Coverage keeps no per-segment match confidence, only trips whose whole match reached
    ``min_match_confidence``. Reading that threshold as the probability that one such pass is
    right, this is the probability that at least one of ``passes`` independent passes is.
    """
    floor = min(max(float(min_confidence), 0.0), 1.0)
    return np.asarray(1.0 - (1.0 - floor) ** np.asarray(passes, dtype="float64"))


def segment_ids(
    osmid: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    key: np.ndarray,
    from_mm: np.ndarray,
    to_mm: np.ndarray,
) -> np.ndarray:
    """Return the stable 16-hex-digit ids of segments (see the module docstring)."""
    return np.array(
        [
            hashlib.sha256(f"v1:{a}:{b}:{c}:{d}:{e}:{f}".encode()).hexdigest()[:16]
            for a, b, c, d, e, f in zip(
                osmid.tolist(),
                u.tolist(),
                v.tolist(),
                key.tolist(),
                from_mm.tolist(),
                to_mm.tolist(),
                strict=True,
            )
        ],
        dtype=object,
    )


def cut_lines(lines: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Cut each LineString between two normalized positions, vectorized.

    The same result as ``shapely.ops.substring(line, start, end, normalized=True)`` for
    ``0 <= start < end <= 1``, for whole arrays at once.

    Parameters
    ----------
    lines
        LineStrings.
    start, end
        Fractions of each line's planar length.

    Returns
    -------
    numpy.ndarray
        The cut LineStrings.
    """
    count = len(lines)
    if count == 0:
        return np.array([], dtype=object)
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    steps = np.hypot(np.diff(coords[:, 0]), np.diff(coords[:, 1]))
    steps[owner[1:] != owner[:-1]] = 0.0
    along = np.concatenate([[0.0], np.cumsum(steps)])
    first = np.searchsorted(owner, np.arange(count))
    along -= along[first][owner]
    total = np.asarray(shapely.length(lines), dtype="float64")
    fraction = along / np.where(total > 0, total, 1.0)[owner]
    inside = (fraction > start[owner] + VERTEX_EPSILON) & (fraction < end[owner] - VERTEX_EPSILON)
    heads = shapely.get_coordinates(shapely.line_interpolate_point(lines, start, normalized=True))
    tails = shapely.get_coordinates(shapely.line_interpolate_point(lines, end, normalized=True))
    inner = int(inside.sum())
    xy = np.concatenate([heads, coords[inside], tails])
    index = np.concatenate([np.arange(count), owner[inside], np.arange(count)])
    rank = np.concatenate([np.zeros(count), 1.0 + np.arange(inner), np.full(count, inner + 1.0)])
    order = np.lexsort((rank, index))
    return np.asarray(shapely.linestrings(xy[order], indices=index[order]), dtype=object)


def covered_pieces(edges: gpd.GeoDataFrame, intervals: pa.ChunkedArray) -> pd.DataFrame:
    """Flatten the covered intervals of every edge into one row per piece.

    Parameters
    ----------
    edges
        The ``edge_coverage`` table.
    intervals
        Its ``intervals`` column as Arrow (``list<struct<from_m, to_m, first_seen,
        last_seen>>``), row-aligned with ``edges``.

    Returns
    -------
    pandas.DataFrame
        ``edge`` (row position in ``edges``), ``from_mm``, ``to_mm``, ``first_ms``, ``last_ms``.
    """
    column = intervals.combine_chunks() if intervals.num_chunks != 1 else intervals.chunk(0)
    flat = pc.list_flatten(column)
    parents = pc.list_parent_indices(column)
    pieces = pd.DataFrame(
        {
            "edge": np.asarray(parents, dtype="int64"),
            "from_mm": _mm(flat.field("from_m")),
            "to_mm": _mm(flat.field("to_m")),
            "first_ms": np.asarray(flat.field("first_seen").cast(pa.int64()), dtype="int64"),
            "last_ms": np.asarray(flat.field("last_seen").cast(pa.int64()), dtype="int64"),
        }
    )
    length_mm = _mm(pa.array(edges["length_m"].to_numpy(dtype="float64")))
    pieces["to_mm"] = np.minimum(pieces["to_mm"].to_numpy(), length_mm[pieces["edge"]])
    return pieces[pieces["to_mm"] - pieces["from_mm"] >= MIN_PIECE_MM].reset_index(drop=True)


def clip_pieces(
    pieces: pd.DataFrame, edges: gpd.GeoDataFrame, aoi: shapely.Geometry
) -> pd.DataFrame:
    """Cut pieces to an area of interest, along their edges.

    A piece inside the AOI is kept as it is (so it keeps its id); one outside is dropped; one
    crossing the boundary is replaced by the parts of it inside, each located on its edge again,
    so each part is a piece with its own offsets and id.
    """
    if pieces.empty:
        return pieces
    lines = np.asarray(edges.geometry.to_numpy())[pieces["edge"].to_numpy()]
    length_m = edges["length_m"].to_numpy(dtype="float64")[pieces["edge"].to_numpy()]
    geoms = cut_lines(lines, *_fractions(pieces, length_m))
    shapely.prepare(aoi)
    inside = shapely.covered_by(geoms, aoi)
    crossing = ~inside & shapely.intersects(geoms, aoi)
    if not crossing.any():
        return pieces[inside].reset_index(drop=True)
    cut = shapely.intersection(geoms[crossing], aoi)
    parts, owner = shapely.get_parts(cut, return_index=True)
    is_line = shapely.get_type_id(parts) == 1
    parts, owner = parts[is_line], owner[is_line]
    rows = pieces[crossing].iloc[owner].reset_index(drop=True)
    edge_lines = lines[crossing][owner]
    edge_m = length_m[crossing][owner]
    starts = shapely.line_locate_point(edge_lines, shapely.get_point(parts, 0), normalized=True)
    ends = shapely.line_locate_point(edge_lines, shapely.get_point(parts, -1), normalized=True)
    low = np.ceil(np.minimum(starts, ends) * edge_m * 1000.0).astype("int64")  # inward, so
    high = np.floor(np.maximum(starts, ends) * edge_m * 1000.0).astype("int64")  # inside
    rows["from_mm"] = np.maximum(low, rows["from_mm"].to_numpy())
    rows["to_mm"] = np.minimum(high, rows["to_mm"].to_numpy())
    rows = rows[rows["to_mm"] - rows["from_mm"] >= MIN_PIECE_MM]
    clipped = pd.concat([pieces[inside], rows], ignore_index=True)
    return clipped.drop_duplicates(["edge", "from_mm", "to_mm"]).reset_index(drop=True)


def feed_segments(
    edges: gpd.GeoDataFrame,
    pieces: pd.DataFrame,
    as_of_ms: int,
    min_confidence: float,
    partition_res: int,
) -> gpd.GeoDataFrame:
    """Return the ``feed_segments`` rows of covered pieces, with their ``h3_parent``.

    Parameters
    ----------
    edges
        The ``edge_coverage`` table.
    pieces
        From :func:`covered_pieces` (and :func:`clip_pieces`).
    as_of_ms
        The coverage's as-of time (epoch ms), for freshness buckets.
    min_confidence
        The coverage criterion ``min_match_confidence``, for the confidence proxy.
    partition_res
        H3 resolution of the partition cell, taken at the segment's midpoint.

    Returns
    -------
    geopandas.GeoDataFrame
        Sorted by ``h3_parent`` then ``segment_id``.
    """
    edge = pieces["edge"].to_numpy()
    rows = edges.iloc[edge]
    length_m = rows["length_m"].to_numpy(dtype="float64")
    lines = cut_lines(np.asarray(edges.geometry.to_numpy())[edge], *_fractions(pieces, length_m))
    from_mm = pieces["from_mm"].to_numpy(dtype="int64")
    to_mm = pieces["to_mm"].to_numpy(dtype="int64")
    passes = rows["passes"].to_numpy(dtype="int64")
    last_ms = pieces["last_ms"].to_numpy(dtype="int64")
    table = pd.DataFrame(
        {
            "segment_id": segment_ids(
                rows["osmid"].to_numpy(),
                rows["u"].to_numpy(),
                rows["v"].to_numpy(),
                rows["key"].to_numpy(),
                from_mm,
                to_mm,
            ),
            "osm_way_id": rows["osmid"].to_numpy(dtype="int64"),
            "osm_from_node": rows["u"].to_numpy(dtype="int64"),
            "osm_to_node": rows["v"].to_numpy(dtype="int64"),
            "edge_key": rows["key"].to_numpy(dtype="int64"),
            "highway": rows["highway"].to_numpy(dtype=object),
            "edge_length_m": length_m,
            "from_m": from_mm / 1000.0,
            "to_m": to_mm / 1000.0,
            "length_m": (to_mm - from_mm) / 1000.0,
            "first_seen": _timestamps(pieces["first_ms"].to_numpy(dtype="int64")),
            "last_seen": _timestamps(last_ms),
            "passes": passes,
            "contributors_bucket": contributor_buckets(rows["contributors"].to_numpy()),
            "freshness_bucket": freshness_buckets(last_ms, as_of_ms),
            "match_confidence": match_confidence_proxy(passes, min_confidence),
            "h3_parent": _line_parents(lines, partition_res),
        }
    )
    frame = gpd.GeoDataFrame(table, geometry=lines, crs="EPSG:4326")
    return frame.sort_values(["h3_parent", "segment_id"], ignore_index=True)


def feed_cells(
    cells: gpd.GeoDataFrame,
    as_of_ms: int,
    partition_res: int,
    aoi: shapely.Geometry | None = None,
) -> gpd.GeoDataFrame:
    """Return the ``feed_cells`` rows with their ``h3_parent``.

    Only cells at ``partition_res`` or finer are kept: each lies in exactly one partition.
    (Coarser rollups would span partitions and reach beyond a buyer's area; their length sums
    are the sums of their children's.) With an AOI, only cells whose centre is inside remain.
    """
    kept = cells[cells["resolution"].to_numpy() >= partition_res]
    ints = kept["cell"].to_numpy(dtype="int64")
    if aoi is not None and len(kept):
        centres = np.array([h3int.cell_to_latlng(int(c)) for c in ints]).reshape(-1, 2)
        inside = shapely.contains_xy(aoi, centres[:, 1], centres[:, 0])
        kept, ints = kept[inside], ints[inside]
    last = kept["last_seen"]
    last_ms = (
        last.dt.as_unit("ms").to_numpy(dtype="datetime64[ms]").astype("int64").astype("float64")
    )
    last_ms[last.isna().to_numpy()] = np.nan
    table = pd.DataFrame(
        {
            "cell_id": np.array([h3.int_to_str(int(c)) for c in ints], dtype=object),
            "resolution": kept["resolution"].to_numpy(dtype="int32"),
            "road_km": kept["road_km"].to_numpy(dtype="float64"),
            "unique_km": kept["unique_km"].to_numpy(dtype="float64"),
            "coverage_pct": kept["coverage_pct"].to_numpy(dtype="float64"),
            "total_km": kept["total_km"].to_numpy(dtype="float64"),
            "passes": kept["passes"].to_numpy(dtype="int64"),
            "contributors_bucket": contributor_buckets(kept["contributors"].to_numpy()),
            "last_seen": last.array,
            "age_days": kept["age_days"].to_numpy(dtype="float64"),
            "freshness_bucket": freshness_buckets(last_ms, as_of_ms),
            **{
                f"fresh_{d}d_km": kept[f"fresh_{d}d_km"].to_numpy(dtype="float64")
                for d, _ in FRESHNESS_BUCKETS
            },
            "h3_parent": np.array(
                [h3.int_to_str(h3int.cell_to_parent(int(c), partition_res)) for c in ints],
                dtype=object,
            ),
        }
    )
    frame = gpd.GeoDataFrame(table, geometry=kept.geometry.to_numpy(), crs="EPSG:4326")
    return frame.sort_values(["h3_parent", "cell_id"], ignore_index=True)


def _fractions(pieces: pd.DataFrame, length_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length_mm = np.where(length_m > 0, length_m * 1000.0, 1.0)
    start = np.clip(pieces["from_mm"].to_numpy(dtype="float64") / length_mm, 0.0, 1.0)
    end = np.clip(pieces["to_mm"].to_numpy(dtype="float64") / length_mm, 0.0, 1.0)
    return start, end


def _line_parents(lines: np.ndarray, resolution: int) -> np.ndarray:
    middles = shapely.line_interpolate_point(lines, 0.5, normalized=True)
    xs, ys = shapely.get_x(middles), shapely.get_y(middles)
    return np.array(
        [
            h3.int_to_str(h3int.latlng_to_cell(y, x, resolution))
            for x, y in zip(xs.tolist(), ys.tolist(), strict=True)
        ],
        dtype=object,
    )


def _mm(metres: pa.Array) -> np.ndarray:
    return np.rint(np.asarray(metres, dtype="float64") * 1000.0).astype("int64")


def _timestamps(epoch_ms: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(epoch_ms, unit="ms", utc=True)).dt.as_unit("ms")
