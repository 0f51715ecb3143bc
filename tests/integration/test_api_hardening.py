"""No request stops the API (CONTRACT §7, §12): bodies, keys, rate limits, CORS, headers.

Against the real app under uvicorn, the real broker and real key files.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from api.ratelimit import RateLimit, RateLimiter
from ingest.collector import MAX_DEAD_LETTER_BYTES
from tests.conftest import RunningApi, free_port
from tests.servers import serve_in_thread

pytestmark = pytest.mark.integration

NOW = "2026-11-20T12:00:00Z"


def good(i: int) -> dict:
    return {"event_id": f"e{i}", "type": "page_view", "ts": NOW, "user_id": f"u{i}"}


@contextlib.contextmanager
def serving(services: Services) -> Iterator[str]:
    port = free_port()
    server, thread = serve_in_thread(create_app(services), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"code", "message"}
    if code:
        assert error["code"] == code, error
    return error


# -- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"event_id": "x", "pad": ' + b"[" * 500 + b"]" * 500 + b"}]",
        b'{"event_id": "x", "pad": ' + b"[" * 100 + b"]" * 100 + b'}\n{"event_id": "y"}',
    ],
    ids=["100k-nested-arrays", "deep-event-in-array", "deep-jsonl-line"],
)
def test_deeply_nested_bodies_are_400(api: RunningApi, body: bytes) -> None:
    r = httpx.post(f"{api.url}/v1/events", content=body, headers=api.auth("ingest"))
    assert "deeper than 64 levels" in assert_error(r, 400)["message"]
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_a_near_1mib_rejected_event_is_dead_lettered_truncated(api: RunningApi) -> None:
    """The valid events of the request are stored, the huge one is in the dead-letter
    topic (its start, flagged with its size), and the request answers 200."""
    head, tail = good(1), good(2)
    big = {**good(3), "pad": ""}
    frame = len(json.dumps([head, big, tail]))
    big["pad"] = "x" * (1024 * 1024 - frame - 16)
    body = json.dumps([head, big, tail]).encode()
    assert 1024 * 1024 - 64 < len(body) <= 1024 * 1024
    r = httpx.post(f"{api.url}/v1/events", content=body, headers=api.auth("ingest"), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 1 and "bytes" in rejected["reason"]
    stored = api.read(api.topics.prefix + "user.pageviews")
    assert sorted(json.loads(rec.value)["event_id"] for rec in stored) == ["e1", "e2"]
    [dead] = api.read(api.topics.dlq)
    original = json.dumps(big).encode()
    assert dead.value == original[:MAX_DEAD_LETTER_BYTES]
    assert int(dead.headers["pulse.truncated"]) == len(original)
    assert dead.headers["pulse.reason"].decode() == rejected["reason"]


def test_errors_are_json_with_their_headers(api: RunningApi) -> None:
    r = httpx.put(f"{api.url}/v1/events", headers=api.auth("ingest"))
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    assert_error(httpx.get(f"{api.url}/nothing-here"), 404, "not_found")


# -- keys --------------------------------------------------------------------------------


def test_revoked_and_expired_keys_are_401(api: RunningApi) -> None:
    store: KeyStore = api.services.keys
    record, key = store.issue("read", name="temp")
    # long enough to be used before it expires on a busy machine, short enough to wait for
    expires = time.monotonic() + 3.0
    short = store.create("read", expires_in=timedelta(seconds=3))
    url = f"{api.url}/v1/dashboards"
    for k in (key, short):
        assert httpx.get(url, headers={"Authorization": f"Bearer {k}"}).status_code == 200
    store.revoke(record.id)  # as `pulse keys revoke` does, from any process
    r = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert "revoked" in assert_error(r, 401, "unauthorized")["message"]
    time.sleep(max(0.0, expires - time.monotonic()) + 0.1)
    r = httpx.get(url, headers={"Authorization": f"Bearer {short}"})
    assert "expired" in assert_error(r, 401, "unauthorized")["message"]
    assert httpx.get(url, headers=api.auth("read")).status_code == 200  # others unaffected


def test_last_use_is_recorded_at_most_once_a_minute(api: RunningApi) -> None:
    store: KeyStore = api.services.keys
    url = f"{api.url}/v1/dashboards"
    assert httpx.get(url, headers=api.auth("read")).status_code == 200
    [used] = [r for r in store.records() if r.scope == "read"]
    assert used.last_used_at is not None
    before = store.path.stat().st_mtime_ns
    for _ in range(5):
        assert httpx.get(url, headers=api.auth("read")).status_code == 200
    assert store.path.stat().st_mtime_ns == before  # no write per request


def test_a_damaged_key_store_is_503_json_or_the_last_good_copy(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key = store.create("read")
    path.write_text(path.read_text()[:40])  # truncated, as a full disk leaves it
    url_path = "/v1/dashboards"
    with serving(Services(keys=KeyStore(path))) as url:  # never saw a good copy: 503
        r = httpx.get(url + url_path, headers={"Authorization": f"Bearer {key}"})
        error = assert_error(r, 503, "keys_unavailable")
        assert "damaged" in error["message"] and str(tmp_path) not in error["message"]
        assert httpx.get(url + "/healthz").status_code == 200
    path.unlink()
    key = KeyStore(path).create("read")
    with serving(Services(keys=KeyStore(path))) as url:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(url + url_path, headers=headers).status_code == 200
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])
        # the key read before still works; the store is not silently emptied
        assert httpx.get(url + url_path, headers=headers).status_code == 200
        r = httpx.get(url + url_path, headers={"Authorization": "Bearer pulse_nope"})
        assert_error(r, 401)
        path.write_bytes(good)
        assert httpx.get(url + url_path, headers=headers).status_code == 200


# -- rate limits -------------------------------------------------------------------------


def test_too_many_requests_for_one_key_are_429_with_retry_after(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    busy, calm = store.create("read"), store.create("read")
    limiter = RateLimiter({"read": RateLimit(per_second=0.5, burst=3)})
    with serving(Services(keys=store, limiter=limiter)) as url:
        answers = [
            httpx.get(f"{url}/v1/dashboards", headers={"Authorization": f"Bearer {busy}"})
            for _ in range(4)
        ]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        error = assert_error(answers[-1], 429, "rate_limited")
        assert "too many requests" in error["message"]
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 2
        other = httpx.get(f"{url}/v1/dashboards", headers={"Authorization": f"Bearer {calm}"})
        assert other.status_code == 200  # per key


def test_the_default_limits_leave_normal_use_alone(api: RunningApi) -> None:
    """A dashboard page's burst of questions and a collector's burst of batches pass."""
    with httpx.Client(base_url=api.url) as client:
        for _ in range(150):
            assert client.get("/v1/dashboards", headers=api.auth("read")).status_code == 200
        for i in range(400):
            r = client.post("/v1/events", json=[good(i)], headers=api.auth("ingest"))
            assert r.status_code == 200


# -- CORS and browser headers ------------------------------------------------------------

SHOP, OTHER, EVIL = "https://shop.example.com", "https://other.example.com", "https://evil.test"


@pytest.fixture
def cors_api(api: RunningApi) -> RunningApi:
    api.services.cors_origins = frozenset({SHOP})
    api.keys["pinned"] = api.services.keys.create("ingest", origins=[OTHER])
    return api


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_is_answered_for_allowed_origins_only(cors_api: RunningApi) -> None:
    events = f"{cors_api.url}/v1/events"
    for origin in (SHOP, OTHER):  # PULSE_CORS_ORIGINS, and a key's own --origin
        r = _preflight(events, origin)
        assert r.status_code == 204, (origin, r.text)
        assert r.headers["access-control-allow-origin"] == origin
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = _preflight(events, EVIL)
    assert_error(r, 403, "forbidden")
    assert "access-control-allow-origin" not in r.headers
    # other routes: no CORS at all
    r = _preflight(f"{cors_api.url}/v1/metrics/events", SHOP)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(
        f"{cors_api.url}/v1/dashboards", headers={**cors_api.auth("read"), "Origin": SHOP}
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_a_page_origin_not_allowed_for_the_key_is_refused(cors_api: RunningApi) -> None:
    events = f"{cors_api.url}/v1/events"

    def post(key: str, origin: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {cors_api.keys[key]}"}
        if origin:
            headers["Origin"] = origin
        return httpx.post(events, json=[good(1)], headers=headers)

    ok = post("ingest", SHOP)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == SHOP
    assert post("pinned", OTHER).status_code == 200
    assert "origin" in assert_error(post("pinned", SHOP), 403, "forbidden")["message"]
    assert_error(post("ingest", EVIL), 403, "forbidden")
    assert_error(post("ingest", OTHER), 403, "forbidden")  # another key's origin
    assert post("ingest", None).status_code == 200  # servers send no Origin
    stored = cors_api.read(cors_api.topics.prefix + "user.pageviews")
    assert len(stored) == 3


def test_security_headers_and_metrics_without_redirect(api: RunningApi) -> None:
    for path in ("/", "/v1/dashboards", "/healthz", "/openapi.json"):
        r = httpx.get(api.url + path)
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
    r = httpx.get(f"{api.url}/metrics", follow_redirects=False)
    assert r.status_code == 200, r.status_code
    assert r.headers["content-type"].startswith("text/plain")
    assert "pulse_events_accepted_total" in r.text
    assert "access-control-allow-origin" not in r.headers


def test_cli_read_key_is_reused_while_valid(tmp_path: Path) -> None:
    from api.runtime import Runtime
    from api.settings import load_settings

    settings = load_settings(home=tmp_path)
    store = KeyStore(settings.keys_file)
    write_cli_key = Runtime(settings).write_cli_key
    path = write_cli_key(store)
    first = path.read_text().strip()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for _ in range(3):
        write_cli_key(store)
    assert path.read_text().strip() == first
    assert len(store.records()) == 1
    store.revoke(store.records()[0].id)
    write_cli_key(store)
    assert path.read_text().strip() != first and store.scope_of(path.read_text().strip())
    assert len(store.records()) == 2
