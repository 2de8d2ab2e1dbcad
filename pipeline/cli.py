"""The ``roadcover`` command line: one subcommand group per stage, thin wrappers only.

Each command parses its arguments, loads the config, calls the stage function and reports.
Errors the user can fix (:class:`~pipeline.errors.PipelineError`, and arguments click refuses)
are printed as one line and exit with status 1; a stage that this version does not provide
exits with status 2.

A command imports what it uses (its stage, the config loader, I/O) when it runs, so that
``roadcover --help`` and a light command do not pay for pandas, geopandas or jsonschema.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__
from pipeline.errors import InputDataError, PipelineError
from pipeline.roads.highways import NETWORK_TYPES

if TYPE_CHECKING:
    from datetime import date
    from decimal import Decimal

    import pandas as pd

    from pipeline.config import Settings
    from pipeline.serve.accounts import AccountStore
    from pipeline.storage import Staging

EXIT_ERROR = 1
# "\b" (a backspace) alone on a line keeps click from rewrapping the paragraph after it
CLI_HELP = """Crowdsourced road coverage: dashcam traces to map-matched, H3-binned coverage.

\b
Stages, in the order data flows through them:
  roads     road graphs from OSM extracts
  ingest    dashcam traces to clean, pseudonymous trips
  snap      trips map-matched to the road graph
  coverage  edge and H3 cell coverage, freshness, the summary
  export    tiles, rasters, the web map, data feeds, priorities
