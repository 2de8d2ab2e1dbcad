"""The ASGI application of ``roadcover serve``: a keyed HTTP API over the regions' releases.

:func:`create_app` builds the FastAPI application from :class:`~pipeline.config.ApiSettings`;
:func:`run_server` runs it with uvicorn (``roadcover serve``). Every ``/v1`` endpoint needs
HTTP Basic credentials (org id and API key secret, checked by
:class:`~pipeline.serve.accounts.AccountStore`); ``/healthz``, ``/metrics`` and
``/openapi.json`` do not. Every error is JSON ``{"code", "message"[, "field"]}`` with a stable
code (the table is in docs/api.md).

Queries are answered by :class:`~pipeline.serve.queries.RegionRelease` from the region's latest
release (:class:`~pipeline.serve.releases.ReleaseRegistry`). ``POST /v1/segments`` is charged
after its answer is computed and encoded, and before it is sent; a request that timed out is
never charged (:class:`~pipeline.serve.limits.Deadline`).
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
import uvicorn.config
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry.base import BaseGeometry
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import __version__
from pipeline.config import ApiSettings, ServedRegion, Settings, load_config
from pipeline.errors import PipelineError
from pipeline.export.server import (
    UnsatisfiableRangeError,
    content_type,
    open_regular_file,
    parse_range,
)
from pipeline.serve.accounts import (
    DATABASE_URL_ENV,
    Account,
    AccountError,
    AccountStore,
    AuthenticationError,
    Charge,
    IdempotencyConflict,
    InsufficientCredits,
    database_url_from,
)
from pipeline.serve.limits import (
    BodySizeLimit,
    RateLimiter,
    RequestTimeoutError,
    error_body,
    run_with_deadline,
)
from pipeline.serve.queries import RegionRelease, RequestError, parse_area
from pipeline.serve.releases import (
    NoReleaseError,
    ReleaseRegistry,
    TileArchive,
    TileNotFoundError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
CONFIG_ENV = "ROADCOVER_SERVE_CONFIG"  # how `roadcover serve --workers N` hands workers the config
GEOJSON = "application/geo+json"
GEOPARQUET = "application/vnd.apache.parquet"
MVT = "application/vnd.mapbox-vector-tile"
CREDITS_QUANTUM = Decimal("0.000001")
QUERY_THREADS = 8
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
REALM = 'Basic realm="roadcover", charset="UTF-8"'
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
}
CONTENT_TYPES = {".parquet": GEOPARQUET, ".json": "application/json"}


class ApiError(Exception):
    """An error answered as JSON ``{"code", "message"[, "field"]}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.headers = field, headers or {}


# --- request bodies ------------------------------------------------------------------------------


class AreaQuery(BaseModel):
    """Body of ``POST /v1/coverage``."""

    model_config = ConfigDict(extra="forbid")
    region: str | None = Field(
        None, description="Region name; may be left out when the key has one region only."
    )
    area: dict[str, Any] | None = Field(
        None,
        description="GeoJSON Polygon or MultiPolygon (or a Feature of one), lon/lat (EPSG:4326); "
        "left out: the whole region (or the key's licensed area).",
    )
    since: date | None = Field(None, description="Count only roads last seen on or after this day.")
    highway: list[str] | None = Field(None, description="Only these OSM highway classes.")


class SegmentsQuery(AreaQuery):
    """Body of ``POST /v1/segments``: ``area`` is required."""

    area: dict[str, Any] = Field(
        ..., description="GeoJSON Polygon or MultiPolygon (or a Feature of one), lon/lat."
    )


# --- the application -----------------------------------------------------------------------------


@dataclass
class ServiceState:
    """What the endpoints share: settings, accounts, releases, limits, metrics."""

    settings: ApiSettings
    store: AccountStore
    registry: ReleaseRegistry
    tiles: dict[str, TileArchive]
    limiter: RateLimiter
    failures: RateLimiter
    executor: concurrent.futures.ThreadPoolExecutor
    metrics: Metrics

    async def run(self, work: Callable[[Any], T]) -> T:
        """Run blocking ``work(deadline)`` in the query threads, bounded by the request timeout."""
        try:
            return await run_with_deadline(self.executor, self.settings.request_timeout_s, work)
        except RequestTimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"the query took longer than {self.settings.request_timeout_s:g} s "
                "(api.request_timeout_s) and was not charged; ask for a smaller area",
            ) from None


