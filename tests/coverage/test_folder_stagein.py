"""A coverage folder in object storage (moto's S3 server): a run downloads what it reads.

A region of 10 edges (two chains of five, :func:`tests.builders.write_fully_covered_region`)
with 13 partitions (H3 resolution 11, partitions at 10). After a first update into a bucket, an
update of a batch that drives one edge downloads the folder's records, the network cache's small
tables of a row per partition or coarse cell and its fence of edge ids, the rollup and the
trips' ``driven`` tables, and of the partitions only those of the cells the edge runs through
(computed here with h3 from the edge's geometry, sampled every 0.2 m); of the edge index it
reads two byte ranges alone: its header and its one block. A run with nothing new downloads the
records alone. The files in the bucket are then those of the same updates into a local folder,
byte for byte. An object the pointer names that the bucket lacks stops the update, naming it; an
update with another partitioning, of a network cache of an older format (computed again), or of
a state whose rollup holds the region's road pieces (the old layout, migrated by that update),
downloads the whole folder; two updates started together into one folder apply both batches.
What was downloaded is the server's own record of the objects it sent (GET requests), so runs in
other processes count too.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.cli import main
from pipeline.coverage.network_cache import NETWORK_FORMAT
from pipeline.coverage.pointer import current_pointer
from pipeline.coverage.roads_stagein import ROADS_MEMO
from pipeline.roads import read_edges
from tests import objectstore
from tests.builders import write_fully_covered_region, write_matched_batch
from tests.coverage.test_roads_stagein import local_outputs, region, stored_outputs
from tests.coverage.test_update import to_old_layout
from tests.objectstore import sha256_objects, store

# the fixtures: a bucket (of this module's server, below) holding the roads of local_region
bucket, region = objectstore.bucket, region
RESOLUTION, PARTS_AT = 11, 10
CONFIG = f"""regions:
  - name: region
    osm: region.osm
coverage:
  h3_resolution: {RESOLUTION}
  partition_resolution: {PARTS_AT}
"""


class SentObjects:
    """A WSGI middleware that records the path of every object a GET request fetched.

    Whole (``paths``), or byte ranges of it (``ranged``: a ``Range`` header).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.lock = app, threading.Lock()
        self.paths, self.ranged = list[str](), list[str]()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            with self.lock:
                path = environ.get("PATH_INFO", "").lstrip("/")
                (self.ranged if environ.get("HTTP_RANGE") else self.paths).append(path)
        return self.app(environ, start_response)

    def under(self, prefix: str) -> set[str]:
        """Return the objects under ``prefix`` fetched whole since the last call; forget all."""
        with self.lock:
            paths, self.paths, self.ranged = self.paths, [], []
        return {path[len(prefix) + 1 :] for path in paths if path.startswith(prefix + "/")}

    def ranged_under(self, prefix: str) -> list[str]:
        """Return the object under ``prefix`` of each range request since the last call."""
        with self.lock:
            paths = list(self.ranged)
        return [path[len(prefix) + 1 :] for path in paths if path.startswith(prefix + "/")]


@pytest.fixture(scope="module")
def sent() -> Iterator[tuple[str, SentObjects]]:
    """Moto's S3 server on a free port of 127.0.0.1, with a record of the objects it sent."""
    server = objectstore.moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server.start()
    recorder = SentObjects(server._server.app)
    server._server.app = recorder
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}", recorder
    server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(sent: tuple[str, SentObjects]) -> str:
    """The endpoint of this module's server (the ``bucket`` fixture's)."""
    return sent[0]


