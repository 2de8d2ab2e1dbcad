"""Data contracts: the Arrow schema of every stage output, checked on write and on read.

Each stage output is a GeoParquet 1.1 file whose Parquet key-value metadata carries, under the
key ``roadcover``, the table name and its ``schema_version``. :func:`validate_table` compares a
table with its contract and raises one :class:`~pipeline.errors.ContractError` that lists every
problem at once. ``docs/data-contracts.md`` describes each table for humans; keep both in step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ContractError

METADATA_KEY = b"roadcover"
UTC_MS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Contract:
    """The promised shape of one stage output table.

    Attributes
    ----------
    name
        Table name, e.g. ``"edges"``; also the file stem.
    version
        ``schema_version`` written into the file metadata; bump it on any incompatible change.
    schema
        Arrow schema: column names, types and nullability. The geometry column is WKB binary.
    key
        Columns whose combined values are unique per row.
    geometry_column
        Name of the WKB geometry column, or None for a plain table.
    """

    name: str
    version: int
    schema: pa.Schema
    key: tuple[str, ...]
    geometry_column: str | None = "geometry"

    def metadata(self) -> dict[bytes, bytes]:
        """Return the Parquet key-value metadata that identifies this contract."""
        value = {"table": self.name, "schema_version": self.version}
        return {METADATA_KEY: json.dumps(value, sort_keys=True).encode()}


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


EDGES = Contract(
    name="edges",
    version=1,
    key=("edge_id",),
    schema=pa.schema(
        [
            _field("edge_id", pa.int64()),
            _field("u", pa.int64()),
            _field("v", pa.int64()),
            _field("key", pa.int64()),
            _field("osmid", pa.int64()),
            _field("highway", pa.string()),
            _field("oneway", pa.bool_()),
            _field("reversed", pa.bool_()),
            _field("name", pa.string(), nullable=True),
            _field("maxspeed", pa.string(), nullable=True),
            _field("length_m", pa.float64()),
            _field("road_id", pa.int64()),
            _field("geometry", pa.binary()),
        ]
    ),
)

NODES = Contract(
    name="nodes",
    version=1,
    key=("node_id",),
    schema=pa.schema(
        [
            _field("node_id", pa.int64()),
            _field("lon", pa.float64()),
            _field("lat", pa.float64()),
            _field("street_count", pa.int64()),
            _field("geometry", pa.binary()),
        ]
    ),
)

SIMULATED_ROUTES = Contract(
    name="simulated_routes",
    version=1,
    key=("trace_id", "trip_id", "seq"),
    schema=pa.schema(
        [
            _field("trace_id", pa.string()),
            _field("trip_id", pa.string()),
            _field("seq", pa.int32()),
            _field("device_id", pa.string()),
            _field("contributor_id", pa.string()),
            _field("edge_id", pa.int64()),
            _field("u", pa.int64()),
            _field("v", pa.int64()),
            _field("key", pa.int64()),
            _field("length_m", pa.float64()),
            _field("entered_at", UTC_MS),
            _field("exited_at", UTC_MS),
            _field("geometry", pa.binary()),
        ]
    ),
)

POINTS = Contract(
    name="points",
    version=1,
    key=("trace_id", "observed_at"),
    schema=pa.schema(
        [
            _field("trace_id", pa.string()),
            _field("trip_id", pa.string()),
            _field("contributor_id", pa.string()),
            _field("device_id", pa.string()),
            _field("observed_at", UTC_MS),
            _field("lon", pa.float64()),
            _field("lat", pa.float64()),
            _field("hdop", pa.float64(), nullable=True),
            _field("speed_mps", pa.float64(), nullable=True),
            _field("heading_deg", pa.float64(), nullable=True),
            _field("source_file", pa.string()),
            _field("source_row", pa.int64()),
            _field("geometry", pa.binary()),
        ]
    ),
)

TRIPS = Contract(
    name="trips",
    version=1,
    key=("trip_id",),
    schema=pa.schema(
        [
            _field("trip_id", pa.string()),
            _field("trace_id", pa.string()),
            _field("contributor_id", pa.string()),
            _field("device_id", pa.string()),
            _field("started_at", UTC_MS),
            _field("ended_at", UTC_MS),
            _field("points", pa.int64()),
            _field("length_m", pa.float64()),
            _field("fingerprint", pa.string()),
            _field("flags", pa.list_(pa.string())),
            _field("trust_score", pa.float64()),
            _field("plausible", pa.bool_()),
            _field("batch_id", pa.string()),
            _field("geometry", pa.binary()),
        ]
    ),
)

REJECTS = Contract(
    name="rejects",
    version=1,
    key=("source_file", "source_row", "reason"),
    geometry_column=None,
    schema=pa.schema(
        [
            _field("source_file", pa.string()),
            _field("source_row", pa.int64()),
            _field("reason", pa.string()),
            _field("detail", pa.string()),
            _field("batch_id", pa.string()),
        ]
    ),
)

MATCHED_SEGMENTS = Contract(
    name="matched_segments",
    version=1,
    key=("trip_id", "seq"),
    schema=pa.schema(
        [
            _field("trace_id", pa.string()),
            _field("trip_id", pa.string()),
            _field("seq", pa.int32()),
            _field("contributor_id", pa.string()),
            _field("edge_id", pa.int64()),
            _field("u", pa.int64()),
            _field("v", pa.int64()),
            _field("key", pa.int64()),
            _field("osmid", pa.int64()),
            _field("from_offset_m", pa.float64()),
            _field("to_offset_m", pa.float64()),
            _field("entered_at", UTC_MS),
            _field("exited_at", UTC_MS),
            _field("geometry", pa.binary()),
        ]
    ),
)

# no upload file name (``source_file``): file names often name a device or a person, and the
# matched tables are products; (trace_id, observed_at) leads back to the fix in ``points``
MATCHED_POINTS = Contract(
    name="matched_points",
    version=2,
    key=("trace_id", "observed_at"),
    schema=pa.schema(
        [
            _field("trace_id", pa.string()),
            _field("trip_id", pa.string()),
            _field("observed_at", UTC_MS),
            _field("edge_id", pa.int64(), nullable=True),
            _field("u", pa.int64(), nullable=True),
            _field("v", pa.int64(), nullable=True),
            _field("key", pa.int64(), nullable=True),
            _field("offset_m", pa.float64(), nullable=True),
            _field("distance_m", pa.float64(), nullable=True),
            _field("run", pa.int64()),
            _field("is_break", pa.bool_()),
            _field("unmatched_reason", pa.string(), nullable=True),
            _field("source_row", pa.int64()),
            _field("geometry", pa.binary()),
        ]
    ),
)

MATCH_QUALITY = Contract(
    name="match_quality",
    version=1,
    key=("trip_id",),
    geometry_column=None,
    schema=pa.schema(
        [
            _field("trace_id", pa.string()),
            _field("trip_id", pa.string()),
            _field("contributor_id", pa.string()),
            _field("points", pa.int64()),
            _field("matched_points", pa.int64()),
            _field("breaks", pa.int64()),
            _field("mean_distance_m", pa.float64(), nullable=True),
            _field("p95_distance_m", pa.float64(), nullable=True),
            _field("matched_km", pa.float64()),
            _field("confidence", pa.float64()),
            _field("plausible", pa.bool_()),
            _field("trust_score", pa.float64()),
        ]
    ),
)

INTERVAL = pa.struct(
    [
        pa.field("from_m", pa.float64(), nullable=False),
        pa.field("to_m", pa.float64(), nullable=False),
        pa.field("first_seen", UTC_MS, nullable=False),
        pa.field("last_seen", UTC_MS, nullable=False),
    ]
)

EDGE_COVERAGE = Contract(
    name="edge_coverage",
    version=1,
    key=("edge_id",),
    schema=pa.schema(
        [
            _field("edge_id", pa.int64()),
            _field("u", pa.int64()),
            _field("v", pa.int64()),
            _field("key", pa.int64()),
            _field("osmid", pa.int64()),
            _field("road_id", pa.int64()),
            _field("highway", pa.string()),
            _field("length_m", pa.float64()),
            _field("covered_m", pa.float64()),
            _field("passes", pa.int64()),
            _field("contributors", pa.int64()),
            _field("total_m", pa.float64()),
            _field("first_seen", UTC_MS, nullable=True),
            _field("last_seen", UTC_MS, nullable=True),
            _field("age_days", pa.float64(), nullable=True),
            _field("intervals", pa.list_(pa.field("item", INTERVAL, nullable=False))),
            _field("geometry", pa.binary()),
        ]
    ),
)

EDGE_COVERAGE_PART = Contract(
    name="edge_coverage_part",
    version=1,
    key=("edge_id",),
    schema=pa.schema([f for f in EDGE_COVERAGE.schema if f.name != "age_days"]),
)
"""The edge coverage of one partition as a coverage folder stores it: ``age_days`` is not
stored (it moves with the time it is read at) but computed by the reader
(:func:`pipeline.coverage.edge_reader.read_edge_table`) from ``last_seen`` and the
summary's ``as_of``."""