class Metrics:
    """Prometheus metrics of one application (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "roadcover_api_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "roadcover_api_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.km_delivered = Counter(
            "roadcover_api_segments_km",
            "Road km delivered by /v1/segments.",
            registry=self.registry,
        )


class MetricsMiddleware:
    """Count requests and time them by route template (``/v1/tiles/{region}/...``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and record its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_app(config: Settings, store: AccountStore | None = None) -> FastAPI:
    """Build the API application.

    Parameters
    ----------
    config
        The run's settings: its ``api`` section, and the accounts database URL
        (:func:`~pipeline.serve.accounts.database_url_from`).
    store
        The accounts; default: an :class:`AccountStore` on the config's database.

    Returns
    -------
    FastAPI
        The ASGI application.
    """
    settings = config.api
    state = ServiceState(
        settings=settings,
        store=store if store is not None else AccountStore(database_url_from(config)),
        registry=ReleaseRegistry(settings.regions, RegionRelease.open),
        tiles={r.name: TileArchive(r.tiles_path) for r in settings.regions if r.tiles_path},
        limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        failures=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        executor=concurrent.futures.ThreadPoolExecutor(QUERY_THREADS, "roadcover-query"),
        metrics=Metrics(),
    )
    app = FastAPI(
        title="roadcover API",
        version=__version__,
        description="Road coverage and road segment data of roadcover's releases (docs/api.md).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    _add_error_handlers(app)
    app.include_router(_public_routes(state))
    app.include_router(_v1_routes(state))
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def app_from_environment() -> FastAPI:
    """Build the application of the config named by ``ROADCOVER_SERVE_CONFIG`` (a worker)."""
    config = os.environ.get(CONFIG_ENV) or None
    return create_app(load_config(config))


# --- errors --------------------------------------------------------------------------------------


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.field), error.status, error.headers
    )


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return _error_response(error)

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        code = STATUS_CODES.get(error.status_code, f"http_{error.status_code}")
        headers = dict(error.headers or {})
        if error.status_code == 401:
            code, headers["WWW-Authenticate"] = "invalid_credentials", REALM
        message = str(error.detail) if error.status_code != 404 else "no such endpoint or file"
        return _error_response(ApiError(error.status_code, code, message, headers=headers))

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return _error_response(_describe_validation_error(error))

    async def request_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestError)
        return _error_response(ApiError(422, error.code, str(error), error.field))

    async def account_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AccountError)
        headers = {"WWW-Authenticate": REALM} if error.http_status == 401 else None
        return _error_response(ApiError(error.http_status, error.code, str(error), headers=headers))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(AccountError, account_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RequestError, request_error)


