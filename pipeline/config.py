"""Typed, frozen settings built from a YAML config validated against one JSON Schema.

The schema (``workflow_files/schemas/config.schema.yaml``, package data like the Snakefile and the
demo config ``configs/demo.yaml``) is the single source of truth for keys, types and defaults:
Snakemake's ``validate`` uses it for the workflow and :func:`load_config` uses it here. Settings
are plain frozen dataclasses passed explicitly to stage functions, so they pickle to Dask workers
unchanged; there is no module-level mutable state.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

# Package data, found where the package is installed (a wheel is always installed unpacked, so
# these are files on disk, as Snakemake needs them): the workflow (Snakefile, rules, schema) and
# the demo config.
PACKAGE_DIR = Path(str(files("pipeline")))
WORKFLOW_DIR = PACKAGE_DIR / "workflow_files"
CONFIG_SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "config.schema.yaml"
DEMO_CONFIG_PATH = PACKAGE_DIR / "configs" / "demo.yaml"

CONFIG_MEMO_DIR_ENV = "ROADCOVER_CONFIG_MEMO_DIR"
"""Where validated configs are memoized (:func:`load_config`); set but empty: nowhere."""
CONFIG_MEMO_FORMAT = 1
"""The version of a memo's layout: a memo of another layout is never read."""


@dataclass(frozen=True)
class RegionSettings:
    """One region: a name and the OSM extract its road graph is built from."""

    name: str
    osm: str
    sha256: str | None
    simulated_fleet: bool
    shards: int | str | None
    batches: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class RoadSettings:
    """Which OSM highways become the road graph."""

    network: str
    highway_include: tuple[str, ...] | None
    shard_buffer_m: float = 1000.0
    shard_max_job_mem_mb: float = 2048.0


@dataclass(frozen=True)
class PrivacyZone:
    """A circle inside which every fix is removed."""

    name: str
    lon: float
    lat: float
    radius_m: float


@dataclass(frozen=True)
class IngestSettings:
    """Cleaning, trip splitting, privacy and plausibility thresholds of the ingest stage."""

    max_hdop: float
    max_speed_mps: float
    max_accel_mps2: float
    future_tolerance_s: float
    trip_gap_s: float
    trip_gap_m: float
    min_trip_points: int
    min_trip_m: float
    privacy_trim_m: float
    privacy_zones: tuple[PrivacyZone, ...]
    pseudonym_key_env: str
    pseudonym_key_file: str | None
    contributors: tuple[tuple[str, str], ...]
    csv_columns: tuple[tuple[str, str], ...]
    csv_time_unit: str | None
    partition_h3_res: int
    workers: int | None  # at most this many Dask workers; None: one per CPU
    max_file_rows: int = 2_000_000
    max_decoded_mb: float = 128.0
    log_dates: tuple[tuple[str, date], ...] = ()  # glob pattern -> date of the first fix


@dataclass(frozen=True)
class SnapSettings:
    """Map-matcher parameters (see ``pipeline.snap.params.MatchParams``) and parallelism."""

    sigma_m: float
    beta_m: float
    search_radius_m: float
    max_search_radius_m: float
    max_candidates: int
    max_speed_mps: float
    max_route_m: float
    uturn_penalty: float | None
    max_outlier_points: int
    workers: int | None  # at most this many Dask workers; None: one per CPU
    min_fixes_near_roads: float
    estimate_beta: bool = True
    shard_network_cache_mb: float | None = None  # the unions' disk; None: per shard


@dataclass(frozen=True)
class CoverageSettings:
    """What counts as coverage, and the H3 grid it is binned on."""

    h3_resolution: int
    min_match_confidence: float
    include_flagged_trips: bool
    world_road_km: float
    world_road_km_source: str
    partition_resolution: int | str = "auto"
    batch_max_mb: float = 1024.0


@dataclass(frozen=True)
class PrioritySettings:
    """Where to drive next: what is stale, what a km is worth, how cells and tours are made."""

    freshness_target_days: float = 28.0
    stale_weight: float = 0.25
    class_weights: tuple[tuple[str, float], ...] = ()
    h3_resolution: int = 8
    tours: int = 5
    max_tour_km: float = 30.0
    max_tour_roads: int = 250


