"""Object storage (pipeline/storage.py) against a real S3 API: moto's server on a free port.

Stages are run as real commands on ``s3://`` URLs and compared with the same command on local
folders (the oracle); concurrency tests use real processes. gs:// has no emulator that runs
here: only its URL resolution is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import StorageSettings
from pipeline.errors import ConfigError, InputDataError
from pipeline.locking import LockTimeoutError
from pipeline.storage import (
    PrefixLock,
    Staging,
    check_location,
    filesystem,
    is_url,
    join,
    local_files,
    plan_publish,
    prefix_lock,
)
from tests import objectstore
from tests.objectstore import sha256_objects, store

s3_endpoint, bucket = objectstore.s3_endpoint, objectstore.bucket  # the fixtures
REPO = Path(__file__).resolve().parents[1]
WAIT_S = 60.0


def sha256_tree(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".roadcover.lock"
    }


# --- locations ---------------------------------------------------------------------------------


def test_urls_and_paths_are_told_apart() -> None:
    assert is_url("s3://bucket/folder") and is_url("gs://bucket/folder")
    assert not is_url("results/s3:/x") and not is_url("/data/run") and not is_url("s3:bucket")
    assert join("s3://b/run/", "helsinki", "roads") == "s3://b/run/helsinki/roads"
    assert join("results", "helsinki") == str(Path("results", "helsinki"))


@pytest.mark.parametrize(
    ("location", "fix"),
    [("ftp://host/x", "use a local path, s3:// or gs://"), ("s3:///folder", "no bucket")],
)
def test_unsupported_locations_are_refused(location: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        check_location(location)


def test_gs_url_resolves_to_gcsfs() -> None:
    """No GCS emulator runs here: the URL's file system and path only (no request is made)."""
    gcsfs = pytest.importorskip("gcsfs")
    fs, path = filesystem("gs://my-bucket/runs/one/", StorageSettings())
    assert isinstance(fs, gcsfs.GCSFileSystem)
    assert path == "my-bucket/runs/one"


# --- publishing order --------------------------------------------------------------------------


def test_publish_plan_puts_commit_records_last() -> None:
    before = {"meta.json": "m1", "edges.parquet": "e1", "old.parquet": "o1"}
    now = {"meta.json": "m2", "edges.parquet": "e2", "nodes.parquet": "n1"}
    plan = plan_publish(now, before)
    # an overwritten data file: the old commit record goes first, the new one last
    assert plan.retract == ["meta.json"]
    assert plan.data == ["edges.parquet", "nodes.parquet"]
    assert plan.commits == ["meta.json"]
    assert plan.removed == ["old.parquet"]


def test_publish_plan_of_new_files_keeps_the_commit_record_until_the_new_one() -> None:
    """Versioned state (coverage) adds new files only: CURRENT.json is replaced, not retracted."""
    before = {"state/CURRENT.json": "c1", "state/v1/edges.parquet": "a"}
    now = {**before, "state/CURRENT.json": "c2", "state/v2/edges.parquet": "b"}
    plan = plan_publish(now, before)
    assert plan.retract == [] and plan.data == ["state/v2/edges.parquet"]
    assert plan.commits == ["state/CURRENT.json"] and plan.removed == []


