"""OSRM (osrm-bindings, MLD) peer runner: build the extract, match every trip, time it.

Run with the peers' Python 3.12: ``/tmp/peers312/bin/python benchmarks/peers/run_osrm.py
--osm X.osm.pbf --traces trips.parquet --work DIR --out matched.parquet [--runs 3]``.

Build: ``osrm-extract -p car.lua -t 1``, ``osrm-partition -t 1``, ``osrm-customize -t 1``
(the binaries bundled in the wheel), each timed. Engine: ``OSRM(algorithm="MLD",
use_shared_memory=False)``; one ``Match`` request per trip with timestamps, ``radiuses`` =
``--sigma`` (OSRM's GPS standard deviation), ``gaps="split"``, ``tidy`` as ``--tidy`` (off by
default),
``overview="full"``, GeoJSON geometry; the geometries of all matchings of a trip are its route.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import osrm

sys.path.insert(0, str(Path(__file__).parent))
from _common import arguments, match_and_write, timed

BIN = Path(osrm.__file__).parent / "bin"
PROFILE = Path(osrm.__file__).parent / "share" / "profiles" / "car.lua"


def build(osm: Path, work: Path) -> tuple[Path, dict[str, float]]:
    """Run extract, partition and customize (one thread each); return the .osrm base path."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    suffix = ".osm.pbf" if osm.name.endswith(".pbf") else "".join(osm.suffixes[-2:])
    local = work / f"map{suffix}"
    local.symlink_to(osm.resolve())
    base = work / "map.osrm"
    steps = {
        "extract": [BIN / "osrm-extract", "-p", PROFILE, "-t", "1", local],
        "partition": [BIN / "osrm-partition", "-t", "1", base],
        "customize": [BIN / "osrm-customize", "-t", "1", base],
    }
    seconds = {}
    with open(work / "build.log", "w") as log:
        for name, cmd in steps.items():
            _, seconds[name] = timed(
                lambda cmd=cmd: subprocess.run(
                    [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, check=True
                )
            )
    return base, seconds


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    base, prepare_s = build(args.osm, args.work)
    engine, load_s = timed(
        lambda: osrm.OSRM(
            algorithm="MLD",
            storage_config=str(base),
            use_shared_memory=False,
            max_locations_map_matching=-1,
            max_radius_map_matching=-1,
        )
    )

    def match(t: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> list[list[tuple[float, float]]]:
        params = osrm.MatchParameters(
            coordinates=list(zip(lon.tolist(), lat.tolist(), strict=True)),
            timestamps=np.round(t - t[0]).astype(int).tolist(),
            radiuses=[args.sigma] * len(t), gaps="split", tidy=args.tidy, overview="full",
            geometries="geojson", generate_hints=False,
        )  # fmt: skip
        result = engine.Match(params)
        if result["code"] != "Ok":
            raise RuntimeError(str(result["code"]))
        lines = []
        for matching in result["matchings"]:
            coords = matching["geometry"]["coordinates"]
            lines.append([(float(c[0]), float(c[1])) for c in coords])
        return lines

    match_and_write(
        args,
        match,
        {
            "engine": f"osrm-bindings {version('osrm-bindings')} (MLD, car.lua)",
            "prepare_s": prepare_s,
            "load_s": load_s,
            "settings": {"radiuses_m": args.sigma, "gaps": "split", "tidy": args.tidy},
        },
    )


if __name__ == "__main__":
    main()