@pytest.fixture(scope="module")
def local_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Roads, a batch of every edge, two batches of one edge each, and local coverage runs.

    ``local`` holds the coverage of the batch of every edge, then of it and ``small``;
    ``all`` of the three batches; ``coarser.yaml`` sets partitions at resolution 9.
    """
    root = tmp_path_factory.mktemp("region")
    roads, _ = write_fully_covered_region(root)
    (root / "config.yaml").write_text(CONFIG)
    coarser = CONFIG.replace(f"partition_resolution: {PARTS_AT}", "partition_resolution: 9")
    (root / "coarser.yaml").write_text(coarser)
    edges = read_edges(roads)
    for name, row, day in (("small", 2, "2026-10-03"), ("small2", 8, "2026-10-04")):
        drive = one_edge_drive(edges, row, name, day)
        write_matched_batch(root / name, edges, drive, roads_dir=roads)
    assert run_coverage(root, str(roads), str(root / "local"), ["matched"]) == 0
    assert run_coverage(root, str(roads), str(root / "local"), ["matched", "small"]) == 0
    assert run_coverage(root, str(roads), str(root / "all"), ["matched", "small", "small2"]) == 0
    return root


def one_edge_drive(edges: pd.DataFrame, row: int, trip: str, day: str) -> pd.DataFrame:
    """A trip over the first 80 % of edge ``row``."""
    when = pd.Timestamp(f"{day}T08:00Z")
    return pd.DataFrame(
        {
            "edge_id": edges["edge_id"].to_numpy()[row : row + 1],
            "trip_id": trip,
            "contributor_id": "c9",
            "from_offset_m": 0.0,
            "to_offset_m": edges["length_m"].to_numpy()[row : row + 1] * 0.8,
            "entered_at": when,
            "exited_at": when + pd.Timedelta(seconds=5),
        }
    )


def run_coverage(
    root: Path, roads: str, out: str, batches: list[str], config: str = "config.yaml"
) -> int:
    matched = [arg for name in batches for arg in ("--matched", str(root / name))]
    return main(["coverage", "--roads", roads, *matched, "-o", out, "--config", str(root / config)])


def coverage_command(root: Path, roads: str, out: str, batches: list[str]) -> list[str]:
    matched = [arg for name in batches for arg in ("--matched", str(root / name))]
    return [sys.executable, "-m", "pipeline.cli", "coverage", "--roads", roads, *matched,
            "-o", out, "--config", str(root / "config.yaml")]  # fmt: skip


def partitions_of_edges(roads: Path, rows: list[int]) -> set[str]:
    """The partitions of the cells edges ``rows`` (and their reverse edges) run through.

    From the geometry, sampled every 0.2 m: each point's cell at the finest resolution, and
    that cell's parent at the partitions' (h3, not the code under test).
    """
    edges = read_edges(roads)
    keys = set()
    for line in edges.geometry.to_numpy()[rows]:
        metres = float(edges["length_m"].to_numpy()[rows][0])
        points = shapely.line_interpolate_point(
            line, np.linspace(0.0, 1.0, int(metres / 0.2) + 2), normalized=True
        )
        for x, y in zip(shapely.get_x(points), shapely.get_y(points), strict=True):
            parent = h3.cell_to_parent(h3.latlng_to_cell(y, x, RESOLUTION), PARTS_AT)
            keys.add(f"r{PARTS_AT}-{parent}")
    return keys


PER_PART = ("runs", "cells", "polygons", "canonical", "edges")
"""The network cache's folders of a file per partition."""


def fetched_parts(names: set[str]) -> set[str]:
    """The partitions whose state or network cache files are among ``names``."""
    keys = {name.split("/")[2] for name in names if name.startswith("state/parts/")}
    return keys | {
        Path(name).stem
        for name in names
        if name.startswith("network/") and name.split("/")[-2] in PER_PART
    }


def records(prefix: str) -> set[str]:
    """The objects of a coverage folder a run reads to decide (listed independently)."""
    names = {path[len(prefix) + 1 :] for path in store().find(prefix)}
    return {"state/CURRENT.json", "outputs.json", "summary.json", ROADS_MEMO} | {
        name for name in names if name.endswith("/network.json")
    }


