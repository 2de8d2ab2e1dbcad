"""Accounts of the keyed API: organisations, API keys, credits and the query history.

One :class:`AccountStore` per process holds a SQLAlchemy engine on one database URL: SQLite
(the default, a file under the output folder, nothing to start) or PostgreSQL through psycopg 3
(``postgresql+psycopg://user:password@host/db``; a plain ``postgresql://`` URL is read as
that). Its methods are thread-safe and every one is a single transaction.

Tables
------
``orgs``
    One row per organisation: its credit balance and its licence (the regions it may query,
    ``NULL`` for all, and an area of interest as GeoJSON, ``NULL`` for anywhere).
``api_keys``
    One row per key: the public ``key_id``, the organisation, a random salt and the salted
    hash of the secret, creation, expiry and revocation times. The secret itself is never
    stored, logged or shown again (it is not in any ``repr``).
``charges``
    The history: one row per answered query (free ones at cost 0) with the key, endpoint,
    request digest, release, road km, credits, the buyer's idempotency key (unique per
    organisation) and the time.

Credits are exact: :class:`~decimal.Decimal` in Python and whole millionths of a credit
(``BIGINT``) in the database, on SQLite and PostgreSQL alike (SQLite has no exact decimal
type). A charge is rounded half-up to the millionth.

Keys
----
A key is ``<key_id>.<token>``: the ``key_id`` (public, e.g. ``rk_3f9c0a1b2c3d4e5f``) finds
the row, the token is 256 random bits from :mod:`secrets`. The database keeps
``HMAC-SHA256(salt, token)`` with a 16-byte random salt per key. A slow password hash (bcrypt,
scrypt, Argon2) exists to make guessing a *low-entropy* password expensive; a 256-bit random
token cannot be guessed, so a fast keyed hash loses nothing and keeps authentication at a few
microseconds per request. Hashes are compared with :func:`hmac.compare_digest`. An unknown
organisation, an unknown key id, a key of another organisation and a wrong token all take the
same path (a hash of a dummy salt is computed when there is no row) and give the same
``unknown_key`` error, so an answer reveals neither which part was wrong nor whether a key
exists; only a caller holding the right secret learns that its key is revoked or expired.

Charging
--------
:meth:`AccountStore.charge` holds the organisation's row for the whole transaction (SQLite:
``BEGIN IMMEDIATE``, the database's write lock; PostgreSQL: ``SELECT ... FOR UPDATE``), checks
the idempotency key and the balance, decrements the balance and writes the history row, then
commits: concurrent requests never spend more than the balance and never lose a charge. The
unique ``(org_id, idempotency_key)`` constraint backs this up: a request that loses a race on
it answers as the replay it is.

Durability
----------
Every transaction that changes money (charges, credits added, keys, revocations) is durable
when it returns: on SQLite its commit syncs the write-ahead log to disk (``PRAGMA
synchronous=FULL`` under WAL), on PostgreSQL it waits for the WAL flush
(``synchronous_commit`` as the server has it, ``on`` by default).

The history row of a *free* query (:meth:`AccountStore.record_query`) is written without
waiting for the disk: on SQLite through a second engine on the same file whose connections
use ``PRAGMA synchronous=NORMAL`` (under WAL a commit is then an append to the log with no
fsync; the log is synced at the next FULL commit or checkpoint), on PostgreSQL with ``SET
LOCAL synchronous_commit = off`` for that insert alone (the commit returns before the WAL
flush; the server's WAL writer flushes it within ``3 x wal_writer_delay``, 0.6 s by default,
and any later synchronous commit flushes it first). Atomicity, ordering and isolation are
unchanged, and a crash of the API's process loses nothing (the row is in the log or the
server). Only a power loss, an OS crash or (PostgreSQL) a crash of the database server may
lose the free-query rows committed since the last sync, never a charge; the sync of a
charge's commit also syncs every row committed before it (the log is sequential). A synced
commit takes about 10 ms of wall time and commits are one at a time, which would cap free
queries at about 100 a second per database. A batched writer thread would avoid the sync
too, but would lose its unwritten rows when the process is killed, and needs a flush at
shutdown. On SQLite the writers of one
process queue on a lock of the store rather than in SQLite's busy handler, which sleeps up to
100 ms between tries.

Keys kept
---------
:meth:`AccountStore.authenticate` keeps the row of each key it read (salt and hash, never the
secret); :meth:`AccountStore.cached_account` answers from a row younger than the caller's
bound (the API's ``api.auth_cache_s``) without reading the database, so a revocation or a new
licence is in force within that bound.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shapely
import sqlalchemy as sa
from shapely.geometry import MultiPolygon, Polygon, shape
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

from pipeline.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from pipeline.config import Settings

DATABASE_URL_ENV = "ROADCOVER_DATABASE_URL"
MICRO = 10**6  # credits are stored as whole millionths
CREDIT_QUANTUM = Decimal(1).scaleb(-6)
MAX_BALANCE = Decimal(10) ** 12  # a balance fits a BIGINT of millionths with room to spare
ORG_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REGION_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
KEY_ID_PREFIX = "rk_"
KEY_ID_PATTERN = re.compile(KEY_ID_PREFIX + "[0-9a-f]{16}")
SALT_BYTES = 16
TOKEN_BYTES = 32  # 256 bits
SQLITE_BUSY_TIMEOUT_S = 30.0
WAL_SWITCH_RETRY_S = 0.01
# connections kept open per engine, and opened beyond them at busy times (closed after use):
# enough for the API's query threads and its authentications at once, without reconnecting
POOL_SIZE = 16
POOL_OVERFLOW = 16
KEYS_KEPT = 10_000  # key rows kept for AccountStore.cached_account
MAX_HISTORY_PAGE = 1000
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}")
SYNCHRONOUS_MODES = {"FULL": "FULL", "NORMAL": "NORMAL"}  # a fixed word, never user input
_SCHEMA_LOCK_ID = 0x52434143  # PostgreSQL advisory lock serialising schema creation ("RCAC")
_DUMMY_SALT = secrets.token_bytes(SALT_BYTES)
_DUMMY_HASH = secrets.token_bytes(32)

metadata = sa.MetaData()


class Credits(sa.types.TypeDecorator[Decimal]):
    """An exact credit amount: a Decimal in Python, whole millionths (BIGINT) in the database."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: sa.Dialect) -> int | None:
        """Return ``value`` in millionths; it must already be a whole number of them."""
        if value is None:
            return None
        micro = value * MICRO
        if micro != micro.to_integral_value():
            raise ValueError(f"credit amount {value} is finer than a millionth")
        return int(micro)

    def process_result_value(self, value: int | None, dialect: sa.Dialect) -> Decimal | None:
        """Return the millionths read from the database as credits."""
        return None if value is None else (Decimal(value) / MICRO).quantize(CREDIT_QUANTUM)


orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("org_id", sa.String(64), primary_key=True),
    sa.Column("balance", Credits(), nullable=False),
    sa.Column("regions", sa.Text, nullable=True),  # JSON list of region names; NULL = all
    sa.Column("aoi_geojson", sa.Text, nullable=True),  # GeoJSON (Multi)Polygon; NULL = anywhere
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.org_id"), nullable=False, index=True),
    sa.Column("salt", sa.LargeBinary(SALT_BYTES), nullable=False),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires", sa.Date, nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

charges = sa.Table(
    "charges",
    metadata,
    sa.Column("charge_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.org_id"), nullable=False),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.key_id"), nullable=False),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("request_digest", sa.Text, nullable=False),
    sa.Column("release_id", sa.Text, nullable=False),
    sa.Column("km", sa.Float, nullable=False),
    sa.Column("credits", Credits(), nullable=False),
    sa.Column("balance_after", Credits(), nullable=True),  # NULL for free queries
    sa.Column("idempotency_key", sa.String(MAX_IDEMPOTENCY_KEY), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("org_id", "idempotency_key", name="uq_charges_org_idempotency_key"),
    sa.Index("ix_charges_org_charge", "org_id", "charge_id"),
)


class AccountError(PipelineError):
    """An account operation refused; ``code`` is stable, ``http_status`` is the API's answer."""

    http_status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthenticationError(AccountError, PermissionError):
    """The credentials are wrong (``unknown_key``), or the key is revoked or expired."""

    http_status = 401


class InsufficientCredits(AccountError):  # noqa: N818 (the API's name)
    """The organisation's balance does not cover the charge (``insufficient_credits``)."""

    http_status = 402


class IdempotencyConflict(AccountError):  # noqa: N818 (the API's name)
    """An idempotency key was used before with another request (``idempotency_conflict``)."""

    http_status = 409


class UnknownAccountError(AccountError, LookupError):
    """An administrative command names an organisation or key id that does not exist."""

    http_status = 404


class AccountInputError(AccountError, ValueError):
    """An argument is malformed: a negative amount, an org id, a region, an AOI, a cursor."""

    http_status = 422