CELL_COVERAGE = Contract(
    name="cell_coverage",
    version=1,
    key=("resolution", "cell"),
    schema=pa.schema(
        [
            _field("resolution", pa.int32()),
            _field("cell", pa.int64()),
            _field("road_km", pa.float64()),
            _field("unique_km", pa.float64()),
            _field("coverage_pct", pa.float64()),
            _field("total_km", pa.float64()),
            _field("passes", pa.int64()),
            _field("contributors", pa.int64()),
            _field("last_seen", UTC_MS, nullable=True),
            _field("age_days", pa.float64(), nullable=True),
            _field("fresh_7d_km", pa.float64()),
            _field("fresh_28d_km", pa.float64()),
            _field("fresh_90d_km", pa.float64()),
            _field("fresh_365d_km", pa.float64()),
            _field("geometry", pa.binary()),
        ]
    ),
)

CELL_COVERAGE_PART = Contract(
    name="cell_coverage_part",
    version=1,
    key=("resolution", "cell"),
    schema=pa.schema(
        [
            f
            for f in CELL_COVERAGE.schema
            if f.name != "age_days" and not f.name.startswith("fresh_")
        ]
    ),
)
"""The cells of one partition at the resolutions no coarser than the partition resolution, as
a coverage folder stores them: no ``age_days`` and no ``fresh_*_km``, which move with the time
they are read at; the reader (:func:`pipeline.coverage.cell_reader.read_cell_table`) computes
them from ``last_seen``, the partition's :data:`CELL_FRESHNESS` rows and the summary's
``as_of``."""