Also:
  simulate  a synthetic dashcam fleet on a road graph
  run       the whole workflow (Snakemake)
  serve     the keyed HTTP API for data buyers
  keys      API keys of the buyers' organisations
  credits   the organisations' credits
  storage   files in object storage (s3://, gs://)
"""
# Arrow's allocator, read from the environment when pyarrow is imported (the snap command sets it)
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
# commands whose process tree is not recorded: the workflow records its own, the rest is light
UNRECORDED = ("run", "warmup", "--version", "--help", "-h")
_OWN_PROCESS = False
"""Whether :func:`main` runs the command line of its process (see :func:`main`)."""
_EXIT_AT_ONCE = False
"""Whether the command run closed all it wrote, so its process may end at once (:func:`main`)."""


class Location(click.ParamType):
    """A local path (checked like ``click.Path``) or an ``s3://``/``gs://`` URL (kept as text)."""

    name = "path_or_url"

    def __init__(self, **path_options: Any) -> None:
        self.path = click.Path(path_type=Path, **path_options)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return a URL as it is (its scheme checked), anything else as ``click.Path`` would.

        :mod:`pipeline.storage` (and the config loader it imports) is imported for a
        ``scheme://`` value only: a command imports its modules when it runs
        (:func:`_imports_out_of_collection`), not while its arguments are parsed.
        """
        if isinstance(value, str) and "://" in value:
            from pipeline.storage import check_location, is_url

            check_location(value)
            if is_url(value):
                return value
        return self.path.convert(value, param, ctx)


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config (default: the embedded demo config, pipeline/configs/demo.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=CLI_HELP)
@click.version_option(__version__, prog_name="roadcover")
@click.option("-v", "--verbose", is_flag=True, help="Debug log output.")
def cli(verbose: bool) -> None:
    """Crowdsourced road coverage: dashcam traces to map-matched, H3-binned coverage."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@cli.group()
def roads() -> None:
    """Road graphs from local OSM extracts."""


@roads.command("build")
@click.argument("osm_file")
@click.option(
    "-o",
    "--out",
    "roads_dir",
    required=True,
    type=Location(file_okay=False),
    help="Output roads folder.",
)
@click.option(
    "--network",
    type=click.Choice(NETWORK_TYPES),
    default=None,
    help="Which highways to keep (default: the config's, drive).",
)
@click.option(
    "--highway",
    "highways",
    multiple=True,
    help="Keep exactly this highway class (repeatable); overrides --network.",
)
@click.option("--sha256", default=None, help="Expected sha256 of the extract.")
@click.option(
    "--shard-resolution",
    "shard_resolution",
    default=None,
    metavar="N|auto",
    help="Build in shards: H3 cells at resolution N (0-15), each with a buffer of "
    "roads.shard_buffer_m, under OUT/shards/<cell>/; OUT holds the whole region's tables as "
    "without shards. auto: the coarsest resolution whose shards fit roads.shard_max_job_mem_mb.",
)
@CONFIG_OPTION
def roads_build(
    osm_file: str,
    roads_dir: Path,
    network: str | None,
    highways: tuple[str, ...],
    sha256: str | None,
    shard_resolution: str | None,
    config_path: Path | None,
) -> None:
    """Build the road graph of OSM_FILE (.osm, .osm.gz, .osm.bz2, .osm.pbf, a URL or package://)."""
    from pipeline.config import load_config
    from pipeline.roads import build_roads, resolve_extract
    from pipeline.roads.shard_build import build_sharded_roads
    from pipeline.roads.shards import check_resolution

    settings = load_config(config_path)
    if shard_resolution is not None and shard_resolution != "auto":
        check_resolution(shard_resolution)  # before any work
    osm_path = resolve_extract(osm_file, settings.cache_dir, sha256)
    with _staging(settings) as staging:
        out = staging.output_folder(roads_dir, keep_existing=False)
        network = network or settings.roads.network
        include = highways or settings.roads.highway_include
        if shard_resolution is None:
            meta = build_roads(osm_path, out, network, include, settings.lock_timeout_s)
        else:
            meta = build_sharded_roads(
                osm_path, out, shard_resolution, network, include,
                settings.roads.shard_buffer_m, settings.roads.shard_max_job_mem_mb,
                settings.lock_timeout_s,
            )  # fmt: skip
    click.echo(
        f"{roads_dir}: {meta['node_count']} nodes, {meta['edge_count']} edges, "
        f"{meta['road_km']:.1f} road km ({meta['directed_km']:.1f} directed km)"
    )
    if "shards" in meta:
        shards = meta["shards"]
        click.echo(
            f"{roads_dir}: {len(shards['cells'])} shard(s) at resolution {shards['resolution']} "
            f"under {roads_dir / shards['folder']}"
        )


@roads.command("cut")
@click.argument("osm_file")
@click.option("-o", "--out", "roads_dir", required=True, type=Location(file_okay=False),
              help="The region's roads folder; shards go to OUT/shards/<cell>/.")  # fmt: skip
@click.option("--shard-resolution", "shard_resolution", required=True, metavar="N|auto",
              help="H3 resolution 0-15 of the shards, or auto.")  # fmt: skip
@click.option("--network", type=click.Choice(NETWORK_TYPES), default=None,
              help="Which highways to keep (default: the config's, drive).")  # fmt: skip
@click.option("--sha256", default=None, help="Expected sha256 of the extract.")
@CONFIG_OPTION
def roads_cut(
    osm_file: str,
    roads_dir: Path,
    shard_resolution: str,
    network: str | None,
    sha256: str | None,
    config_path: Path | None,
) -> None:
    """Cut OSM_FILE into shard extracts (the first step of a sharded build, for the workflow)."""
    from pipeline.config import load_config
    from pipeline.roads import resolve_extract
    from pipeline.roads.shards import check_resolution, cut_extract

    settings = load_config(config_path)
    if shard_resolution != "auto":
        check_resolution(shard_resolution)
    osm_path = resolve_extract(osm_file, settings.cache_dir, sha256)
    with _staging(settings) as staging:  # a URL: the region's objects are replaced
        plan = cut_extract(
            osm_path, staging.output_folder(roads_dir, keep_existing=False), shard_resolution,
            network or settings.roads.network, settings.roads.highway_include,
            settings.roads.shard_buffer_m, settings.roads.shard_max_job_mem_mb,
            settings.lock_timeout_s,
        )  # fmt: skip
    click.echo(f"{roads_dir}: {len(plan['cells'])} shard(s) at resolution {plan['resolution']}")


@roads.command("build-shard")
@click.argument("roads_dir", type=Location(file_okay=False, exists=True))
@click.argument("cell")
@CONFIG_OPTION
def roads_build_shard(roads_dir: Path | str, cell: str, config_path: Path | None) -> None:
    """Build shard CELL of a region cut with `roadcover roads cut`."""
    from pipeline.config import load_config
    from pipeline.roads.shard_build import build_shard, stage_shard

    settings = load_config(config_path)
    with _staging(settings) as staging:
        meta = build_shard(stage_shard(staging, roads_dir, cell), cell, settings.lock_timeout_s)
    click.echo(f"{roads_dir}: shard {cell}: {meta['edge_count']} edges, "
               f"{meta['shard']['owned_edge_count']} owned")  # fmt: skip


@roads.command("merge")
@click.argument("roads_dir", type=Location(file_okay=False, exists=True))
@CONFIG_OPTION
def roads_merge(roads_dir: Path | str, config_path: Path | None) -> None:
    """Write the region's tables of a sharded ROADS_DIR from its built shards' owned edges."""
    from pipeline.config import load_config
    from pipeline.roads.shard_build import merge_shards, stage_merge

    settings = load_config(config_path)
    with _staging(settings) as staging:
        meta = merge_shards(stage_merge(staging, roads_dir), settings.lock_timeout_s)
    click.echo(
        f"{roads_dir}: {meta['node_count']} nodes, {meta['edge_count']} edges, "
        f"{meta['road_km']:.1f} road km ({meta['directed_km']:.1f} directed km), "
        f"{len(meta['shards']['cells'])} shard(s)"
    )


@cli.command("simulate")
@click.option(
    "--roads",
    "roads_dir",
    required=True,
    type=Location(file_okay=False, exists=True),
    help="Roads folder from `roadcover roads build`.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=Location(file_okay=False),
    help="Output folder.",
)
@click.option("--devices", type=click.IntRange(min=1), default=None, help="Number of dashcams.")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Days of driving.")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["csv", "gpx", "nmea", "geojson", "parquet"]),
    help="Trace file format (repeatable: devices take the formats in turn).",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="At most this many Dask workers (default: one per CPU the process may use).",
)  # fmt: skip
@click.option(
    "--overwrite", is_flag=True,
    help="Replace the simulation in OUT (default: OUT must be new or empty).",
)  # fmt: skip
@CONFIG_OPTION
def simulate(
    roads_dir: Path,
    out_dir: Path,
    devices: int | None,
    days: int | None,
    formats: tuple[str, ...],
    seed: int | None,
    workers: int | None,
    overwrite: bool,
    config_path: Path | None,
) -> None:
    """Simulate a dashcam fleet driving on a road graph, with its ground-truth routes."""
    from pipeline.config import load_config
    from pipeline.simulate.fleet import simulate_fleet
    from pipeline.storage import is_url

    config = load_config(config_path)
    params = config.simulate
    overrides: dict[str, Any] = {
        "devices": devices,
        "days": days,
        "seed": seed,
        "formats": formats or None,
    }
    params = replace(params, **{k: v for k, v in overrides.items() if v is not None})
    with _staging(config) as staging:
        roads = Path(roads_dir)
        if is_url(roads_dir):  # of a sharded region, only the shards' files
            from pipeline.roads.shard_build import stage_simulate_roads

            roads = stage_simulate_roads(staging, roads_dir)
        summary = simulate_fleet(
            roads, staging.output_folder(out_dir), params, workers,
            scheduler_address=config.dask_scheduler_address, overwrite=overwrite,
        )  # fmt: skip
    click.echo(json.dumps(summary, indent=2, default=str))


