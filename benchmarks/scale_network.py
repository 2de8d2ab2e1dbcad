"""A country-sized test network: copies of a real OSM road network side by side, in one PBF.

Usage: ``python benchmarks/scale_network.py SOURCE --factor N -o OUT.osm.pbf [--gap-deg G]``
(default SOURCE: Kubicka 00000013, Toulouse, 155,003 nodes, 307,392 ways, 307,392 graph edges,
in ``../shared/data/mapmatch``). Copy ``k`` (0 .. N-1) is the source moved east by ``k`` times
(its longitude span + ``G`` degrees), with node and way ids ``id + k * max_id`` so that no id
repeats. Only longitude moves: a rotation about the Earth's axis keeps every great-circle
distance, so copy ``k`` has exactly the road km of the source, and the whole file ``N`` times
them. The shift is a whole number of OSM's fixed-point units (1e-7 degrees), so coordinates do
not round. Nodes come first, then ways, each sorted by id (what osmium and pyrosm expect of a
PBF); relations are left out (the roads stage reads ways only). The copies are not joined to
each other: N disconnected cities of the source's density in a row along its latitude.

Reading Kubicka 00000013 takes about 11 s, writing each copy about 3 s (pyosmium, one core):
the 32x file (4.96 M nodes, 9.84 M ways, about 80 MB) in about two minutes of CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import osmium

OSM_UNITS_PER_DEG = 10_000_000
DEFAULT_SOURCE = (
    Path(os.environ.get("ROADCOVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "mapmatch"
    / "kubicka-dev"
    / "00000013"
    / "network.osm.bz2"
)
DEFAULT_GAP_DEG = 0.01


@dataclass
class SourceNetwork:
    """The nodes and ways of the source extract, in OSM fixed-point coordinates.

    Attributes
    ----------
    nodes
        ``(id, x, y, tags)`` sorted by id, ``x``/``y`` in 1e-7 degrees of longitude/latitude.
    ways
        ``(id, node_ids, tags)`` sorted by id.
    """

    nodes: list[tuple[int, int, int, dict[str, str]]] = field(default_factory=list)
    ways: list[tuple[int, list[int], dict[str, str]]] = field(default_factory=list)

    @property
    def max_id(self) -> int:
        """The largest node or way id (copy ``k`` adds ``k * max_id`` to every id)."""
        return max(max(n[0] for n in self.nodes), max(w[0] for w in self.ways))

    def x_span(self) -> tuple[int, int]:
        """Westmost and eastmost longitude, in 1e-7 degrees."""
        xs = [n[1] for n in self.nodes]
        return min(xs), max(xs)


class ScaleNetworkError(ValueError):
    """A source or factor the generator cannot replicate (one line, for the user)."""


def read_source(path: Path) -> SourceNetwork:
    """Read every node and way of ``path`` (any format pyosmium reads)."""
    if not path.is_file():
        raise ScaleNetworkError(f"{path}: OSM extract not found")
    source = SourceNetwork()
    for obj in osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY):
        if obj.is_node():
            loc = obj.location
            source.nodes.append((obj.id, loc.x, loc.y, dict(obj.tags)))
        elif obj.is_way():
            source.ways.append((obj.id, [n.ref for n in obj.nodes], dict(obj.tags)))
    if not source.nodes or not source.ways:
        raise ScaleNetworkError(f"{path}: no nodes or no ways to replicate")
    if min(n[0] for n in source.nodes) <= 0 or min(w[0] for w in source.ways) <= 0:
        raise ScaleNetworkError(f"{path}: ids must be positive to be offset per copy")
    source.nodes.sort(key=lambda n: n[0])
    source.ways.sort(key=lambda w: w[0])
    return source


def copy_shift_units(source: SourceNetwork, gap_deg: float) -> int:
    """The eastward shift between two neighbouring copies, in 1e-7 degrees."""
    west, east = source.x_span()
    return (east - west) + math.ceil(gap_deg * OSM_UNITS_PER_DEG)


def write_replicas(source: SourceNetwork, factor: int, out: Path, gap_deg: float) -> None:
    """Write ``factor`` shifted copies of ``source`` into ``out`` (nodes, then ways)."""
    if factor < 1:
        raise ScaleNetworkError(f"--factor {factor}: give a whole number of copies, 1 or more")
    shift = copy_shift_units(source, gap_deg)
    _, east = source.x_span()
    if east + (factor - 1) * shift > 180 * OSM_UNITS_PER_DEG:
        raise ScaleNetworkError(
            f"--factor {factor}: the copies would pass 180 degrees east; "
            "use a smaller factor or --gap-deg, or a narrower source"
        )
    stride = source.max_id
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.osm.pbf")
    partial.unlink(missing_ok=True)
    writer = osmium.SimpleWriter(str(partial))
    try:
        for k in range(factor):
            for node_id, x, y, tags in source.nodes:
                location = osmium.osm.Location((x + k * shift) / OSM_UNITS_PER_DEG, y / 1e7)
                writer.add_node(
                    osmium.osm.mutable.Node(
                        id=node_id + k * stride, location=location, tags=tags, version=1
                    )
                )
        for k in range(factor):
            offset = k * stride
            for way_id, refs, tags in source.ways:
                writer.add_way(
                    osmium.osm.mutable.Way(
                        id=way_id + offset, nodes=[r + offset for r in refs], tags=tags, version=1
                    )
                )
    finally:
        writer.close()
    partial.replace(out)


def main(argv: list[str] | None = None) -> int:
    """Write the replicated network; print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--factor", type=int, required=True, help="number of copies")
    parser.add_argument("-o", "--output", type=Path, required=True, help="an .osm.pbf file")
    parser.add_argument("--gap-deg", type=float, default=DEFAULT_GAP_DEG)
    args = parser.parse_args(argv)
    if not args.output.name.endswith(".osm.pbf"):
        print(f"scale_network: error: {args.output}: name the output .osm.pbf", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        source = read_source(args.source)
        write_replicas(source, args.factor, args.output, args.gap_deg)
    except ScaleNetworkError as exc:
        print(f"scale_network: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {args.factor} x {args.source}: {args.factor * len(source.nodes)} nodes, "
        f"{args.factor * len(source.ways)} ways, {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