def test_caches_locks_and_temporaries_are_not_published(tmp_path: Path) -> None:
    names = [
        "meta.json", "shards/c1/edges.parquet", ".roadcover.lock",
        ".staging/x", ".edges.parquet.x1y2.tmp", "shard-networks/0a1b/match_network.npz",
        "shard-networks/0a1b/.roadcover.lock",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(local_files(tmp_path)) == ["meta.json", "shards/c1/edges.parquet"]


# --- stages on URLs ----------------------------------------------------------------------------


def test_roads_build_into_a_bucket_gives_the_local_files(
    bucket: str, tiny_osm: Path, tmp_path: Path
) -> None:
    assert main(["roads", "build", str(tiny_osm), "-o", str(tmp_path / "roads")]) == 0
    assert main(["roads", "build", str(tiny_osm), "-o", f"s3://{bucket}/run/roads"]) == 0
    assert sha256_objects(f"{bucket}/run/roads") == sha256_tree(tmp_path / "roads")
    # read back from the bucket by the next stage: a simulation on the URL's roads
    local_sim, remote_sim = tmp_path / "sim-local", f"s3://{bucket}/run/fleet"
    options = ["--devices", "2", "--days", "1", "--seed", "3", "--workers", "1"]
    local_roads, remote_roads = str(tmp_path / "roads"), f"s3://{bucket}/run/roads"
    assert main(["simulate", "--roads", local_roads, "-o", str(local_sim), *options]) == 0
    assert main(["simulate", "--roads", remote_roads, "-o", remote_sim, *options]) == 0
    assert sha256_objects(f"{bucket}/run/fleet") == sha256_tree(local_sim)


def test_a_missing_input_prefix_is_one_line(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["simulate", "--roads", f"s3://{bucket}/nothing", "-o", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert status == 1
    expected = f"s3://{bucket}/nothing: no such folder (no object under this prefix)"
    assert err == f"roadcover: error: {expected}"


def test_a_folder_without_the_file_a_stage_reads_names_it(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store().pipe_file(f"{bucket}/half/nodes.parquet", b"not the roads' meta.json")
    status = main(["simulate", "--roads", f"s3://{bucket}/half", "-o", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert status == 1
    expected = f"s3://{bucket}/half: none of meta.json in this folder; run the stage that writes it"
    assert err == f"roadcover: error: {expected}"


def test_storage_get_copies_an_object(bucket: str, tmp_path: Path) -> None:
    store().pipe_file(f"{bucket}/a/meta.json", b'{"x": 1}')
    target = tmp_path / "deep" / "meta.json"
    assert main(["storage", "get", "--", f"s3://{bucket}/a/meta.json", str(target)]) == 0
    assert target.read_bytes() == b'{"x": 1}'


def test_a_folder_staged_by_its_records_publishes_what_the_stage_wrote_and_removed(
    bucket: str,
) -> None:
    fs, prefix = store(), f"{bucket}/partial"
    objects = {"CURRENT.json": b"1", "a/read.txt": b"a", "b/kept.txt": b"b", "c/old.txt": b"c",
               "d/rewritten.txt": b"d", "e/missing.txt": b"e"}  # fmt: skip
    for name, body in objects.items():
        fs.pipe_file(f"{prefix}/{name}", body)
    with Staging() as staging:
        local = staging.output_folder(f"s3://{prefix}", records=["CURRENT.json"])
        assert sorted(local_files(local)) == ["CURRENT.json"]
        assert staging.fetch(local, ["a/read.txt"]) == ["a/read.txt"]
        with pytest.raises(InputDataError, match="no object f/never.txt"):
            staging.fetch(local, ["f/never.txt"])
        fs.rm(f"{prefix}/e/missing.txt")  # listed, then gone
        with pytest.raises(InputDataError, match="no object e/missing.txt"):
            staging.fetch(local, ["e/missing.txt"])
        (local / "a" / "read.txt").unlink()  # removed by the stage: deleted
        (local / "d").mkdir()
        (local / "d" / "rewritten.txt").write_bytes(b"D")  # written without reading: uploaded
        (local / "CURRENT.json").write_bytes(b"2")
        staging.prune_with(local, lambda names: [name for name in names if name.startswith("c/")])
    kept = {"CURRENT.json": b"2", "b/kept.txt": b"b", "d/rewritten.txt": b"D"}  # not c/old.txt
    assert sha256_objects(prefix) == {n: hashlib.sha256(b).hexdigest() for n, b in kept.items()}


# --- one writer per prefix ---------------------------------------------------------------------

COUNTER_WRITER = textwrap.dedent(
    """
    import sys, time
    from pipeline.config import StorageSettings
    from pipeline.storage import filesystem, prefix_lock
    location, rounds = sys.argv[1], int(sys.argv[2])
    fs, prefix = filesystem(location, StorageSettings())
    for _ in range(rounds):
        with prefix_lock(location, StorageSettings(lock_lease_s=30), timeout_s=60):
            value = int(fs.cat_file(prefix + "/counter")) if fs.exists(prefix + "/counter") else 0
            time.sleep(0.05)  # read-modify-write: lost updates without the lock
            fs.pipe_file(prefix + "/counter", str(value + 1).encode())
            fs.invalidate_cache()
    """
)


def test_two_writers_on_one_prefix_take_turns(bucket: str) -> None:
    location, rounds = f"s3://{bucket}/shared", 6
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", COUNTER_WRITER, location, str(rounds)], env=env)
        for _ in range(2)
    ]
    assert [writer.wait(timeout=WAIT_S * 2) for writer in writers] == [0, 0]
    assert store().cat_file(f"{bucket}/shared/counter") == str(2 * rounds).encode()
    assert not store().exists(f"{bucket}/shared/.roadcover.lock")  # released


def test_a_held_prefix_refuses_a_second_writer_naming_the_holder(bucket: str) -> None:
    location = f"s3://{bucket}/held"
    holder = rf"pid {os.getpid()} on .*gave up after 0 s"
    with prefix_lock(location, StorageSettings(), timeout_s=0):
        second = prefix_lock(location, StorageSettings(), timeout_s=0)
        with pytest.raises(LockTimeoutError, match=holder):
            second.__enter__()


def test_a_held_lock_is_renewed_past_its_lease(bucket: str) -> None:
    """A writer working longer than the lease keeps its lock: renewed every quarter lease."""
    location, settings = f"s3://{bucket}/renewed", StorageSettings(lock_lease_s=2.0)
    with prefix_lock(location, settings, timeout_s=0) as lock:
        time.sleep(5.0)
        second = prefix_lock(location, settings, timeout_s=0)
        with pytest.raises(LockTimeoutError, match="another roadcover process"):
            second.__enter__()
        lock.check()  # not taken over


def test_an_expired_lock_is_taken_over_once(bucket: str) -> None:
    """A killed writer's lock expires; of two writers taking it over (If-Match), one wins."""
    fs, prefix = filesystem(f"s3://{bucket}/stale", StorageSettings())
    stale = {"host": "gone", "pid": 1, "acquired_at": 0, "expires_at": time.time() - 1}
    fs.pipe_file(f"{prefix}/.roadcover.lock", json.dumps(stale).encode())
    stale_tag = fs.info(f"{prefix}/.roadcover.lock")["ETag"]
    first, second = (PrefixLock(fs, prefix, 30, "stale") for _ in range(2))
    assert first._try_take_over(stale_tag)
    assert not second._try_take_over(stale_tag)
    with pytest.raises(LockTimeoutError, match="another roadcover process"):
        second.acquire(timeout_s=0)  # the new holder's lease runs: no take-over
    first.release()


# --- a killed upload ---------------------------------------------------------------------------

PUBLISHER = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path
    from pipeline.config import StorageSettings
    from pipeline.storage import download_folder, filesystem, prefix_lock, publish_folder
    location, folder, version, parts = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    fs, prefix = filesystem(location, StorageSettings())
    with prefix_lock(location, StorageSettings(), timeout_s=60) as lock:
        before = download_folder(fs, prefix, folder)
        files = {}
        for i in range(parts):
            data = f"{version} part {i}".encode() * 200
            (folder / f"part-{i:03d}.parquet").write_bytes(data)
            files[f"part-{i:03d}.parquet"] = hashlib.sha256(data).hexdigest()
        (folder / "meta.json").write_text(json.dumps(files))
        publish_folder(folder, fs, prefix, before, lock)
    """
)


def publish(location: str, folder: Path, version: str, parts: int) -> subprocess.Popen[bytes]:
    """A process publishing ``parts`` data files and a meta.json listing them to a prefix."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", PUBLISHER, location, str(folder), version, str(parts)]
    return subprocess.Popen(command, env=env)


def committed_and_consistent(prefix: str) -> str | None:
    """The version meta.json commits, after checking every file it lists is there as listed."""
    fs = store()
    fs.invalidate_cache()
    if not fs.exists(f"{prefix}/meta.json"):
        return None
    listed = json.loads(fs.cat_file(f"{prefix}/meta.json"))
    objects = sha256_objects(prefix)
    assert all(objects.get(name) == digest for name, digest in listed.items())
    return fs.cat_file(f"{prefix}/{sorted(listed)[0]}").decode().split(" ")[0]


def kill_once_uploading(process: subprocess.Popen[bytes], prefix: str, before: int) -> None:
    """SIGKILL ``process`` once the prefix holds 20 objects more than ``before``.

    The uploads run concurrently: by then some of the overwritten files have landed too.
    """
    fs, deadline = store(), time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        fs.invalidate_cache()
        if len(fs.find(prefix)) >= before + 20:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=WAIT_S)


def test_a_killed_upload_leaves_no_half_committed_folder(bucket: str, tmp_path: Path) -> None:
    location, prefix = f"s3://{bucket}/release", f"{bucket}/release"
    first = publish(location, tmp_path / "v1", "v1", 100)
    assert first.wait(timeout=WAIT_S * 2) == 0
    assert committed_and_consistent(prefix) == "v1"
    count = len(store().find(prefix))
    # v2 overwrites v1's parts and adds as many: killed once its new parts start to appear,
    # v1's meta.json must not name v2's parts
    second = publish(location, tmp_path / "v2", "v2", 200)
    kill_once_uploading(second, prefix, count)
    assert second.returncode == -signal.SIGKILL
    assert committed_and_consistent(prefix) in (None, "v1")  # never v2's half, never a mix
    # the killed writer's lock stays until its lease ends; a rerun after it commits v2 whole
    fs, bare = filesystem(location, StorageSettings())
    holder = json.loads(fs.cat_file(f"{bare}/.roadcover.lock"))
    fs.pipe_file(f"{bare}/.roadcover.lock", json.dumps({**holder, "expires_at": 0}).encode())
    third = publish(location, tmp_path / "v3", "v2", 200)
    assert third.wait(timeout=WAIT_S * 2) == 0
    assert committed_and_consistent(prefix) == "v2"


def test_an_object_tag_names_its_bytes(bucket: str, tmp_path: Path) -> None:
    """Two objects of the same bytes have one tag; other bytes (even as long) another."""
    fs = store()
    fs.pipe(f"{bucket}/a/edges.parquet", b"0123456789")
    fs.pipe(f"{bucket}/b/edges.parquet", b"0123456789")
    with Staging() as staging:
        first = staging.object_tag(f"s3://{bucket}/a/edges.parquet")
        assert first is not None and first.endswith(":10")
        assert staging.object_tag(f"s3://{bucket}/b/edges.parquet") == first
        staging.input_folder(f"s3://{bucket}/b")  # listed: s3fs caches the listing
        fs.pipe(f"{bucket}/b/edges.parquet", b"0123456780")  # rewritten: not the cached answer
        assert staging.object_tag(f"s3://{bucket}/b/edges.parquet") not in (first, None)
        assert staging.object_tag(f"s3://{bucket}/c/edges.parquet") is None  # no such object
        assert staging.object_tag(tmp_path / "edges.parquet") is None  # a path: no tag