@dataclass(frozen=True)
class SimulateSettings:
    """Parameters of the dashcam fleet simulator (see ``pipeline.simulate.fleet``)."""

    seed: int
    devices: int
    days: int
    start: datetime
    trips_per_device_day: float
    sample_interval_s: float
    noise_sigma_m: tuple[float, float]
    outlier_rate: float
    outlier_distance_m: float
    dropout_rate_per_km: float
    dropout_duration_s: float
    stop_rate_per_km: float
    stop_duration_s: float
    home_radius_m: float
    min_trip_m: float
    max_trip_m: float
    formats: tuple[str, ...]


@dataclass(frozen=True)
class ServedRegion:
    """A region the API serves: its releases folder (with latest.json), roads and tiles."""

    name: str
    releases_dir: Path
    roads_dir: Path
    tiles_path: Path | None


@dataclass(frozen=True)
class ApiSettings:
    """The keyed HTTP API (``roadcover serve``): what it serves, what it charges, its limits."""

    database_url: str | None = None  # see pipeline.serve.accounts.database_url_from
    regions: tuple[ServedRegion, ...] = ()
    credits_per_km: Decimal = Decimal("1")
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    max_area_km2: float = 2500.0
    max_vertices: int = 10_000
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    history_page_size: int = 100
    auth_cache_s: float = 5.0  # bound on how long a revoked key may still be accepted


@dataclass(frozen=True)
class StorageSettings:
    """The ``storage:`` section: how stages reach ``s3://``/``gs://`` locations (pipeline.storage).

    Attributes
    ----------
    endpoint_url
        An S3-compatible endpoint (MinIO, Ceph, moto) or a GCS emulator; None: the library's
        default (``AWS_ENDPOINT_URL`` if set, else AWS or Google).
    lock_lease_s
        How long a prefix lock stays valid without renewal (renewed every quarter of it).
    scratch_dir
        Where staged copies are kept while a stage runs; None: the system's temporary folder.
    """

    endpoint_url: str | None = None
    lock_lease_s: float = 120.0
    scratch_dir: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a roadcover run is configured with."""

    output_dir: Path
    cache_dir: Path
    dask_scheduler_address: str | None
    lock_timeout_s: float
    regions: tuple[RegionSettings, ...]
    roads: RoadSettings
    ingest: IngestSettings
    snap: SnapSettings
    coverage: CoverageSettings
    simulate: SimulateSettings
    source: str
    api: ApiSettings = field(default_factory=ApiSettings)
    priorities: PrioritySettings = PrioritySettings()
    storage: StorageSettings = StorageSettings()
    output_location: str = "results"  # output_dir as written: a path or an s3:// / gs:// URL

    def region(self, name: str) -> RegionSettings:
        """Return the region called ``name``.

        Raises
        ------
        ConfigError
            If no region has that name; the message lists the configured ones.
        """
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions)
        raise ConfigError(f"{self.source}: no region named {name!r}; configured regions: {known}")


def load_config_schema() -> dict[str, Any]:
    """Return the config JSON Schema as a dict.

    Parsed with libyaml's safe loader where PyYAML has it (ten times faster than the pure
    Python one, the same result): every command that validates a config parses the schema.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with CONFIG_SCHEMA_PATH.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = yaml.load(handle, Loader=loader)
    return schema


def load_config(path: str | Path | None = None) -> Settings:
    """Read, validate and freeze a config file (the embedded demo config when ``path`` is None).

    A config is validated against the schema, its defaults filled, once per text: the result
    is memoized (:func:`config_memo_path`), and a later load of the same text with the same
    schema, loader code and validator reads it instead of parsing and validating again, which
    spares the command importing jsonschema and PyYAML (about 0.05 s of CPU). A config that
    differs by a byte, or a new schema, is validated anew.

    Parameters
    ----------
    path
        A YAML config file.

    Returns
    -------
    Settings
        Frozen settings, schema defaults filled in.

    Raises
    ------
    ConfigError
        If the file is missing or not YAML, or if it violates the schema; the message names
        every offending key, its value and what is allowed.
    """
    config_path = Path(path) if path is not None else DEMO_CONFIG_PATH
    source = str(config_path)
    text = _read_config_text(config_path)
    memo_path = config_memo_path(text)
    config = _read_config_memo(memo_path) if memo_path is not None else None
    if config is not None:
        return _checked_settings(config, source)
    config = _validated_config(_parse_config_yaml(text, config_path), source)
    settings = _checked_settings(config, source)
    if memo_path is not None:
        _write_config_memo(memo_path, config)
    return settings


