"""``roadcover run``: the Snakemake workflow, then the summary a person wants to see.

When Snakemake fails, the last line says how to go on: the rule's log, Snakemake's refusal of
its arguments, or, when the working folder is still locked (its lock files in
``.snakemake/locks``), how to unlock it after a run that was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import DEMO_CONFIG_PATH, WORKFLOW_DIR, Settings, load_config
from pipeline.coverage.text import format_summary
from pipeline.errors import ConfigError, PipelineError
from pipeline.parallel import SCHEDULER_ENV, shared_local_cluster
from pipeline.process_tree import CLUSTER_OWNER_ENV, RECORDS_ENV, RUN_RECORD, recording_run
from pipeline.storage import is_url

SNAKEFILE = WORKFLOW_DIR / "Snakefile"  # package data, also in an installed wheel
# where Snakemake keeps the locks of a working folder while it runs (removed when it ends)
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
# where the stages and the run record their process trees' memory, under OUTPUT_DIR
PROCESS_RECORDS = Path("benchmarks") / "_process_tree"  # "_": no region has that name
ARGPARSE_ERROR = 2  # Snakemake's exit status when it refuses its command line
# arguments after which Snakemake runs no job: no shared Dask cluster for them
NO_JOB_ARGS = ("-n", "--dry-run", "--dryrun", "--lint", "--unlock", "--touch", "-t")


def run_workflow(config_path: Path | None, cores: int, extra_args: list[str]) -> None:
    """Run the workflow on a config with Snakemake, then print each region's summary.

    Raises
    ------
    PipelineError
        If Snakemake fails: the message names the rule logs under ``OUTPUT_DIR/logs``, or, if
        the working folder is locked by a run that was killed, the commands that unlock it and
        run again.
    """
    config_file = Path(config_path) if config_path is not None else DEMO_CONFIG_PATH
    settings = load_config(config_file)
    storage_args, storage_env = object_storage_options(settings)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--configfile", str(config_file), "--cores", str(cores), "--rerun-incomplete",
        *storage_args, *extra_args,
    ]  # fmt: skip
    # the rules call `roadcover`: find the one of this environment first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # a run into a bucket keeps its process records on this machine, beside Snakemake's own
    local_root = (
        _working_directory(extra_args) / ".roadcover"
        if is_url(settings.output_location)
        else _working_directory(extra_args) / settings.output_dir  # absolute stays absolute
    )
    records = os.environ.get(RECORDS_ENV) or str(local_root.absolute() / PROCESS_RECORDS)
    run_argv = ["run", "--config", str(config_file), "--cores", str(cores), *extra_args]
    with (
        _recording(Path(records), extra_args, run_argv),
        _stage_scheduler(settings.dask_scheduler_address, cores, extra_args) as address,
    ):
        env = {**os.environ, **storage_env, "PATH": path, RECORDS_ENV: records}
        if address:
            env |= {SCHEDULER_ENV: address, CLUSTER_OWNER_ENV: str(os.getpid())}
        status = subprocess.run(command, check=False, env=env).returncode
    if status != 0:
        where = settings.output_location if is_url(settings.output_location) else None
        raise _failure(status, where or settings.output_dir, config_path, cores, extra_args)
    if "--unlock" in extra_args:
        print(f"unlocked {_working_directory(extra_args).absolute()}", file=sys.stderr)
        return
    if is_url(settings.output_location):
        _print_summaries_in_bucket(settings)
        return
    output_dir = _working_directory(extra_args) / settings.output_dir  # absolute stays absolute
    for region in settings.regions:
        summary_path = output_dir / region.name / "coverage" / "summary.json"
        if summary_path.exists():
            print(f"\n{region.name}:", file=sys.stderr)
            print(format_summary(json.loads(summary_path.read_text())), file=sys.stderr)
    _print_where_to_look(output_dir, [region.name for region in settings.regions])


def _recording(
    folder: Path, snakemake_args: list[str], argv: list[str]
) -> contextlib.AbstractContextManager[object]:
    """Record the whole run's process tree memory in ``folder/run.json`` (not for dry runs)."""
    if any(arg in NO_JOB_ARGS for arg in snakemake_args):
        return contextlib.nullcontext()
    return recording_run(folder / RUN_RECORD, argv)