def first_update(region: tuple[Path, str], recorder: SentObjects) -> tuple[Path, str, str, str]:
    """Run the first update (the batch of every edge) into the bucket; forget its downloads.

    Returns the local region, the roads' and the coverage folder's URLs, and the latter's
    prefix.
    """
    root, bucket = region
    roads, out, prefix = f"s3://{bucket}/roads", f"s3://{bucket}/coverage", f"{bucket}/coverage"
    assert run_coverage(root, roads, out, ["matched"]) == 0
    recorder.under(prefix)
    return root, roads, out, prefix


def test_an_update_downloads_the_partitions_it_touches_and_nothing_new_the_records(
    region: tuple[Path, str], sent: tuple[str, SentObjects]
) -> None:
    recorder = sent[1]
    root, roads, out, prefix = first_update(region, recorder)
    every_part = set(current_pointer(root / "local" / "state")["parts"])
    assert len(every_part) == 13
    before = set(sha256_objects(prefix))
    recorder.under(prefix)

    assert run_coverage(root, roads, out, ["matched", "small"]) == 0
    ranged = recorder.ranged_under(prefix)
    fetched = recorder.under(prefix)
    expected = partitions_of_edges(root / "roads", [2])
    assert 1 <= len(expected) < len(every_part)
    assert records(prefix) & before <= fetched
    assert fetched_parts(fetched) <= expected
    assert any(name.startswith("state/parts/") for name in fetched)  # the edge's own
    assert any(Path(name).parent.name == "runs" for name in fetched)
    (cache,) = {name.split("/")[1] for name in before if name.endswith("/network.json")}
    of_region = {
        name.removeprefix(f"network/{cache}/")
        for name in fetched
        if name.startswith(f"network/{cache}/") and Path(name).parent.name not in PER_PART
    }
    assert of_region == {"network.json", "part_road.parquet", "coarse_polygons.parquet",
                         "highways.parquet", "edge_index/fence.npy"}  # fmt: skip
    # the edge index's header, then its one block (the edge's row; it is its road's canonical)
    assert ranged == [f"network/{cache}/edge_index/rows.npy"] * 2
    assert stored_outputs(prefix) == local_outputs(root / "local")

    recorder.under(prefix)
    assert run_coverage(root, roads, out, ["matched", "small"]) == 0  # nothing new
    assert recorder.ranged_under(prefix) == []
    assert recorder.under(prefix) == records(prefix)
    assert stored_outputs(prefix) == local_outputs(root / "local")


def test_a_missing_object_the_pointer_names_is_an_error_naming_it(
    region: tuple[Path, str], sent: tuple[str, SentObjects], capsys: pytest.CaptureFixture[str]
) -> None:
    root, roads, out, prefix = first_update(region, sent[1])
    pointer = current_pointer_of(prefix)
    key = sorted(partitions_of_edges(root / "roads", [2]) & set(pointer["parts"]))[0]
    first = pointer["parts"][key]
    store().rm(f"{prefix}/state/parts/{key}/{first}/edge_pieces.parquet")
    capsys.readouterr()
    assert run_coverage(root, roads, out, ["matched", "small"]) != 0
    assert f"state/parts/{key}/{first}/edge_pieces.parquet" in capsys.readouterr().err
    assert current_pointer_of(prefix) == pointer  # nothing committed


def current_pointer_of(prefix: str) -> dict[str, Any]:
    """The pointer in the bucket's coverage folder ``prefix``."""
    return dict(json.loads(store().cat_file(f"{prefix}/state/CURRENT.json")))


def test_two_concurrent_updates_into_one_folder_apply_both_batches_once(
    region: tuple[Path, str], sent: tuple[str, SentObjects]
) -> None:
    recorder = sent[1]
    root, roads, out, prefix = first_update(region, recorder)
    commands = [coverage_command(root, roads, out, ["matched", n]) for n in ("small", "small2")]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for command in commands]
    for run in runs:
        _, errors = run.communicate(timeout=300)
        assert run.returncode == 0, errors
    fetched = recorder.under(prefix)
    assert fetched_parts(fetched) <= partitions_of_edges(root / "roads", [2]) | (
        partitions_of_edges(root / "roads", [8])
    )
    pointer = current_pointer_of(prefix)
    assert pointer["batches"] == current_pointer(root / "all" / "state")["batches"]
    assert len(pointer["batches"]) == 3
    summary = json.loads(store().cat_file(f"{prefix}/summary.json"))
    assert summary == json.loads((root / "all" / "summary.json").read_text())
    stored = stored_outputs(prefix)
    for key, generation in pointer["parts"].items():  # nothing the pointer names was lost
        assert f"state/parts/{key}/{generation}/edge_pieces.parquet" in stored
    for generation in pointer["trips"]:
        assert f"state/trips/{generation}/driven.parquet" in stored