def _read_config_text(config_path: Path) -> str:
    """Return a config file's text; raise a ConfigError saying why it cannot be read."""
    try:
        return config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{config_path}: not a UTF-8 text file (byte {exc.start}); give a YAML config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read the config file ({exc.strerror})") from None


def _parse_config_yaml(text: str, config_path: Path) -> Any:
    """Return a config's parsed YAML (an empty file: an empty mapping)."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{config_path}: not valid YAML{where}: {problem}") from None
    return raw if raw is not None else {}


def settings_from_mapping(raw: Mapping[str, Any], source: str = "<config>") -> Settings:
    """Validate a config mapping against the schema and build frozen settings from it."""
    return _checked_settings(_validated_config(raw, source), source)


def _validated_config(raw: Any, source: str) -> Any:
    """Return the config mapping with the schema's defaults filled; raise if it violates it."""
    config = dict(raw) if isinstance(raw, Mapping) else raw
    problems = list(_describe_schema_errors(config))
    if problems:
        raise ConfigError(f"{source}: invalid config:\n  - " + "\n  - ".join(problems))
    return config


def _checked_settings(config: dict[str, Any], source: str) -> Settings:
    """Return the settings of a validated config, after the checks the schema cannot make."""
    _check_shard_buffer(config, source)
    return _build_settings(config, source)


def config_memo_path(text: str) -> Path | None:
    """Return where the validated form of a config's text is memoized (None: nowhere).

    The memo's name is the sha256 of what validation depends on: the memo layout, the
    versions of jsonschema and PyYAML, the config's text, the schema's file and this module's
    source. Its folder is ``ROADCOVER_CONFIG_MEMO_DIR`` (set but empty: no memo), else
    ``roadcover/configs`` in ``XDG_CACHE_HOME`` or ``~/.cache``.
    """
    folder = _config_memo_dir()
    if folder is None:
        return None
    digest = hashlib.sha256()
    for part in (
        *_memo_stamp(),
        text.encode("utf-8"),
        CONFIG_SCHEMA_PATH.read_bytes(),
        Path(__file__).read_bytes(),
    ):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return folder / f"{digest.hexdigest()}.json"


def _config_memo_dir() -> Path | None:
    """Return the folder of the config memos, or None when they are switched off."""
    configured = os.environ.get(CONFIG_MEMO_DIR_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "roadcover" / "configs"


@functools.cache
def _memo_stamp() -> tuple[bytes, ...]:
    """Return the memo layout's and the validating libraries' versions, as bytes."""
    from importlib.metadata import version

    versions = (str(CONFIG_MEMO_FORMAT), version("jsonschema"), version("PyYAML"))
    return tuple(text.encode("utf-8") for text in versions)


def _read_config_memo(memo_path: Path) -> dict[str, Any] | None:
    """Return a memoized validated config, or None if there is none (or none readable)."""
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(memo, dict) or memo.get("memo") != memo_path.stem:
        return None
    config = memo.get("config")
    return config if isinstance(config, dict) else None


def _json_exact(value: Any) -> bool:
    """Return whether JSON gives ``value`` back as it is (types and values)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_exact(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))  # bool is an int


def _write_config_memo(memo_path: Path, config: dict[str, Any]) -> None:
    """Memoize a validated config, atomically, its memo's name repeated in it.

    JSON keeps the mappings' order (the settings follow it, e.g. a region's batches), but not
    every value YAML can give (dates, non-text keys, infinities): a config with one is not
    memoized. A folder that cannot be written to gets no memo (the config is validated again
    next time).
    """
    if not _json_exact(config):
        return
    from pipeline.io import atomic_path  # Arrow with it: the cost of a first load only

    memo = {"memo": memo_path.stem, "config": config}
    with contextlib.suppress(OSError), atomic_path(memo_path) as temp:
        temp.write_text(json.dumps(memo, ensure_ascii=False), encoding="utf-8")


def _check_shard_buffer(config: Mapping[str, Any], source: str) -> None:
    """Refuse a shard buffer narrower than the matcher's search radius when a region is sharded.

    A trip crossing a shard's seam is matched on the shards of its fixes' cells: it sees the
    candidates an unsharded match sees only if each shard holds the roads within the widest
    search radius of its cell (docs/workflow.md, "Sharded regions").
    """
    sharded = [r["name"] for r in config["regions"] if r.get("shards") is not None]
    buffer_m = float(config["roads"]["shard_buffer_m"])
    radius_m = float(config["snap"]["max_search_radius_m"])
    if sharded and buffer_m < radius_m:
        raise ConfigError(
            f"{source}: key 'roads.shard_buffer_m' has value {buffer_m:g}, below "
            f"snap.max_search_radius_m {radius_m:g} with sharded regions ({', '.join(sharded)}): "
            "trips across a seam would miss roads; raise roads.shard_buffer_m to at least "
            f"{radius_m:g} or lower snap.max_search_radius_m"
        )


def _describe_schema_errors(config: Any) -> Iterator[str]:
    import jsonschema

    schema = load_config_schema()
    validator = _filling_validator_class()(schema, format_checker=jsonschema.FormatChecker())
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(allowed))
            for name in unknown:
                where = f"{key}.{name}" if error.absolute_path else name
                yield f"key {where!r} is not allowed here; allowed keys: {', '.join(allowed)}"
        elif error.validator == "required":  # the value is the whole enclosing mapping
            yield f"key {key!r}: {error.message}"
        else:
            yield f"key {key!r} has value {error.instance!r}: {error.message}"


def _fill_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """Set schema defaults on the instance while validating (the jsonschema FAQ recipe)."""
    import jsonschema

    if isinstance(instance, dict):
        for name, subschema in properties.items():
            if "default" in subschema and name not in instance:
                instance[name] = _copy(subschema["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](
        validator, properties, instance, schema
    )


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@functools.cache
def _filling_validator_class() -> Any:
    """Return the schema's validator class that fills defaults (jsonschema, imported here)."""
    import jsonschema

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"properties": _fill_defaults}
    )