@cli.command("ingest")
@click.argument("inputs", nargs=-1, required=True, type=Location())
@click.option(
    "-o", "--out", "traces_dir", required=True,
    type=Location(file_okay=False), help="Traces dataset folder.",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="Fail, writing nothing, if any row is rejected.")
@click.option(
    "--report", "report_path", type=Location(dir_okay=False), default=None,
    help="Also write the batch report (JSON) here.",
)  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Dask workers.")
@CONFIG_OPTION
def ingest(
    inputs: tuple[Path, ...],
    traces_dir: Path,
    strict: bool,
    report_path: Path | None,
    workers: int | None,
    config_path: Path | None,
) -> None:
    """Ingest dashcam traces (GPX, NMEA, CSV, GeoJSON, GeoParquet, frame JSON) as one batch.

    INPUTS are files or folders (searched recursively). Files ingested before (same content)
    are skipped; symbolic links are not followed (listed in the report).
    """
    from pipeline.config import load_config
    from pipeline.ingest.stage import format_report, ingest_traces
    from pipeline.io import write_json

    config = load_config(config_path)
    settings = config.ingest
    if workers is not None:
        settings = replace(settings, workers=workers)
    with _staging(config) as staging:
        names, base_dir = _staged_inputs(staging, inputs)
        report = ingest_traces(
            names, staging.output_folder(traces_dir), settings, strict=strict,
            scheduler_address=config.dask_scheduler_address, lock_timeout_s=config.lock_timeout_s,
            base_dir=base_dir,
        )  # fmt: skip
        if report_path is not None:
            write_json(report, staging.output_file(report_path))
    click.echo(format_report(report), err=True)


@cli.command("snap")
@click.option(
    "--roads", "roads_dir", required=True,
    type=Location(file_okay=False, exists=True), help="Roads folder.",
)  # fmt: skip
@click.option(
    "--traces", "traces_dir", required=True,
    type=Location(file_okay=False, exists=True), help="Traces dataset (ingest).",
)  # fmt: skip
@click.option(
    "-o", "--out", "matched_dir", required=True,
    type=Location(file_okay=False), help="Output folder of this batch.",
)  # fmt: skip
@click.option("--batch", "batch_id", default=None, help="Ingest batch id (default: every batch).")
@click.option(
    "--batch-report", type=Location(dir_okay=False, exists=True), default=None,
    help="Ingest report JSON naming the batch (instead of --batch).",
)  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Dask workers.")
@CONFIG_OPTION
def snap(
    roads_dir: Path,
    traces_dir: Path,
    matched_dir: Path,
    batch_id: str | None,
    batch_report: Path | None,
    workers: int | None,
    config_path: Path | None,
) -> None:
    """Map-match the trips of a traces batch to the road graph (HMM, Newson & Krumm)."""
    _use_system_allocator()
    with _imports_out_of_collection(), _hidden_from_numba():
        import pipeline.snap.stage  # the stage that _snap runs
        import pipeline.storage  # noqa: F401  (the staging of the command's locations)
        from pipeline.config import load_config

        _numba_unless_compiled_ahead()

    config = load_config(config_path)
    if workers is not None:
        config = replace(config, snap=replace(config.snap, workers=workers))
    with _staging(config) as staging:
        meta = _snap(staging, config, roads_dir, traces_dir, matched_dir, batch_id, batch_report)
    click.echo(
        f"{matched_dir}: {meta['trips']} trips, {meta['matched_points']}/{meta['points']} fixes "
        f"matched, {meta['matched_km']:.1f} km in {meta['seconds']:.1f} s",
        err=True,
    )
    _may_exit_at_once()  # its outputs are written and closed, its lock released


def _may_exit_at_once() -> None:
    """Let the process end at once after this command (:func:`main`), in its own process only.

    For a command that has closed every file it wrote and released its locks when it returns.
    """
    global _EXIT_AT_ONCE
    _EXIT_AT_ONCE = _OWN_PROCESS


def _use_system_allocator() -> None:
    """Have Arrow allocate with the C library's ``malloc``, unless its allocator was chosen.

    With Arrow's default, the mimalloc it bundles, the snap command costs about 0.1 s more
    CPU whatever the batch (a third of it setting mimalloc up at ``import pyarrow``) and about
    80 MiB more peak memory (docs/benchmarks.md, "Snap: speed side by side on Monaco"). Arrow
    reads ``ARROW_DEFAULT_MEMORY_POOL`` when it is imported: it is set before that only (the
    command's Dask workers inherit it).
    """
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(ARROW_POOL_ENV, "system")


@contextlib.contextmanager
def _imports_out_of_collection() -> Iterator[None]:
    """Import a command's modules with the garbage collector paused, then freeze what they made.

    A module's objects live as long as the process; the collections that Python would run
    while numba and the stage's modules are imported go through all the objects made so far,
    again and again: about 0.06 s of CPU of a ``roadcover snap`` (docs/benchmarks.md, "Snap:
    speed side by side on Monaco"). Only in the command's own process (:func:`main` without
    ``argv``); a call of :func:`main` imports with the collector as it is.
    """
    if not _OWN_PROCESS:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _numba_unless_compiled_ahead() -> None:
    """Import numba now (with what it hides), unless the stage's kernels are compiled ahead.

    With the ahead-of-time module of the snap stage's kernels (:mod:`pipeline.aot`) the
    command never imports numba; without it, numba is imported here rather than at the first
    kernel call, so as the command's other modules are (:func:`_hidden_from_numba`).
    """
    from pipeline import aot, jit

    if aot.loaded_module() is None:
        jit.load_numba()