class DatabaseError(AccountError, OSError):
    """The accounts database cannot be reached or used (``database_unavailable``)."""

    http_status = 503


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``secret`` is what the client sends, shown once and stored only hashed."""

    org_id: str
    key_id: str
    secret: str = field(repr=False)
    expires: date | None

    def basic_auth_header(self) -> str:
        """Return the ``Authorization`` header value (Basic, ``org_id:secret`` in base64)."""
        token = base64.b64encode(f"{self.org_id}:{self.secret}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its secret or hash."""

    key_id: str
    org_id: str
    created_at: datetime
    expires: date | None
    revoked_at: datetime | None
    status: str  # "active", "revoked" or "expired"


@dataclass(frozen=True)
class Account:
    """An authenticated key and the licence of its organisation."""

    org_id: str
    key_id: str
    regions: tuple[str, ...] | None  # None: every region
    aoi: Polygon | MultiPolygon | None  # None: anywhere
    expires: date | None


@dataclass(frozen=True)
class Charge:
    """A charge made (or, ``replayed``, made before under the same idempotency key)."""

    charge_id: int
    credits_used: Decimal
    credits_remaining: Decimal
    replayed: bool


@dataclass(frozen=True)
class HistoryItem:
    """One answered query of an organisation (free ones with ``credits`` 0)."""

    charge_id: int
    created_at: datetime
    key_id: str
    endpoint: str
    request_digest: str
    release_id: str
    km: float
    credits: Decimal
    idempotency_key: str | None


@dataclass(frozen=True)
class HistoryPage:
    """A page of the history, newest first; ``next_cursor`` is None on the last page."""

    items: list[HistoryItem]
    next_cursor: str | None


def database_url_from(settings: Settings | None, override: str | None = None) -> str:
    """Return the accounts database URL to use.

    The first given of: ``override`` (``--database-url``), the environment variable
    ``ROADCOVER_DATABASE_URL``, the config key ``api.database_url``, and
    ``sqlite:///<output_dir>/api/accounts.sqlite``.
    """
    if override:
        return override
    if os.environ.get(DATABASE_URL_ENV):
        return os.environ[DATABASE_URL_ENV]
    output_dir = Path("results")
    if settings is not None:
        if settings.api.database_url:
            return settings.api.database_url
        output_dir = settings.output_dir
    return f"sqlite:///{(output_dir / 'api' / 'accounts.sqlite').resolve()}"