def _build_settings(config: dict[str, Any], source: str) -> Settings:
    roads = config["roads"]
    sim = config["simulate"]
    ingest = config["ingest"]
    include = roads["highway_include"]
    return Settings(
        output_dir=Path(config["output_dir"]),
        cache_dir=Path(config["cache_dir"]),
        dask_scheduler_address=config["dask"]["scheduler_address"],
        lock_timeout_s=float(config["lock_timeout_s"]),
        regions=tuple(
            RegionSettings(
                name=r["name"],
                osm=r["osm"],
                sha256=r.get("sha256"),
                simulated_fleet=r["simulated_fleet"],
                shards=r.get("shards"),
                batches=tuple((name, tuple(paths)) for name, paths in r["batches"].items()),
            )
            for r in config["regions"]
        ),
        roads=RoadSettings(
            network=roads["network"],
            highway_include=tuple(include) if include is not None else None,
            shard_buffer_m=float(roads["shard_buffer_m"]),
            shard_max_job_mem_mb=float(roads["shard_max_job_mem_mb"]),
        ),
        ingest=IngestSettings(
            max_hdop=float(ingest["max_hdop"]),
            max_speed_mps=float(ingest["max_speed_mps"]),
            max_accel_mps2=float(ingest["max_accel_mps2"]),
            future_tolerance_s=float(ingest["future_tolerance_s"]),
            trip_gap_s=float(ingest["trip_gap_s"]),
            trip_gap_m=float(ingest["trip_gap_m"]),
            min_trip_points=int(ingest["min_trip_points"]),
            min_trip_m=float(ingest["min_trip_m"]),
            privacy_trim_m=float(ingest["privacy_trim_m"]),
            privacy_zones=tuple(PrivacyZone(**zone) for zone in ingest["privacy_zones"]),
            pseudonym_key_env=ingest["pseudonym_key_env"],
            pseudonym_key_file=ingest["pseudonym_key_file"],
            contributors=tuple((c["pattern"], c["contributor_id"]) for c in ingest["contributors"]),
            csv_columns=tuple(sorted(ingest["csv_columns"].items())),
            csv_time_unit=ingest["csv_time_unit"],
            partition_h3_res=int(ingest["partition_h3_res"]),
            workers=_workers(ingest["workers"]),
            max_file_rows=int(ingest["max_file_rows"]),
            max_decoded_mb=float(ingest["max_decoded_mb"]),
            log_dates=_log_dates(ingest["log_dates"], source),
        ),
        snap=SnapSettings(**{**config["snap"], "workers": _workers(config["snap"]["workers"])}),
        coverage=CoverageSettings(**config["coverage"]),
        simulate=SimulateSettings(
            seed=sim["seed"],
            devices=sim["devices"],
            days=sim["days"],
            start=_parse_utc(sim["start"], "simulate.start", source),
            trips_per_device_day=float(sim["trips_per_device_day"]),
            sample_interval_s=float(sim["sample_interval_s"]),
            noise_sigma_m=(float(sim["noise_sigma_m"][0]), float(sim["noise_sigma_m"][1])),
            outlier_rate=float(sim["outlier_rate"]),
            outlier_distance_m=float(sim["outlier_distance_m"]),
            dropout_rate_per_km=float(sim["dropout_rate_per_km"]),
            dropout_duration_s=float(sim["dropout_duration_s"]),
            stop_rate_per_km=float(sim["stop_rate_per_km"]),
            stop_duration_s=float(sim["stop_duration_s"]),
            home_radius_m=float(sim["home_radius_m"]),
            min_trip_m=float(sim["min_trip_m"]),
            max_trip_m=float(sim["max_trip_m"]),
            formats=tuple(sim["formats"]),
        ),
        source=source,
        storage=StorageSettings(
            endpoint_url=config["storage"]["endpoint_url"],
            lock_lease_s=float(config["storage"]["lock_lease_s"]),
            scratch_dir=config["storage"]["scratch_dir"],
        ),
        output_location=str(config["output_dir"]),
        api=_api_settings(config),
        priorities=PrioritySettings(
            **{
                **config["priorities"],
                "class_weights": tuple(sorted(config["priorities"]["class_weights"].items())),
            }
        ),
    )