NUMBA_CONFIG_FILE = ".numba_config.yaml"  # numba's own config file, read from the working folder


@contextlib.contextmanager
def _hidden_from_numba() -> Iterator[None]:
    """Import numba (and what else is imported here) as if coverage.py and PyYAML were absent.

    Numba imports coverage.py whenever it is installed (41 modules, about 0.04 s of CPU), to
    report the lines of the kernels it compiles to a coverage measurement running in the
    process; and PyYAML (about 0.01 s), to read its own config file, ``.numba_config.yaml`` in
    the working folder, if there is one. In the command's own process (:func:`main` without
    ``argv``) that measures none, coverage.py is hidden while the command's modules are
    imported: a measurement of the process starts before the command does (coverage.py's
    ``COVERAGE_PROCESS_START``), and coverage.py, imported then, is left as it is. PyYAML is
    hidden there too unless that file is there (or PyYAML was imported before); the config
    loader imports it when it parses a config (:func:`pipeline.config.load_config`).
    """
    hidden = []
    if _OWN_PROCESS:
        hidden = [name for name in ("coverage", "yaml") if name not in sys.modules]
        if os.path.exists(NUMBA_CONFIG_FILE):
            hidden = [name for name in hidden if name != "yaml"]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _snap(
    staging: Staging,
    config: Settings,
    roads_dir: Path | str,
    traces_dir: Path | str,
    matched_dir: Path | str,
    batch_id: str | None,
    batch_report: Path | str | None,
) -> dict[str, Any]:
    """Map-match a batch with staged locations; return the matched folder's ``meta.json``."""
    from pipeline.snap.stage import snap_traces
    from pipeline.storage import is_url

    settings = config.snap

    if batch_report is not None:
        report = json.loads(staging.input_file(batch_report).read_text())
        batch_id = report["batch_id"]
        if batch_id is None:
            earlier = ", ".join(report.get("earlier_batches", [])) or "none"
            raise InputDataError(
                f"{batch_report}: the ingest found nothing new (its files are in earlier batches: "
                f"{earlier}); match those with --batch ID"
            )
    traces = staging.input_folder(traces_dir)
    roads = Path(roads_dir)
    if is_url(roads_dir):  # of a sharded region, only the shards the batch needs
        from pipeline.roads.shard_build import stage_match_roads

        roads = stage_match_roads(staging, roads_dir, traces, batch_id)
    meta: dict[str, Any] = snap_traces(
        roads, traces,
        staging.output_folder(matched_dir, keep_existing=False), settings, batch_id,
        scheduler_address=config.dask_scheduler_address, lock_timeout_s=config.lock_timeout_s,
    )  # fmt: skip
    return meta


@cli.command("coverage")
@click.option(
    "--roads", "roads_dir", required=True,
    type=Location(file_okay=False, exists=True), help="Roads folder.",
)  # fmt: skip
@click.option(
    "--matched", "matched_dirs", required=True, multiple=True,
    type=Location(file_okay=False, exists=True),
    help="Output folder of `roadcover snap` (repeatable: one per batch).",
)  # fmt: skip
@click.option(
    "-o", "--out", "coverage_dir", required=True,
    type=Location(file_okay=False), help="Coverage folder (state and tables).",
)  # fmt: skip
@click.option("--as-of", "as_of", default=None, help="Measure freshness from this UTC time.")
@click.option(
    "--h3-res", "h3_res", type=click.IntRange(0, 15), default=None, help="Finest H3 resolution."
)
@CONFIG_OPTION
def coverage(
    roads_dir: Path,
    matched_dirs: tuple[Path, ...],
    coverage_dir: Path,
    as_of: str | None,
    h3_res: int | None,
    config_path: Path | None,
) -> None:
    """Merge matched batches into the coverage state; write edge, H3 cell and region coverage."""
    from pipeline.config import load_config
    from pipeline.coverage.folder_stagein import stage_coverage
    from pipeline.coverage.roads_stagein import stage_roads
    from pipeline.coverage.stage import compute_coverage
    from pipeline.coverage.text import format_summary

    config = load_config(config_path)
    settings = config.coverage
    if h3_res is not None:
        settings = replace(settings, h3_resolution=h3_res)
    when = _parse_as_of(as_of) if as_of else None
    with _staging(config) as staging:
        local_coverage, fetch = stage_coverage(staging, coverage_dir)  # locked: then the roads
        local_roads, roads = stage_roads(staging, roads_dir, local_coverage, settings)
        summary = compute_coverage(
            local_roads, [staging.input_folder(folder) for folder in matched_dirs],
            local_coverage, settings, when, config.lock_timeout_s, roads, fetch,
        )  # fmt: skip
    click.echo(format_summary(summary), err=True)


@cli.command("report")
@click.argument("region_dirs", nargs=-1, required=True,
                type=Location(file_okay=False, exists=True))  # fmt: skip
@click.option("-o", "--out", "out_path", required=True,
              type=Location(dir_okay=False), help="HTML file.")  # fmt: skip
def report(region_dirs: tuple[Path, ...], out_path: Path) -> None:
    """Write the HTML report of region output folders (plots of coverage, freshness, quality)."""
    from pipeline.report import write_report
    from pipeline.storage import join

    with _staging(None) as staging:
        folders = {_name(folder): staging.input_folder(folder) for folder in region_dirs}
        # the regions' summaries are written beside the report (summary.json), before it
        parent = str(out_path)[: -len(Path(out_path).name)].rstrip("/") or "."
        staging.output_file(join(parent, "summary.json"))
        write_report(folders, staging.output_file(out_path))
    click.echo(f"report: {out_path}", err=True)


def _parse_as_of(text: str) -> pd.Timestamp:
    import pandas as pd

    try:
        when = pd.Timestamp(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date-time; write e.g. 2026-11-01T00:00:00Z"
        ) from None
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