def object_storage_options(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Snakemake's options and the stages' environment for an ``output_dir`` in a bucket.

    For ``s3://BUCKET/FOLDER``: Snakemake's S3 storage plugin keeps the files the rules declare
    in the bucket (``--default-storage-provider s3 --default-storage-prefix s3://BUCKET``), and
    the stages reach the bucket through s3fs; ``storage.endpoint_url`` goes to both (as
    ``AWS_ENDPOINT_URL`` for the stages). No options for a local ``output_dir``.

    Raises
    ------
    ConfigError
        For a ``gs://`` output_dir (the workflow's storage plugin is S3's), or a URL that names
        no folder in its bucket.
    """
    location = settings.output_location
    if not is_url(location):
        return [], {}
    parts = urlsplit(location)
    if parts.scheme not in ("s3", "s3a") or not parts.path.strip("/"):
        raise ConfigError(
            f"{settings.source}: output_dir {location}: `roadcover run` writes to s3://BUCKET/"
            "FOLDER (Snakemake's S3 storage plugin; MinIO and other S3 APIs through "
            "storage.endpoint_url); gs:// works with the stage commands"
        )
    args = ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{parts.netloc}"]
    endpoint = settings.storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        args += ["--storage-s3-endpoint-url", endpoint]
        return args, {"AWS_ENDPOINT_URL": endpoint}
    return args, {}


def _print_summaries_in_bucket(settings: Settings) -> None:
    """Print each region's summary, read from the bucket, and where its products are."""
    from pipeline.storage import filesystem, join

    for region in settings.regions:
        summary_url = join(settings.output_location, region.name, "coverage", "summary.json")
        fs, path = filesystem(summary_url, settings.storage)
        with contextlib.suppress(FileNotFoundError):
            print(f"\n{region.name}:", file=sys.stderr)
            print(format_summary(json.loads(fs.cat_file(path))), file=sys.stderr)
        web = join(settings.output_location, region.name, "export", "web", "index.html")
        print(f"{region.name} web map: {web}", file=sys.stderr)
    print(f"report: {join(settings.output_location, 'report.html')}", file=sys.stderr)


def _stage_scheduler(
    configured: str | None, cores: int, snakemake_args: list[str]
) -> contextlib.AbstractContextManager[str | None]:
    """Return the Dask cluster the stages share: a LocalCluster of ``cores`` workers, or none.

    None (each stage then uses the configured scheduler, or works in-process or starts its
    own) when a scheduler is configured (``dask.scheduler_address`` or
    ``DASK_SCHEDULER_ADDRESS``), for one core, for a dry run, and when the jobs run elsewhere
    (``--executor``, or a profile other than ``configs/profiles/local``).
    """
    dry_run = any(arg in NO_JOB_ARGS for arg in snakemake_args)
    if configured or os.environ.get(SCHEDULER_ENV) or cores <= 1 or dry_run:
        return contextlib.nullcontext(None)
    if _runs_elsewhere(snakemake_args):
        return contextlib.nullcontext(None)
    return shared_local_cluster(cores)


def _runs_elsewhere(snakemake_args: list[str]) -> bool:
    """Whether Snakemake is told to run jobs through an executor (cluster) or such a profile."""
    for i, arg in enumerate(snakemake_args):
        name, _, value = arg.partition("=")
        if name in ("--executor", "-e"):
            return True
        if name == "--profile":
            profile = value or (snakemake_args[i + 1] if i + 1 < len(snakemake_args) else "")
            if Path(profile).name != "local":
                return True
    return False


def _failure(
    status: int,
    output_dir: Path | str,
    config_path: Path | None,
    cores: int,
    snakemake_args: list[str],
) -> PipelineError:
    """Return the error of a failed Snakemake run: one line saying how to go on."""
    workdir = _working_directory(snakemake_args)
    if _lock_files(workdir):
        rerun = ["roadcover", "run"]
        rerun += ["--config", str(config_path)] if config_path is not None else []
        rerun += ["--cores", str(cores), *snakemake_args]
        return PipelineError(
            f"{_where(workdir.absolute(), output_dir)} is locked by a workflow run that did not "
            f"finish (killed) or is still running (Snakemake's lock in {workdir.absolute()}); "
            "make sure no other roadcover run or snakemake is active there, then unlock and "
            f"run again: {shlex.join([*rerun, '--unlock'])} && {shlex.join(rerun)}"
        )
    if status == ARGPARSE_ERROR:
        return PipelineError(
            f"snakemake refused its arguments {shlex.join(snakemake_args)!r} (its message is "
            "above); see `python -m snakemake --help`"
        )
    return PipelineError(
        "the workflow failed; Snakemake's message is above, and the rules' logs are under "
        f"{_where(workdir, output_dir, 'logs')}"
    )


def _where(workdir: Path, output_dir: Path | str, *parts: str) -> str:
    """Return a place under the output folder: its URL, or its path in ``workdir``."""
    if is_url(str(output_dir)):
        return "/".join([str(output_dir).rstrip("/"), *parts])
    return str((workdir / output_dir).joinpath(*parts))


def _lock_files(workdir: Path) -> list[Path]:
    """Return Snakemake's lock files in a working folder (only a run not yet over leaves any)."""
    locks = workdir / SNAKEMAKE_LOCKS
    return sorted(locks.glob("*.lock")) if locks.is_dir() else []


def _working_directory(snakemake_args: list[str]) -> Path:
    """Return the folder Snakemake runs in (``--directory``/``-d``): relative outputs go there."""
    for i, arg in enumerate(snakemake_args):
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1])
        if arg in ("--directory", "-d") and i + 1 < len(snakemake_args):
            return Path(snakemake_args[i + 1])
    return Path()


def _print_where_to_look(output_dir: Path, regions: list[str]) -> None:
    """Print the web map of each region (and how to serve it, quoted for a shell) and the report.

    The serve command writes the site again: with the region's priorities when it has them, so
    that the served map keeps its "where to drive next" layers.
    """
    for name in regions:
        region = output_dir / name
        site = region / "export" / "web"
        if (site / "index.html").exists():
            serve = ["roadcover", "export", "viewer", "--serve"]
            priorities = region / "export" / "priorities"
            if (priorities / "summary.json").exists():
                serve += ["--priorities", str(priorities)]
            serve += ["--", str(region / "coverage"), str(region / "export" / "coverage.pmtiles")]
            print(
                f"\n{name} web map: {site / 'index.html'}\n  serve it (HTTP Range requests): "
                f"{shlex.join([*serve, str(site)])}",
                file=sys.stderr,
            )
    report = output_dir / "report.html"
    if report.exists():
        print(f"report: {report}", file=sys.stderr)
