"""The accounts database: keys, exact credits, one-transaction charging, idempotency, history.

Every test runs against a SQLite file in tmp_path and, where it matters, against a real
PostgreSQL server started here (tests/serve/postgres.py; skipped with the reason when none can
start). Concurrency is real: threads sharing one store, and processes with a store each.
Expected balances and counts are worked out by hand in each test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import shapely
import sqlalchemy as sa
from shapely.geometry import shape

from pipeline.config import settings_from_mapping
from pipeline.errors import ConfigError, PipelineError
from pipeline.serve.accounts import (
    Account,
    AccountInputError,
    AccountStore,
    AuthenticationError,
    Charge,
    IdempotencyConflict,
    InsufficientCredits,
    UnknownAccountError,
    database_url_from,
    orgs,
    parse_aoi,
)
from tests.serve.postgres import PostgresServer, start_postgres

JOIN_TIMEOUT_S = 120
OPENERS = 6  # processes opening one new accounts database at once
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[9.5, 47.0], [9.6, 47.0], [9.6, 47.1], [9.5, 47.1], [9.5, 47.0]]],
}


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        if isinstance(server, str):
            pytest.skip(f"no PostgreSQL server for the PostgreSQL tests: {server}")
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'accounts.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'accounts.sqlite'}"


def _charge(
    store: AccountStore,
    account: Account,
    credits: str,
    key: str | None = None,
    digest: str = "digest-1",
) -> Charge:
    return store.charge(
        account,
        endpoint="/v1/segments",
        request_digest=digest,
        release_id="r1",
        km=1.25,
        credits=Decimal(credits),
        idempotency_key=key,
    )


def _new_account(url: str, credits: str) -> tuple[AccountStore, Account, str]:
    store = AccountStore(url)
    issued = store.create_key("acme", credits=Decimal(credits))
    return store, store.authenticate("acme", issued.secret), issued.secret


# -- keys and authentication ---------------------------------------------------------------


def test_a_key_authenticates_and_carries_its_organisations_licence(database_url: str) -> None:
    store = AccountStore(database_url)
    issued = store.create_key("acme", regions=["liechtenstein", "demo"], aoi=SQUARE)
    account = store.authenticate("acme", issued.secret)
    assert account.org_id == "acme" and account.key_id == issued.key_id
    assert account.regions == ("demo", "liechtenstein")
    assert account.aoi is not None and account.aoi.equals(shape(SQUARE))
    assert account.expires is None
    other = store.create_key("open-org")
    assert store.authenticate("open-org", other.secret).regions is None
    assert store.authenticate("open-org", other.secret).aoi is None


def test_a_later_key_with_a_licence_replaces_the_organisations_licence(sqlite_url: str) -> None:
    store = AccountStore(sqlite_url)
    first = store.create_key("acme", regions=["demo"])
    store.create_key("acme", regions=["liechtenstein"])
    assert store.authenticate("acme", first.secret).regions == ("liechtenstein",)
    store.create_key("acme")  # no licence given: kept
    assert store.authenticate("acme", first.secret).regions == ("liechtenstein",)


def test_every_wrong_credential_gets_the_same_code_and_message(database_url: str) -> None:
    store = AccountStore(database_url)
    issued = store.create_key("acme")
    other = store.create_key("other")
    revoked = store.create_key("acme")
    store.revoke_key(revoked.key_id)
    key_id, token = issued.secret.split(".")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    wrong = [
        ("nobody", issued.secret),  # unknown organisation
        ("acme", f"rk_0000000000000000.{token}"),  # unknown key id
        ("acme", f"{key_id}.{flipped}"),  # wrong secret
        ("acme", other.secret),  # another organisation's key
        ("acme", f"{revoked.key_id}.{flipped}"),  # a revoked key, wrong secret: no hint
        ("acme", token),  # no key id
        ("acme", ""),
        ("acme\x00", issued.secret),  # PostgreSQL refuses NUL in text: must not reach it
        ("acme", f"rk_\x00.{token}"),
        ("a" * 5000, issued.secret),
    ]
    answers = set()
    for org_id, secret in wrong:
        with pytest.raises(AuthenticationError) as caught:
            store.authenticate(org_id, secret)
        answers.add((caught.value.code, str(caught.value), caught.value.http_status))
    assert answers == {
        ("unknown_key", "invalid credentials: check the organisation id and the API key", 401)
    }


def test_revoked_and_expired_keys_are_refused_with_their_own_codes(tmp_path: Path) -> None:
    database = tmp_path / "accounts.sqlite"
    store = AccountStore(f"sqlite:///{database}")
    today = datetime.now(UTC).date()
    revoked = store.create_key("acme")
    last_day_today = store.create_key("acme", expires=today)
    expired = store.create_key("acme", expires=today)
    store.revoke_key(revoked.key_id)
    store.revoke_key(revoked.key_id)  # twice: no error
    with sqlite3.connect(database) as conn:  # the expiry date passes
        conn.execute(
            "UPDATE api_keys SET expires = ? WHERE key_id = ?",
            ((today - timedelta(days=1)).isoformat(), expired.key_id),
        )
    with pytest.raises(AuthenticationError) as caught:
        store.authenticate("acme", revoked.secret)
    assert (caught.value.code, caught.value.http_status) == ("revoked_key", 401)
    with pytest.raises(AuthenticationError) as caught:
        store.authenticate("acme", expired.secret)
    assert caught.value.code == "expired_key"
    assert store.authenticate("acme", last_day_today.secret).expires == today
    statuses = {key.key_id: key.status for key in store.list_keys("acme")}
    assert statuses == {
        revoked.key_id: "revoked",
        last_day_today.key_id: "active",
        expired.key_id: "expired",
    }


def test_a_kept_key_row_answers_until_it_is_max_age_old(sqlite_url: str) -> None:
    store = AccountStore(sqlite_url)
    issued = store.create_key("acme", regions=["vaduz"])
    assert store.cached_account("acme", issued.secret, 60.0) is None  # never read yet
    account = store.authenticate("acme", issued.secret)
    assert store.cached_account("acme", issued.secret, 60.0) == account
    assert store.cached_account("acme", issued.secret + "x", 60.0) is None  # to the database
    assert store.cached_account("other", issued.secret, 60.0) is None
    assert store.cached_account("acme", issued.secret, 0.0) is None  # 0: never kept
    store.revoke_key(issued.key_id)
    # within the bound the row read before the revocation answers; after it, the database
    assert store.cached_account("acme", issued.secret, 60.0) == account
    time.sleep(0.25)
    assert store.cached_account("acme", issued.secret, 0.2) is None
    with pytest.raises(AuthenticationError) as refused:
        store.authenticate("acme", issued.secret)
    assert refused.value.code == "revoked_key"
    with pytest.raises(AuthenticationError) as kept:  # the revoked row is kept too
        store.cached_account("acme", issued.secret, 60.0)
    assert kept.value.code == "revoked_key"
    shown = repr(store._keys.get("acme", issued.key_id, 60.0))
    assert issued.key_id in shown and "salt" not in shown and "secret" not in shown


def test_the_secret_is_stored_only_as_a_salted_hmac(tmp_path: Path) -> None:
    database = tmp_path / "accounts.sqlite"
    store = AccountStore(f"sqlite:///{database}")
    first, second = store.create_key("acme"), store.create_key("acme")
    for issued in (first, second):
        key_id, token = issued.secret.split(".")
        assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 random bits
        assert issued.secret not in repr(issued) and token not in repr(store.list_keys())
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("accounts.sqlite*"))
    with sqlite3.connect(database) as conn:
        rows = {
            key_id: (salt, stored)
            for key_id, salt, stored in conn.execute(
                "SELECT key_id, salt, secret_hash FROM api_keys"
            )
        }
    for issued in (first, second):
        key_id, token = issued.secret.split(".")
        assert token.encode() not in raw
        salt, stored = rows[key_id]
        assert len(salt) == 16
        assert stored == hmac.new(salt, token.encode(), hashlib.sha256).digest()
    assert rows[first.key_id][0] != rows[second.key_id][0]  # a salt per key


def test_the_basic_auth_header_encodes_org_and_secret() -> None:
    from pipeline.serve.accounts import IssuedKey

    issued = IssuedKey(org_id="acme", key_id="rk_1", secret="rk_1.abc", expires=None)
    assert issued.basic_auth_header() == "Basic " + base64.b64encode(b"acme:rk_1.abc").decode()


def test_listing_keys_never_shows_secrets_and_filters_by_org(sqlite_url: str) -> None:
    store = AccountStore(sqlite_url)
    a, b = store.create_key("acme"), store.create_key("beta")
    assert [k.key_id for k in store.list_keys("acme")] == [a.key_id]
    assert {k.key_id for k in store.list_keys()} == {a.key_id, b.key_id}
    assert not any(a.secret.split(".")[1] in repr(k) for k in store.list_keys())


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"org_id": "acme:evil"}, "invalid_org"),  # ':' would break Basic auth
        ({"org_id": ""}, "invalid_org"),
        ({"credits": Decimal(-1)}, "invalid_credits"),
        ({"credits": Decimal("0.0000001")}, "invalid_credits"),
        ({"credits": Decimal("NaN")}, "invalid_credits"),
        ({"regions": ["Bad Name"]}, "invalid_region"),
        ({"regions": []}, "invalid_region"),
        ({"aoi": {"type": "Point", "coordinates": [9.5, 47.0]}}, "invalid_aoi"),
        ({"expires": date(2000, 1, 1)}, "invalid_expiry"),
    ],
)
def test_bad_key_arguments_are_refused_and_nothing_is_written(
    sqlite_url: str, kwargs: dict[str, Any], code: str
) -> None:
    store = AccountStore(sqlite_url)
    arguments = {"org_id": "acme", **kwargs}
    org_id = arguments.pop("org_id")
    with pytest.raises(AccountInputError) as caught:
        store.create_key(org_id, **arguments)
    assert caught.value.code == code and "\n" not in str(caught.value)
    assert store.list_keys() == []


# -- credits and charging ------------------------------------------------------------------


def test_credits_are_exact_decimals(database_url: str) -> None:
    store, account, _ = _new_account(database_url, "0.3")
    for _ in range(3):
        _charge(store, account, "0.1")
    assert store.balance("acme") == Decimal(0)  # 0.3 - 3 * 0.1 in floats is 5.6e-17
    with pytest.raises(InsufficientCredits):
        _charge(store, account, "0.000001")
    assert store.add_credits("acme", Decimal("1234567.891234")) == Decimal("1234567.891234")


def test_a_charge_is_rounded_half_up_to_the_millionth(sqlite_url: str) -> None:
    store, account, _ = _new_account(sqlite_url, "10")
    assert _charge(store, account, "1.2345665").credits_used == Decimal("1.234567")  # not even
    assert _charge(store, account, "1.2345664").credits_used == Decimal("1.234566")
    assert store.balance("acme") == Decimal("7.530867")  # 10 - 1.234567 - 1.234566


def test_an_insufficient_balance_charges_and_records_nothing(database_url: str) -> None:
    store, account, _ = _new_account(database_url, "5")
    with pytest.raises(InsufficientCredits) as caught:
        _charge(store, account, "5.000001")
    assert (caught.value.code, caught.value.http_status) == ("insufficient_credits", 402)
    assert store.balance("acme") == Decimal(5)
    assert store.history("acme", limit=10, cursor=None).items == []
    charge = _charge(store, account, "5")
    assert (charge.credits_used, charge.credits_remaining) == (Decimal(5), Decimal(0))


def test_an_idempotency_key_replays_its_charge_and_refuses_another_request(
    database_url: str,
) -> None:
    store, account, _ = _new_account(database_url, "100")
    first = _charge(store, account, "7", key="k-1")
    again = _charge(store, account, "7", key="k-1")
    assert first == Charge(first.charge_id, Decimal(7), Decimal(93), replayed=False)
    assert again == Charge(first.charge_id, Decimal(7), Decimal(93), replayed=True)
    with pytest.raises(IdempotencyConflict) as caught:
        _charge(store, account, "7", key="k-1", digest="another request")
    assert (caught.value.code, caught.value.http_status) == ("idempotency_conflict", 409)
    assert store.balance("acme") == Decimal(93)
    other = store.create_key("other", credits=Decimal(10))  # keys are per organisation
    other_account = store.authenticate("other", other.secret)
    assert not _charge(store, other_account, "7", key="k-1").replayed


@pytest.mark.parametrize("key", ["", "with space", "k" * 256, "cl\u00e9", "tab\t"])
def test_a_malformed_idempotency_key_is_refused_and_nothing_charged(
    database_url: str, key: str
) -> None:
    store, account, _ = _new_account(database_url, "10")
    with pytest.raises(AccountInputError) as caught:
        _charge(store, account, "1", key=key)
    assert (caught.value.code, caught.value.http_status) == ("invalid_idempotency_key", 422)
    assert store.balance("acme") == Decimal(10)
    assert _charge(store, account, "1", key="k" * 255).credits_remaining == Decimal(9)


@pytest.mark.parametrize("km", [float("nan"), float("inf"), -0.5])
def test_road_km_that_is_not_a_length_is_refused(sqlite_url: str, km: float) -> None:
    store, account, _ = _new_account(sqlite_url, "10")
    with pytest.raises(AccountInputError, match="road km"):
        store.charge(
            account,
            endpoint="/v1/segments",
            request_digest="d",
            release_id="r",
            km=km,
            credits=Decimal(1),
            idempotency_key=None,
        )
    with pytest.raises(AccountInputError, match="road km"):
        store.record_query(
            account, endpoint="/v1/coverage", request_digest="d", release_id="r", km=km
        )
    assert store.history("acme", limit=10, cursor=None).items == []


def test_adding_credits_to_an_unknown_org_or_a_non_positive_amount_is_refused(
    sqlite_url: str,
) -> None:
    store = AccountStore(sqlite_url)
    store.create_key("acme", credits=Decimal(1))
    with pytest.raises(UnknownAccountError, match="no organisation 'ghost'"):
        store.add_credits("ghost", Decimal(5))
    for amount in ("0", "-5"):
        with pytest.raises(AccountInputError):
            store.add_credits("acme", Decimal(amount))
    assert store.add_credits("acme", Decimal("2.5")) == Decimal("3.5")
    with pytest.raises(UnknownAccountError, match="rk_nope"):
        store.revoke_key("rk_nope")


# -- history -------------------------------------------------------------------------------


def test_history_pages_newest_first_with_free_queries_at_cost_zero(database_url: str) -> None:
    started = datetime.now(UTC)
    store, account, _ = _new_account(database_url, "10")
    _charge(store, account, "1", key="a")
    store.record_query(
        account, endpoint="/v1/coverage", request_digest="q2", release_id="r1", km=3.5
    )
    _charge(store, account, "2", digest="q3")
    store.record_query(
        account, endpoint="/v1/coverage", request_digest="q4", release_id="r2", km=0.0
    )
    _charge(store, account, "3", digest="q5")
    pages, cursor = [], None
    while True:
        page = store.history("acme", limit=2, cursor=cursor)
        pages.append([(i.request_digest, i.credits) for i in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [
        [("q5", Decimal(3)), ("q4", Decimal(0))],
        [("q3", Decimal(2)), ("q2", Decimal(0))],
        [("digest-1", Decimal(1))],
    ]
    items = store.history("acme", limit=10, cursor=None).items
    assert all(started <= i.created_at <= datetime.now(UTC) for i in items)
    assert [i.created_at for i in items] == sorted((i.created_at for i in items), reverse=True)
    newest = items[0]
    assert (newest.endpoint, newest.release_id, newest.km, newest.key_id) == (
        "/v1/segments",
        "r1",
        1.25,
        account.key_id,
    )
    assert store.history("other", limit=5, cursor=None).items == []
    assert store.balance("acme") == Decimal(4)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1e3", "9" * 30, "\uff11\uff12"])
def test_a_foreign_cursor_or_limit_is_refused(sqlite_url: str, cursor: str) -> None:
    store = AccountStore(sqlite_url)
    with pytest.raises(AccountInputError) as caught:
        store.history("acme", limit=10, cursor=cursor)
    assert caught.value.code == "invalid_cursor"
    with pytest.raises(AccountInputError, match="limit"):
        store.history("acme", limit=0, cursor=None)


# -- concurrency ---------------------------------------------------------------------------


def _charge_after_barrier(
    store: AccountStore, account: Account, barrier: Any, key: str | None, digest: str
) -> tuple[str, Any]:
    barrier.wait(timeout=JOIN_TIMEOUT_S)
    try:
        charge = _charge(store, account, "7", key=key, digest=digest)
    except InsufficientCredits:
        return ("refused", None)
    return ("charged", (charge.charge_id, charge.credits_remaining, charge.replayed))


def _charge_in_threads(
    url: str, secret: str, barrier: Any, threads: int, key: str | None, label: str
) -> list[tuple[str, Any]]:
    """Charge 7 credits from ``threads`` threads sharing one store, all at once."""
    store = AccountStore(url)
    account = store.authenticate("acme", secret)
    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(
                    _charge_after_barrier,
                    store,
                    account,
                    barrier,
                    key,
                    f"digest-{label}-{n}" if key is None else "same",
                )
                for n in range(threads)
            ]
            return [future.result(timeout=JOIN_TIMEOUT_S) for future in futures]
    finally:
        store.close()


def _process_worker(
    url: str, secret: str, barrier: Any, key: str | None, threads: int, results: Any, index: int
) -> None:
    for outcome in _charge_in_threads(url, secret, barrier, threads, key, str(index)):
        results.put(outcome)


def _run_in_threads(url: str, secret: str, count: int, key: str | None) -> list[tuple[str, Any]]:
    return _charge_in_threads(url, secret, threading.Barrier(count), count, key, "t")


def _run_in_processes(
    url: str, secret: str, processes: int, threads: int, key: str | None
) -> list[tuple[str, Any]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes * threads)
    results = context.Queue()
    workers = [
        context.Process(
            target=_process_worker, args=(url, secret, barrier, key, threads, results, index)
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=JOIN_TIMEOUT_S) for _ in range(processes * threads)]
    for worker in workers:
        worker.join(timeout=JOIN_TIMEOUT_S)
        assert worker.exitcode == 0
    return outcomes


def _check_no_overspend(store: AccountStore, outcomes: list[tuple[str, Any]]) -> None:
    # 100 credits, 30 charges of 7: floor(100 / 7) = 14 succeed, 100 - 14 * 7 = 2 remain
    charged = [result for kind, result in outcomes if kind == "charged"]
    assert len(charged) == 14 and len(outcomes) == 30
    assert sorted(remaining for _, remaining, _ in charged) == [
        Decimal(100 - 7 * n) for n in range(14, 0, -1)
    ]
    assert store.balance("acme") == Decimal(2)
    assert len(store.history("acme", limit=100, cursor=None).items) == 14


def _check_charged_once(store: AccountStore, outcomes: list[tuple[str, Any]]) -> None:
    assert len(outcomes) == 20
    assert all(kind == "charged" for kind, _ in outcomes)
    assert len({charge_id for _, (charge_id, _, _) in outcomes}) == 1
    assert sorted(replayed for _, (_, _, replayed) in outcomes) == [False] + [True] * 19
    assert {remaining for _, (_, remaining, _) in outcomes} == {Decimal(93)}
    assert store.balance("acme") == Decimal(93)
    assert len(store.history("acme", limit=100, cursor=None).items) == 1


def test_concurrent_threads_never_overspend(database_url: str) -> None:
    store, _, secret = _new_account(database_url, "100")
    _check_no_overspend(store, _run_in_threads(database_url, secret, 30, key=None))


def test_concurrent_processes_never_overspend(database_url: str) -> None:
    store, _, secret = _new_account(database_url, "100")
    _check_no_overspend(store, _run_in_processes(database_url, secret, 3, 10, key=None))


def test_twenty_concurrent_identical_requests_in_threads_charge_once(database_url: str) -> None:
    store, _, secret = _new_account(database_url, "100")
    _check_charged_once(store, _run_in_threads(database_url, secret, 20, key="retry-1"))


def test_twenty_concurrent_identical_requests_in_processes_charge_once(
    database_url: str,
) -> None:
    store, _, secret = _new_account(database_url, "100")
    _check_charged_once(store, _run_in_processes(database_url, secret, 2, 10, key="retry-1"))


def _free_or_charged(store: AccountStore, account: Account, barrier: Any, task: str) -> str:
    """Record the free query ``task`` ("free-...") or charge 7 credits for it ("paid-...")."""
    barrier.wait(timeout=JOIN_TIMEOUT_S)
    if task.startswith("free-"):
        store.record_query(
            account, endpoint="coverage", request_digest=task, release_id="r1", km=0.5
        )
        return "recorded"
    try:
        _charge(store, account, "7", digest=task)
    except InsufficientCredits:
        return "refused"
    return "charged"


def _mixed_in_threads(url: str, secret: str, tasks: list[str], barrier: Any) -> list[str]:
    store = AccountStore(url)
    account = store.authenticate("acme", secret)
    try:
        with ThreadPoolExecutor(len(tasks)) as pool:
            futures = [
                pool.submit(_free_or_charged, store, account, barrier, task) for task in tasks
            ]
            return [future.result(timeout=JOIN_TIMEOUT_S) for future in futures]
    finally:
        store.close()


def _mixed_process_worker(
    url: str, secret: str, tasks: list[str], barrier: Any, results: Any
) -> None:
    results.put(_mixed_in_threads(url, secret, tasks, barrier))


def test_concurrent_free_queries_are_each_recorded_once_beside_exact_charges(
    database_url: str,
) -> None:
    # 2 processes x 20 threads at once: 30 free queries and 10 charges of 7 in each
    store, _, secret = _new_account(database_url, "100")
    halves = [
        [f"free-{p}-{n}" for n in range(15)] + [f"paid-{p}-{n}" for n in range(5)] for p in range(2)
    ]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(40), context.Queue()
    workers = [
        context.Process(
            target=_mixed_process_worker, args=(database_url, secret, half, barrier, results)
        )
        for half in halves
    ]
    for worker in workers:
        worker.start()
    outcomes = [o for _ in workers for o in results.get(timeout=JOIN_TIMEOUT_S)]
    for worker in workers:
        worker.join(timeout=JOIN_TIMEOUT_S)
        assert worker.exitcode == 0
    assert outcomes.count("recorded") == 30
    # 100 credits and 10 charges of 7 all fit: 100 - 70 = 30 remain
    assert outcomes.count("charged") == 10 and store.balance("acme") == Decimal(30)
    items = store.history("acme", limit=1000, cursor=None).items
    digests = sorted(item.request_digest for item in items)
    assert digests == sorted(task for half in halves for task in half)
    free = [item for item in items if item.endpoint == "coverage"]
    assert {(item.credits, item.km) for item in free} == {(Decimal(0), 0.5)}


def test_free_queries_alone_skip_the_disk_sync_on_sqlite(sqlite_url: str) -> None:
    # PRAGMA synchronous: 2 = FULL (every commit synced), 1 = NORMAL (WAL synced later)
    store, account, _ = _new_account(sqlite_url, "10")
    seen: list[tuple[str, int]] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO charges"):
            mode = conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0]
            seen.append(("free" if "coverage" in str(args) else "paid", mode))

    for engine in {store.engine, store._free_history_engine}:
        sa.event.listen(engine, "before_cursor_execute", watch)
    store.record_query(account, endpoint="coverage", request_digest="q", release_id="r", km=1.0)
    _charge(store, account, "1")
    assert seen == [("free", 1), ("paid", 2)]
    raw = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT count(*) FROM charges").fetchone()[0] == 2
    raw.close()


def test_an_asynchronous_free_query_commit_leaves_charges_synchronous_on_postgresql(
    postgres: PostgresServer,
) -> None:
    store, account, _ = _new_account(postgres.create_database(), "10")
    # one connection in the pool: record_query's transaction and the next one share it
    store.record_query(account, endpoint="coverage", request_digest="q", release_id="r", km=1.0)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    _charge(store, account, "1")
    items = store.history("acme", limit=5, cursor=None).items
    assert [(i.request_digest, i.credits) for i in items] == [
        ("digest-1", Decimal(1)), ("q", Decimal(0)),
    ]  # fmt: skip


def test_keys_created_at_once_for_a_new_org_all_count(database_url: str) -> None:
    store = AccountStore(database_url)
    barrier = threading.Barrier(10)

    def create(_: int) -> str:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        return store.create_key("new-org", credits=Decimal("2.5")).key_id

    with ThreadPoolExecutor(10) as pool:
        key_ids = list(pool.map(create, range(10), timeout=JOIN_TIMEOUT_S))
    assert store.balance("new-org") == Decimal(25)  # 10 x 2.5
    assert sorted(k.key_id for k in store.list_keys("new-org")) == sorted(key_ids)
    assert len(set(key_ids)) == 10


def _open_store_after_barrier(url: str, barrier: Any) -> None:
    barrier.wait(timeout=JOIN_TIMEOUT_S)
    AccountStore(url).close()


def test_processes_creating_the_schema_at_once_all_succeed(database_url: str) -> None:
    """Six processes open a new database at once: none is refused (SQLite: switching to WAL)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(OPENERS)
    workers = [
        context.Process(target=_open_store_after_barrier, args=(database_url, barrier))
        for _ in range(OPENERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=JOIN_TIMEOUT_S)
    assert [worker.exitcode for worker in workers] == [0] * OPENERS
    store = AccountStore(database_url)
    store.create_key("acme")
    assert len(store.list_keys()) == 1


def test_a_database_locked_for_longer_than_the_busy_timeout_is_one_line(tmp_path: Path) -> None:
    database = tmp_path / "accounts.sqlite"
    store = AccountStore(f"sqlite:///{database}", busy_timeout_s=0.2)
    account = store.authenticate("acme", store.create_key("acme", credits=Decimal(5)).secret)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(PipelineError) as caught:
            _charge(store, account, "1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    error = caught.value
    assert (getattr(error, "code", None), getattr(error, "http_status", None)) == (
        "database_unavailable",
        503,
    )
    assert str(error) == "the accounts database is unavailable: database is locked"
    assert _charge(store, account, "1").credits_remaining == Decimal(4)


# -- database URL and AOI ------------------------------------------------------------------


def test_the_database_url_comes_from_flag_then_env_then_config_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regions = [{"name": "demo", "osm": "x.osm"}]
    plain = settings_from_mapping({"regions": regions, "output_dir": str(tmp_path / "out")})
    configured = settings_from_mapping(
        {"regions": regions, "api": {"database_url": "sqlite:///from-config.sqlite"}}
    )
    monkeypatch.delenv("ROADCOVER_DATABASE_URL", raising=False)
    assert database_url_from(plain) == f"sqlite:///{tmp_path / 'out' / 'api' / 'accounts.sqlite'}"
    assert database_url_from(configured) == "sqlite:///from-config.sqlite"
    monkeypatch.setenv("ROADCOVER_DATABASE_URL", "sqlite:///from-env.sqlite")
    assert database_url_from(configured) == "sqlite:///from-env.sqlite"
    assert database_url_from(configured, "sqlite:///flag.sqlite") == "sqlite:///flag.sqlite"
    with pytest.raises(ConfigError, match="api.database_url"):
        settings_from_mapping({"regions": regions, "api": {"database_url": ""}})


@pytest.mark.parametrize(
    ("url", "words"),
    [("mysql://u@h/db", "SQLite"), ("not a url", "not a URL")],
)
def test_an_unsupported_database_url_is_one_line(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        AccountStore(url)
    assert "\n" not in str(caught.value)


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PipelineError) as caught:
        AccountStore(f"postgresql://user:hunter2@127.0.0.1:{port}/db")
    message = str(caught.value)
    assert "unavailable" in message and "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("aoi", "words"),
    [
        ({"type": "Point", "coordinates": [1, 2]}, "'Point' geometry"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]},
            "Self-intersection",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [0, 1], [0, 0]]]}, "longitude"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [float("nan"), 0], [0, 1], [0, 0]]]},
            "finite",
        ),
        ({"type": "Polygon", "coordinates": "nope"}, "not a valid GeoJSON Polygon"),
        ({"type": "FeatureCollection", "features": []}, "exactly one Feature"),
        ({"type": "Feature", "geometry": None}, "no geometry"),
        ([1, 2], "not a GeoJSON object"),
    ],
)
def test_a_bad_aoi_is_refused_naming_the_problem(aoi: object, words: str) -> None:
    with pytest.raises(AccountInputError, match=words) as caught:
        parse_aoi(aoi, "aoi.geojson")
    assert str(caught.value).startswith("aoi.geojson: ") and "\n" not in str(caught.value)


