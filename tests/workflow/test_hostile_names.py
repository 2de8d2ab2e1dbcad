"""Names a user gives (output folder, batch files and folders) never reach a shell unquoted.

The workflow runs for real on a tiny region (a Kubicka drive: its own ~150-arc road network and
its 1 Hz trace as a batch) with an output folder and a batch file and folder whose names hold
spaces, quotes, ``$(…)``, ``;``, backticks and unicode, and that start with ``-``. Were any of
them interpolated into a rule's shell command unquoted, the shell would run ``touch CANARY`` (or
fail on the split); were one taken for an option, the stage would do something else.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import WORKFLOW_DIR
from tests.workflow.running import REPO_ROOT, capture_fd2, job_counts, run_args, subprocess_env

REGION = "kubicka-05"
CANARY = "CANARY"
# one name with every character a shell treats specially, and some that are not ASCII
HOSTILE = f"a b 'single' \"double\" $(touch {CANARY}) ; `touch {CANARY}` & | > ü €"


def hostile_config(shared_data: Path, workdir: Path) -> tuple[Path, Path]:
    """Write the config and the batch; return the config and the output folder."""
    drive = shared_data / "mapmatch" / "kubicka-dev" / "00000005"
    # relative to the workdir, and starting with "-": an argument, not an option
    upload_dir = f"-uploads {HOSTILE}"
    (workdir / upload_dir).mkdir()
    shutil.copyfile(drive / "trace.csv", workdir / upload_dir / f"x{HOSTILE}.csv")
    output_dir = f"--help {HOSTILE}"
    config = {
        "output_dir": output_dir,
        "regions": [
            {"name": REGION, "osm": str(drive / "network.osm.bz2"),
             "batches": {"drive": [upload_dir]}},
        ],
        "ingest": {"contributors": [{"pattern": "*", "contributor_id": "kubicka-2015"}]},
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path, workdir / output_dir


def canaries(*folders: Path) -> list[Path]:
    return [found for folder in folders for found in folder.rglob(CANARY)]


@pytest.mark.shared_data
def test_hostile_names_are_quoted_end_to_end(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in subprocess_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # a stray `touch CANARY` would land here or in the workdir
    config, output_dir = hostile_config(shared_data, tmp_path)
    with capture_fd2() as captured:
        status = main(run_args(tmp_path, config))
    output = captured.text()
    assert status == 0, output[-4000:]
    assert canaries(tmp_path, Path.cwd()) == []
    ran = job_counts(output)
    assert ran["ingest_traces"] == 1 and ran["write_report"] == 1, output[-4000:]
    report = json.loads((output_dir / REGION / "traces" / "batches" / "drive.json").read_text())
    assert [Path(f["file"]).name for f in report["files"]] == [f"x{HOSTILE}.csv"]
    assert report["accepted"] > 0, report
    summary = json.loads((output_dir / REGION / "coverage" / "summary.json").read_text())
    assert summary["unique_km"] > 0
    assert (output_dir / "report.html").stat().st_size > 0


def shell_commands(rules_dir: Path) -> dict[str, str]:
    """Every rule's ``shell:`` text (its string literals, as written), by rule name."""
    commands: dict[str, str] = {}
    for path in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(encoding="utf-8"), flags=re.M)[1:]:
            name = block.split(":", 1)[0]
            _, _, shell = block.partition("    shell:\n")
            lines = itertools.takewhile(lambda line: line.startswith(" " * 8), shell.splitlines())
            commands[name] = "".join(ast.literal_eval(line.strip()) for line in lines)
    return commands


def test_every_shell_placeholder_is_quoted() -> None:
    commands = shell_commands(WORKFLOW_DIR / "rules")
    assert len(commands) == 12 and all(commands.values()), commands
    for rule, command in commands.items():
        fields = re.findall(r"\{[^{}]*\}", command)
        unquoted = [field for field in fields if not field.endswith(":q}")]
        assert unquoted == [], f"rule {rule}: {unquoted} reach the shell unquoted"


def test_snakemake_validates_whole_names(tmp_path: Path) -> None:
    """Snakemake's own ``validate`` (the Snakefile's) refuses a region name with a newline."""
    config = tmp_path / "config.yaml"
    region = {"name": "k5\n", "osm": "x.osm.pbf"}
    config.write_text(yaml.safe_dump({"regions": [region]}), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile",
         str(REPO_ROOT / "Snakefile"), "--configfile", str(config), "--directory", str(tmp_path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'k5\\n' does not match" in result.stdout + result.stderr
