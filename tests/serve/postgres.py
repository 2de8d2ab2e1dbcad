"""A real PostgreSQL server for tests: initdb and pg_ctl into a temporary folder, on a free port.

The server binaries are the first found of ``pg_ctl`` on PATH and Debian's
``/usr/lib/postgresql/<version>/bin`` (package ``postgresql``). PostgreSQL refuses to run as
root; a root test run starts it as the ``postgres`` user, in a folder of its own under the
system's temporary folder (pytest's folders are private to root), removed afterwards.
:func:`start_postgres` returns None with the reason when no server can start, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``url(db)`` is a SQLAlchemy URL (psycopg 3) to database ``db``."""

    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database with a fresh name and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, not user input
        return self.url(name)


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return debian[-1].parent if debian else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def start_postgres(tmp_path: Path, *, fsync: bool = False) -> Iterator[PostgresServer | str]:
    """Run a PostgreSQL server for the block; yield it, or the reason it cannot start.

    ``fsync`` off (the default, for tests) skips flushing commits to disk.
    """
    bindir = _binaries()
    if bindir is None:
        yield "no PostgreSQL server binaries (pg_ctl) on PATH or in /usr/lib/postgresql"
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield "psycopg is not installed (pip install 'psycopg[binary]')"
        return
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            yield "running as root and there is no 'postgres' user to run PostgreSQL as"
            return
        run_as = "postgres"
    with _server_folder(tmp_path, run_as) as folder:
        yield from _run_server(bindir, folder, run_as, fsync)


@contextlib.contextmanager
def _server_folder(tmp_path: Path, run_as: str | None) -> Iterator[Path]:
    if run_as is None:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="roadcover-pg-"))
    try:
        shutil.chown(folder, user=run_as)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_server(
    bindir: Path, folder: Path, run_as: str | None, fsync: bool
) -> Iterator[PostgresServer | str]:
    data, log = folder / "data", folder / "server.log"
    port = _free_port()
    user = "roadcover"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, user=run_as, capture_output=True, text=True, timeout=START_TIMEOUT_S,
            check=False, cwd=folder,
        )  # fmt: skip

    made = run(str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8")
    if made.returncode != 0:
        yield f"initdb failed: {(made.stderr or made.stdout).strip().splitlines()[-1:]}"
        return
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{folder}'\nfsync = {'on' if fsync else 'off'}\n"
            "max_connections = 200\n"
        )
    started = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start")
    if started.returncode != 0:
        reason = log.read_text()[-300:] if log.exists() else started.stderr
        yield f"pg_ctl start failed: {reason.strip()}"
        return
    try:
        yield PostgresServer(port=port, user=user)
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
