"""Which reader a file needs: by its extension, else by sniffing its first KiB."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.ingest.readers.base import normalize_name, unreadable
from pipeline.ingest.readers.columns import ALIASES

FORMATS = ("gpx", "nmea", "csv", "geojson", "parquet", "framejson")
SUPPORTED = (
    "GPX (.gpx), NMEA 0183 (.nmea, .txt, .log), CSV/TSV (.csv, .tsv), GeoJSON (.geojson, "
    ".json), (Geo)Parquet (.parquet, .geoparquet), frame JSON (.json, .jsonl, .ndjson)"
)
BY_EXTENSION = {
    ".gpx": "gpx",
    ".nmea": "nmea",
    ".csv": "csv",
    ".tsv": "csv",
    ".geojson": "geojson",
    ".parquet": "parquet",
    ".geoparquet": "parquet",
    ".jsonl": "framejson",
    ".ndjson": "framejson",
}
SNIFF_BYTES = 1024
_NMEA_LINE = re.compile(rb"^[^$\r\n]{0,32}\$(?:G[PNLABQ]|BD)[A-Z]{3},", re.MULTILINE)
# a whole sentence with its checksum, anywhere: receiver dumps begin with binary frames
_NMEA_SENTENCE = re.compile(rb"\$(?:G[PNLABQ]|BD)[A-Z]{3},[\x20-\x29\x2b-\x7e]{0,80}\*[0-9A-F]{2}")
_GEOJSON = re.compile(rb'"type"\s*:\s*"(?:FeatureCollection|Feature)"|"features"\s*:\s*\[')
_XML_GPX = re.compile(rb"<(?:\w+:)?gpx[\s>]")


def detect_format(path: Path) -> str:
    """Return the format of a trace file (one of :data:`FORMATS`).

    Known extensions decide (``.gpx``, ``.nmea``, ``.csv``, ``.tsv``, ``.geojson``,
    ``.parquet``, ``.geoparquet``, ``.jsonl``, ``.ndjson``); for others (``.json``, ``.txt``,
    ``.log``, none, ...) the first KiB is sniffed: Parquet magic, a ``<gpx`` element, NMEA
    sentences (at the start of a line, or anywhere with their checksum), GeoJSON members
    (``"type": "FeatureCollection"``/``"Feature"``, ``"features"``) versus other JSON
    (frames), or a delimited header naming a latitude column.

    Raises
    ------
    UnreadableFileError
        If the file cannot be opened, is empty, or matches no supported format.
    """
    source = str(path)
    fmt = BY_EXTENSION.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise unreadable(
            source, f"cannot be read ({exc.strerror or exc})", "check the path"
        ) from None
    return sniff_format(head, source)


def sniff_format(head: bytes, source: str) -> str:
    """Return the format of a file from its first bytes (see :func:`detect_format`)."""
    if not head.strip():
        raise unreadable(source, "empty file, no trace data", "upload the trace file again")
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<") and _XML_GPX.search(text):
        return "gpx"
    if _NMEA_LINE.search(text) or _NMEA_SENTENCE.search(head):
        return "nmea"
    if text[:1] in (b"{", b"["):
        return "geojson" if _GEOJSON.search(text) else "framejson"
    if b"\x00" not in head and _looks_like_csv(text):
        return "csv"
    raise unreadable(
        source,
        "unknown trace format",
        f"upload one of the supported formats: {SUPPORTED}",
    )


def _looks_like_csv(text: bytes) -> bool:
    header = text.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    names = {normalize_name(n) for n in re.split(r"[,;\t]", header)}
    return bool(names & set(ALIASES["lat"])) and bool(names & set(ALIASES["lon"]))
