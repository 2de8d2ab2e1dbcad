"""Run the ``roadcover`` CLI and kill the process (``os._exit``) just before its Nth write lands.

Every output roadcover writes lands by a rename (:func:`pipeline.io.atomic_path`, the stages'
publishing of staged files, a release folder's rename), so the renames are its write points.
``python -m tests.faults.killer RECORD N ARGS...`` runs ``roadcover ARGS...``, appending the
destination of every rename to the JSON-lines file RECORD; with ``N`` > 0 the process dies with
status :data:`KILLED` at the Nth, before it happens, as a ``kill -9`` would leave it (no
``finally`` block, no atexit handler runs). ``N`` = 0 only records.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

KILLED = 137


class WritePoints:
    """Count renames across ``os.replace`` and ``os.rename``; record them, or die at one."""

    def __init__(self, record: str, kill_at: int) -> None:
        self.record = record
        self.kill_at = kill_at
        self.count = 0

    def counting(self, rename: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``rename`` so that every call is a counted write point."""

        def write_point(source: Any, destination: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            if self.count == self.kill_at:
                os._exit(KILLED)
            with open(self.record, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(os.fspath(destination)) + "\n")
            return rename(source, destination, *args, **kwargs)

        return write_point


def main() -> None:
    """Patch the renames, then run the CLI with the remaining arguments."""
    record, kill_at, *argv = sys.argv[1:]
    points = WritePoints(record, int(kill_at))
    os.replace = points.counting(os.replace)
    os.rename = points.counting(os.rename)
    from pipeline.cli import main as roadcover

    sys.exit(roadcover(argv))


if __name__ == "__main__":
    main()