def _describe_validation_error(error: RequestValidationError) -> ApiError:
    """Describe the first problem of a request FastAPI could not parse, naming the field."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return ApiError(422, "invalid_json", "the request body is not valid JSON", "body")
    field = ".".join(location[1:]) if location[:1] == ["body"] else ".".join(location)
    field = field or "body"
    return ApiError(422, "invalid_request", f"{field}: {first.get('msg', 'invalid')}", field)


# --- authentication, licensing, limits -----------------------------------------------------------

_basic = HTTPBasic(auto_error=False, realm="roadcover")


def _service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def current_account(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> Account:
    """Authenticate the request's key (HTTP Basic: org id, secret) and take a rate-limit token.

    A key whose row was read from the database less than ``api.auth_cache_s`` ago is checked
    against that row (its salted hash, on the event loop, no I/O); any other key, and any
    secret that does not match the row, is checked against the database in a thread. So a
    revoked key, or a changed licence, takes effect within ``api.auth_cache_s`` seconds.

    Raises
    ------
    ApiError
        401 without credentials or with wrong, revoked or expired ones; 429 over the rate limit.
    """
    state = _service(request)
    client = f"client:{request.client.host if request.client else '?'}"
    _refuse_over_limit(state.failures.wait(client), "failed authentications from this address")
    try:
        if credentials is None:
            raise AuthenticationError(
                "missing_credentials", "give your org id and API key with HTTP Basic authentication"
            )
        account = _cached_account(state, credentials)
        if account is None:
            account = await run_in_threadpool(
                state.store.authenticate, credentials.username, credentials.password
            )
    except AuthenticationError as error:
        state.failures.acquire(client)
        raise ApiError(401, error.code, str(error), headers={"WWW-Authenticate": REALM}) from None
    _refuse_over_limit(state.limiter.acquire(account.key_id), "requests with this key")
    return account


def _cached_account(state: ServiceState, credentials: HTTPBasicCredentials) -> Account | None:
    """Return the account of a key read from the database within ``api.auth_cache_s`` (no I/O)."""
    if state.settings.auth_cache_s <= 0:
        return None
    return state.store.cached_account(
        credentials.username, credentials.password, state.settings.auth_cache_s
    )


def _refuse_over_limit(wait_s: float, what: str) -> None:
    """Raise 429 with ``Retry-After`` if a rate-limit bucket said to wait."""
    if wait_s > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many {what} (api.rate_limit_per_s, api.rate_limit_burst); retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )


AccountDep = Annotated[Account, Depends(current_account)]


def _served_region(state: ServiceState, name: str, account: Account) -> ServedRegion:
    """Return the served region ``name`` if the account is licensed for it (else 404, 403)."""
    served = state.registry.regions.get(name)
    if served is None:
        raise ApiError(
            404, "unknown_region", f"no region {name!r:.80} is served; see GET /v1/regions"
        )
    if account.regions is not None and name not in account.regions:
        raise ApiError(
            403,
            "region_not_licensed",
            f"org {account.org_id!r} is not licensed for region {name!r}",
        )
    return served


def _licensed_regions(state: ServiceState, account: Account) -> list[str]:
    return [
        name
        for name in state.registry.regions
        if account.regions is None or name in account.regions
    ]


def _query_region(state: ServiceState, query: AreaQuery, account: Account) -> ServedRegion:
    """Return the region a query names, or the key's only licensed region."""
    if query.region is not None:
        return _served_region(state, query.region, account)
    licensed = _licensed_regions(state, account)
    if len(licensed) != 1:
        raise ApiError(
            422,
            "missing_region",
            f"name the region (one of: {', '.join(licensed) or 'none licensed'})",
            "region",
        )
    return state.registry.regions[licensed[0]]


async def _latest_release(state: ServiceState, region: str) -> RegionRelease:
    """Return the region's latest release, opened in a thread on first use (503 if none)."""
    return await run_in_threadpool(_latest_release_now, state, region)


def _latest_release_now(state: ServiceState, region: str) -> RegionRelease:
    """Return the region's latest release, opening it on first use (blocking; 503 if none)."""
    try:
        release = state.registry.latest(region)
    except PipelineError as error:  # no pointer yet, or a release that cannot be opened
        log.warning("region %s: %s", region, error)
        raise ApiError(503, "no_release", str(error), headers={"Retry-After": "60"}) from None
    assert isinstance(release, RegionRelease)
    return release


def _licensed_area(
    state: ServiceState, geojson: dict[str, Any] | None, account: Account
) -> BaseGeometry | None:
    """Parse and check a query's area; None (the whole region) becomes the key's AOI."""
    if geojson is None:
        return account.aoi
    area = parse_area(
        geojson, max_vertices=state.settings.max_vertices, max_area_km2=state.settings.max_area_km2
    )
    if account.aoi is not None and not account.aoi.covers(area):
        raise ApiError(
            403,
            "outside_aoi",
            f"the area reaches outside the area org {account.org_id!r} is licensed for",
            "area",
        )
    return area


