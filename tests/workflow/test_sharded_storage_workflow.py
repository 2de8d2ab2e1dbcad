"""A sharded region through ``roadcover run`` into a bucket (moto's S3 server) against disk.

The oracle is the same workflow on local disk, as in ``test_storage_workflow.py``: Monaco cut
into H3 cells at resolution 6 (5 shards), each shard built by a job of its own, the region's
tables merged from them, a simulated fleet matched on the shards and its coverage, tiles and
feed. Every file must be the same in the bucket, byte for byte, but those that name a
location, which are the same with it swapped (``results/...`` on disk; ``s3://BUCKET/run/...``
or the staging folder's ``s3/BUCKET/run/...`` in the bucket): the shards' ``meta.json`` (their
extract's path), and the files of the unsharded model test. Left out as there: logs,
benchmarks, the report; and the caches of the map matching's networks that ``snap`` writes
beside local roads folders (the region's and each shard's ``match_network.*``, and the unions' in
``shard-networks/``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.coverage.roads_stagein import ROADS_MEMO
from pipeline.io import SHA256_MEMO_SUFFIX
from tests import objectstore
from tests.objectstore import sha256_objects, store
from tests.workflow.running import capture_fd2, job_counts, run_args
from tests.workflow.test_storage_workflow import content, with_locations_swapped, without_timing

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
REGION = "monaco"
RESOLUTION = 6
NOT_COMPARED = ("logs/", "benchmarks/", "report.html")
MATCH_NETWORK = re.compile(
    rf"{REGION}/roads/(shards/[0-9a-f]+/|shard-networks/[0-9a-f]+/)?match_network\.(json|npz)"
)
PROCESS_RECORDS = "benchmarks/_process_tree/"  # kept on the machine that ran


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADCOVER_PSEUDONYM_KEY", "workflow-test-key-not-a-secret-0123")


def run_workflow(workdir: Path, output_dir: str, osm: Path) -> str:
    """``roadcover run`` of a sharded Monaco into ``output_dir``; return what it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    region = {"name": REGION, "osm": str(osm), "simulated_fleet": True, "shards": RESOLUTION}
    settings = {
        "output_dir": output_dir,
        "regions": [region],
        "simulate": {"seed": 7, "devices": 3, "days": 1},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with capture_fd2() as captured:
        status = main(run_args(workdir, config))
    assert status == 0, captured.text()[-4000:]
    return captured.text()


def local_digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".roadcover.lock"
    }


@pytest.mark.shared_data
def test_a_sharded_region_run_into_a_bucket_writes_the_files_of_a_local_run(
    bucket: str, shared_data: Path, tmp_path: Path
) -> None:
    osm = shared_data / "osm/monaco-2016.osm.pbf"
    run_workflow(tmp_path / "local", "results", osm)
    output = run_workflow(tmp_path / "bucket", f"s3://{bucket}/run", osm)
    jobs = job_counts(output)
    plan = json.loads(store().cat_file(f"{bucket}/run/{REGION}/roads/shards/plan.json"))
    assert len(plan["cells"]) >= 2
    assert jobs["cut_roads"] == 1 and jobs["merge_road_shards"] == 1
    # the shard jobs are known once the cut has run (a checkpoint): one log each
    logs = sha256_objects(f"{bucket}/run/logs/{REGION}/build_road_shard")
    assert sorted(logs) == [f"{cell}.log" for cell in plan["cells"]]

    local = tmp_path / "local" / "results"
    local_files = local_digests(local)
    local_only = [
        name
        for name in local_files
        if MATCH_NETWORK.fullmatch(name)
        or name.startswith(PROCESS_RECORDS)
        or name.endswith(SHA256_MEMO_SUFFIX)  # the roads' sha256 memo, a cache as well
    ]
    assert any(MATCH_NETWORK.fullmatch(n) and "/shards/" in n for n in local_only)
    for name in local_only:
        del local_files[name]
    in_bucket = sha256_objects(f"{bucket}/run")
    assert in_bucket.pop(f"{REGION}/coverage/{ROADS_MEMO}")  # the record of the roads' tag
    assert in_bucket.keys() == local_files.keys()  # every shard's files, logs and report too
    compared = {k: v for k, v in local_files.items() if not k.startswith(NOT_COMPARED)}
    differ = sorted(name for name, digest in compared.items() if in_bucket[name] != digest)
    # the region's roads (tables, plan, shard tables and extracts) are the same bytes
    roads = [name for name in compared if name.startswith(f"{REGION}/roads/")]
    assert f"{REGION}/roads/edges.parquet" in roads
    assert f"{REGION}/roads/shards/plan.json" in roads
    assert [name for name in differ if name in roads] == [
        f"{REGION}/roads/shards/{cell}/meta.json" for cell in plan["cells"]
    ]
    swaps = {f"s3://{bucket}/run/": "results/", f"s3/{bucket}/run/": "results/"}
    for name in differ:
        remote = with_locations_swapped(name, store().cat_file(f"{bucket}/run/{name}"), swaps)
        assert without_timing(remote) == without_timing(content(name, local / name)), name
    assert not [name for name in in_bucket if name.endswith(".roadcover.lock")]

    # Snakemake sees the bucket's outputs as done (the cut's plan read from the bucket)
    rerun = run_workflow(tmp_path / "bucket", f"s3://{bucket}/run", osm)
    assert job_counts(rerun) == {}
