"""A coverage update loads no graph builder: its modules never import OSMnx (nor matplotlib).

OSMnx's import (matplotlib, rasterio, networkx's plotting) costs about a second of CPU, which
every coverage update would pay for a reader of roads folders that builds no graph.
"""

from __future__ import annotations

from tests.imports import modules_imported_by

EVERY_COVERAGE_MODULE = """
import importlib
import pkgutil

import pipeline.coverage

for found in pkgutil.walk_packages(pipeline.coverage.__path__, "pipeline.coverage."):
    importlib.import_module(found.name)
"""


def test_importing_every_coverage_module_loads_no_osmnx() -> None:
    loaded = modules_imported_by(EVERY_COVERAGE_MODULE, ("pipeline", "osmnx", "matplotlib"))
    assert {"pipeline.coverage.update", "pipeline.roads.shards"} <= set(loaded)
    assert [name for name in loaded if name.split(".")[0] in ("osmnx", "matplotlib")] == []