def _request_digest(endpoint: str, region: str, release_id: str, query: dict[str, Any]) -> str:
    """Digest what a request asks for: the same request, retried, has the same digest."""
    canonical = json.dumps(
        {"endpoint": endpoint, "region": region, "release_id": release_id, "query": query},
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- routes --------------------------------------------------------------------------------------


def _public_routes(state: ServiceState) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @router.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _v1_routes(state: ServiceState) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/regions", summary="The regions served and licensed to this key")
    async def regions(account: AccountDep) -> dict[str, Any]:
        names = _licensed_regions(state, account)
        return {
            "regions": [
                {"name": name, "tiles": name in state.tiles, "releases": f"/v1/releases/{name}"}
                for name in names
            ]
        }

    @router.get(
        "/regions/{region}/summary",
        summary="A region's figures in its latest release (an AOI key: its AOI's figures)",
    )
    async def region_summary(region: str, account: AccountDep) -> dict[str, Any]:
        served = _served_region(state, region, account)
        release = await _latest_release(state, served.name)

        def answer(deadline: Any) -> dict[str, Any]:
            summary = release.coverage(account.aoi, since=None, highways=None)
            return {"region": served.name, **summary}

        return await state.run(answer)

    @router.post(
        "/coverage",
        summary="Road km and coverage in an area (free)",
        response_class=JSONResponse,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def coverage(query: AreaQuery, account: AccountDep) -> JSONResponse:
        served = _query_region(state, query, account)
        asked = query.model_dump(mode="json")

        def answer(deadline: Any) -> JSONResponse:
            # one trip to a query thread: the release, the query and its history row
            release = _latest_release_now(state, served.name)
            digest = _request_digest("coverage", served.name, release.release_id, asked)
            area = _licensed_area(state, query.area, account)
            result = release.coverage(area, since=query.since, highways=query.highway)
            state.store.record_query(
                account,
                endpoint="coverage",
                request_digest=digest,
                release_id=release.release_id,
                km=float(result.get("covered_km", 0.0)),
            )
            return JSONResponse({"region": served.name, **result})

        return await state.run(answer)

    @router.post(
        "/segments",
        summary="The covered road segments in an area (charged per km delivered)",
        responses={200: {"content": {GEOJSON: {}, GEOPARQUET: {}}}},
    )
    async def segments(
        query: SegmentsQuery,
        request: Request,
        account: AccountDep,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Response:
        media = _negotiate(request.headers.get("accept"))
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise ApiError(
                422,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 printable ASCII characters without spaces",
                "Idempotency-Key",
            )
        served = _query_region(state, query, account)
        release = await _latest_release(state, served.name)
        digest = _request_digest(
            "segments", served.name, release.release_id,
            {**query.model_dump(mode="json"), "format": media},
        )  # fmt: skip

        def answer(deadline: Any) -> Response:
            area = _licensed_area(state, query.area, account)
            assert area is not None
            found = release.segments(area, since=query.since, highways=query.highway)
            km = float(found["length_m"].sum()) / 1000.0 if len(found) else 0.0
            credits = (Decimal(repr(km)) * state.settings.credits_per_km).quantize(
                CREDITS_QUANTUM, ROUND_HALF_UP
            )
            body = _encode_segments(found, media)
            deadline.commit()
            charge = state.store.charge(
                account,
                endpoint="segments",
                request_digest=digest,
                release_id=release.release_id,
                km=km,
                credits=credits,
                idempotency_key=idempotency_key,
            )
            if not charge.replayed:
                state.metrics.km_delivered.inc(km)
            return _segments_response(body, media, charge, release.release_id, km)

        try:
            return await state.run(answer)
        except InsufficientCredits as error:
            raise ApiError(402, error.code, str(error)) from None
        except IdempotencyConflict as error:
            raise ApiError(409, error.code, str(error), "Idempotency-Key") from None

    _release_routes(router, state)
    _account_routes(router, state)
    return router


def _release_routes(router: APIRouter, state: ServiceState) -> None:
    @router.get("/releases", summary="The releases of each licensed region")
    async def releases(account: AccountDep) -> dict[str, Any]:
        listed = []
        for name in _licensed_regions(state, account):
            try:
                latest: str | None = state.registry.latest_id(name)
            except NoReleaseError:
                latest = None
            listed.append(
                {"region": name, "latest": latest, "releases": state.registry.release_ids(name)}
            )
        return {"regions": listed}

    @router.head("/releases/{region}/{release_id}/{path:path}", include_in_schema=False)
    @router.get(
        "/releases/{region}/{release_id}/{path:path}",
        summary="A release's manifest.json, data files and STAC (HTTP Range supported)",
    )
    async def release_file(
        region: str, release_id: str, path: str, request: Request, account: AccountDep
    ) -> Response:
        served = _served_region(state, region, account)
        try:
            folder, allowed = state.registry.release_files(served.name, release_id)
        except KeyError:
            raise ApiError(
                404, "unknown_release", f"region {region!r} has no release {release_id!r}"
            ) from None
        descriptor = open_regular_file(folder, path) if path in allowed else None
        if descriptor is None:
            raise ApiError(404, "unknown_file", f"release {release_id!r} has no file {path!r}")
        return _file_response(descriptor, path, request)

    @router.get(
        "/tiles/{region}/{z}/{x}/{y}.mvt",
        summary="A vector tile of the region's coverage map (204: no data there)",
        responses={200: {"content": {MVT: {}}}},
    )
    async def tile(region: str, z: int, x: int, y: int, account: AccountDep) -> Response:
        served = _served_region(state, region, account)
        archive = state.tiles.get(served.name)
        try:
            if archive is None:
                raise FileNotFoundError(served.name)
            found = await run_in_threadpool(archive.tile, z, x, y)
        except FileNotFoundError:
            raise ApiError(404, "no_tiles", f"region {region!r} has no tiles") from None
        except TileNotFoundError:
            raise ApiError(404, "tile_out_of_range", f"no tile {z}/{x}/{y} in {region!r}") from None
        if found is None:
            return Response(status_code=204)
        headers = {"Content-Encoding": found.encoding} if found.encoding else {}
        headers["Cache-Control"] = "no-cache"
        return Response(found.data, media_type=MVT, headers=headers)


def _account_routes(router: APIRouter, state: ServiceState) -> None:
    @router.get("/account", summary="The org's credits and this key's licence")
    async def account_info(account: AccountDep) -> dict[str, Any]:
        balance = await run_in_threadpool(state.store.balance, account.org_id)
        return {
            "org_id": account.org_id,
            "key_id": account.key_id,
            "credits_remaining": float(balance),
            "regions": list(account.regions) if account.regions is not None else None,
            "aoi": account.aoi.__geo_interface__ if account.aoi is not None else None,
            "expires": account.expires.isoformat() if account.expires else None,
        }

    @router.get("/account/history", summary="The org's queries and their cost, newest first")
    async def history(account: AccountDep, cursor: str | None = None) -> dict[str, Any]:
        page = await run_in_threadpool(
            lambda: state.store.history(
                account.org_id, limit=state.settings.history_page_size, cursor=cursor
            )
        )
        return {"items": [_jsonable(item) for item in page.items], "next_cursor": page.next_cursor}


# --- responses -----------------------------------------------------------------------------------


def _negotiate(accept: str | None) -> Literal["geojson", "geoparquet"]:
    """Return the segments format ``Accept`` asks for (GeoJSON unless GeoParquet is named)."""
    media_types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    for media_type in media_types:
        if media_type == GEOPARQUET:
            return "geoparquet"
        if media_type in (GEOJSON, "application/json", "application/*", "*/*", ""):
            return "geojson"
    raise ApiError(
        406, "not_acceptable", f"segments are sent as {GEOJSON} or {GEOPARQUET}; set Accept"
    )


def _encode_segments(found: Any, media: str) -> bytes:
    if media == "geoparquet":
        buffer = io.BytesIO()
        found.to_parquet(buffer, index=False)
        return buffer.getvalue()
    table = found.copy()
    for column in table.columns:
        if str(table[column].dtype).startswith("datetime64"):
            table[column] = table[column].map(lambda t: t.isoformat() if t == t else None)
    return table.to_json(drop_id=True, na="null").encode()


def _segments_response(
    body: bytes, media: str, charge: Charge, release_id: str, km: float
) -> Response:
    headers = {
        "X-Credits-Used": str(charge.credits_used),
        "X-Credits-Remaining": str(charge.credits_remaining),
        "X-Release-Id": release_id,
        "X-Road-Km": f"{km:.6f}",
    }
    if charge.replayed:
        headers["Idempotent-Replayed"] = "true"
    if media == "geoparquet":
        return Response(body, media_type=GEOPARQUET, headers=headers)
    collection = json.loads(body)
    collection.update(
        release_id=release_id,
        km=km,
        credits_used=float(charge.credits_used),
        credits_remaining=float(charge.credits_remaining),
        replayed=bool(charge.replayed),
    )
    return Response(json.dumps(collection).encode(), media_type=GEOJSON, headers=headers)


def _file_response(descriptor: int, relative: str, request: Request) -> Response:
    """Send a release file, whole or the one byte range asked for (206; 416 if unsatisfiable)."""
    size = os.fstat(descriptor).st_size
    try:
        byte_range = parse_range(request.headers.get("range"), size)
    except UnsatisfiableRangeError:
        os.close(descriptor)
        return JSONResponse(
            error_body("range_not_satisfiable", f"the file has {size} bytes; ask for bytes in it"),
            416,
            {"Content-Range": f"bytes */{size}"},
        )
    start, end = byte_range if byte_range is not None else (0, size - 1)
    headers = {
        "Content-Length": str(max(end - start + 1, 0)),
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    media_type = CONTENT_TYPES.get(Path(relative).suffix.lower()) or content_type(relative)
    status = 206 if byte_range is not None else 200
    if request.method == "HEAD":
        os.close(descriptor)
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _read_range(descriptor, start, end - start + 1), status, headers, media_type
    )


async def _read_range(descriptor: int, start: int, count: int) -> AsyncIterator[bytes]:
    try:
        for chunk in _chunks(descriptor, start, count):
            yield chunk
    finally:
        os.close(descriptor)


def _chunks(descriptor: int, start: int, count: int) -> Iterator[bytes]:
    position = start
    while count > 0:
        chunk = os.pread(descriptor, min(count, 1 << 16), position)
        if not chunk:
            return
        position += len(chunk)
        count -= len(chunk)
        yield chunk


def _jsonable(item: Any) -> Any:
    """Return a history entry as JSON-able data (dataclasses, Decimals, dates)."""
    if is_dataclass(item) and not isinstance(item, type):
        item = asdict(item)
    if isinstance(item, dict):
        return {str(key): _jsonable(value) for key, value in item.items()}
    if isinstance(item, list | tuple):
        return [_jsonable(value) for value in item]
    if isinstance(item, Decimal):
        return float(item)
    if isinstance(item, datetime | date):
        return item.isoformat()
    return item


# --- running -------------------------------------------------------------------------------------


class ServeError(PipelineError, OSError):
    """The API server cannot listen on the address and port asked for."""


def run_server(
    config_path: Path | None, database_url: str | None, host: str, port: int, workers: int
) -> None:
    """Run the API with uvicorn until interrupted (``roadcover serve``).

    The workers find the config in ``ROADCOVER_SERVE_CONFIG`` and the accounts database in
    ``ROADCOVER_DATABASE_URL`` (set here from ``database_url`` when given).

    Raises
    ------
    ConfigError
        If the config is invalid.
    ServeError
        If the address cannot be bound.
    """
    settings = load_config(config_path)
    for region in settings.api.regions:
        if not (region.releases_dir / "latest.json").exists():
            log.warning("region %s: no %s/latest.json yet", region.name, region.releases_dir)
    _check_bindable(host, port)
    os.environ[CONFIG_ENV] = str(config_path.resolve()) if config_path is not None else ""
    url = database_url_from(settings, database_url)
    os.environ[DATABASE_URL_ENV] = url
    AccountStore(url).close()  # create the schema once, before the workers start
    uvicorn.run(
        "pipeline.serve.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_keep_alive=5,
        server_header=False,
        log_level="info",
        log_config=_log_config(),
    )


class DropQueryString(logging.Filter):
    """Leave query strings out of uvicorn's access log (a pasted secret must not be logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the access record's path to the path alone; keep the record."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def _log_config() -> dict[str, Any]:
    """Uvicorn's logging config with :class:`DropQueryString` on the access log."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["drop_query"] = {"()": DropQueryString}
    config["handlers"]["access"]["filters"] = ["drop_query"]
    return config


def _check_bindable(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServeError(
                f"cannot listen on {host} port {port} ({error.strerror}); choose another --port"
            ) from None
