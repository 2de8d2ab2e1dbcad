"""The HTTP API end to end: a real uvicorn server on a free port, a real httpx client.

Oracles: the coverage stage's summary.json, the feed's segment files clipped with shapely and
measured with pyproj.Geod, the release files and PMTiles tiles read from disk, hand-computed
credits and rate-limit waits.
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pyproj
import pytest
import shapely
from pmtiles.reader import MmapSource, all_tiles

from pipeline.export.feeds import publish_release
from pipeline.serve.accounts import AccountStore, IssuedKey
from tests.serve.api_server import ServedData, api_config, build_served_data, running_server

WGS84 = pyproj.Geod(ellps="WGS84")
TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ServedData:
    return build_served_data(tmp_path_factory)


@pytest.fixture(scope="module")
def feed(data: ServedData) -> gpd.GeoDataFrame:
    return gpd.read_parquet(data.releases / "r1" / "segments")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> AccountStore:
    return AccountStore(f"sqlite:///{tmp_path_factory.mktemp('accounts') / 'accounts.sqlite'}")


@pytest.fixture(scope="module")
def url(
    data: ServedData, store: AccountStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server on two regions: helsinki and other (a copy of its releases)."""
    other = data.copy_releases(tmp_path_factory.mktemp("other") / "releases")
    settings = api_config(
        data,
        {"helsinki": data.releases, "other": other},
        rate_limit_per_s=1000,
        rate_limit_burst=1000,
        credits_per_km=2.5,
    )
    with running_server(settings, store) as base:
        yield base


_ORGS = iter(range(10**6))


def new_key(store: AccountStore, credits: str = "0", **licence: Any) -> IssuedKey:
    return store.create_key(f"org{next(_ORGS)}", credits=Decimal(credits), **licence)


def client(base: str, key: IssuedKey | None = None) -> httpx.Client:
    auth = (key.org_id, key.secret) if key is not None else None
    return httpx.Client(base_url=base, auth=auth, timeout=TIMEOUT)


def city_area(feed: gpd.GeoDataFrame) -> shapely.Polygon:
    """A slanted polygon across the middle of the covered roads."""
    x0, y0, x1, y1 = feed.total_bounds
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return shapely.Polygon(
        [
            (cx - w * 0.6, cy - h * 0.3),
            (cx + w * 0.2, cy - h * 0.5),
            (cx + w * 0.5, cy + h * 0.1),
            (cx - w * 0.1, cy + h * 0.5),
        ]
    )


def geojson(geometry: shapely.Geometry) -> dict[str, Any]:
    return dict(shapely.geometry.mapping(geometry))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["message"] and "\n" not in body["message"]
    return body


# --- public endpoints ----------------------------------------------------------------------------


def test_health_openapi_and_metrics_need_no_key(url: str, store: AccountStore) -> None:
    with client(url) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        paths = http.get("/openapi.json").json()["paths"]
        for path in ["/v1/coverage", "/v1/segments", "/v1/regions", "/v1/releases",
                     "/v1/tiles/{region}/{z}/{x}/{y}.mvt", "/v1/account/history"]:  # fmt: skip
            assert path in paths
        assert_error(http.get("/v1/regions"), 401, "missing_credentials")
        metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'roadcover_api_requests_total{method="GET",route="/v1/regions",status="401"}' in (
        metrics.text
    )


# --- regions, summary, coverage ------------------------------------------------------------------


def test_regions_and_whole_region_summary_equal_summary_json(
    url: str, store: AccountStore, data: ServedData
) -> None:
    summary = json.loads((data.coverage / "summary.json").read_text())
    with client(url, new_key(store)) as http:
        names = [region["name"] for region in http.get("/v1/regions").json()["regions"]]
        answer = http.get("/v1/regions/helsinki/summary").json()
        whole = http.post("/v1/coverage", json={"region": "helsinki"}).json()
    assert names == ["helsinki", "other"]
    for figures in (answer, whole):
        assert figures["release_id"] == "r1"
        assert figures["road_km"] == pytest.approx(summary["road_km"], abs=1e-6)
        assert figures["covered_km"] == pytest.approx(summary["unique_km"], abs=1e-6)
        assert figures["coverage_pct"] == pytest.approx(summary["coverage_pct"], abs=1e-9)
        assert figures["fresh_km"]["28d"] == pytest.approx(summary["fresh_28d_km"], abs=1e-6)