CELL_FRESHNESS = Contract(
    name="cell_freshness",
    version=1,
    key=("cell", "last_seen"),
    schema=pa.schema(
        [
            _field("cell", pa.int64()),
            _field("last_seen", UTC_MS),
            _field("length_mm", pa.int64()),
        ]
    ),
    geometry_column=None,
)
"""The covered road of a partition's cells (:data:`CELL_COVERAGE_PART`) by the time it was
last seen: the millimetres of road in ``cell`` last seen at ``last_seen``."""

CELL_COVERAGE_COARSE = Contract(
    name="cell_coverage_coarse",
    version=1,
    key=("resolution", "cell"),
    schema=pa.schema([f for f in CELL_COVERAGE.schema if f.name != "age_days"]),
)
"""The cells coarser than the partition resolution (a few rows a partition), as a coverage
folder stores them with its rollup, rewritten by every update: no ``age_days``."""

# B2B feed tables: what data buyers receive. H3 cells are hex strings, contributor counts only
# buckets, segments carry a stable id. In the partitioned files h3_parent lives in the path.
PRIORITY_ROADS = Contract(
    name="priority_roads",
    version=1,
    key=("road_id",),
    schema=pa.schema(
        [
            _field("road_id", pa.int64()),
            _field("edge_id", pa.int64()),
            _field("rank", pa.int64()),
            _field("highway", pa.string()),
            _field("name", pa.string(), nullable=True),
            _field("oneway", pa.bool_()),
            _field("length_m", pa.float64()),
            _field("new_m", pa.float64()),
            _field("stale_m", pa.float64()),
            _field("age_days", pa.float64(), nullable=True),
            _field("class_weight", pa.float64()),
            _field("nearby_new_km", pa.float64()),
            _field("value", pa.float64()),
            _field("cell", pa.int64()),
            _field("tour", pa.int32(), nullable=True),
            _field("geometry", pa.binary()),
        ]
    ),
)

_FEED_SEGMENT_FIELDS = [
    _field("segment_id", pa.string()),
    _field("osm_way_id", pa.int64()),
    _field("osm_from_node", pa.int64()),
    _field("osm_to_node", pa.int64()),
    _field("edge_key", pa.int64()),
    _field("highway", pa.string()),
    _field("edge_length_m", pa.float64()),
    _field("from_m", pa.float64()),
    _field("to_m", pa.float64()),
    _field("length_m", pa.float64()),
    _field("first_seen", UTC_MS),
    _field("last_seen", UTC_MS),
    _field("passes", pa.int64()),
    _field("contributors_bucket", pa.string()),
    _field("freshness_bucket", pa.string()),
    _field("match_confidence", pa.float64()),
]

