"""``roadcover run``'s own decisions: which Dask cluster the stages share, where outputs go."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DEMO_CONFIG_PATH
from pipeline.coverage.text import format_summary
from pipeline.parallel import SCHEDULER_ENV
from pipeline.workflow import _print_where_to_look, _stage_scheduler, _working_directory
from tests.imports import modules_imported_by


def shared(args: list[str], cores: int = 2, configured: str | None = None) -> bool:
    """Whether ``roadcover run`` would start a shared LocalCluster for these arguments."""
    return not isinstance(_stage_scheduler(configured, cores, args), contextlib.nullcontext)


@pytest.fixture(autouse=True)
def no_scheduler_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)


def test_a_local_run_on_several_cores_shares_one_cluster() -> None:
    assert shared([])
    assert shared(["--profile", "configs/profiles/local"])
    assert shared(["--profile=configs/profiles/local/", "--keep-going"])


@pytest.mark.parametrize(
    "args",
    [
        ["-n"],
        ["--dry-run"],
        ["--unlock"],
        ["--touch"],
        ["--executor", "slurm"],
        ["--executor=kubernetes"],
        ["--profile", "configs/profiles/slurm"],
        ["--profile=configs/profiles/kubernetes"],
    ],
)
def test_no_shared_cluster_for_dry_runs_and_cluster_executors(args: list[str]) -> None:
    assert not shared(args)


def test_no_shared_cluster_for_one_core_or_a_configured_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not shared([], cores=1)
    assert not shared([], configured="tcp://dask-scheduler:8786")
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://dask-scheduler:8786")
    assert not shared([])


def test_working_directory_follows_snakemakes_directory_option() -> None:
    assert _working_directory([]) == Path()
    assert _working_directory(["--directory", "/tmp/w"]) == Path("/tmp/w")
    assert _working_directory(["-d", "w", "-n"]) == Path("w")
    assert _working_directory(["--directory=/x"]) == Path("/x")


def test_the_wrapper_starts_without_the_data_libraries() -> None:
    """`roadcover run` starts Snakemake and the cluster first; the stages import pandas."""
    assert modules_imported_by("import pipeline.workflow", ("pandas", "geopandas")) == []


def test_the_summary_table_lists_the_coverage_figures() -> None:
    summary = {
        "road_km": 22.6, "directed_km": 33.3, "unique_km": 16.2, "directed_covered_km": 22.3,
        "total_km": 1404.3, "coverage_pct": 71.7, "fresh_7d_pct": 69.0, "fresh_28d_pct": 71.7,
        "fresh_90d_pct": 71.7, "fresh_365d_pct": 71.7, "weekly_driven_ratio": 21.65,
        "percent_of_world": 0.000025, "as_of": "2026-10-21T21:37:32+00:00",
    }  # fmt: skip
    lines = format_summary(summary).splitlines()
    assert lines[0].split() == ["road", "km", "(each", "road", "once)", "22.6"]
    assert lines[5].split()[-2:] == ["71.7", "%"]
    assert lines[6].endswith("69.0 / 71.7 / 71.7 / 71.7 %")
    values = [line.split("  ")[-1].lstrip() for line in lines]  # labels have no double spaces
    assert len({len(line) - len(value) for line, value in zip(lines, values, strict=True)}) == 1
    assert values[-1] == "2026-10-21T21:37:32+00:00"


def test_arguments_snakemake_refuses_end_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(DEMO_CONFIG_PATH),
         "--cores", "1", "--no-such-option"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "roadcover: error: snakemake refused its arguments '--no-such-option' (its message is "
        "above); see `python -m snakemake --help`"
    )


def test_the_serve_command_it_prints_is_quoted_for_a_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output_dir = tmp_path / "-out $(touch CANARY) 'q' ; `b` ü"
    site = output_dir / "r1" / "export" / "web"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<html></html>", encoding="utf-8")
    _print_where_to_look(output_dir, ["r1"])
    line = capsys.readouterr().err.splitlines()[-1]
    command = line.split("serve it (HTTP Range requests): ", 1)[1]
    assert shlex.split(command) == [
        "roadcover", "export", "viewer", "--serve", "--", f"{output_dir}/r1/coverage",
        f"{output_dir}/r1/export/coverage.pmtiles", f"{output_dir}/r1/export/web",
    ]  # fmt: skip
    # with the region's priorities, the served site keeps their layers
    (output_dir / "r1" / "export" / "priorities").mkdir()
    (output_dir / "r1" / "export" / "priorities" / "summary.json").write_text("{}")
    _print_where_to_look(output_dir, ["r1"])
    line = capsys.readouterr().err.splitlines()[-1]
    command = line.split("serve it (HTTP Range requests): ", 1)[1]
    assert shlex.split(command) == [
        "roadcover", "export", "viewer", "--serve", "--priorities",
        f"{output_dir}/r1/export/priorities", "--", f"{output_dir}/r1/coverage",
        f"{output_dir}/r1/export/coverage.pmtiles", f"{output_dir}/r1/export/web",
    ]  # fmt: skip


def test_a_target_outside_the_config_has_no_rule(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(DEMO_CONFIG_PATH),
         "--cores", "1", "-n", "results/demo/nowhere/coverage/summary.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "No rule to produce results/demo/nowhere/coverage/summary.json" in output
    assert "StopIteration" not in output and "Traceback" not in output
    assert result.stderr.strip().splitlines()[-1] == (
        "roadcover: error: the workflow failed; Snakemake's message is above, and the rules' "
        "logs are under results/demo/logs"
    )