@cli.command("run", context_settings={"ignore_unknown_options": True})
@CONFIG_OPTION
@click.option("--cores", type=click.IntRange(min=1), default=2, help="Cores for Snakemake.")
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
def run(config_path: Path | None, cores: int, snakemake_args: tuple[str, ...]) -> None:
    """Run the whole workflow (Snakemake) on a config; extra arguments go to snakemake.

    Re-running a finished workflow does nothing; new trace batches in the config are ingested,
    matched and merged into the coverage alone.
    """
    from pipeline.workflow import run_workflow

    run_workflow(config_path, cores, list(snakemake_args))


@cli.command("warmup")
@CONFIG_OPTION
def warmup(config_path: Path | None) -> None:
    """Compile the stages' kernels into numba's cache (NUMBA_CACHE_DIR), so no stage compiles.

    Runs the simulator and the matcher on a small street grid in a temporary folder, then
    compiles the snap stage's kernels ahead of time into the same folder (``roadcover snap``
    then runs without numba).
    """
    from pipeline.config import load_config
    from pipeline.warmup import warm_up

    summary = warm_up(load_config(config_path))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "by_kernel"}, indent=2))


@cli.group("storage")
def storage() -> None:
    """Object storage (s3://, gs://): copy a file, remove a stale prefix lock."""


@storage.command("get")
@click.argument("source", type=Location(dir_okay=False, exists=True))
@click.argument("destination", type=Location(dir_okay=False))
@CONFIG_OPTION
def storage_get(source: Path | str, destination: Path | str, config_path: Path | None) -> None:
    """Copy the file SOURCE to DESTINATION (either may be a URL); the copy appears whole."""
    import tempfile

    from pipeline.config import load_config

    with _staging(load_config(config_path) if config_path else None) as staging:
        local_source = staging.input_file(source)
        target = staging.output_file(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                             dir=target.parent)  # fmt: skip
        os.close(handle)
        try:
            shutil.copyfile(local_source, temporary)
            os.replace(temporary, target)  # the copy appears whole or not at all
        finally:
            Path(temporary).unlink(missing_ok=True)


@cli.group("export")
def export() -> None:
    """Products of a coverage folder: vector tiles, rasters, the web map, data feeds, priorities."""


@export.command("tiles")
@click.argument("coverage_dir", type=Location(file_okay=False, exists=True))
@click.argument("out_path", type=Location(dir_okay=False))
@click.option("--min-zoom", type=click.IntRange(0, 20), default=0, show_default=True)
@click.option("--max-zoom", type=click.IntRange(0, 20), default=14, show_default=True)
@click.option(
    "--segments-min-zoom", type=click.IntRange(0, 20), default=10, show_default=True,
    help="First zoom at which covered road segments are drawn.",
)  # fmt: skip
@click.option(
    "--roads", "roads_dir", type=Location(file_okay=False, exists=True),
    default=None, help="The roads folder of the coverage: road names for the roads layer.",
)  # fmt: skip
def export_tiles_command(
    coverage_dir: Path,
    out_path: Path,
    min_zoom: int,
    max_zoom: int,
    segments_min_zoom: int,
    roads_dir: Path | None,
) -> None:
    """Write a PMTiles v3 archive of MVT tiles (layers cells, segments, roads) with tippecanoe."""
    from pipeline.export.tiles import ROADS_INPUTS, write_coverage_tiles

    if min_zoom > max_zoom:
        raise click.BadParameter(f"--min-zoom {min_zoom} is above --max-zoom {max_zoom}")
    with _staging(None) as staging:
        result = write_coverage_tiles(
            staging.input_folder(coverage_dir), staging.output_file(out_path),
            min_zoom, max_zoom, segments_min_zoom,
            roads_dir=None if roads_dir is None
            else staging.input_folder(roads_dir, include=ROADS_INPUTS),
        )  # fmt: skip
    click.echo(f"{out_path}: {result['tiles']} tiles, {result['bytes']:,} bytes", err=True)


@export.command("raster")
@click.argument("coverage_dir", type=Location(file_okay=False, exists=True))
@click.argument("out_dir", type=Location(file_okay=False))
@click.option("--zoom", type=click.IntRange(0, 22), default=None, help="Pixel grid of this zoom.")
def export_raster_command(coverage_dir: Path, out_dir: Path, zoom: int | None) -> None:
    """Write Cloud-Optimized GeoTIFFs (EPSG:3857) of coverage_pct and age_days."""
    from pipeline.export.raster import write_coverage_rasters

    with _staging(None) as staging:
        result = write_coverage_rasters(
            staging.input_folder(coverage_dir), staging.output_folder(out_dir, False), zoom
        )
    click.echo(json.dumps(result, indent=2, default=str), err=True)


