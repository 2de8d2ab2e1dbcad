"""The ``roadcover`` command line: one subcommand group per stage, thin wrappers only.

Each command parses its arguments, loads the config, calls the stage function and reports.
Errors the user can fix (:class:`~pipeline.errors.PipelineError`) are printed as one line and
exit with status 1; a stage that this version does not provide exits with status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.config import load_config
from pipeline.errors import PipelineError, StageNotBuiltError
from pipeline.roads.highways import NETWORK_TYPES

EXIT_ERROR = 1
EXIT_NOT_BUILT = 2
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config (default: the embedded demo config, configs/demo.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="roadcover")
@click.option("-v", "--verbose", is_flag=True, help="Debug log output.")
def cli(verbose: bool) -> None:
    r"""Crowdsourced road coverage: dashcam traces to map-matched, H3-binned coverage.

    \b
    Stages:  roads -> ingest -> snap -> coverage -> export
    Also:    simulate (a synthetic dashcam fleet), run (the whole workflow)
    """
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
    type=click.Path(file_okay=False, path_type=Path),
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
@CONFIG_OPTION
def roads_build(
    osm_file: str,
    roads_dir: Path,
    network: str | None,
    highways: tuple[str, ...],
    sha256: str | None,
    config_path: Path | None,
) -> None:
    """Build the road graph of OSM_FILE (.osm, .osm.gz, .osm.bz2, .osm.pbf, a URL or package://)."""
    from pipeline.roads import build_roads, resolve_extract

    settings = load_config(config_path)
    osm_path = resolve_extract(osm_file, settings.cache_dir, sha256)
    meta = build_roads(
        osm_path,
        roads_dir,
        network=network or settings.roads.network,
        highway_include=highways or settings.roads.highway_include,
    )
    click.echo(
        f"{roads_dir}: {meta['node_count']} nodes, {meta['edge_count']} edges, "
        f"{meta['road_km']:.1f} road km ({meta['directed_km']:.1f} directed km)"
    )


@cli.command("simulate")
@click.option(
    "--roads",
    "roads_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Roads folder from `roadcover roads build`.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
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
@CONFIG_OPTION
def simulate(
    roads_dir: Path,
    out_dir: Path,
    devices: int | None,
    days: int | None,
    formats: tuple[str, ...],
    seed: int | None,
    config_path: Path | None,
) -> None:
    """Simulate a dashcam fleet driving on a road graph, with its ground-truth routes."""
    from pipeline.ingest.simulate import simulate_fleet

    params = load_config(config_path).simulate
    overrides: dict[str, Any] = {
        "devices": devices,
        "days": days,
        "seed": seed,
        "formats": formats or None,
    }
    params = replace(params, **{k: v for k, v in overrides.items() if v is not None})
    summary = simulate_fleet(roads_dir, out_dir, params)
    click.echo(json.dumps(summary, indent=2, default=str))


def _not_built(stage: str, issue: int) -> click.Command:
    @click.command(
        stage,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"Not available yet in roadcover {__version__} (tracked in issue #{issue}).",
    )
    def command() -> None:
        raise StageNotBuiltError(
            f"roadcover {stage}: this stage is not built yet in roadcover {__version__} "
            f"(tracked in issue #{issue}); nothing was done"
        )

    return command


for _stage, _issue in (("ingest", 3), ("snap", 4), ("coverage", 5), ("export", 6), ("run", 7)):
    cli.add_command(_not_built(_stage, _issue))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; user errors become one line on stderr."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except StageNotBuiltError as exc:
        click.echo(f"roadcover: {exc}", err=True)
        return EXIT_NOT_BUILT
    except PipelineError as exc:
        click.echo(f"roadcover: error: {exc}", err=True)
        return EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("roadcover: aborted", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
