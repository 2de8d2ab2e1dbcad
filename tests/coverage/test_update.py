"""Updates one by one give one update's outputs, rewrite only what they touch, migrate old states.

Monaco's roads cut into partitions of H3 resolution 8. Every drive covers its edge fully, so
the directed covered and driven km are sums of the edges' lengths, counted here by hand. The
rollup of the layout before ``road_cover`` was kept by partition (a region table of every
covered road piece and of every driven edge) is made by hand from a state of this layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.coverage.edge_reader import read_edge_table
from pipeline.coverage.intervals import to_mm
from pipeline.coverage.stage import compute_coverage
from pipeline.roads import read_edges
from tests.builders import full_drives, write_matched_batch

LEVEL = 7  # the partition resolution
SETTINGS = dataclasses.replace(load_config().coverage, partition_resolution=LEVEL)
WHEN = pd.Timestamp("2026-09-01T08:00Z")
OUTPUTS = ("edge_coverage", "cell_coverage", "cell_freshness", "coarse_cells")


@pytest.fixture(scope="module")
def edges(monaco_roads: Path) -> pd.DataFrame:
    return read_edges(monaco_roads)


@pytest.fixture(scope="module")
def batches(monaco_roads: Path, edges: pd.DataFrame, tmp_path_factory) -> list[Path]:
    """Two batches of 10 trips of 6 random edges each (one edge may be driven again).

    The first over all Monaco, the second over the edges that start in one H3 cell at the
    partition resolution (so that it leaves some of the first's partitions untouched).
    """
    rng = np.random.default_rng(11)
    start = [
        h3.latlng_to_cell(lat, lng, LEVEL) for lng, lat in (g.coords[0] for g in edges.geometry)
    ]
    one_cell = edges[np.asarray(start) == pd.Series(start).mode()[0]]
    folders = []
    for number, pool in enumerate([edges, one_cell]):
        picked = pool.iloc[rng.choice(len(pool), 60)]
        trips = [f"b{number}-t{i // 6}" for i in range(len(picked))]
        folder = tmp_path_factory.mktemp(f"batch{number}")
        minutes = [number * 24 * 60 + i for i in range(len(picked))]  # a day apart
        write_matched_batch(
            folder, edges, full_drives(picked, trips, minutes, WHEN), roads_dir=monaco_roads
        )
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def at_once(monaco_roads: Path, batches: list[Path], tmp_path_factory) -> Path:
    """A coverage folder of one update of every batch (read it only)."""
    folder = tmp_path_factory.mktemp("once")
    compute_coverage(monaco_roads, batches, folder, SETTINGS)
    return folder


def run(roads: Path, at_once: Path, updates: list[list[Path]], folder: Path) -> Path:
    """Apply each list of matched folders as one update into ``folder``; return it.

    The network's cache is copied from ``at_once`` (computed once).
    """
    shutil.copytree(at_once / "network", folder / "network")
    for matched in updates:
        compute_coverage(roads, matched, folder, SETTINGS)
    return folder


def pointer(folder: Path) -> dict:
    return json.loads((folder / "state" / "CURRENT.json").read_text())


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the summary and of every edge and cell table the pointer names."""
    named = pointer(folder)
    state = folder / "state"
    files = {"summary": folder / "summary.json"}
    files["coarse_cells"] = state / "rollup" / named["rollup"] / "coarse_cells.parquet"
    for key, generation in named["parts"].items():
        files[f"{key}/edge"] = state / "parts" / key / generation / "edge_coverage.parquet"
    for key, generation in named["cell_parts"].items():
        for name in ("cell_coverage", "cell_freshness"):
            files[f"{key}/{name}"] = state / "parts" / key / generation / f"{name}.parquet"
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def state_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((folder / "state").rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def driven_edges(batches: list[Path]) -> pd.DataFrame:
    segments = [pq.read_table(b / "matched_segments.parquet").to_pandas() for b in batches]
    return pd.concat(segments, ignore_index=True)


@pytest.mark.shared_data
def test_updates_one_by_one_give_the_outputs_of_one_update_of_every_batch(
    monaco_roads: Path, batches: list[Path], at_once: Path, edges: pd.DataFrame, tmp_path: Path
) -> None:
    one_by_one = run(monaco_roads, at_once, [[b] for b in batches], tmp_path / "each")
    second = pointer(one_by_one)["version"]
    left = [key for key, gen in pointer(one_by_one)["parts"].items() if gen != second]
    covered = read_edge_table(one_by_one, ["covered_m"], left)["covered_m"].to_numpy()
    assert covered.sum() > 0  # the second update left partitions of the first's untouched
    assert output_hashes(one_by_one) == output_hashes(at_once)
    summary = json.loads((one_by_one / "summary.json").read_text())
    segments = driven_edges(batches)
    length = edges.set_index("edge_id")["length_m"]
    distinct = segments["edge_id"].unique()  # each edge covered fully, in its direction
    assert summary["directed_covered_km"] == int(to_mm(length.loc[distinct]).sum()) / 1e6
    assert summary["total_km"] == int(to_mm(length.loc[segments["edge_id"]]).sum()) / 1e6


@pytest.mark.shared_data
def test_an_update_rewrites_the_files_of_the_partitions_it_touches_alone(
    monaco_roads: Path, at_once: Path, edges: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "coverage"
    shutil.copytree(at_once, folder)
    before, named = state_hashes(folder), pointer(folder)
    edge = _edge_in_one_cell(edges, LEVEL, set(named["parts"]))
    matched = write_matched_batch(
        tmp_path / "one", edges, full_drives(edge, ["late-trip"], [5 * 24 * 60], WHEN),
        roads_dir=monaco_roads,
    )  # fmt: skip
    compute_coverage(monaco_roads, [matched], folder, SETTINGS)
    after = pointer(folder)
    cell = h3.latlng_to_cell(*reversed(edge.geometry.iloc[0].coords[0]), LEVEL)
    key = f"r{LEVEL}-{cell}"
    changed = {k for k, gen in after["parts"].items() if gen != named["parts"][k]}
    changed_cells = {k for k, gen in after["cell_parts"].items() if gen != named["cell_parts"][k]}
    assert changed == changed_cells == {key}
    version = after["version"]
    new = {path for path, sha in state_hashes(folder).items() if before.get(path) != sha}
    allowed = (
        f"state/parts/{key}/{version}/",
        f"state/rollup/{version}/",
        f"state/trips/{version}/",
    )
    assert new - {"state/CURRENT.json"} and all(
        path == "state/CURRENT.json" or path.startswith(allowed) for path in new
    ), sorted(new)
    rollup = folder / "state" / "rollup" / version
    assert not (rollup / "road_cover.parquet").exists()
    assert not (rollup / "edge_totals.parquet").exists()  # no table of every driven edge
    by_part = pq.read_table(rollup / "part_highway.parquet").to_pandas()
    assert len(by_part) <= len(after["parts"]) * edges["highway"].nunique()


def _edge_in_one_cell(edges: pd.DataFrame, level: int, keys: set[str]) -> pd.DataFrame:
    """Return (as a frame) an edge of 20 m or more whose every vertex is in one cell at level."""
    for row in edges.itertuples():
        cells = {h3.latlng_to_cell(lat, lng, level) for lng, lat in row.geometry.coords}
        if row.length_m >= 20 and len(cells) == 1 and f"r{level}-{cells.pop()}" in keys:
            return edges.loc[[row.Index]]
    raise AssertionError("no edge lies in one cell")


@pytest.mark.shared_data
def test_a_state_of_the_old_layout_is_migrated_by_its_next_update(
    monaco_roads: Path, batches: list[Path], at_once: Path, tmp_path: Path
) -> None:
    """Its outputs are those of a state never of the old layout (of one update of all)."""
    old = run(monaco_roads, at_once, [[batches[0]]], tmp_path / "old")
    to_old_layout(old)
    compute_coverage(monaco_roads, batches[1:], old, SETTINGS)
    assert pointer(old).get("cover_layout") == 1
    assert output_hashes(old) == output_hashes(at_once)


def to_old_layout(folder: Path) -> None:
    """Write the rollup as the old layout had it: the region's road pieces and driven edges."""
    state = folder / "state"
    named = pointer(folder)
    rollup = state / "rollup" / named["rollup"]
    cover_files = [
        state / "parts" / key / generation / "road_cover.parquet"
        for key, generation in named["cell_parts"].items()
    ]
    road_cover = pd.concat([pd.read_parquet(path) for path in cover_files], ignore_index=True)
    road_cover.to_parquet(rollup / "road_cover.parquet")
    edge_table = pd.concat(  # each partition's edges, with its key
        read_edge_table(folder, ["edge_id", "highway", "covered_m"], [key])
        .to_pandas()
        .assign(part=key)
        for key in named["parts"]
    )
    driven = edge_table[edge_table["covered_m"] > 0]
    pd.DataFrame(
        {"edge_id": driven["edge_id"], "covered_mm": to_mm(driven["covered_m"]),
         "part": driven["part"], "highway": driven["highway"]}
    ).to_parquet(rollup / "edge_totals.parquet")  # fmt: skip
    covered = pd.read_parquet(rollup / "part_covered.parquet")
    covered.groupby(["cell", "last_ms"], as_index=False, sort=True)["length_mm"].sum().to_parquet(
        rollup / "part_covered.parquet"
    )
    (rollup / "part_highway.parquet").unlink()
    for path in cover_files:
        path.unlink()
    (state / "CURRENT.json").write_text(
        json.dumps({k: v for k, v in named.items() if k != "cover_layout"})
    )
