"""Valhalla (pyvalhalla) peer runner: build tiles, match every trip with trace_route, time it.

Run with the peers' Python 3.12: ``/tmp/peers312/bin/python benchmarks/peers/run_valhalla.py
--osm X.osm.pbf --traces trips.parquet --work DIR --out matched.parquet [--runs 3]``.

Build: OSM XML (``.osm``, ``.osm.bz2``) is first converted to PBF with pyosmium (Valhalla
reads only PBF; timed apart as ``convert``), then ``valhalla_build_tiles`` (bundled binary,
``mjolnir.concurrency = 1``, no admin/timezone databases). Engine: ``valhalla.Actor``; one
``trace_route`` request per trip, ``costing=auto``, ``shape_match=map_snap``, timestamps used,
``trace_options``: ``gps_accuracy = sigma_z = --sigma``, ``search_radius = --radius``
(other meili settings at Valhalla's defaults); the shapes of all legs of the matched route
and of its discontinuous continuations (returned as ``alternates``) are the trip's route.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import valhalla

sys.path.insert(0, str(Path(__file__).parent))
from _common import arguments, match_and_write, timed

BIN = Path(valhalla.__file__).parent / "bin"


def decode_polyline6(encoded: str) -> list[tuple[float, float]]:
    """Decode a Google polyline with 1e-6 precision into (lon, lat) pairs."""
    coords, index, lat, lon = [], 0, 0, 0
    while index < len(encoded):
        for which in (0, 1):
            shift = result = 0
            while True:
                b = ord(encoded[index]) - 63
                index += 1
                result |= (b & 0x1F) << shift
                shift += 5
                if b < 0x20:
                    break
            delta = ~(result >> 1) if result & 1 else result >> 1
            if which == 0:
                lat += delta
            else:
                lon += delta
        coords.append((lon / 1e6, lat / 1e6))
    return coords


def to_pbf(osm: Path, work: Path) -> Path:
    """Convert an OSM XML extract to PBF with pyosmium."""
    import osmium

    pbf = work / "map.osm.pbf"
    with osmium.SimpleWriter(str(pbf)) as writer:
        for obj in osmium.FileProcessor(str(osm)):
            writer.add(obj)
    return pbf


def build(osm: Path, work: Path) -> tuple[Path, dict[str, float]]:
    """Build the tiles (one thread); return the config path and the step seconds."""
    if work.exists():
        shutil.rmtree(work)
    (work / "tiles").mkdir(parents=True)
    seconds = {}
    if osm.name.endswith(".pbf"):
        pbf = osm
    else:
        pbf, seconds["convert"] = timed(lambda: to_pbf(osm, work))
    config = valhalla.get_config(tile_extract="", tile_dir=work / "tiles", verbose=False)
    config["mjolnir"].update(concurrency=1, admin="", timezone="")
    config["mjolnir"]["logging"] = {"type": "std_out", "color": False}
    config["service_limits"]["trace"].update(max_shape=1_000_000, max_distance=100_000_000)
    config["service_limits"]["trace"]["max_alternates"] = 0
    path = work / "valhalla.json"
    path.write_text(json.dumps(config, indent=1))
    with open(work / "build.log", "w") as log:
        _, seconds["build_tiles"] = timed(
            lambda: subprocess.run(
                [str(BIN / "valhalla_build_tiles"), "-c", str(path), str(pbf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        )
    return path, seconds


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    config, prepare_s = build(args.osm, args.work)
    actor, load_s = timed(lambda: valhalla.Actor(str(config)))
    options = {"gps_accuracy": args.sigma, "sigma_z": args.sigma, "search_radius": args.radius}

    def match(t: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> list[list[tuple[float, float]]]:
        shape = [
            {"lon": x, "lat": y, "time": s}
            for x, y, s in zip(lon.tolist(), lat.tolist(), (t - t[0]).tolist(), strict=True)
        ]
        request = {
            "shape": shape, "costing": "auto", "shape_match": "map_snap",
            "use_timestamps": True, "trace_options": options, "directions_type": "none",
        }  # fmt: skip
        result = json.loads(actor.trace_route(json.dumps(request)))
        # a discontinuous match comes back as several routes: the first in "trip", the next
        # ones in "alternates" (real alternates are off: service_limits.trace.max_alternates=0)
        routes = [result["trip"]] + [alt["trip"] for alt in result.get("alternates", [])]
        return [decode_polyline6(leg["shape"]) for route in routes for leg in route["legs"]]

    match_and_write(
        args,
        match,
        {
            "engine": f"pyvalhalla {version('pyvalhalla')} (auto costing, meili)",
            "prepare_s": prepare_s,
            "load_s": load_s,
            "settings": {**options, "shape_match": "map_snap", "use_timestamps": True},
        },
    )


if __name__ == "__main__":
    main()
