"""No cold start: the kernels' cache, `roadcover warmup`, and read-only installs.

Real ``roadcover`` processes on a sample batch (the warm-up's own street grid). The read-only
package and HOME are read-only bind mounts in a private mount namespace (``unshare``), so that
they are read-only even to root; the test is skipped where namespaces are not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from dask.distributed import Client

import pipeline
from pipeline import aot
from pipeline.config import load_config
from pipeline.coverage.stage import compute_coverage
from pipeline.parallel import shared_local_cluster
from pipeline.simulate.fleet import simulate_fleet
from pipeline.warmup import kernel_signatures, run_sample_stages

ROADCOVER = [sys.executable, "-m", "pipeline.cli"]
REPO = Path(pipeline.__file__).resolve().parent.parent
TIMEOUT_S = 300
MAKE_READ_ONLY = (
    'for folder in "$1" "$2"; do mount --bind "$folder" "$folder" '
    '&& mount -o remount,bind,ro "$folder" "$folder" || exit 97; done; shift 2; exec "$@"'
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Roads, an ingested traces batch, its matched output and coverage of the warm-up's grid."""
    folder, config = tmp_path_factory.mktemp("sample"), load_config()
    with aot.disabled():  # numba's kernels, to compare the ahead-of-time ones with
        sample = run_sample_stages(folder, config)
    sample["coverage"] = folder / "coverage"
    compute_coverage(sample["roads"], [sample["matched"]], sample["coverage"], config.coverage)
    return sample


