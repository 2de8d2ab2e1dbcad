"""Which roads an output was made with: the identity snap and coverage record and compare.

A matched folder (``meta.json``) and a coverage folder (``state/CURRENT.json``) record the
identity of the roads folder they were made with; a stage given other roads refuses, before it
writes anything, with one line naming both. Two roads folders are the same roads when their
``edges.parquet`` files are byte for byte the same (their sha256: the edge ids, lengths and
shapes every later number is computed from) and were built from the same extract (its
sha256). The edges' extent (``bbox``) is recorded too, so that the message says where. An
output written before it recorded an identity is checked by the extract's sha256 alone. The
edges' sha256 is memoized beside the file (:func:`pipeline.io.memoized_sha256`), so that a
run that finds nothing new does not read the whole edge table again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import InputDataError
from pipeline.io import memoized_sha256
from pipeline.roads.store import EDGES_FILE, read_roads_meta


def roads_identity(roads_dir: Path) -> dict[str, Any]:
    """Return the identity of a roads folder: ``edges_sha256``, ``source_sha256``, ``bbox``.

    Raises
    ------
    InputDataError
        If the folder was not written by ``roadcover roads build``.
    """
    meta = read_roads_meta(roads_dir)
    return {
        "edges_sha256": memoized_sha256(Path(roads_dir) / EDGES_FILE),
        "source_sha256": meta["source_sha256"],
        "bbox": meta["bbox"],
    }


def same_roads(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Return whether two identities (:func:`roads_identity`) are of the same roads.

    The same roads are the same edge table built from the same extract: an edge table that
    says it comes from another extract is not trusted to be these roads.
    """
    return all(first.get(key) == second.get(key) for key in ("edges_sha256", "source_sha256"))


def refuse_other_roads(
    made_with: object,
    roads: dict[str, Any],
    roads_dir: str | Path,
    *,
    output: str,
    fix: str,
    extract_sha256: object = None,
) -> None:
    """Refuse an output made on other roads than ``roads`` (the identity of ``roads_dir``).

    Parameters
    ----------
    made_with
        The identity the output recorded (anything but a dict: it recorded none).
    roads, roads_dir
        The roads given with it, and their folder.
    output
        What the output is, to start the message: e.g. "FOLDER holds coverage of".
    fix
        What to do instead, to end the message.
    extract_sha256
        The sha256 of the extract the output recorded, compared when it recorded no
        identity (outputs written before they recorded one).

    Raises
    ------
    InputDataError
        One line naming both roads.
    """
    if isinstance(made_with, dict):
        other = None if same_roads(made_with, roads) else describe_roads(made_with)
    elif extract_sha256 is not None and extract_sha256 != roads.get("source_sha256"):
        other = f"extract sha256 {str(extract_sha256)[:12]}"
    else:
        return
    if other is not None:
        raise InputDataError(
            f"{output} other roads ({other}) than {roads_dir} ({describe_roads(roads)}); {fix}"
        )


def describe_roads(identity: dict[str, Any]) -> str:
    """Return a short description of roads for a message: hashes' prefixes and the extent."""
    bbox = ", ".join(f"{value:.4f}" for value in identity.get("bbox") or [])
    return (
        f"edges sha256 {str(identity.get('edges_sha256'))[:12]}, extract sha256 "
        f"{str(identity.get('source_sha256'))[:12]}, bbox [{bbox}]"
    )
