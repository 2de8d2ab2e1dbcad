"""Benchmark the accounts database: authenticating a key and charging credits.

Usage: ``python benchmarks/bench_accounts.py [--runs N] [--calls N] [--threads N]
[--postgres]`` (run from the checkout, so that ``tests.serve.postgres`` can be imported).

For SQLite (a file in a temporary folder) and, with ``--postgres``, a PostgreSQL server started
like the tests start it (initdb + pg_ctl) but with fsync on, measures:

``authenticate``
    :meth:`AccountStore.authenticate` of one key, one thread: median microseconds per call.
``charge, 1 thread``
    :meth:`AccountStore.charge` (row lock, balance update, history row, commit): median
    microseconds per call.
``charges/s, N threads``
    N threads charging the same organisation at once: charges per second (they serialise on
    the organisation's row, so this is the ceiling for one organisation).

Prints the median of N runs as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from pipeline.serve.accounts import AccountStore


def _time_calls(call: object, calls: int) -> float:
    assert callable(call)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def _measure(url: str, calls: int, threads: int) -> dict[str, float]:
    store = AccountStore(url)
    issued = store.create_key(f"bench-{time.monotonic_ns()}", credits=Decimal(10**9))
    account = store.authenticate(issued.org_id, issued.secret)

    def charge() -> None:
        store.charge(
            account, endpoint="/v1/segments", request_digest="d", release_id="r", km=1.0,
            credits=Decimal("0.5"), idempotency_key=None,
        )  # fmt: skip

    auth_us = _time_calls(lambda: store.authenticate(issued.org_id, issued.secret), calls)
    charge_us = _time_calls(charge, calls)
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: charge(), range(calls * threads)))
        per_s = calls * threads / (time.perf_counter() - start)
    store.close()
    return {"auth_us": auth_us, "charge_us": charge_us, "charges_per_s": per_s}


@contextlib.contextmanager
def _databases(postgres: bool) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        urls = {"SQLite (file, WAL)": f"sqlite:///{folder}/accounts.sqlite"}
        if not postgres:
            yield urls
            return
        from tests.serve.postgres import start_postgres

        with start_postgres(Path(folder), fsync=True) as server:
            if isinstance(server, str):
                raise SystemExit(f"PostgreSQL cannot start: {server}")
            yield {**urls, "PostgreSQL 15 (local, TCP)": server.create_database()}


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"| database | authenticate (µs) | charge, 1 thread (µs) "
        f"| charges/s, {args.threads} threads |\n|---|---:|---:|---:|"
    )
    with _databases(args.postgres) as urls:
        for name, url in urls.items():
            runs = [_measure(url, args.calls, args.threads) for _ in range(args.runs)]
            median = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            print(
                f"| {name} | {median['auth_us']:.0f} | {median['charge_us']:.0f} "
                f"| {median['charges_per_s']:.0f} |"
            )


if __name__ == "__main__":
    main()
