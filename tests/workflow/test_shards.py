"""The workflow on a sharded region: one job per shard, and the region's roads as unsharded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from pipeline.roads import read_edges, read_roads_meta
from tests.workflow.running import job_counts, run_args, subprocess_env


def test_a_sharded_region_builds_each_shard_in_a_job_and_the_region_as_unsharded(
    tiny_osm: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "output_dir: results\nregions:\n"
        f"  - {{name: sharded, osm: '{tiny_osm}', shards: 10}}\n"
        f"  - {{name: whole, osm: '{tiny_osm}'}}\n"
    )
    targets = ("results/sharded/roads/meta.json", "results/whole/roads/meta.json")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *run_args(tmp_path, config, targets=targets)],
        capture_output=True, text=True, env=subprocess_env(), check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    cells = read_roads_meta(tmp_path / "results/sharded/roads")["shards"]["cells"]
    assert len(cells) > 1
    jobs = job_counts(output)
    assert jobs.get("cut_roads") == 1 and jobs.get("merge_road_shards") == 1
    assert jobs.get("build_roads") == 1  # the unsharded region only
    pd.testing.assert_frame_equal(
        pd.DataFrame(read_edges(tmp_path / "results/sharded/roads")),
        pd.DataFrame(read_edges(tmp_path / "results/whole/roads")),
    )
    for cell in cells:
        log = tmp_path / "results/logs/sharded/build_road_shard" / f"{cell['cell']}.log"
        assert log.exists()