_FEED_CELL_FIELDS = [
    _field("cell_id", pa.string()),
    _field("resolution", pa.int32()),
    _field("road_km", pa.float64()),
    _field("unique_km", pa.float64()),
    _field("coverage_pct", pa.float64()),
    _field("total_km", pa.float64()),
    _field("passes", pa.int64()),
    _field("contributors_bucket", pa.string()),
    _field("last_seen", UTC_MS, nullable=True),
    _field("age_days", pa.float64(), nullable=True),
    _field("freshness_bucket", pa.string(), nullable=True),
    _field("fresh_7d_km", pa.float64()),
    _field("fresh_28d_km", pa.float64()),
    _field("fresh_90d_km", pa.float64()),
    _field("fresh_365d_km", pa.float64()),
]

_FEED_GEOMETRY = _field("geometry", pa.binary())
_FEED_DELTA_FIELDS = [_field("h3_parent", pa.string()), _field("change_type", pa.string())]

FEED_SEGMENTS = Contract(
    name="feed_segments",
    version=1,
    key=("segment_id",),
    schema=pa.schema([*_FEED_SEGMENT_FIELDS, _FEED_GEOMETRY]),
)

FEED_CELLS = Contract(
    name="feed_cells",
    version=1,
    key=("cell_id",),
    schema=pa.schema([*_FEED_CELL_FIELDS, _FEED_GEOMETRY]),
)

FEED_SEGMENTS_DELTA = Contract(
    name="feed_segments_delta",
    version=1,
    key=("segment_id",),
    schema=pa.schema([*_FEED_SEGMENT_FIELDS, *_FEED_DELTA_FIELDS, _FEED_GEOMETRY]),
)

FEED_CELLS_DELTA = Contract(
    name="feed_cells_delta",
    version=1,
    key=("cell_id",),
    schema=pa.schema([*_FEED_CELL_FIELDS, *_FEED_DELTA_FIELDS, _FEED_GEOMETRY]),
)


CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in (
        EDGES,
        NODES,
        SIMULATED_ROUTES,
        POINTS,
        TRIPS,
        REJECTS,
        MATCHED_SEGMENTS,
        MATCH_QUALITY,
    )
}


def validate_table(table: pa.Table, contract: Contract, source: str = "<table>") -> None:
    """Check a table against its contract.

    Parameters
    ----------
    table
        The table to check (extra columns are allowed only if the contract lists none of them).
    contract
        The contract it must satisfy.
    source
        What to call the table in the error, usually its file path.

    Raises
    ------
    ContractError
        Listing every missing column, wrong type, unexpected column, null in a non-nullable
        column and duplicated key.
    """
    null_counts = {name: table.column(name).null_count for name in table.column_names}
    validate_parts(table.schema, null_counts, table, contract, source)


def validate_parts(
    schema: pa.Schema,
    null_counts: Mapping[str, int],
    keys: pa.Table,
    contract: Contract,
    source: str = "<table>",
) -> None:
    """Check a table against its contract from its schema, null counts and key columns.

    What :func:`validate_table` checks, for a table whose columns are not all at hand (e.g. a
    Parquet file read in part: its schema and null counts are in its metadata).

    Parameters
    ----------
    schema
        The table's schema.
    null_counts
        The number of nulls in each column of ``schema``.
    keys
        The table's key columns (other columns are ignored).
    contract, source
        As for :func:`validate_table`.

    Raises
    ------
    ContractError
        As :func:`validate_table`.
    """
    problems = list(_schema_problems(schema, contract))
    if not problems:
        problems += _null_problems(null_counts, contract)
        problems += _key_problems(keys, contract)
    if problems:
        raise ContractError(
            f"{source}: does not match the {contract.name!r} contract "
            f"(schema_version {contract.version}):\n  - " + "\n  - ".join(problems)
        )


def read_contract_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """Return the ``roadcover`` metadata of a Parquet file's schema, or None if absent."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def check_contract_metadata(schema: pa.Schema, contract: Contract, source: str) -> None:
    """Raise ContractError unless a file says it holds ``contract``'s table at its version."""
    found = read_contract_metadata(schema)
    expected = {"table": contract.name, "schema_version": contract.version}
    if found is None:
        raise ContractError(
            f"{source}: has no roadcover metadata; expected a {contract.name!r} table "
            f"written by roadcover (schema_version {contract.version}); "
            "re-run the stage that writes it"
        )
    if {k: found.get(k) for k in expected} != expected:
        raise ContractError(
            f"{source}: holds table {found.get('table')!r} schema_version "
            f"{found.get('schema_version')}, expected {contract.name!r} schema_version "
            f"{contract.version}. Re-run the stage that writes it with this roadcover version."
        )