@export.command("viewer")
@click.argument("coverage_dir", type=Location(file_okay=False, exists=True))
@click.argument("tiles_path", type=Location(dir_okay=False, exists=True))
@click.argument("out_dir", type=Location(file_okay=False))
@click.option("--title", default=None, help="Page title.")
@click.option("--serve", is_flag=True, help="Serve the site on 127.0.0.1 until interrupted.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--priorities", "priorities_dir", default=None,
    type=Location(file_okay=False, exists=True),
    help="Output of `export priorities`: draw its cells and tours (where to drive next).",
)  # fmt: skip
def export_viewer_command(
    coverage_dir: Path,
    tiles_path: Path,
    out_dir: Path,
    title: str | None,
    serve: bool,
    port: int,
    priorities_dir: Path | None,
) -> None:
    """Write the offline web coverage map (MapLibre GL + PMTiles) next to the tiles."""
    from pipeline.export.server import serve_directory, serve_until_interrupted
    from pipeline.export.viewer import viewer_files, write_viewer
    from pipeline.storage import is_url, join

    if serve and any(
        is_url(location) for location in (coverage_dir, tiles_path, out_dir, priorities_dir or "")
    ):
        raise click.BadParameter("--serve serves local folders; download the site first")
    with _staging(None) as staging:
        index = write_viewer(
            staging.input_folder(coverage_dir),
            staging.input_file(tiles_path),
            staging.output_folder(out_dir, keep_existing=False),
            title,
            staging.input_folder(priorities_dir) if priorities_dir is not None else None,
        )
    click.echo(f"web map: {join(str(out_dir), index.name)} (open it through an HTTP server with "
               "Range support)", err=True)  # fmt: skip
    if serve:
        assert isinstance(out_dir, Path) and isinstance(tiles_path, Path)
        with serve_directory(
            out_dir,
            port=port,
            files=viewer_files(tiles_path, priorities=priorities_dir is not None),
        ) as url:
            click.echo(f"serving {url} - press Ctrl-C to stop", err=True)
            serve_until_interrupted()


@export.command("feed")
@click.argument("coverage_dir", type=Location(file_okay=False, exists=True))
@click.option(
    "--roads", "roads_dir", required=True,
    type=Location(file_okay=False, exists=True),
    help="Roads folder the coverage was computed on.",
)  # fmt: skip
@click.option(
    "-o", "--out", "releases_dir", required=True, type=Location(file_okay=False),
    help="Releases folder; the release goes to OUT/RELEASE_ID.",
)  # fmt: skip
@click.option("--release-id", default=None, help="Default: the coverage as-of time.")
@click.option(
    "--previous", default=None, type=Location(file_okay=False, exists=True),
    help="Previous release: also write delta/ against it.",
)  # fmt: skip
@click.option(
    "--aoi", default=None, type=Location(dir_okay=False, exists=True),
    help="GeoJSON polygon to cut the release to.",
)  # fmt: skip
@click.option(
    "--formats", default="geoparquet", show_default=True,
    help="Comma-separated: geoparquet,csv,geojsonseq.",
)  # fmt: skip
@click.option(
    "--partition-res", type=click.IntRange(0, 15), default=4, show_default=True,
    help="H3 resolution of the h3_parent partitions.",
)  # fmt: skip
@click.option(
    "--latest", "latest_path", type=Location(dir_okay=False), default=None,
    help="Pointer file to the latest release: its release is the default --previous, and it is "
    "updated after the export. Nothing is done if it already names this coverage's release.",
)  # fmt: skip
@CONFIG_OPTION
def export_feed_command(
    coverage_dir: Path,
    roads_dir: Path,
    releases_dir: Path,
    release_id: str | None,
    previous: Path | None,
    aoi: Path | None,
    formats: str,
    partition_res: int,
    latest_path: Path | None,
    config_path: Path | None,
) -> None:
    """Write a B2B data feed release (segments, cells, manifest, STAC, delta)."""
    from pipeline.config import load_config
    from pipeline.export.feeds import export_feed, publish_release
    from pipeline.export.feeds.stage import ROADS_INPUTS

    config = load_config(config_path)
    with _staging(config) as staging:
        options: dict[str, Any] = {
            "release_id": release_id, "aoi": aoi and staging.input_file(aoi),
            "previous": previous and staging.input_folder(previous),
            "formats": tuple(formats.split(",")), "partition_res": partition_res,
            "lock_timeout_s": config.lock_timeout_s,
        }  # fmt: skip
        coverage_dir = staging.input_folder(coverage_dir)
        roads_dir = staging.input_folder(roads_dir, include=ROADS_INPUTS)
        local_releases = staging.output_folder(releases_dir)
        if latest_path is None:
            manifest = export_feed(coverage_dir, roads_dir, local_releases, **options)
        else:
            local_latest = _latest_in(staging, releases_dir, local_releases, latest_path)
            found = publish_release(
                coverage_dir, roads_dir, local_releases, local_latest, **options
            )
    if latest_path is not None:
        if found is None:
            click.echo(f"{latest_path} already names release {release_id}; nothing to do", err=True)
            return
        manifest = found
    click.echo(
        f"release {manifest['release_id']}: {manifest['tables']['segments']['rows']:,} segments, "
        f"{manifest['tables']['cells']['rows']:,} cells, {len(manifest['files'])} files",
        err=True,
    )


def _staging(config: Settings | None) -> Staging:
    """Return the staging of a command's URL arguments, with the config's storage settings."""
    from pipeline.storage import Staging

    if config is None:
        return Staging()
    return Staging(config.storage, config.lock_timeout_s)


def _staged_inputs(
    staging: Staging, inputs: Sequence[Path | str]
) -> tuple[list[Path], Path | None]:
    """Return ingest's inputs as names and the folder they are in (None: the working folder).

    With URLs among them, a URL's files are named by their place in the staging folder,
    ``s3/BUCKET/KEY`` (the same on every run: no temporary folder in ``source_file``), and
    local inputs by their absolute paths.
    """
    from pipeline.storage import is_url

    if not any(is_url(location) for location in inputs):
        return [Path(location) for location in inputs], None
    names = [
        staging.input_any(location).relative_to(staging.root)
        if is_url(location)
        else Path(location).absolute()
        for location in inputs
    ]
    return names, staging.root


