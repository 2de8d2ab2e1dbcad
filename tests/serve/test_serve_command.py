"""``roadcover serve`` as users run it: a subprocess, two uvicorn workers, its logs."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.serve.accounts import AccountStore
from tests.serve.api_server import ServedData, build_served_data

START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ServedData:
    return build_served_data(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(data: ServedData, folder: Path) -> Path:
    config = {
        "regions": [{"name": "helsinki", "osm": "x.osm"}],
        "api": {
            "database_url": f"sqlite:///{folder / 'accounts.sqlite'}",
            "regions": {
                "helsinki": {
                    "releases": str(data.releases),
                    "roads": str(data.roads),
                    "tiles": str(data.tiles),
                }
            },
        },
    }
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def serve_command(config: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "serve", "--config", str(config),
            "--port", str(port), *extra]  # fmt: skip


@pytest.fixture
def served(data: ServedData, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    config, port = write_config(data, tmp_path), free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(
        serve_command(config, port, "--workers", "2"), stdout=log, stderr=subprocess.STDOUT,
        env=env, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield base, tmp_path, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def test_serve_with_two_workers_never_logs_keys(
    served: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    base, folder, process = served
    assert process.poll() is None, (folder / "serve.log").read_text()
    key = AccountStore(f"sqlite:///{folder / 'accounts.sqlite'}").create_key("buyer")
    token = base64.b64encode(f"{key.org_id}:{key.secret}".encode()).decode()
    with httpx.Client(base_url=base, auth=(key.org_id, key.secret), timeout=60) as http:
        statuses = {http.get("/v1/regions/helsinki/summary").status_code for _ in range(6)}
        wrong = http.get("/v1/account", auth=(key.org_id, key.secret[:-1] + "x"))
        history = http.get("/v1/account/history", params={"cursor": key.secret})
    assert statuses == {200}
    assert wrong.status_code == 401
    assert history.status_code == 422  # a secret pasted as a cursor is refused, not logged
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    log = (folder / "serve.log").read_text()
    assert "GET /v1/regions/helsinki/summary" in log  # the access log is on
    token_part = key.secret.split(".", 1)[1]
    for secret in (key.secret, token_part, token):
        assert secret not in log


def test_serve_refuses_a_busy_port_in_one_line(data: ServedData, tmp_path: Path) -> None:
    config = write_config(data, tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            serve_command(config, port), capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"roadcover: error: cannot listen on 127.0.0.1 port {port} (Address already in use); "
        "choose another --port"
    ]
