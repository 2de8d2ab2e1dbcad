# Shared names: the output root, the regions and their batches, the config file to hand to the CLI.
import json
import re
from pathlib import Path

from pipeline.resources import build_roads_mem_mb, rule_mem_mb, rule_threads

OUT = config["output_dir"]
REGIONS = [region["name"] for region in config["regions"]]
# The config file handed to every stage: the one given with --configfile (roadcover run passes it),
# else the Snakefile's default. workflow.configfiles lists the command line's files first and the
# Snakefile's `configfile:` last, so its [-1] would be the demo config whenever that exists.
CONFIG_FILE = str((workflow.overwrite_configfiles or workflow.configfiles)[-1])
FLEET_BATCH = "fleet"


def one_of(names):
    """A regular expression matching exactly one of ``names``."""
    return "|".join(re.escape(name) for name in sorted(set(names))) or "(?!)"


# a target naming a region or batch the config does not have has no rule (not a traceback)
wildcard_constraints:
    region=one_of(REGIONS),
    batch=one_of(
        [FLEET_BATCH] + [name for region in config["regions"] for name in region["batches"]]
    ),


def region_settings(name):
    return next(region for region in config["regions"] if region["name"] == name)


def batch_names(region):
    """The region's batches in ingest order: the simulated fleet first, then the configured ones."""
    settings = region_settings(region)
    names = [FLEET_BATCH] if settings["simulated_fleet"] else []
    return names + list(settings["batches"])


def batch_inputs(wildcards):
    """Files of a batch; the previous batch's report too, so a region's batches ingest in order."""
    names = batch_names(wildcards.region)
    position = names.index(wildcards.batch)
    if wildcards.batch == FLEET_BATCH:
        inputs = {"data": f"{OUT}/{wildcards.region}/fleet/simulation.json"}
    else:
        inputs = {"data": region_settings(wildcards.region)["batches"][wildcards.batch]}
    if position > 0:
        inputs["previous"] = f"{OUT}/{wildcards.region}/traces/batches/{names[position - 1]}.json"
    return inputs


def batch_paths(wildcards, input):
    """The files and folders to ingest, a list: the rule quotes each one for the shell."""
    if wildcards.batch == FLEET_BATCH:
        return [str(Path(input.data).parent / "traces")]
    return list(input.data)


def repeated_option(option, values):
    """``[option, value, option, value, ...]``: a list the rule quotes element by element."""
    return [item for value in values for item in (option, str(value))]


def matched_batches(wildcards):
    return expand(
        f"{OUT}/{wildcards.region}/matched/{{batch}}/meta.json", batch=batch_names(wildcards.region)
    )
