"""Locust users of benchmarks/bench_api.py: coverage queries or tile requests, one kind per run.

Configured by environment variables set by bench_api.py: ``BENCH_API_TARGET`` ("coverage" or
"tiles"), ``BENCH_API_ORG``/``BENCH_API_SECRET`` (a key), ``BENCH_API_REGION``,
``BENCH_API_WORK`` (a JSON file: the polygons, or the z/x/y of the tiles, to cycle through),
and ``BENCH_API_THINK`` (each user's think time between requests: ``"0"``, none, the
default, a closed loop measuring saturation; ``"0.5-1.5"``, uniform between 0.5 and 1.5 s).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, between, constant, task

TARGET = os.environ["BENCH_API_TARGET"]
REGION = os.environ["BENCH_API_REGION"]
AUTH = (os.environ["BENCH_API_ORG"], os.environ["BENCH_API_SECRET"])
with open(os.environ["BENCH_API_WORK"], encoding="utf-8") as handle:
    WORK: list[Any] = json.load(handle)
_NEXT = itertools.cycle(range(len(WORK)))
_THINK = os.environ.get("BENCH_API_THINK", "0")


class ApiUser(FastHttpUser):
    """One client: one request after another, with ``BENCH_API_THINK`` between them."""

    wait_time = constant(0) if _THINK == "0" else between(*(float(v) for v in _THINK.split("-")))

    def on_start(self) -> None:
        """Use HTTP Basic with the benchmark's key."""
        import base64

        token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    @task
    def request(self) -> None:
        """A coverage query of the next polygon, or the next tile."""
        item = WORK[next(_NEXT)]
        if TARGET == "coverage":
            body = {"region": REGION, "area": item}
            self.client.post("/v1/coverage", json=body, headers=self.headers, name="coverage")
        else:
            z, x, y = item
            with self.client.get(
                f"/v1/tiles/{REGION}/{z}/{x}/{y}.mvt", headers=self.headers, name="tile",
                catch_response=True,
            ) as response:  # fmt: skip
                if response.status_code in (200, 204):
                    response.success()