def _name(location: Path | str) -> str:
    """Return the last part of a folder's path or URL (a region folder's name: its region)."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def _latest_in(
    staging: Staging, releases_dir: Path | str, local_releases: Path, latest: Path | str
) -> Path:
    """Return the local path of the ``--latest`` pointer.

    Inside the staged releases folder if it is there, else a staged file of its own
    (downloaded first when it exists).
    """
    from pipeline.storage import is_url

    if not is_url(latest):
        return Path(latest)
    inside = str(releases_dir).rstrip("/") + "/"
    if str(latest).startswith(inside):
        return local_releases / str(latest)[len(inside) :]
    local = staging.output_file(latest)
    with contextlib.suppress(InputDataError):
        shutil.copyfile(staging.input_file(latest), local)
    return local


@export.command("priorities")
@click.argument("coverage_dir", type=Location(file_okay=False, exists=True))
@click.option(
    "--roads", "roads_dir", required=True, type=Location(file_okay=False, exists=True),
    help="Roads folder the coverage was computed on.",
)  # fmt: skip
@click.option(
    "-o", "--out", "out_dir", required=True, type=Location(file_okay=False),
    help="Output folder: roads.parquet, cells.geojson, tours.geojson, tours/*.gpx, summary.json.",
)  # fmt: skip
@click.option("--tours", type=click.IntRange(min=0), default=None, help="Tours to plan.")
@CONFIG_OPTION
def export_priorities_command(
    coverage_dir: Path, roads_dir: Path, out_dir: Path, tours: int | None, config_path: Path | None
) -> None:
    """Rank roads and H3 cells by the value of driving them now; plan tours (GeoJSON, GPX)."""
    from pipeline.config import load_config
    from pipeline.export.priorities import ROADS_INPUTS, export_priorities
    from pipeline.storage import join

    settings = load_config(config_path)
    priorities = settings.priorities if tours is None else replace(settings.priorities, tours=tours)
    with _staging(settings) as staging:
        result = export_priorities(
            staging.input_folder(coverage_dir), staging.input_folder(roads_dir, ROADS_INPUTS),
            staging.output_folder(out_dir, keep_existing=False), priorities,
            privacy_trim_m=settings.ingest.privacy_trim_m, lock_timeout_s=settings.lock_timeout_s,
        )  # fmt: skip
    click.echo(
        f"{out_dir}: {result['new_km']:.1f} km never driven, {result['stale_km']:.1f} km stale "
        f"in {result['cells']} cells; {len(result['tours'])} tours",
        err=True,
    )
    for tour in result["tours"]:
        click.echo(
            f"  tour {tour['tour']}: {tour['length_km']:.1f} km, gains {tour['gain_km']:.2f} km "
            f"({tour['gain_per_km']:.2f} per km driven) -> {join(str(out_dir), tour['gpx'])}",
            err=True,
        )
    for note in result["notes"]:
        click.echo(f"  {note}", err=True)


DATABASE_URL_OPTION = click.option(
    "--database-url", default=None,
    help="Accounts database (default: $ROADCOVER_DATABASE_URL, the config's api.database_url, "
    "or sqlite:///OUTPUT_DIR/api/accounts.sqlite).",
)  # fmt: skip


@cli.group("keys")
def keys() -> None:
    """Manage the API keys of the organisations that buy data (roadcover serve)."""


@keys.command("create")
@click.option("--org", "org_id", required=True, help="Organisation id (created if new).")
@click.option("--credits", "credits_text", default="0", show_default=True,
              help="Credits added to the organisation's balance.")  # fmt: skip
@click.option("--regions", default=None, help="Licensed regions, comma-separated (default: all).")
@click.option(
    "--aoi", "aoi_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
    help="GeoJSON (Multi)Polygon the organisation may query (default: anywhere).",
)  # fmt: skip
@click.option("--expires", default=None, help="Last day (UTC) the key works, YYYY-MM-DD.")
@DATABASE_URL_OPTION
@CONFIG_OPTION
def keys_create(
    org_id: str,
    credits_text: str,
    regions: str | None,
    aoi_path: Path | None,
    expires: str | None,
    database_url: str | None,
    config_path: Path | None,
) -> None:
    """Issue an API key for an organisation; the secret is printed once and never again."""
    from pipeline.serve.accounts import parse_aoi

    aoi = parse_aoi(_read_geojson(aoi_path), str(aoi_path)) if aoi_path is not None else None
    store = _account_store(database_url, config_path)
    issued = store.create_key(
        org_id, credits=_parse_credits(credits_text), aoi=aoi.__geo_interface__ if aoi else None,
        regions=[r.strip() for r in regions.split(",")] if regions is not None else None,
        expires=_parse_day(expires, "--expires") if expires is not None else None,
    )  # fmt: skip
    click.echo(f"org:        {issued.org_id}")
    click.echo(f"key id:     {issued.key_id}")
    click.echo(f"secret:     {issued.secret}")
    click.echo(f"header:     Authorization: {issued.basic_auth_header()}")
    click.echo(f"balance:    {store.balance(org_id)} credits")
    click.echo("The secret is shown only now; store it safely.", err=True)


@keys.command("list")
@click.option("--org", "org_id", default=None, help="Only this organisation's keys.")
@DATABASE_URL_OPTION
@CONFIG_OPTION
def keys_list(org_id: str | None, database_url: str | None, config_path: Path | None) -> None:
    """List keys (never their secrets): id, organisation, status, created, expires."""
    store = _account_store(database_url, config_path)
    click.echo("key_id\torg\tstatus\tcreated_at\texpires")
    for key in store.list_keys(org_id):
        created = key.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"{key.key_id}\t{key.org_id}\t{key.status}\t{created}\t{key.expires or '-'}")


@keys.command("revoke")
@click.argument("key_id")
@DATABASE_URL_OPTION
@CONFIG_OPTION
def keys_revoke(key_id: str, database_url: str | None, config_path: Path | None) -> None:
    """Revoke KEY_ID: every later request with it gets 401 revoked_key."""
    _account_store(database_url, config_path).revoke_key(key_id)
    click.echo(f"revoked {key_id}")


@cli.group("credits")
def credits_group() -> None:
    """Manage the credit balances of the organisations."""


@credits_group.command("add", context_settings={"ignore_unknown_options": True})  # "-5"
@click.option("--org", "org_id", required=True, help="Organisation id.")
@click.argument("amount")
@DATABASE_URL_OPTION
@CONFIG_OPTION
def credits_add(
    org_id: str, amount: str, database_url: str | None, config_path: Path | None
) -> None:
    """Add AMOUNT credits (more than 0, at most 6 decimals) to an organisation's balance."""
    balance = _account_store(database_url, config_path).add_credits(org_id, _parse_credits(amount))
    click.echo(f"{org_id}: balance {balance} credits")


