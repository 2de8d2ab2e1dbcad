"""``roadcover warmup``: compile every kernel the stages use into numba's cache, once.

A kernel is compiled for the argument types it is called with, so the surest way to compile
all the signatures the stages use is to run the stages: the warm-up builds a small street grid
(:func:`write_grid_osm`), simulates a fleet on it, ingests and matches the traces, in a
temporary folder and in this process. Afterwards a fresh process (a stage, a Dask worker)
loads the machine code from the cache instead of compiling it (see :mod:`pipeline.jit` for
where the cache is). Then it compiles the snap stage's kernels ahead of time, for the
argument types the sample's stage called them with, into an extension module beside the
cache (:mod:`pipeline.aot`). ``make install`` and the container image run it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import aot
from pipeline.config import Settings, load_config
from pipeline.jit import aot_kernels, dispatcher_of

log = logging.getLogger(__name__)

# the modules holding the stages' kernels (the UBODT builder is not used by the stages)
KERNEL_MODULES = ("pipeline.simulate.drive_kernels", *aot.SOURCE_MODULES)
GRID_SIZE = 8  # streets each way
GRID_STEP_DEG = (0.0015, 0.003)  # (lat, lon): about 167 m each way at 60° N
GRID_ORIGIN = (60.17, 24.94)
PSEUDONYM_KEY = "warmup-key-not-a-secret-0123456789"


def warm_up(config: Settings | None = None, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the kernels' stages on a small sample so numba compiles and caches them.

    Parameters
    ----------
    config
        Settings whose simulate, ingest and snap parameters are used (default: the demo's).
    work_dir
        Folder for the sample's files (default: a temporary folder, removed afterwards).

    Returns
    -------
    ``kernels`` and ``signatures`` compiled or loaded, ``cache_dirs`` they are cached in
    (empty when nothing is writable) and ``seconds``.
    """
    config = config or load_config()
    start = time.perf_counter()
    with aot.disabled():  # every kernel through numba, compiled for the stages' argument types
        if work_dir is None:
            with tempfile.TemporaryDirectory(prefix="roadcover-warmup-") as folder:
                run_sample_stages(Path(folder), config)
        else:
            run_sample_stages(work_dir, config)
    module = build_aot_module()
    summary = {
        **kernel_signatures(),
        "aot_module": str(module) if module else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    log.info(
        "warmup: %d kernels, %d signatures, cached in %s, ahead-of-time module %s, %.1f s",
        summary["kernels"],
        summary["signatures"],
        ", ".join(summary["cache_dirs"]) or "nothing (no writable cache folder)",
        summary["aot_module"] or "not built",
        summary["seconds"],
    )
    return summary


def build_aot_module() -> Path | None:
    """Compile the snap stage's kernels ahead of time (:mod:`pipeline.aot`); the module's path.

    For the argument types the sample's stages called them with (run before this).
    """
    import importlib

    for module in aot.SOURCE_MODULES:  # imported: their aot=True kernels declared
        importlib.import_module(module)
    return aot.build({kernel.__name__: dispatcher_of(kernel) for kernel in aot_kernels()})


def run_sample_stages(work_dir: Path, config: Settings) -> dict[str, Path]:
    """Build, simulate, ingest and match a small street grid in ``work_dir``; its folders.

    Everything runs in this process (one worker), so its kernels are compiled here.
    """
    from pipeline.ingest.stage import ingest_traces
    from pipeline.roads import build_roads
    from pipeline.simulate.fleet import simulate_fleet
    from pipeline.snap.stage import snap_traces

    folders = {name: work_dir / name for name in ("roads", "simulated", "traces", "matched")}
    osm_path = write_grid_osm(work_dir / "grid.osm")
    build_roads(osm_path, folders["roads"], network="drive")
    simulate = replace(
        config.simulate, devices=4, days=1, trips_per_device_day=2.0, formats=("parquet",)
    )
    simulate_fleet(folders["roads"], folders["simulated"], simulate, workers=1, overwrite=True)
    key_file = work_dir / "pseudonym.key"
    key_file.write_text(PSEUDONYM_KEY)
    ingest = replace(config.ingest, workers=1, pseudonym_key_file=str(key_file))
    report = ingest_traces([folders["simulated"] / "traces"], folders["traces"], ingest)
    snap = replace(config.snap, workers=1)
    snap_traces(folders["roads"], folders["traces"], folders["matched"], snap, report["batch_id"])
    compile_rare_paths()
    return folders


def compile_rare_paths() -> None:
    """Call the kernels that only some data reach (a sample may miss them) as the stages do.

    Also the export's: where-to-drive-next routes its tours with the matcher's shortest-path
    kernel, called with arrays of its own (another signature than the simulator's).
    """
    import networkx as nx

    from pipeline.export.tours import RouteFinder
    from pipeline.snap.group_stats import group_sums

    group_sums(np.array([1.0, np.nan, 2.0]), np.array([0, 2, 3]))  # a fix left unmatched
    street = nx.MultiDiGraph([(1, 2, {"length_m": 100.0}), (2, 1, {"length_m": 100.0})])
    RouteFinder(street).distance(1, 2)


def write_grid_osm(path: Path) -> Path:
    """Write an OSM XML street grid of ``GRID_SIZE`` x ``GRID_SIZE`` two-way residential streets."""
    size = GRID_SIZE
    nodes = [
        f'  <node id="{row * size + col + 1}" version="1" '
        f'lat="{GRID_ORIGIN[0] + row * GRID_STEP_DEG[0]:.7f}" '
        f'lon="{GRID_ORIGIN[1] + col * GRID_STEP_DEG[1]:.7f}"/>'
        for row in range(size)
        for col in range(size)
    ]
    rows = [[row * size + col + 1 for col in range(size)] for row in range(size)]
    columns = [[row * size + col + 1 for row in range(size)] for col in range(size)]
    ways = [
        f'  <way id="{1000 + i}" version="1">'
        + "".join(f'<nd ref="{node}"/>' for node in street)
        + '<tag k="highway" v="residential"/><tag k="maxspeed" v="40"/></way>'
        for i, street in enumerate(rows + columns)
    ]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<osm version="0.6" generator="roadcover warmup">',
        *nodes,
        *ways,
        "</osm>",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def kernel_signatures() -> dict[str, Any]:
    """Count the kernels of :data:`KERNEL_MODULES` and their compiled signatures in this process.

    Returns
    -------
    ``kernels`` (with at least one signature), ``signatures``, ``by_kernel`` (name to count),
    ``cache_dirs`` (the folders their caches are in), and ``cache_hits`` and ``cache_misses``
    (signatures loaded from the cache, and compiled for want of a cache entry).
    """
    import importlib

    from numba.core.registry import CPUDispatcher

    by_kernel: dict[str, int] = {}
    cache_dirs: set[str] = set()
    hits = misses = 0
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.__module__ == module_name:
                by_kernel[f"{module_name}.{name}"] = len(value.signatures)
                hits += sum(value.stats.cache_hits.values())
                misses += sum(value.stats.cache_misses.values())
                cache_path = getattr(getattr(value, "_cache", None), "cache_path", None)
                if value.signatures and cache_path:
                    cache_dirs.add(str(cache_path))
    return {
        "kernels": sum(1 for count in by_kernel.values() if count),
        "signatures": sum(by_kernel.values()),
        "by_kernel": by_kernel,
        "cache_dirs": sorted(cache_dirs),
        "cache_hits": hits,
        "cache_misses": misses,
    }