def _environment(**variables: str) -> dict[str, str]:
    """This process's environment without numba's cache settings, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.setdefault("PYTHONPATH", str(REPO))
    return {**env, **variables}


def _snap_command(sample: dict[str, Path], out_dir: Path) -> list[str]:
    return [
        *ROADCOVER, "snap", "--roads", str(sample["roads"]), "--traces", str(sample["traces"]),
        "-o", str(out_dir), "--workers", "1",
    ]  # fmt: skip


def _read_only_namespace_works(folder: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", MAKE_READ_ONLY, "sh", folder, folder, "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def _copy_package(target: Path) -> Path:
    """Copy the installed package (and the repo's configs and workflow beside it) to ``target``."""
    shutil.copytree(
        REPO / "pipeline", target / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    for folder in ("configs", "workflow"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, target / folder)
    return target


def test_snap_runs_with_read_only_package_and_home(sample: dict[str, Path], tmp_path: Path) -> None:
    """No writable cache folder: the kernels compile uncached, with one warning, no crash."""
    package = _copy_package(tmp_path / "package")
    home = tmp_path / "home"
    home.mkdir()
    if shutil.which("unshare") is None or not _read_only_namespace_works(home):
        pytest.skip("unshare cannot make a read-only bind mount here (no user namespaces)")
    command = ["unshare", "-rm", "sh", "-c", MAKE_READ_ONLY, "sh", str(package), str(home)]
    result = subprocess.run(
        [*command, *_snap_command(sample, tmp_path / "matched")],
        env=_environment(PYTHONPATH=str(package), HOME=str(home)),
        cwd=tmp_path,  # not the checkout: `python -m` imports from the working folder first
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.count("no writable cache folder") == 1
    assert (tmp_path / "matched" / "meta.json").is_file()
    assert not list(package.rglob("__pycache__/*.nbi")), "wrote into the read-only package"


def _cache_files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in folder.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NUMBA_CACHE_DIR filled by `roadcover warmup` in a fresh process."""
    cache = tmp_path_factory.mktemp("numba-cache")
    warm = subprocess.run(
        [*ROADCOVER, "warmup"], env=_environment(NUMBA_CACHE_DIR=str(cache)), cwd=cache.parent,
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert warm.returncode == 0, warm.stderr[-3000:]
    summary = json.loads(warm.stdout)
    cache_dirs = summary["cache_dirs"]
    assert cache_dirs and all(Path(folder).is_relative_to(cache) for folder in cache_dirs)
    assert Path(summary["aot_module"]).parent == cache / aot.FOLDER
    return cache


def test_after_warmup_first_stages_compile_nothing(
    sample: dict[str, Path], warm_cache: Path, tmp_path: Path
) -> None:
    """`roadcover warmup` into NUMBA_CACHE_DIR: fresh processes only load kernels from it.

    The stages with kernels: snap, simulate, and the export of where to drive next (its tours'
    routes), on the coverage of the sample's matched batch.
    """
    env = _environment(NUMBA_CACHE_DIR=str(warm_cache))
    warmed = _cache_files(warm_cache)
    assert any(name.endswith(".nbc") for name in warmed)
    debug = {**env, "NUMBA_DEBUG_CACHE": "1"}
    commands = {
        "snap": _snap_command(sample, tmp_path / "matched"),
        "simulate": [
            *ROADCOVER,
            *("simulate", "--roads", str(sample["roads"]), "-o", str(tmp_path / "simulated")),
            *("--devices", "3", "--days", "1"),
        ],
        "priorities": [
            *ROADCOVER,
            *("export", "priorities", "--roads", str(sample["roads"])),
            *("-o", str(tmp_path / "priorities"), "--", str(sample["coverage"])),
        ],
    }
    for stage, command in commands.items():
        result = subprocess.run(
            command, env=debug, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert result.returncode == 0, result.stderr[-3000:]
        output = result.stdout + result.stderr
        if stage != "snap":  # snap calls its kernels compiled ahead of time (the next test)
            assert "data loaded from" in output, f"{stage} loaded nothing from the cache"
        assert "data saved to" not in output, f"{stage} compiled a kernel the warm-up did not"
    assert _cache_files(warm_cache) == warmed


_SNAP_LISTING_MODULES = """
import atexit, json, sys
from pipeline.cli import main

atexit.register(lambda: print(json.dumps(sorted(sys.modules))))  # the command exits at once
sys.argv = ["roadcover", "snap", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("ahead_of_time", [True, False])
def test_after_warmup_snap_imports_no_numba_and_matches_byte_for_byte(
    sample: dict[str, Path], warm_cache: Path, tmp_path: Path, ahead_of_time: bool
) -> None:
    """With the module `roadcover warmup` built, snap never imports numba, and writes the same
    files as the kernels of numba's cache (the sample's own matched batch, run in-process).
    """
    env = _environment(NUMBA_CACHE_DIR=str(warm_cache))
    if not ahead_of_time:
        env[aot.AOT_ENV] = "0"  # numba's kernels, as without the module
    command = _snap_command(sample, tmp_path / "matched")
    done = subprocess.run(
        [sys.executable, "-c", _SNAP_LISTING_MODULES, *command[len(ROADCOVER) + 1 :]],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    modules = {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}
    assert ("numba" in modules, "llvmlite" in modules) == (not ahead_of_time,) * 2
    for name in ("matched_points.parquet", "matched_segments.parquet", "match_quality.parquet"):
        written = (tmp_path / "matched" / name).read_bytes()
        assert written == (sample["matched"] / name).read_bytes(), name


def test_a_fresh_dask_worker_loads_its_kernels_from_the_shared_cache(
    sample: dict[str, Path], warm_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LocalCluster's worker inherits NUMBA_CACHE_DIR: its first tasks compile nothing."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(warm_cache))
    warmed = _cache_files(warm_cache)
    fleet = replace(load_config().simulate, devices=16, days=1, formats=("csv",))  # 2 tasks
    with shared_local_cluster(1) as address, Client(address) as client:
        client.wait_for_workers(1, timeout=TIMEOUT_S)
        simulate_fleet(sample["roads"], tmp_path / "simulated", fleet, scheduler_address=address)
        (worker,) = client.run(kernel_signatures).values()
    assert all(Path(folder).is_relative_to(warm_cache) for folder in worker["cache_dirs"])
    assert worker["cache_hits"] > 0 and worker["cache_misses"] == 0
    assert _cache_files(warm_cache) == warmed
