"""Ingest does not depend on the fleet simulator: its modules never import pipeline.simulate."""

from __future__ import annotations

from tests.imports import modules_imported_by

EVERY_INGEST_MODULE = """
import importlib
import pkgutil

import pipeline.ingest

for found in pkgutil.walk_packages(pipeline.ingest.__path__, "pipeline.ingest."):
    importlib.import_module(found.name)
"""


def test_importing_every_ingest_module_loads_nothing_of_the_simulator() -> None:
    loaded = modules_imported_by(EVERY_INGEST_MODULE, ("pipeline",))
    assert {"pipeline.ingest.stage", "pipeline.ingest.readers.nmea"} <= set(loaded)
    assert [name for name in loaded if name.split(".")[:2] == ["pipeline", "simulate"]] == []