def test_an_aoi_feature_collection_of_one_multipolygon_is_read() -> None:
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"]]}
    collection = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": multi}],
    }
    area = parse_aoi(json.loads(json.dumps(collection)))
    assert area.geom_type == "MultiPolygon"
    assert shapely.area(area) == pytest.approx(0.1 * 0.1)


class _StoreWithoutRowLock(AccountStore):
    """A store whose charges do not hold the org's row, and read it all at once.

    Every charge reads the balance, then waits until all have read it: only the unique
    (org, idempotency key) constraint is left to keep them from charging twice.
    """

    def __init__(self, url: str, concurrent: int) -> None:
        super().__init__(url)
        self.all_have_read = threading.Barrier(concurrent)

    def _lock_org(self, conn: Any, org_id: str) -> Decimal | None:
        value = conn.execute(sa.select(orgs.c.balance).where(orgs.c.org_id == org_id)).scalar()
        self.all_have_read.wait(timeout=JOIN_TIMEOUT_S)
        return None if value is None else Decimal(value)


def test_the_unique_idempotency_constraint_alone_charges_once(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    AccountStore(url).create_key("acme", credits=Decimal(100))
    store = _StoreWithoutRowLock(url, concurrent=10)
    account = Account("acme", store.list_keys()[0].key_id, None, None, None)

    def charge(_: int) -> Charge:
        return _charge(store, account, "7", key="retry-1", digest="same")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(charge, range(10), timeout=JOIN_TIMEOUT_S))
    assert len({result.charge_id for result in results}) == 1
    assert sum(not result.replayed for result in results) == 1
    assert store.balance("acme") == Decimal(93)
    assert len(store.history("acme", limit=100, cursor=None).items) == 1
