# Shared names: the output root, the regions and their batches, the config file to hand to the CLI.
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.resources import build_roads_mem_mb, rule_mem_mb, rule_threads
from pipeline.storage import is_url

# Where the outputs go. OUT is the path Snakemake tracks; DATA is where the stages read and write
# the folders: the same path on a file system, the URL of that path in the bucket when the
# files Snakemake tracks go through a storage plugin (--default-storage-provider s3, set by the
# kubernetes profile, and by `roadcover run` for an output_dir of s3://BUCKET/FOLDER).
# The rules declare each stage's commit record; the stages stage their folders themselves
# (pipeline/storage.py: lock, data, then commit records), and under a plugin the rule then
# fetches the commit record for Snakemake to see and keep (docs/workflow.md, "Object storage").
STORAGE_PREFIX = (
    workflow.storage_settings.default_storage_prefix
    if workflow.storage_settings.default_storage_provider
    else None
)


if is_url(config["output_dir"]):
    _url = urlsplit(config["output_dir"])
    OUT = _url.path.strip("/")
    _bucket = f"{_url.scheme}://{_url.netloc}"
    if not OUT or STORAGE_PREFIX is None or STORAGE_PREFIX.removesuffix("/") != _bucket:
        raise WorkflowError(
            f"output_dir {config['output_dir']} is a URL: run it with `roadcover run`, or give "
            f"snakemake --default-storage-provider {_url.scheme} --default-storage-prefix "
            f"{_url.scheme}://{_url.netloc} (and a folder in the bucket)"
        )
    DATA = config["output_dir"].rstrip("/")
elif STORAGE_PREFIX is not None:
    OUT = config["output_dir"]
    DATA = f"{STORAGE_PREFIX.rstrip('/')}/{PurePosixPath(OUT)}"
else:
    OUT = config["output_dir"]
    DATA = OUT
REMOTE = STORAGE_PREFIX is not None


def data(*parts):
    """The location of an output folder or file under DATA: a path, or its URL in the bucket."""
    if REMOTE:
        return "/".join([DATA, *parts])
    return str(Path(DATA, *parts))


def read_object(url):
    """The content of an object in the bucket (the stages' credentials and endpoint)."""
    from pipeline.config import StorageSettings
    from pipeline.storage import filesystem

    endpoint = (config.get("storage") or {}).get("endpoint_url")
    fs, path = filesystem(url, StorageSettings(endpoint_url=endpoint))
    return fs.cat_file(path)


def record(*parts):
    """Under a storage plugin: the URL of a stage's commit record (DATA/parts), which the rule's
    shell then copies to its declared output with `roadcover storage get`. Else '' (no copy)."""
    return data(*parts) if REMOTE else ""


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


SHARDED = [r["name"] for r in config["regions"] if r.get("shards") is not None]
UNSHARDED = [r["name"] for r in config["regions"] if r.get("shards") is None]
NO_REGION = "(?!)"  # a pattern nothing matches


def names_pattern(names):
    """A wildcard constraint matching exactly these region names."""
    return "|".join(re.escape(name) for name in names) or NO_REGION


def region_settings(name):
    return next(region for region in config["regions"] if region["name"] == name)


def batch_names(region):
    """The region's batches in ingest order: the simulated fleet first, then the configured ones."""
    settings = region_settings(region)
    names = [FLEET_BATCH] if settings["simulated_fleet"] else []
    return names + list(settings["batches"])


def batch_inputs(wildcards):
    """Files of a batch; the previous batch's report too, so a region's batches ingest in order.

    Local batch files are local() under a storage plugin (not looked for in the bucket); a
    batch given as URLs is read by the stage (not tracked by Snakemake)."""
    names = batch_names(wildcards.region)
    position = names.index(wildcards.batch)
    if wildcards.batch == FLEET_BATCH:
        inputs = {"data": f"{OUT}/{wildcards.region}/fleet/simulation.json"}
    else:
        paths = region_settings(wildcards.region)["batches"][wildcards.batch]
        inputs = {"data": [local(path) for path in paths if not is_url(path)]}
    if position > 0:
        inputs["previous"] = f"{OUT}/{wildcards.region}/traces/batches/{names[position - 1]}.json"
    return inputs


def batch_paths(wildcards):
    """The files and folders to ingest, a list: the rule quotes each one for the shell."""
    if wildcards.batch == FLEET_BATCH:
        return [data(wildcards.region, "fleet", "traces")]
    return list(region_settings(wildcards.region)["batches"][wildcards.batch])


def repeated_option(option, values):
    """``[option, value, option, value, ...]``: a list the rule quotes element by element."""
    return [item for value in values for item in (option, str(value))]


def matched_batches(wildcards):
    return expand(
        f"{OUT}/{wildcards.region}/matched/{{batch}}/meta.json", batch=batch_names(wildcards.region)
    )


def shard_metas(wildcards):
    """The meta.json of every shard the region's cut made (known once cut_roads has run).

    Under a storage plugin the plan is read from the bucket (DATA), where the cut wrote it."""
    plan = checkpoints.cut_roads.get(region=wildcards.region).output.plan
    if REMOTE:
        cells = json.loads(read_object(data(wildcards.region, "roads", "shards", "plan.json")))
        cells = cells["cells"]
    else:
        cells = json.loads(Path(plan).read_text())["cells"]
    return [f"{OUT}/{wildcards.region}/roads/shards/{cell}/meta.json" for cell in cells]