def _account_store(database_url: str | None, config_path: Path | None) -> AccountStore:
    from pipeline.config import load_config
    from pipeline.serve.accounts import AccountStore, database_url_from

    return AccountStore(database_url_from(load_config(config_path), database_url))


def _parse_credits(text: str) -> Decimal:
    from decimal import Decimal, InvalidOperation

    from pipeline.serve.accounts import AccountInputError

    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise AccountInputError(
            "invalid_credits", f"credits {text!r} is not a number; write e.g. 100 or 12.5"
        ) from None


def _parse_day(text: str, option: str) -> date:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date; write YYYY-MM-DD, e.g. 2027-06-30",
                                 param_hint=option) from None  # fmt: skip


def _read_geojson(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found; give a GeoJSON (Multi)Polygon") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"{path}: not valid GeoJSON ({exc})") from None


@cli.command("serve")
@DATABASE_URL_OPTION
@CONFIG_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Server processes (each with its own rate-limit buckets and metrics).",
)  # fmt: skip
def serve(
    database_url: str | None, config_path: Path | None, host: str, port: int, workers: int
) -> None:
    """Serve the keyed HTTP API over the config's regions' releases (docs/api.md)."""
    from pipeline.serve.app import run_server

    run_server(config_path, database_url, host=host, port=port, workers=workers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; user errors become one line on stderr.

    When :data:`pipeline.process_tree.RECORDS_ENV` names a folder, a stage command also writes
    there the peak memory of its whole process tree, workers included
    (:mod:`pipeline.process_tree`).

    Without ``argv`` (the command line of the process: the ``roadcover`` command, ``python -m
    pipeline.cli``), the process is about to exit: the objects left are frozen out of Python's
    garbage collector (:func:`gc.freeze`), which would otherwise go through all of them once
    more at exit, numba's and the stages' modules included (about 0.3 s of CPU after a
    ``roadcover snap``). The exit is otherwise unchanged: ``atexit`` handlers run, modules are
    torn down and what they alone hold is released; only objects in reference cycles at exit
    are not collected (Python does not promise to finalize those anyway). After a command
    that succeeded and closed all it wrote (``roadcover snap``), the process ends here
    (:func:`_exit_at_once`).
    """
    global _OWN_PROCESS
    args = list(argv) if argv is not None else sys.argv[1:]
    _OWN_PROCESS = argv is None
    status = _main_recorded(args)
    if argv is None:
        gc.freeze()
        if _EXIT_AT_ONCE and status == 0:
            _exit_at_once(status)
    return status


def _exit_at_once(status: int) -> None:
    """End the process with ``status`` now: exit handlers run, modules are not torn down.

    What Python's exit does besides (destroying every module and object left, one by one,
    numba's compiled code included) costs about 0.03 s of CPU after a ``roadcover snap``
    (docs/benchmarks.md, "`roadcover snap --workers 1` as a whole process"), and the command
    has closed what it wrote. The ``atexit`` handlers run (logging's flushes and closes its
    handlers, multiprocessing's ends its children), the standard streams are flushed, then
    :func:`os._exit`. Returns, and leaves the exit to Python, while a thread that Python
    would wait for still runs or when a standard stream cannot be flushed.
    """
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if any(not thread.daemon for thread in others):
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except (OSError, ValueError):  # a closed pipe, a closed stream: Python reports it at exit
        return
    os._exit(status)


def _main_recorded(args: list[str]) -> int:
    """Run the CLI on ``args``, recording its process tree's memory if asked; its exit status."""
    from pipeline.process_tree import RECORDS_ENV

    records = os.environ.get(RECORDS_ENV)
    words = [arg for arg in args if arg not in ("-v", "--verbose")]
    if not records or not words or words[0] in UNRECORDED or {"--help", "-h"} & set(args):
        return _main(args)
    from pipeline.process_tree import TreeMemorySampler, command_record, record_path, write_record

    with TreeMemorySampler() as sampler:
        status = _main(args)
    write_record(command_record(args, sampler.snapshot(), status), record_path(Path(records), args))
    return status


def _main(args: list[str]) -> int:
    """Run the CLI on ``args`` and return its exit status."""
    try:
        cli.main(args=args, standalone_mode=False)
    except PipelineError as exc:
        click.echo(f"roadcover: error: {exc}", err=True)
        return EXIT_ERROR
    except OSError as exc:  # a path the user gave cannot be read, written or bound
        logging.getLogger(__name__).debug("operating system error", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"roadcover: error: {where}{exc.strerror or exc}", err=True)
        return EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("roadcover: aborted", err=True)
        return EXIT_ERROR
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # a group without its command: its help
        return exc.exit_code
    except click.UsageError as exc:
        click.echo(f"roadcover: error: {_subcommand(exc.ctx)}{exc.format_message()}", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def _subcommand(ctx: click.Context | None) -> str:
    """``"export tiles: "`` for the context of ``roadcover export tiles``; "" for the group's."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return f"{' '.join(names)}: " if names else ""


if __name__ == "__main__":
    sys.exit(main())