class AccountStore:
    """Organisations, keys, credits and history in one SQLite or PostgreSQL database.

    Parameters
    ----------
    database_url
        A SQLAlchemy URL: ``sqlite:///path/accounts.sqlite`` or
        ``postgresql+psycopg://user:password@host:port/db``. The schema is created if absent
        (idempotent, and safe when several processes start at once); the folder of a SQLite
        file is created.
    busy_timeout_s
        SQLite: how long a transaction waits for another process's write lock before it fails
        with ``database_unavailable``.

    Raises
    ------
    ConfigError
        If the URL is malformed or names a database other than SQLite or PostgreSQL.
    DatabaseError
        If the database cannot be reached.
    """

    def __init__(self, database_url: str, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:
        url = _parse_url(database_url)
        self.dialect = url.get_backend_name()
        # SQLite has one writer at a time: this process's writers queue on a lock instead of
        # in SQLite's busy handler, which sleeps up to 100 ms between tries
        self._writer_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self.engine = _create_engine(url, busy_timeout_s, synchronous="FULL")
        self._keys = _KeyRows()
        # free-query history rows: the same database, committed without a disk sync
        self._free_history_engine = (
            _create_engine(url, busy_timeout_s, synchronous="NORMAL")
            if self.dialect == "sqlite"
            else self.engine
        )
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_ID)))
            metadata.create_all(conn)

    def __repr__(self) -> str:
        return f"AccountStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()
        self._free_history_engine.dispose()

    # -- administration -------------------------------------------------------------------

    def create_key(
        self,
        org_id: str,
        *,
        credits: Decimal = Decimal(0),
        regions: Sequence[str] | None = None,
        aoi: Mapping[str, Any] | None = None,
        expires: date | None = None,
    ) -> IssuedKey:
        """Issue a key for ``org_id``, creating the organisation if it is new.

        ``credits`` are added to the balance. ``regions`` and ``aoi`` (a GeoJSON
        (Multi)Polygon, or a Feature of one), when given, replace the organisation's licence;
        a new organisation without them may query every region, anywhere.
        """
        _check_org_id(org_id)
        amount = _credit_amount(credits, "credits", allow_zero=True)
        regions_json = _regions_json(regions)
        aoi_json = json.dumps(_aoi_mapping(aoi)) if aoi is not None else None
        if expires is not None and expires < _today():
            raise AccountInputError(
                "invalid_expiry", f"expiry date {expires} has passed; give a later date"
            )
        key_id = KEY_ID_PREFIX + secrets.token_hex(8)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        salt = secrets.token_bytes(SALT_BYTES)
        now = _now()
        licence: dict[str, Any] = {}
        if regions is not None:
            licence["regions"] = regions_json
        if aoi is not None:
            licence["aoi_geojson"] = aoi_json
        with self._write() as conn:
            self._ensure_org(conn, org_id, now)
            balance = self._lock_org(conn, org_id)
            assert balance is not None  # the row exists: _ensure_org
            new_balance = _checked_balance(balance + amount)
            conn.execute(
                orgs.update().where(orgs.c.org_id == org_id).values(balance=new_balance, **licence)
            )
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id, org_id=org_id, salt=salt, secret_hash=_hash(salt, token),
                    created_at=now, expires=expires, revoked_at=None,
                )
            )  # fmt: skip
        return IssuedKey(org_id=org_id, key_id=key_id, secret=f"{key_id}.{token}", expires=expires)

    def list_keys(self, org_id: str | None = None) -> list[KeyInfo]:
        """Return the keys (of ``org_id``, or all), oldest first, without secrets."""
        query = sa.select(
            api_keys.c.key_id, api_keys.c.org_id, api_keys.c.created_at,
            api_keys.c.expires, api_keys.c.revoked_at,
        ).order_by(api_keys.c.created_at, api_keys.c.key_id)  # fmt: skip
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        with self._read() as conn:
            rows = conn.execute(query).all()
        today = _today()
        return [
            KeyInfo(
                key_id=row.key_id,
                org_id=row.org_id,
                created_at=_utc(row.created_at),
                expires=row.expires,
                revoked_at=_utc_or_none(row.revoked_at),
                status=_key_status(row.revoked_at, row.expires, today),
            )
            for row in rows
        ]

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key (at once, for every later request); revoking twice changes nothing.

        Raises
        ------
        UnknownAccountError
            If no key has that id.
        """
        with self._write() as conn:
            found = None
            if KEY_ID_PATTERN.fullmatch(key_id):
                found = conn.execute(
                    sa.select(api_keys.c.revoked_at).where(api_keys.c.key_id == key_id)
                ).first()
            if found is None:
                raise UnknownAccountError(
                    "unknown_key_id", f"no key with id {key_id!r}; see roadcover keys list"
                )
            if found.revoked_at is None:
                conn.execute(
                    api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=_now())
                )

    def add_credits(self, org_id: str, credits: Decimal) -> Decimal:
        """Add ``credits`` (> 0) to an existing organisation's balance; return the new one."""
        amount = _credit_amount(credits, "credits", allow_zero=False)
        _check_org_id(org_id)
        with self._write() as conn:
            balance = self._lock_org(conn, org_id)
            if balance is None:
                raise UnknownAccountError(
                    "unknown_org",
                    f"no organisation {org_id!r}; create its first key with "
                    f"roadcover keys create --org {org_id}",
                )
            new_balance = _checked_balance(balance + amount)
            conn.execute(orgs.update().where(orgs.c.org_id == org_id).values(balance=new_balance))
        return new_balance

    # -- requests -------------------------------------------------------------------------

    def authenticate(self, org_id: str, secret: str) -> Account:
        """Return the account of a valid, unrevoked, unexpired key, read from the database.

        The key's row is kept for :meth:`cached_account` (its salt and hash, never the secret).

        Raises
        ------
        AuthenticationError
            ``unknown_key`` for wrong credentials of any kind (one message for all);
            ``revoked_key`` or ``expired_key`` (after the day of ``expires``, UTC) for a key
            whose secret is right.
        """
        key_id, _, token = secret.partition(".")
        query = (
            sa.select(api_keys, orgs.c.regions, orgs.c.aoi_geojson)
            .join(orgs, orgs.c.org_id == api_keys.c.org_id)
            .where(api_keys.c.key_id == key_id, api_keys.c.org_id == org_id)
        )
        row = None
        if ORG_ID_PATTERN.fullmatch(org_id) and KEY_ID_PATTERN.fullmatch(key_id):
            with self._read() as conn:  # only well-formed ids reach the database
                row = conn.execute(query).first()
        salt, stored = (_DUMMY_SALT, _DUMMY_HASH) if row is None else (row.salt, row.secret_hash)
        matches = hmac.compare_digest(_hash(salt, token), stored)
        if row is None or not matches:
            raise AuthenticationError(
                "unknown_key", "invalid credentials: check the organisation id and the API key"
            )
        key = _KeyRow.from_row(row, time.monotonic())
        self._keys.put(key)
        return key.account()

    def cached_account(self, org_id: str, secret: str, max_age_s: float) -> Account | None:
        """Return the account of a key read from the database less than ``max_age_s`` ago.

        No I/O: the key's row as :meth:`authenticate` last read it, if that was within
        ``max_age_s`` seconds and the secret matches its hash. So a key revoked, or a licence
        changed, in the database is seen within ``max_age_s``. None when there is no such row
        or the secret does not match it: then call :meth:`authenticate`, which answers every
        wrong credential the same way.

        Raises
        ------
        AuthenticationError
            ``revoked_key`` or ``expired_key``, as :meth:`authenticate`.
        """
        key_id, _, token = secret.partition(".")
        key = self._keys.get(org_id, key_id, max_age_s)
        if key is None or not hmac.compare_digest(_hash(key.salt, token), key.secret_hash):
            return None
        return key.account()

    def balance(self, org_id: str) -> Decimal:
        """Return the organisation's balance in credits."""
        with self._read() as conn:
            value = conn.execute(sa.select(orgs.c.balance).where(orgs.c.org_id == org_id)).scalar()
        if value is None:
            raise UnknownAccountError("unknown_org", f"no organisation {org_id!r}")
        return Decimal(value)

    def charge(
        self,
        account: Account,
        *,
        endpoint: str,
        request_digest: str,
        release_id: str,
        km: float,
        credits: Decimal,
        idempotency_key: str | None,
    ) -> Charge:
        """Charge ``credits`` (rounded half-up to the millionth) and record the query.

        One transaction holds the organisation's row: balance check, decrement and history
        row. A request repeating an earlier one's ``idempotency_key`` and ``request_digest``
        gets the earlier :class:`Charge` back with ``replayed=True`` and pays nothing.

        Raises
        ------
        InsufficientCredits
            If the balance is below ``credits``; nothing is charged or recorded.
        IdempotencyConflict
            If ``idempotency_key`` was used before by this organisation with another request.
        AccountInputError
            ``invalid_idempotency_key`` if the key is not 1-255 printable ASCII characters.
        """
        amount = _credit_amount(credits, "credits", allow_zero=True, round_half_up=True)
        _check_km(km)
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
        try:
            return self._charge_once(
                account, endpoint, request_digest, release_id, km, amount, idempotency_key
            )
        except IntegrityError:
            if idempotency_key is None:
                raise DatabaseError("database_error", "the charge could not be recorded") from None
        # another transaction recorded this idempotency key between our check and our insert
        with self._read() as conn:
            earlier = _charge_by_idempotency_key(conn, account.org_id, idempotency_key)
        if earlier is None:  # the constraint violated was another one
            raise DatabaseError("database_error", "the charge could not be recorded")
        return _replay(earlier, request_digest, idempotency_key)

    def record_query(
        self, account: Account, *, endpoint: str, request_digest: str, release_id: str, km: float
    ) -> None:
        """Record a free query in the history at cost 0, without waiting for a disk sync.

        The row is committed like any other (atomic, visible to every later read) but not
        synced to disk before this returns (module docstring, Durability): a power loss may
        lose the last free-query rows, never a charge.
        """
        _check_km(km)
        with self._write(self._free_history_engine) as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            _insert_charge(
                conn, account, endpoint, request_digest, release_id, km, Decimal(0), None, None
            )

    def history(self, org_id: str, *, limit: int, cursor: str | None) -> HistoryPage:
        """Return up to ``limit`` (1-1000) queries of ``org_id``, newest first, after ``cursor``.

        Raises
        ------
        AccountInputError
            ``invalid_limit`` or ``invalid_cursor``.
        """
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise AccountInputError(
                "invalid_limit", f"limit {limit} must be between 1 and {MAX_HISTORY_PAGE}"
            )
        query = (
            sa.select(charges)
            .where(charges.c.org_id == org_id)
            .order_by(charges.c.charge_id.desc())
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(charges.c.charge_id < _parse_cursor(cursor))
        with self._read() as conn:
            rows = conn.execute(query).all()
        items = [_history_item(row) for row in rows[:limit]]
        next_cursor = str(items[-1].charge_id) if len(rows) > limit else None
        return HistoryPage(items=items, next_cursor=next_cursor)

    # -- transactions ---------------------------------------------------------------------

    def _charge_once(
        self,
        account: Account,
        endpoint: str,
        request_digest: str,
        release_id: str,
        km: float,
        amount: Decimal,
        idempotency_key: str | None,
    ) -> Charge:
        with self._write() as conn:
            balance = self._lock_org(conn, account.org_id)
            if balance is None:
                raise UnknownAccountError("unknown_org", f"no organisation {account.org_id!r}")
            if idempotency_key is not None:
                earlier = _charge_by_idempotency_key(conn, account.org_id, idempotency_key)
                if earlier is not None:
                    return _replay(earlier, request_digest, idempotency_key)
            if amount > balance:
                raise InsufficientCredits(
                    "insufficient_credits",
                    f"this request costs {amount} credits and the balance is {balance}; "
                    "add credits or ask for a smaller area",
                )
            remaining = balance - amount
            conn.execute(
                orgs.update().where(orgs.c.org_id == account.org_id).values(balance=remaining)
            )
            charge_id = _insert_charge(
                conn, account, endpoint, request_digest, release_id, km, amount, remaining,
                idempotency_key,
            )  # fmt: skip
        return Charge(charge_id, amount, remaining, replayed=False)

    def _lock_org(self, conn: Connection, org_id: str) -> Decimal | None:
        """Return the org's balance, holding its row until the transaction ends (None: no org).

        On SQLite the transaction already holds the database's write lock (BEGIN IMMEDIATE).
        """
        query = sa.select(orgs.c.balance).where(orgs.c.org_id == org_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        value = conn.execute(query).scalar()
        return None if value is None else Decimal(value)

    def _ensure_org(self, conn: Connection, org_id: str, now: datetime) -> None:
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        conn.execute(
            insert(orgs)
            .values(org_id=org_id, balance=Decimal(0), regions=None, aoi_geojson=None,
                    created_at=now)
            .on_conflict_do_nothing(index_elements=["org_id"])
        )  # fmt: skip

    @contextlib.contextmanager
    def _write(self, engine: Engine | None = None) -> Iterator[Connection]:
        """Open a transaction that may write (SQLite: BEGIN IMMEDIATE, the write lock).

        ``engine`` defaults to the durable one (every commit synced to disk).
        """
        with self._writer_lock, _database_errors(), (engine or self.engine).connect() as conn:
            conn = conn.execution_options(roadcover_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """Open a connection for one read statement (PostgreSQL: autocommit, no BEGIN/COMMIT)."""
        with _database_errors(), self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                yield conn


@dataclass(frozen=True)
class _KeyRow:
    """A key's row as read from the database at ``read_at`` (``time.monotonic``)."""

    org_id: str
    key_id: str
    salt: bytes = field(repr=False)
    secret_hash: bytes = field(repr=False)
    revoked_at: datetime | None
    expires: date | None
    regions: tuple[str, ...] | None
    aoi: Polygon | MultiPolygon | None
    read_at: float

    @classmethod
    def from_row(cls, row: Any, read_at: float) -> _KeyRow:
        """Return the key of a joined ``api_keys``/``orgs`` row."""
        return cls(
            org_id=row.org_id, key_id=row.key_id, salt=row.salt, secret_hash=row.secret_hash,
            revoked_at=row.revoked_at, expires=row.expires,
            regions=tuple(json.loads(row.regions)) if row.regions is not None else None,
            aoi=_aoi_geometry(json.loads(row.aoi_geojson)) if row.aoi_geojson else None,
            read_at=read_at,
        )  # fmt: skip

    def account(self) -> Account:
        """Return the key's account (its secret already checked), or refuse a dead key."""
        if self.revoked_at is not None:
            raise AuthenticationError(
                "revoked_key", f"API key {self.key_id} was revoked; ask for a new key"
            )
        if self.expires is not None and self.expires < _today():
            raise AuthenticationError(
                "expired_key", f"API key {self.key_id} expired on {self.expires}; ask for a new key"
            )
        return Account(
            org_id=self.org_id, key_id=self.key_id, regions=self.regions, aoi=self.aoi,
            expires=self.expires,
        )  # fmt: skip


class _KeyRows:
    """The key rows :meth:`AccountStore.authenticate` read last, by (org id, key id)."""

    def __init__(self, most: int = KEYS_KEPT) -> None:
        self._most = most
        self._rows: dict[tuple[str, str], _KeyRow] = {}
        self._lock = threading.Lock()

    def put(self, key: _KeyRow) -> None:
        """Keep ``key``, forgetting the longest-kept row when there are too many."""
        with self._lock:
            self._rows.pop((key.org_id, key.key_id), None)
            self._rows[(key.org_id, key.key_id)] = key
            while len(self._rows) > self._most:
                del self._rows[next(iter(self._rows))]

    def get(self, org_id: str, key_id: str, max_age_s: float) -> _KeyRow | None:
        """Return the row of the key if it was read less than ``max_age_s`` ago."""
        key = self._rows.get((org_id, key_id))
        if key is None or not time.monotonic() - key.read_at < max_age_s:
            return None
        return key


def parse_aoi(data: object, source: str = "AOI") -> Polygon | MultiPolygon:
    """Return the (Multi)Polygon of a GeoJSON geometry, Feature or one-Feature collection.

    Raises
    ------
    AccountInputError
        ``invalid_aoi``, naming ``source``, if it is anything else, has coordinates that are
        not finite lon/lat, or is not a valid polygon (the reason given).
    """

    def refuse(reason: str) -> AccountInputError:
        return AccountInputError("invalid_aoi", f"{source}: {reason}")

    geometry = _single_geometry(data, refuse)
    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise refuse(f"a {geometry.get('type')!r} geometry; give a Polygon or MultiPolygon")
    try:
        with warnings.catch_warnings():  # NaN coordinates: refused below, with the reason
            warnings.simplefilter("ignore", RuntimeWarning)
            area = shape(geometry)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise refuse(f"not a valid GeoJSON {geometry['type']} ({exc})") from None
    coords = shapely.get_coordinates(area)
    if area.is_empty or not len(coords):
        raise refuse("the polygon is empty")
    if not bool((abs(coords[:, 0]) <= 180).all() and (abs(coords[:, 1]) <= 90).all()) or not all(
        math.isfinite(v) for v in coords.ravel()
    ):
        raise refuse("coordinates must be finite longitude (-180..180) and latitude (-90..90)")
    if not area.is_valid:
        raise refuse(f"not a valid polygon ({shapely.is_valid_reason(area)})")
    assert isinstance(area, Polygon | MultiPolygon)
    return area


# -- helpers ------------------------------------------------------------------------------


def _parse_url(database_url: str) -> URL:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {database_url!r} is not a URL; write e.g. "
            "sqlite:///results/api/accounts.sqlite or postgresql+psycopg://user@host/db"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database URL {url.render_as_string(hide_password=True)!r}: the accounts database "
            "is SQLite (sqlite:///FILE) or PostgreSQL (postgresql+psycopg://...)"
        )
    return url


def _create_engine(url: URL, busy_timeout_s: float, synchronous: str) -> Engine:
    """Return an engine on ``url``; on SQLite its connections use ``PRAGMA synchronous``.

    ``synchronous`` is ``"FULL"`` (every commit synced to disk) or ``"NORMAL"`` (under WAL,
    commits are not synced; the log is synced at the next FULL commit or checkpoint).
    """
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, hide_parameters=True, pool_pre_ping=True, **pool)
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        pool = {}  # an in-memory database: SQLAlchemy's one connection per thread
    engine = sa.create_engine(
        url, hide_parameters=True, connect_args={"timeout": busy_timeout_s}, **pool
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        _use_wal(cursor, busy_timeout_s)  # readers do not wait for the writer
        cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS_MODES[synchronous]}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("roadcover_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _use_wal(cursor: Any, busy_timeout_s: float) -> None:
    """Put an SQLite database in WAL mode, waiting up to ``busy_timeout_s`` for other openers.

    A database is switched to WAL once, with its exclusive lock; SQLite answers "database is
    locked" at once, without its busy handler, to a connection asking while another holds
    the lock (processes opening a new accounts database together), so this retries.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_S)


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Turn a database that cannot be reached or is busy into one line (no parameters)."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "unknown"
        raise DatabaseError(
            "database_unavailable", f"the accounts database is unavailable: {reason}"
        ) from None
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise DatabaseError(
            "database_error", f"the accounts database failed: {type(exc).__name__}"
        ) from None


def _hash(salt: bytes, token: str) -> bytes:
    return hmac.new(salt, token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> date:
    return _now().date()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _key_status(revoked_at: datetime | None, expires: date | None, today: date) -> str:
    if revoked_at is not None:
        return "revoked"
    if expires is not None and expires < today:
        return "expired"
    return "active"


def _check_org_id(org_id: str) -> None:
    if not isinstance(org_id, str) or not ORG_ID_PATTERN.fullmatch(org_id):
        raise AccountInputError(
            "invalid_org",
            f"organisation id {org_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )


def _credit_amount(
    value: Decimal | int | str, name: str, *, allow_zero: bool, round_half_up: bool = False
) -> Decimal:
    """Return ``value`` as an exact amount of credits, refusing what cannot be one."""
    try:
        amount = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except (InvalidOperation, ValueError, TypeError):
        raise AccountInputError("invalid_credits", f"{name} {value!r} is not a number") from None
    if not amount.is_finite():
        raise AccountInputError("invalid_credits", f"{name} {value} is not a finite number")
    if amount < 0 or (amount == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise AccountInputError("invalid_credits", f"{name} {value} must be {least}")
    if amount > MAX_BALANCE:
        raise AccountInputError("invalid_credits", f"{name} {value} is above {MAX_BALANCE}")
    if round_half_up:
        return amount.quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP)
    if amount != amount.quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP):
        raise AccountInputError("invalid_credits", f"{name} {value}: give at most 6 decimal places")
    return amount.quantize(CREDIT_QUANTUM)


def _check_km(km: float) -> None:
    if not (math.isfinite(km) and km >= 0):
        raise AccountInputError("invalid_km", f"road km {km} must be a finite number >= 0")


def _check_idempotency_key(key: str) -> None:
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise AccountInputError(
            "invalid_idempotency_key",
            f"Idempotency-Key {key[:40]!r}: use 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters "
            "(e.g. a UUID)",
        )


def _checked_balance(balance: Decimal) -> Decimal:
    if balance > MAX_BALANCE:
        raise AccountInputError(
            "invalid_credits", f"the balance would be {balance}, above the limit {MAX_BALANCE}"
        )
    return balance


def _regions_json(regions: Sequence[str] | None) -> str | None:
    if regions is None:
        return None
    if isinstance(regions, str):
        raise AccountInputError("invalid_region", "give the regions as a list of names")
    for name in regions:
        if not isinstance(name, str) or not REGION_PATTERN.fullmatch(name):
            raise AccountInputError(
                "invalid_region",
                f"region name {name!r}: use lower-case letters, digits, '-' and '_' "
                "(the config's region names)",
            )
    if not regions:
        raise AccountInputError("invalid_region", "the list of licensed regions is empty")
    return json.dumps(sorted(set(regions)))


def _aoi_mapping(aoi: Mapping[str, Any]) -> dict[str, Any]:
    """Return the AOI as a GeoJSON geometry mapping (validated)."""
    return dict(shapely.geometry.mapping(parse_aoi(aoi)))


def _aoi_geometry(geojson: Mapping[str, Any]) -> Polygon | MultiPolygon:
    area = shape(geojson)
    assert isinstance(area, Polygon | MultiPolygon)
    shapely.prepare(area)
    return area


def _single_geometry(data: object, refuse: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise refuse("not a GeoJSON object")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list) or len(features) != 1:
            raise refuse("a FeatureCollection must hold exactly one Feature")
        return _single_geometry(features[0], refuse)
    if kind == "Feature":
        geometry = data.get("geometry")
        if not isinstance(geometry, Mapping):
            raise refuse("the Feature has no geometry")
        return dict(geometry)
    return dict(data)


def _parse_cursor(cursor: str) -> int:
    if not (isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise AccountInputError(
            "invalid_cursor", f"cursor {cursor!r} is not one this API returned; omit it"
        )
    return int(cursor)


def _charge_by_idempotency_key(conn: Connection, org_id: str, key: str) -> Any:
    return conn.execute(
        sa.select(charges).where(charges.c.org_id == org_id, charges.c.idempotency_key == key)
    ).first()


def _replay(earlier: Any, request_digest: str, idempotency_key: str) -> Charge:
    if earlier.request_digest != request_digest:
        raise IdempotencyConflict(
            "idempotency_conflict",
            f"Idempotency-Key {idempotency_key!r} was used for another request; "
            "use a new key for a new request",
        )
    return Charge(earlier.charge_id, earlier.credits, earlier.balance_after, replayed=True)


def _insert_charge(
    conn: Connection,
    account: Account,
    endpoint: str,
    request_digest: str,
    release_id: str,
    km: float,
    amount: Decimal,
    balance_after: Decimal | None,
    idempotency_key: str | None,
) -> int:
    result = conn.execute(
        charges.insert().values(
            org_id=account.org_id, key_id=account.key_id, endpoint=endpoint,
            request_digest=request_digest, release_id=release_id, km=float(km), credits=amount,
            balance_after=balance_after, idempotency_key=idempotency_key, created_at=_now(),
        )
    )  # fmt: skip
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def _history_item(row: Any) -> HistoryItem:
    return HistoryItem(
        charge_id=row.charge_id, created_at=_utc(row.created_at), key_id=row.key_id,
        endpoint=row.endpoint, request_digest=row.request_digest, release_id=row.release_id,
        km=row.km, credits=row.credits, idempotency_key=row.idempotency_key,
    )  # fmt: skip
