"""A real S3 API for the tests: moto's server on a free port of 127.0.0.1, a bucket per test."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1, for the module's tests."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket; the AWS_* variables (inherited by child processes) point at moto."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    name = f"test-{uuid.uuid4().hex[:12]}"
    store().mkdir(name)
    return name


def store() -> s3fs.S3FileSystem:
    """A client of the bucket server the AWS_* variables name (no cached instance)."""
    return s3fs.S3FileSystem(skip_instance_cache=True)


def sha256_objects(prefix: str) -> dict[str, str]:
    """sha256 of every object under ``bucket/prefix``, by path inside it."""
    fs = store()
    return {
        path[len(prefix) + 1 :]: hashlib.sha256(fs.cat_file(path)).hexdigest()
        for path in sorted(fs.find(prefix))
    }