def test_another_partitioning_downloads_the_whole_folder_and_writes_a_local_runs_files(
    region: tuple[Path, str], sent: tuple[str, SentObjects], tmp_path: Path
) -> None:
    recorder = sent[1]
    root, roads, out, prefix = first_update(region, recorder)
    every_object = {path[len(prefix) + 1 :] for path in store().find(prefix)}
    recorder.under(prefix)
    assert run_coverage(root, roads, out, ["matched", "small"], "coarser.yaml") == 0
    assert recorder.under(prefix) == every_object - {".roadcover.lock"}
    local, local_roads = str(tmp_path / "local"), str(root / "roads")
    assert run_coverage(root, local_roads, local, ["matched"]) == 0
    assert run_coverage(root, local_roads, local, ["matched", "small"], "coarser.yaml") == 0
    assert stored_outputs(prefix) == local_outputs(tmp_path / "local")
    assert current_pointer_of(prefix)["partitioning"] == 9


def test_a_state_of_the_old_layout_downloads_the_whole_folder_and_is_migrated(
    region: tuple[Path, str], sent: tuple[str, SentObjects], tmp_path: Path
) -> None:
    """Its files are then those of the same migration of a local folder."""
    recorder = sent[1]
    root, roads, out, prefix = first_update(region, recorder)
    old = tmp_path / "old"
    store().get(prefix, str(old), recursive=True)
    (old / ".roadcover.lock").unlink(missing_ok=True)
    to_old_layout(old)
    store().rm(prefix, recursive=True)
    store().put(str(old), prefix, recursive=True)
    (old / ROADS_MEMO).unlink()  # a bucket's record of its roads (stored_outputs leaves it out)
    assert run_coverage(root, str(root / "roads"), str(old), ["matched", "small"]) == 0
    every_object = {path[len(prefix) + 1 :] for path in store().find(prefix)}
    assert "state/CURRENT.json" in every_object
    recorder.under(prefix)
    assert run_coverage(root, roads, out, ["matched", "small"]) == 0
    assert recorder.under(prefix) == every_object
    assert current_pointer_of(prefix)["cover_layout"] == 1
    assert stored_outputs(prefix) == local_outputs(old)


def test_a_network_cache_of_an_older_format_is_downloaded_whole_and_computed_again(
    region: tuple[Path, str], sent: tuple[str, SentObjects]
) -> None:
    """Its files are then those of the local run's cache (of the current format)."""
    recorder = sent[1]
    root, roads, out, prefix = first_update(region, recorder)
    (meta,) = [name for name in store().find(prefix) if name.endswith("/network.json")]
    older = {**json.loads(store().cat_file(meta)), "format": NETWORK_FORMAT - 1}
    store().pipe_file(meta, json.dumps(older).encode())
    index = meta.replace("network.json", "edge_index")
    store().pipe_file(f"{index}/edge_id.npy", store().cat_file(f"{index}/rows.npy"))  # format 7's
    every_object = {path[len(prefix) + 1 :] for path in store().find(prefix)}
    recorder.under(prefix)
    assert run_coverage(root, roads, out, ["matched", "small"]) == 0
    assert recorder.under(prefix) == every_object - {".roadcover.lock"}
    assert json.loads(store().cat_file(meta))["format"] == NETWORK_FORMAT
    assert stored_outputs(prefix) == local_outputs(root / "local")