def test_polygon_coverage_equals_shapely_clipping_of_the_feed(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    area = city_area(feed)
    clipped = shapely.union_all(
        shapely.intersection(feed.geometry.to_numpy(), area), grid_size=1e-9
    )
    expected_km = (
        sum(
            WGS84.geometry_length(part)
            for part in shapely.get_parts(clipped)
            if part.geom_type == "LineString"
        )
        / 1000.0
    )
    with client(url, new_key(store)) as http:
        answer = http.post("/v1/coverage", json={"region": "helsinki", "area": geojson(area)})
        history = http.get("/v1/account/history").json()["items"]
    assert answer.status_code == 200, answer.text
    assert 0 < answer.json()["covered_km"] == pytest.approx(expected_km, rel=0.01)
    assert [(item["endpoint"], item["credits"]) for item in history] == [("coverage", 0)]


def test_unknown_region_and_missing_region(url: str, store: AccountStore) -> None:
    with client(url, new_key(store)) as http:
        assert_error(http.get("/v1/regions/nowhere/summary"), 404, "unknown_region")
        body = assert_error(http.post("/v1/coverage", json={}), 422, "missing_region")
    assert body["field"] == "region"


def test_region_without_a_release_yet_is_503_then_served(
    data: ServedData, store: AccountStore, tmp_path: Path
) -> None:
    empty = tmp_path / "releases"
    empty.mkdir()
    settings = api_config(data, {"new": empty})
    with running_server(settings, store) as base, client(base, new_key(store)) as http:
        before = http.get("/v1/regions/new/summary")
        listing = http.get("/v1/releases").json()["regions"]
        publish_release(data.coverage, data.roads, empty, empty / "latest.json", "r1")
        after = http.get("/v1/regions/new/summary")
    assert_error(before, 503, "no_release")
    assert listing == [{"region": "new", "latest": None, "releases": []}]
    assert after.status_code == 200 and after.json()["release_id"] == "r1"


# --- segments and billing ------------------------------------------------------------------------


def test_segments_of_an_area_without_roads_are_empty_and_free(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    x0, y0, _, _ = feed.total_bounds
    nowhere = shapely.box(x0 - 0.2, y0 - 0.2, x0 - 0.1, y0 - 0.1)  # open sea south-west
    key = new_key(store, credits="5")
    with client(url, key) as http:
        response = http.post("/v1/segments", json={"region": "helsinki", "area": geojson(nowhere)})
    assert response.status_code == 200, response.text
    assert response.json()["features"] == []
    assert response.headers["X-Credits-Used"] == "0.000000"
    assert store.balance(key.org_id) == Decimal(5)


def test_segments_geojson_are_charged_per_km(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    key = new_key(store, credits="1000")
    area = city_area(feed)
    with client(url, key) as http:
        response = http.post("/v1/segments", json={"region": "helsinki", "area": geojson(area)})
        account = http.get("/v1/account").json()
        history = http.get("/v1/account/history").json()["items"]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    body = response.json()
    km = sum(f["properties"]["length_m"] for f in body["features"]) / 1000.0
    expected = (Decimal(repr(km)) * Decimal("2.5")).quantize(Decimal("0.000001"))
    assert km > 0 and body["km"] == pytest.approx(km, abs=1e-9)
    assert Decimal(response.headers["X-Credits-Used"]) == expected
    assert Decimal(response.headers["X-Credits-Remaining"]) == Decimal(1000) - expected
    assert body["credits_used"] == pytest.approx(float(expected))
    assert account["credits_remaining"] == pytest.approx(float(Decimal(1000) - expected))
    assert {f["properties"]["segment_id"] for f in body["features"]} <= set(feed["segment_id"])
    for feature in body["features"]:  # every piece inside the area
        assert area.buffer(1e-9).covers(shapely.geometry.shape(feature["geometry"]))
    assert [(item["endpoint"], Decimal(str(item["credits"]))) for item in history] == [
        ("segments", expected)
    ]


def test_segments_geoparquet_match_the_geojson_answer(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    query = {"region": "helsinki", "area": geojson(city_area(feed))}
    with client(url, new_key(store, credits="1000")) as http:
        as_json = http.post("/v1/segments", json=query).json()
        as_parquet = http.post(
            "/v1/segments", json=query, headers={"Accept": "application/vnd.apache.parquet"}
        )
        refused = http.post("/v1/segments", json=query, headers={"Accept": "text/csv"})
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = gpd.read_parquet(io.BytesIO(as_parquet.content))
    assert table.crs.to_epsg() == 4326
    assert sorted(table["segment_id"]) == sorted(
        f["properties"]["segment_id"] for f in as_json["features"]
    )
    assert Decimal(as_parquet.headers["X-Credits-Used"]) == Decimal(str(as_json["credits_used"]))
    assert_error(refused, 406, "not_acceptable")


def test_twenty_concurrent_identical_requests_are_charged_once(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    key = new_key(store, credits="1000")
    query = {"region": "helsinki", "area": geojson(city_area(feed))}
    barrier = threading.Barrier(20)

    def post(_: int) -> httpx.Response:
        with client(url, key) as http:
            barrier.wait(timeout=60)
            return http.post("/v1/segments", json=query, headers={"Idempotency-Key": "order-1"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    used = {Decimal(r.headers["X-Credits-Used"]) for r in responses}
    assert len(used) == 1 and used.pop() > 0
    assert sum(r.json()["replayed"] is False for r in responses) == 1
    charged = Decimal(responses[0].headers["X-Credits-Used"])
    assert store.balance(key.org_id) == Decimal(1000) - charged
    assert len(store.history(key.org_id, limit=100, cursor=None).items) == 1


def test_reused_idempotency_key_with_another_request_is_a_conflict(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    area = city_area(feed)
    with client(url, new_key(store, credits="1000")) as http:
        first = http.post(
            "/v1/segments", json={"region": "helsinki", "area": geojson(area)},
            headers={"Idempotency-Key": "k1"},
        )  # fmt: skip
        other = http.post(
            "/v1/segments", json={"region": "helsinki", "area": geojson(area.buffer(-0.001))},
            headers={"Idempotency-Key": "k1"},
        )  # fmt: skip
        bad = http.post(
            "/v1/segments", json={"region": "helsinki", "area": geojson(area)},
            headers={"Idempotency-Key": "has space"},
        )  # fmt: skip
    assert first.status_code == 200
    assert assert_error(other, 409, "idempotency_conflict")["field"] == "Idempotency-Key"
    assert_error(bad, 422, "invalid_idempotency_key")


def test_insufficient_credits_deliver_nothing_and_charge_nothing(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    key = new_key(store, credits="0.000001")
    with client(url, key) as http:
        response = http.post(
            "/v1/segments", json={"region": "helsinki", "area": geojson(city_area(feed))}
        )
    assert_error(response, 402, "insufficient_credits")
    assert "features" not in response.json()
    assert store.balance(key.org_id) == Decimal("0.000001")


# --- authentication and licensing ----------------------------------------------------------------


def test_wrong_revoked_and_expired_keys_get_401(url: str, store: AccountStore) -> None:
    key, revoked, expired = new_key(store), new_key(store), new_key(store)
    store.revoke_key(revoked.key_id)
    with sqlite3.connect(str(store.engine.url.database)) as db:  # no API sets a past expiry
        db.execute(
            "UPDATE api_keys SET expires = ? WHERE key_id = ?",
            ((date.today() - timedelta(days=2)).isoformat(), expired.key_id),
        )
    cases = [
        ((key.org_id, key.secret + "x"), "unknown_key"),
        (("someone-else", key.secret), "unknown_key"),
        ((revoked.org_id, revoked.secret), "revoked_key"),
        ((expired.org_id, expired.secret), "expired_key"),
    ]
    with client(url) as http:
        for auth, code in cases:
            response = http.get("/v1/account", auth=auth)
            assert_error(response, 401, code)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
        malformed = http.get("/v1/account", headers={"Authorization": "Basic %%%"})
    assert_error(malformed, 401, "invalid_credentials")


@pytest.mark.parametrize("auth_cache_s", [0.0, 1.0])
def test_a_revoked_key_is_refused_within_auth_cache_s(
    data: ServedData, tmp_path: Path, auth_cache_s: float
) -> None:
    store = AccountStore(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    key = new_key(store)
    settings = api_config(data, auth_cache_s=auth_cache_s)
    with running_server(settings, store) as base, client(base, key) as http:
        assert http.get("/v1/account").status_code == 200  # the key's row is read and kept
        store.revoke_key(key.key_id)
        revoked_at = time.monotonic()
        first = http.get("/v1/account")
        if auth_cache_s == 0:  # nothing kept: refused at once
            assert_error(first, 401, "revoked_key")
        time.sleep(max(0.0, revoked_at + auth_cache_s + 0.05 - time.monotonic()))
        assert_error(http.get("/v1/account"), 401, "revoked_key")  # past the bound: refused
        assert_error(
            http.get("/v1/account", auth=(key.org_id, key.secret + "x")), 401, "unknown_key"
        )


def test_region_and_aoi_licences_are_enforced(
    url: str, store: AccountStore, feed: gpd.GeoDataFrame, data: ServedData
) -> None:
    area = city_area(feed)
    regional = new_key(store, regions=["other"])
    local = new_key(store, credits="100", aoi=geojson(area.buffer(0.002)))
    with client(url, regional) as http:
        assert [r["name"] for r in http.get("/v1/regions").json()["regions"]] == ["other"]
        assert_error(http.get("/v1/regions/helsinki/summary"), 403, "region_not_licensed")
        assert_error(http.get("/v1/tiles/helsinki/0/0/0.mvt"), 403, "region_not_licensed")
        assert http.post("/v1/coverage", json={}).json()["release_id"] == "r1"  # its one region
    with client(url, local) as http:
        inside = http.post("/v1/coverage", json={"region": "helsinki", "area": geojson(area)})
        outside = http.post(
            "/v1/segments", json={"region": "helsinki", "area": geojson(area.buffer(0.01))}
        )
        licensed = http.post("/v1/coverage", json={"region": "helsinki"}).json()
        summary = http.get("/v1/regions/helsinki/summary").json()
    assert inside.status_code == 200
    assert assert_error(outside, 403, "outside_aoi")["field"] == "area"
    assert store.balance(local.org_id) == Decimal(100)
    whole_region_km = json.loads((data.coverage / "summary.json").read_text())["road_km"]
    assert 0 < licensed["road_km"] < whole_region_km  # no area: the licensed area only
    assert summary["road_km"] == licensed["road_km"]


def test_rate_limit_answers_429_with_retry_after(data: ServedData, store: AccountStore) -> None:
    settings = api_config(data, rate_limit_per_s=0.5, rate_limit_burst=3)
    key = new_key(store)
    with running_server(settings, store) as base, client(base, key) as http:
        statuses = [http.get("/v1/account").status_code for _ in range(3)]
        limited = http.get("/v1/account")
        with client(base, new_key(store)) as other:
            assert other.get("/v1/account").status_code == 200  # buckets are per key
    assert statuses == [200, 200, 200]
    assert_error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "2"  # one token at 0.5 a second


def test_failed_authentications_are_limited_per_address(
    data: ServedData, store: AccountStore
) -> None:
    settings = api_config(data, rate_limit_per_s=0.5, rate_limit_burst=2)
    key = new_key(store)
    with running_server(settings, store) as base, client(base) as http:
        failures = [
            http.get("/v1/account", auth=(key.org_id, "wrong")).status_code for _ in range(2)
        ]
        locked_out = http.get("/v1/account", auth=(key.org_id, "wrong"))
        right_key = http.get("/v1/account", auth=(key.org_id, key.secret))
    assert failures == [401, 401]
    assert_error(locked_out, 429, "rate_limited")
    assert locked_out.headers["Retry-After"] == "2"
    assert_error(right_key, 429, "rate_limited")  # the address waits, whatever it sends


# --- hostile input -------------------------------------------------------------------------------


def test_invalid_bodies_get_422_naming_the_field(url: str, store: AccountStore) -> None:
    nan_square = '{"region": "helsinki", "area": {"type": "Polygon", "coordinates": ' \
        "[[[24.9, 60.1], [NaN, 60.1], [24.95, 60.2], [24.9, 60.1]]]}}"  # fmt: skip
    bowtie = {"type": "Polygon", "coordinates": [[[24.9, 60.1], [24.95, 60.2], [24.95, 60.1],
                                                  [24.9, 60.2], [24.9, 60.1]]]}  # fmt: skip
    with client(url, new_key(store)) as http:
        post = http.post
        nan = post("/v1/coverage", content=nan_square, headers={"Content-Type": "application/json"})
        crossing = post("/v1/coverage", json={"region": "helsinki", "area": bowtie})
        wrong_type = post("/v1/coverage", json={"region": "helsinki", "area": "everywhere"})
        bad_date = post("/v1/coverage", json={"region": "helsinki", "since": "2026-13-01"})
        unknown = post("/v1/coverage", json={"region": "helsinki", "radius": 5})
        not_json = post("/v1/coverage", content=b"{", headers={"Content-Type": "application/json"})
    assert assert_error(nan, 422, nan.json()["code"])["field"].startswith("area.coordinates")
    assert assert_error(crossing, 422, crossing.json()["code"])["field"].startswith("area")
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "area"
    assert bad_date.status_code == 422 and bad_date.json()["field"] == "since"
    assert unknown.status_code == 422 and unknown.json()["field"] == "radius"
    assert_error(not_json, 422, "invalid_json")


def test_declared_oversized_body_gets_413(data: ServedData, store: AccountStore) -> None:
    settings = api_config(data, max_body_bytes=2048)
    with running_server(settings, store) as base, client(base, new_key(store)) as http:
        response = http.post(
            "/v1/coverage", content=b" " * 4096, headers={"Content-Type": "application/json"}
        )
    assert_error(response, 413, "body_too_large")


def test_chunked_body_over_the_limit_is_refused_while_being_sent(
    data: ServedData, store: AccountStore
) -> None:
    """The client streams up to 64 MB; the 413 arrives long before (limit 64 KiB)."""
    settings = api_config(data, max_body_bytes=65536)
    key = new_key(store)
    with running_server(settings, store) as base:
        port = int(base.rsplit(":", 1)[1])
        status, sent = _stream_chunked(port, key, chunk=b" " * 65536, most=64 << 20)
    assert status == 413
    assert sent < 32 << 20  # far less than all of it: the server stopped reading


def _stream_chunked(port: int, key: IssuedKey, chunk: bytes, most: int) -> tuple[int, int]:
    """Send a chunked POST until a response arrives; return its status and the bytes sent."""
    import base64
    import select

    token = base64.b64encode(f"{key.org_id}:{key.secret}".encode()).decode()
    head = (
        "POST /v1/coverage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Basic {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        while sent < most:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        reply = sock.recv(1024).decode("latin-1")
    return int(reply.split(" ", 2)[1]), sent


def test_body_trickled_in_past_the_timeout_gets_408(data: ServedData, store: AccountStore) -> None:
    """A client that declares 100 bytes and sends 10 is answered, not waited for forever."""
    import base64

    settings = api_config(data, body_timeout_s=0.5)
    key = new_key(store)
    token = base64.b64encode(f"{key.org_id}:{key.secret}".encode()).decode()
    with running_server(settings, store) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(
                "POST /v1/coverage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Basic {token}\r\nContent-Length: 100\r\n\r\n"
                '{"region":'.encode()
            )
            reply = sock.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 408")
    assert json.loads(reply.split("\r\n\r\n", 1)[1])["code"] == "body_timeout"


def test_traversal_ids_and_paths_get_404(url: str, store: AccountStore) -> None:
    targets = [
        "/v1/releases/helsinki/..%2f..%2froads/meta.json",
        "/v1/releases/helsinki/r1/..%2f..%2froads%2fmeta.json",
        "/v1/releases/helsinki/r1/%2fetc%2fpasswd",
        "/v1/releases/helsinki/r1/segments",
        "/v1/releases/helsinki/latest.json/x",
        "/v1/releases/..%2fhelsinki/r1/manifest.json",
        "/v1/tiles/..%2f..%2fetc/0/0/0.mvt",
    ]
    key = new_key(store)
    with client(url, key) as http:
        for target in targets:
            response = http.get(target)
            assert response.status_code == 404, (target, response.text)
            assert response.json()["code"] in (
                "unknown_release",
                "unknown_file",
                "unknown_region",
                "not_found",
            )
    for raw in ["/v1/releases/helsinki/r1/../../roads/meta.json", "/v1/releases/helsinki/../r1/x"]:
        assert _raw_get(url, raw, key).startswith("HTTP/1.1 404")


def _raw_get(base: str, target: str, key: IssuedKey) -> str:
    """GET a request target as written (no client-side ``..`` normalisation)."""
    import base64

    token = base64.b64encode(f"{key.org_id}:{key.secret}".encode()).decode()
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        return sock.recv(4096).decode("latin-1")


def test_symlink_planted_in_a_release_is_not_followed(
    data: ServedData, store: AccountStore, tmp_path: Path
) -> None:
    releases = data.copy_releases(tmp_path / "releases")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for buyers")
    (releases / "r1" / "stac" / "collection.json").unlink()
    (releases / "r1" / "stac" / "collection.json").symlink_to(secret)
    settings = api_config(data, {"copy": releases})
    with running_server(settings, store) as base, client(base, new_key(store)) as http:
        response = http.get("/v1/releases/copy/r1/stac/collection.json")
    assert_error(response, 404, "unknown_file")


# --- releases and tiles --------------------------------------------------------------------------


def test_release_files_with_ranges(url: str, store: AccountStore, data: ServedData) -> None:
    manifest = json.loads((data.releases / "r1" / "manifest.json").read_text())
    parquet = next(f["path"] for f in manifest["files"] if f["path"].endswith(".parquet"))
    on_disk = (data.releases / "r1" / parquet).read_bytes()
    size = len(on_disk)
    with client(url, new_key(store)) as http:
        listing = http.get("/v1/releases").json()["regions"]
        whole = http.get("/v1/releases/helsinki/r1/manifest.json")
        part = http.get(f"/v1/releases/helsinki/r1/{parquet}", headers={"Range": "bytes=10-19"})
        tail = http.get(f"/v1/releases/helsinki/r1/{parquet}", headers={"Range": "bytes=-5"})
        huge = http.get(
            f"/v1/releases/helsinki/r1/{parquet}", headers={"Range": "bytes=4-" + "9" * 40}
        )
        past = http.get(
            f"/v1/releases/helsinki/r1/{parquet}", headers={"Range": "bytes=" + "9" * 40 + "-"}
        )
        several = http.get(
            f"/v1/releases/helsinki/r1/{parquet}", headers={"Range": "bytes=0-1,5-6"}
        )
        head = http.head(f"/v1/releases/helsinki/r1/{parquet}")
    assert listing[0] == {"region": "helsinki", "latest": "r1", "releases": ["r1"]}
    assert whole.content == (data.releases / "r1" / "manifest.json").read_bytes()
    assert part.status_code == 206 and part.content == on_disk[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{size}"
    assert tail.status_code == 206 and tail.content == on_disk[-5:]
    assert huge.status_code == 206 and huge.content == on_disk[4:]
    assert_error(past, 416, "range_not_satisfiable")
    assert past.headers["Content-Range"] == f"bytes */{size}"
    assert several.status_code == 200 and several.content == on_disk
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == size


def test_tiles_as_stored_with_204_for_empty_and_404_outside(
    url: str, store: AccountStore, data: ServedData
) -> None:
    with data.tiles.open("rb") as handle:
        stored = dict(all_tiles(MmapSource(handle)))
    (z, x, y), raw = max(stored.items(), key=lambda item: item[0][0])
    empty = next((z, xx, y) for xx in range(1 << z) if (z, xx, y) not in stored)
    with client(url, new_key(store)) as http:
        tile = http.get(f"/v1/tiles/helsinki/{z}/{x}/{y}.mvt")
        none = http.get("/v1/tiles/helsinki/{}/{}/{}.mvt".format(*empty))
        deep = http.get(f"/v1/tiles/helsinki/{z + 1}/0/0.mvt")
        off_grid = http.get(f"/v1/tiles/helsinki/{z}/{1 << z}/0.mvt")
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert tile.headers["content-encoding"] == "gzip"
    assert tile.content == gzip.decompress(raw)  # httpx undoes the gzip encoding
    assert none.status_code == 204
    assert_error(deep, 404, "tile_out_of_range")
    assert_error(off_grid, 404, "tile_out_of_range")


def test_a_release_published_while_serving_is_picked_up(
    data: ServedData, store: AccountStore, tmp_path: Path
) -> None:
    releases = data.copy_releases(tmp_path / "releases")
    settings = api_config(data, {"live": releases})
    with running_server(settings, store) as base, client(base, new_key(store)) as http:
        before = http.post("/v1/coverage", json={}).json()["release_id"]
        publish_release(data.coverage, data.roads, releases, releases / "latest.json", "r2")
        after = http.post("/v1/coverage", json={}).json()["release_id"]
        listing = http.get("/v1/releases").json()["regions"][0]
        old_manifest = http.get("/v1/releases/live/r1/manifest.json")
    assert (before, after) == ("r1", "r2")
    assert listing == {"region": "live", "latest": "r2", "releases": ["r1", "r2"]}
    assert old_manifest.status_code == 200


def test_timed_out_segments_answer_504_and_are_not_charged(
    data: ServedData, store: AccountStore, feed: gpd.GeoDataFrame
) -> None:
    settings = api_config(data, request_timeout_s=1e-6)
    key = new_key(store, credits="100")
    query = {"region": "helsinki", "area": geojson(city_area(feed))}
    with running_server(settings, store) as base, client(base, key) as http:
        response = http.post("/v1/segments", json=query)
        time.sleep(1.0)  # let the abandoned query thread reach its commit and stop
    assert_error(response, 504, "timeout")
    assert store.balance(key.org_id) == Decimal(100)
    assert store.history(key.org_id, limit=10, cursor=None).items == []
