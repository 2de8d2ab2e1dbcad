"""A releases folder with ``latest.json``: one writer at a time, and a bad pointer refused."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import EXIT_ERROR, main
from pipeline.export.feeds import export_feed, publish_release, verify_release
from pipeline.locking import LockTimeoutError, folder_lock
from tests.export.coverage_builder import helsinki_coverage

TIMEOUT_S = 300
UNREADABLE = "not a readable release pointer"


@pytest.fixture(scope="module")
def coverage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helsinki_coverage(tmp_path_factory)


def feed_command(coverage: Path, releases: Path, release_id: str) -> list[str]:
    """The CLI command that exports ``coverage`` as ``release_id`` and moves latest.json."""
    return [
        sys.executable, "-m", "pipeline.cli", "export", "feed", str(coverage),
        "--roads", str(coverage.parent / "roads"), "-o", str(releases),
        "--latest", str(releases / "latest.json"), "--release-id", release_id,
    ]  # fmt: skip


def manifest(release: Path) -> dict:
    return json.loads((release / "manifest.json").read_text())


def test_two_concurrent_feeds_into_one_folder_publish_one_after_the_other(
    coverage: Path, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [
        subprocess.Popen(
            feed_command(coverage, releases, name), env=env, stderr=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    errors = [run.communicate(timeout=TIMEOUT_S)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors

    for name in ("a", "b"):
        assert verify_release(releases / name) == [], name
    latest = json.loads((releases / "latest.json").read_text())
    last, first = (("a", "b"), ("b", "a"))[latest["release_id"] == "b"]
    assert latest == {"release_id": last, "path": str(releases / last)}
    # the second writer saw the first's pointer: its delta is against the first's release
    assert manifest(releases / last)["previous_release"]["release_id"] == first
    assert manifest(releases / first)["previous_release"] is None
    assert sorted(p.name for p in releases.iterdir()) == [
        ".roadcover.lock",
        "a",
        "b",
        "latest.json",
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            b'{"release_id": "a"',
            "not a readable release pointer (not JSON: Expecting ',' delimiter",
        ),
        (b"\x80\x81garbage", "not a readable release pointer (not UTF-8 text)"),
        (b"", "not a readable release pointer (not JSON: Expecting value at line 1 column 1)"),
        (b'["a"]', "no valid release_id in the pointer"),
        (b'{"release_id": "../../elsewhere"}', "no valid release_id in the pointer"),
        (b'{"release_id": 7}', "no valid release_id in the pointer"),
        (b'{"release_id": "gone"}', "names release 'gone', but"),
    ],
)
def test_a_malformed_latest_json_is_one_line_naming_the_file_and_the_fix(
    content: bytes, says: str, coverage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    latest = releases / "latest.json"
    latest.write_bytes(content)
    assert main(feed_command(coverage, releases, "new")[3:]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"roadcover: error: {latest}: {says}")
    assert "delete it to export without a previous release" in err and "\n" not in err
    assert latest.read_bytes() == content
    assert not (releases / "new").exists()


def test_a_non_json_latest_json_exits_1_without_a_traceback(coverage: Path, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "latest.json").write_text("<html>not json</html>")
    result = subprocess.run(
        feed_command(coverage, releases, "new"),
        capture_output=True, text=True, check=False, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == EXIT_ERROR
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"roadcover: error: {releases / 'latest.json'}: not a readable release pointer")
    )


def test_the_pointer_naming_this_release_means_nothing_to_do(
    coverage: Path, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    assert publish_release(coverage, coverage.parent / "roads", releases, releases / "l.json", "a")
    assert (
        publish_release(coverage, coverage.parent / "roads", releases, releases / "l.json", "a")
        is None
    )


def _hold_lock(folder: str, held: multiprocessing.synchronize.Event, seconds: float) -> None:
    with folder_lock(Path(folder)):
        held.set()
        time.sleep(seconds)


def test_an_export_waits_for_the_releases_folder_lock(coverage: Path, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(releases), held, 30))
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(LockTimeoutError, match="another roadcover process"):
            publish_release(
                coverage, coverage.parent / "roads", releases, releases / "latest.json", "a",
                lock_timeout_s=0.5,
            )  # fmt: skip
    finally:
        holder.kill()
        holder.join(10)
    assert not (releases / "a").exists() and not (releases / "latest.json").exists()


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(
    coverage: Path, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    dead = releases / ".a.k2j3.tmp" / "segments"
    dead.mkdir(parents=True)
    (dead / "part-0.parquet").write_bytes(b"half written")
    publish_release(coverage, coverage.parent / "roads", releases, releases / "latest.json", "b")
    assert not (releases / ".a.k2j3.tmp").exists()
    assert verify_release(releases / "b") == []


def file_bytes(release: Path) -> dict[str, bytes]:
    return {p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*")
            if p.is_file()}  # fmt: skip


def test_an_export_stopped_before_moving_the_pointer_completes_when_run_again(
    coverage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases, roads = tmp_path / "releases", coverage.parent / "roads"
    assert main(feed_command(coverage, releases, "a")[3:]) == 0
    # what a kill between renaming release b into place and writing the pointer leaves behind
    export_feed(coverage, roads, releases, "b", previous=releases / "a")
    before = file_bytes(releases / "b")
    assert main(feed_command(coverage, releases, "b")[3:]) == 0, capsys.readouterr().err
    latest = json.loads((releases / "latest.json").read_text())
    assert latest == {"release_id": "b", "path": str(releases / "b")}
    assert file_bytes(releases / "b") == before
    assert sorted(p.name for p in releases.iterdir()) == [
        ".roadcover.lock", "a", "b", "latest.json"
    ]  # fmt: skip


def test_another_release_under_the_same_id_is_refused(
    coverage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases, roads = tmp_path / "releases", coverage.parent / "roads"
    export_feed(coverage, roads, releases, "b", formats=("geoparquet", "csv"))
    before = file_bytes(releases / "b")
    assert main(feed_command(coverage, releases, "b")[3:]) == EXIT_ERROR
    assert capsys.readouterr().err.strip() == (
        f"roadcover: error: {releases / 'b'}: release 'b' already exists and is not the release "
        "this export writes; releases are immutable, choose another --release-id"
    )
    assert file_bytes(releases / "b") == before
    assert not (releases / "latest.json").exists()