def _schema_problems(schema: pa.Schema, contract: Contract) -> list[str]:
    problems = []
    for expected in contract.schema:
        index = schema.get_field_index(expected.name)
        if index < 0:
            problems.append(f"missing column {expected.name!r} ({expected.type})")
            continue
        actual = schema.field(index)
        if not actual.type.equals(expected.type):
            problems.append(
                f"column {expected.name!r} has type {actual.type}, expected {expected.type}"
            )
    extra = [name for name in schema.names if contract.schema.get_field_index(name) < 0]
    problems.extend(f"unexpected column {name!r}" for name in extra)
    return problems


def _null_problems(null_counts: Mapping[str, int], contract: Contract) -> list[str]:
    problems = []
    for expected in contract.schema:
        if expected.nullable:
            continue
        nulls = null_counts[expected.name]
        if nulls:
            problems.append(f"column {expected.name!r} has {nulls} null(s) but may not be null")
    return problems


def _key_problems(table: pa.Table, contract: Contract) -> list[str]:
    if in_key_order(table, contract.key, strict=True) or unique_in_blocks(table, contract.key):
        return []
    counts = table.group_by(list(contract.key)).aggregate([([], "count_all")])
    duplicated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if duplicated.num_rows == 0:
        return []
    example = {name: duplicated.column(name)[0].as_py() for name in contract.key}
    return [
        f"key ({', '.join(contract.key)}) is not unique: {duplicated.num_rows} value(s) repeat, "
        f"e.g. {example}"
    ]


def in_key_order(table: pa.Table, key: tuple[str, ...] | list[str], strict: bool = False) -> bool:
    """Whether every row's key comes after the previous row's (``strict``) or not before it.

    One pass over neighbouring rows. Stages write their tables sorted by key, so with
    ``strict`` it usually settles a key's uniqueness without grouping; a null in the key
    gives False (leaving it to the grouping, or to a sort).
    """
    if table.num_rows < 2:
        return True
    after, tied = _neighbour_order(table, key)
    ordered = after if strict else pc.or_(after, tied)
    return bool(pc.all(ordered, min_count=0).as_py())


def unique_in_blocks(table: pa.Table, key: tuple[str, ...] | list[str]) -> bool:
    """Whether a key is unique because its rows come in blocks of its first column's values.

    True when the rows of each value of the key's first column are one block of neighbours,
    in strictly increasing order of the key's other columns, and the blocks' first-column
    values are distinct: then no two rows share the whole key. A stage's table of trips, each
    trip's rows in order but the trips not sorted, passes with two neighbour comparisons and
    a distinct count of its trips, where grouping every row costs several times more. False
    does not mean a repeated key (e.g. a key of one column, or a null in it).
    """
    if len(key) < 2 or table.num_rows < 2:
        return False
    lead = table.column(key[0])
    previous, following = lead.slice(0, table.num_rows - 1), lead.slice(1)
    same_block = pc.fill_null(pc.equal(following, previous), False)
    after, _ = _neighbour_order(table, key[1:])
    if not pc.all(pc.or_(pc.invert(same_block), after), min_count=0).as_py():
        return False
    block_starts = pa.concat_arrays([_booleans(True, 1), pc.invert(same_block).combine_chunks()])
    leads = lead.filter(block_starts)
    return bool(pc.count_distinct(leads, mode="all").as_py() == len(leads))


def _neighbour_order(
    table: pa.Table, key: tuple[str, ...] | list[str]
) -> tuple[pa.ChunkedArray | pa.Array, pa.ChunkedArray | pa.Array]:
    """For each row after the first: whether its key comes after the previous row's, or ties.

    A null compares as neither after nor tied.
    """
    after: pa.ChunkedArray | pa.Array = _booleans(False, table.num_rows - 1)
    tied: pa.ChunkedArray | pa.Array = _booleans(True, table.num_rows - 1)
    false = _booleans(False, 1)[0]
    for name in key:
        column = table.column(name)
        previous, following = column.slice(0, table.num_rows - 1), column.slice(1)
        after = pc.or_(after, pc.and_(tied, pc.fill_null(pc.greater(following, previous), false)))
        tied = pc.and_(tied, pc.fill_null(pc.equal(following, previous), false))
    return after, tied


def _booleans(value: bool, count: int) -> pa.Array:
    """``count`` times ``value``, built from its bits (``pyarrow.array`` would import pandas)."""
    bits = np.packbits(np.full(count, value), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), count, [None, pa.py_buffer(bits)])