def _api_settings(config: dict[str, Any]) -> ApiSettings:
    """Return the ``api`` section; its regions default to every region under ``output_dir``."""
    api = config["api"]
    out = Path(config["output_dir"])
    served = api["regions"] or {
        r["name"]: {
            "releases": str(out / r["name"] / "export" / "releases"),
            "roads": str(out / r["name"] / "roads"),
            "tiles": str(out / r["name"] / "export" / "coverage.pmtiles"),
        }
        for r in config["regions"]
    }
    return ApiSettings(
        database_url=api["database_url"],
        regions=tuple(
            ServedRegion(
                name=name,
                releases_dir=Path(paths["releases"]),
                roads_dir=Path(paths["roads"]),
                tiles_path=Path(paths["tiles"]) if paths.get("tiles") else None,
            )
            for name, paths in served.items()
        ),
        credits_per_km=Decimal(str(api["credits_per_km"])),
        rate_limit_per_s=float(api["rate_limit_per_s"]),
        rate_limit_burst=int(api["rate_limit_burst"]),
        max_area_km2=float(api["max_area_km2"]),
        max_vertices=int(api["max_vertices"]),
        max_body_bytes=int(api["max_body_bytes"]),
        request_timeout_s=float(api["request_timeout_s"]),
        body_timeout_s=float(api["body_timeout_s"]),
        history_page_size=int(api["history_page_size"]),
        auth_cache_s=float(api["auth_cache_s"]),
    )


def _log_dates(entries: list[dict[str, str]], source: str) -> tuple[tuple[str, date], ...]:
    """Return ``ingest.log_dates`` as (glob pattern, date) pairs."""
    dates = []
    for entry in entries:
        try:
            dates.append((entry["pattern"], date.fromisoformat(entry["date"])))
        except ValueError:
            raise ConfigError(
                f"{source}: key 'ingest.log_dates' has date {entry['date']!r}: not a date "
                "(write e.g. 2024-05-01)"
            ) from None
    return tuple(dates)


def _workers(value: int | str) -> int | None:
    """Return a ``workers`` setting's cap, or None for "auto" (one per CPU the process may use)."""
    return None if value == "auto" else int(value)


def _parse_utc(text: str, key: str, source: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{source}: key {key!r} has value {text!r}: not an ISO-8601 date-time "
            "(write e.g. 2026-10-01T06:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise ConfigError(
            f"{source}: key {key!r} has value {text!r}: give a time zone (e.g. Z for UTC)"
        )
    return parsed
