"""verify_release, file_record and count_rows on releases written by hand.

Each release here is a few files and a manifest.json the test writes itself, with sizes from
``len`` and digests from ``hashlib.sha256`` of the bytes the test wrote, and row counts known
by construction; no pipeline function builds them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputDataError
from pipeline.export.feeds import verify_release
from pipeline.export.feeds.writers import count_rows, file_record

RS = "\x1e"
# 2 records, 4 physical lines: the second record's quoted field holds a line break
CSV_TEXT = 'cell_id,note\n"a","one"\n"b","two\nlines"\n'
# 3 texts (RFC 8142); the second's properties are pretty-printed over two lines
GEOJSONSEQ_TEXT = (
    RS + '{"type":"Feature","id":"a"}\n'
    + RS + '{"type":"Feature",\n "id":"b"}\n'
    + RS + '{"type":"Feature","id":"c"}\n'
)  # fmt: skip


def parquet_bytes(tmp_path: Path, rows: int) -> bytes:
    path = tmp_path / f"rows-{rows}.parquet"
    pq.write_table(pa.table({"cell_id": [f"c{i}" for i in range(rows)]}), path)
    return path.read_bytes()


def write_release(root: Path, files: dict[str, tuple[bytes, dict[str, Any]]]) -> Path:
    """Write ``files`` (path -> bytes, manifest fields) and their manifest under ``root``."""
    records = []
    for relative, (data, fields) in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        records.append({"path": relative, "size_bytes": len(data), "sha256": digest, **fields})
    (root / "manifest.json").write_text(json.dumps({"release_id": root.name, "files": records}))
    return root


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """Three data files (one per format, with rows) and a STAC item (no rows)."""
    return write_release(
        tmp_path / "r1",
        {
            "cells/h3_parent=84/part-0.parquet": (
                parquet_bytes(tmp_path, 3),
                {"format": "geoparquet", "rows": 3},
            ),
            "cells/h3_parent=84/part-0.csv": (CSV_TEXT.encode(), {"format": "csv", "rows": 2}),
            "cells/h3_parent=84/part-0.geojsonl": (
                GEOJSONSEQ_TEXT.encode(),
                {"format": "geojsonseq", "rows": 3},
            ),
            "stac/item/item.json": (b'{"type": "Feature"}', {"format": "stac", "rows": None}),
        },
    )


def test_a_hand_written_release_is_intact(release: Path) -> None:
    assert verify_release(release) == []


def test_a_shortened_file_is_a_wrong_size_and_sha256_and_its_rows_are_not_read(
    release: Path,
) -> None:
    relative = "cells/h3_parent=84/part-0.csv"
    old = (release / relative).read_bytes()
    new = old[: old.index(b'"b"')]  # the first record only: the rows would be wrong too
    (release / relative).write_bytes(new)
    assert verify_release(release) == [
        f"{relative}: size_bytes is {len(new)}, manifest says {len(old)}",
        f"{relative}: sha256 is {hashlib.sha256(new).hexdigest()}, "
        f"manifest says {hashlib.sha256(old).hexdigest()}",
    ]


@pytest.mark.parametrize(
    ("relative", "actual"),
    [
        ("cells/h3_parent=84/part-0.parquet", 3),
        ("cells/h3_parent=84/part-0.csv", 2),  # records, not lines
        ("cells/h3_parent=84/part-0.geojsonl", 3),  # record separators, not lines
    ],
)
def test_rows_are_counted_in_each_format(release: Path, relative: str, actual: int) -> None:
    manifest = json.loads((release / "manifest.json").read_text())
    for record in manifest["files"]:
        if record["path"] == relative:
            record["rows"] = actual + 1
    (release / "manifest.json").write_text(json.dumps(manifest))
    assert verify_release(release) == [f"{relative}: rows is {actual}, manifest says {actual + 1}"]


def test_a_file_without_rows_in_the_manifest_has_its_rows_never_counted(tmp_path: Path) -> None:
    # a "csv" whose rows are unknown to the manifest, and which has no header to subtract
    root = write_release(tmp_path / "r", {"odd.csv": (b"", {"format": "csv"})})
    assert verify_release(root) == []
    assert count_rows(root / "odd.csv", "csv") == 0


def test_problems_follow_the_manifest_then_the_extra_files_sorted(release: Path) -> None:
    (release / "cells/h3_parent=84/part-0.geojsonl").unlink()
    (release / "cells/h3_parent=84/part-0.csv").unlink()
    (release / "z.txt").write_text("extra")
    (release / "cells/manifest.json").write_text("{}")  # only the top manifest is exempt
    (release / "empty").mkdir()  # a folder is not a file
    assert verify_release(release) == [
        "cells/h3_parent=84/part-0.csv: missing",
        "cells/h3_parent=84/part-0.geojsonl: missing",
        "cells/manifest.json: not in the manifest",
        "z.txt: not in the manifest",
    ]


def test_a_folder_in_place_of_a_file_is_missing(release: Path) -> None:
    relative = "stac/item/item.json"
    (release / relative).unlink()
    (release / relative).mkdir()
    assert verify_release(release) == [f"{relative}: missing"]


def test_a_folder_without_manifest_is_one_error_naming_it(tmp_path: Path) -> None:
    message = "manifest.json: not found; it is written by roadcover export feed$"
    with pytest.raises(InputDataError, match=message):
        verify_release(tmp_path)


def test_file_record_of_a_file_larger_than_one_read(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 7)  # 5 MiB and 1792 bytes: several 1 MiB blocks
    path = tmp_path / "a" / "b.bin"
    path.parent.mkdir()
    path.write_bytes(data)
    assert file_record(tmp_path, path, rows=None, format="x") == {
        "path": "a/b.bin",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": None,
        "format": "x",
    }


def test_counts_of_files_in_each_format(tmp_path: Path) -> None:
    parquet = tmp_path / "p.parquet"
    parquet.write_bytes(parquet_bytes(tmp_path, 5))
    csv = tmp_path / "c.csv"
    csv.write_text(CSV_TEXT)
    header_only = tmp_path / "h.csv"
    header_only.write_text("cell_id,note\n")
    seq = tmp_path / "s.geojsonl"
    seq.write_text(GEOJSONSEQ_TEXT)
    assert [
        count_rows(parquet, "geoparquet"),
        count_rows(csv, "csv"),
        count_rows(header_only, "csv"),
        count_rows(seq, "geojsonseq"),
    ] == [5, 2, 0, 3]


def test_rows_are_counted_as_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    # an ASCII locale without Python's UTF-8 mode (LC_ALL=C, PYTHONUTF8=0): the files are
    # UTF-8 by the feed's definition, so a CSV and a GeoJSON text with "é" still count
    csv = tmp_path / "c.csv"
    csv.write_text('name\n"Rue d\u2019\u00e9t\u00e9"\n"b"\n', encoding="utf-8")
    seq = tmp_path / "s.geojsonl"
    seq.write_text(RS + '{"id":"\u00e9"}\n', encoding="utf-8")
    # in this process too, so that mutmut counts this test as one that reaches count_rows
    assert [count_rows(csv, "csv"), count_rows(seq, "geojsonseq")] == [2, 1]
    code = (
        "import sys; from pathlib import Path; "
        "from pipeline.export.feeds.writers import count_rows; "
        "print(count_rows(Path(sys.argv[1]), 'csv'), count_rows(Path(sys.argv[2]), 'geojsonseq'))"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(csv), str(seq)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "1"]
