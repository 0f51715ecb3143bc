"""CONTRACT §9 from a real web page: Segment's own ``@segment/analytics-next`` bundle (fetched
with ``npm pack`` into an ignored cache, never committed) in headless Chromium, on a small
storefront served from another origin allowed for the key, talking to Pulse only (no CDN).
The shopper views, adds to cart, logs in, checks out, buys and leaves the page right after
the purchase: every event is in the warehouse exactly once, with country, device and
channel derived, and the anonymous part of the visit under the user."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import RunningApi, free_port, require
from tests.pipeline import drained_topics

pytestmark = pytest.mark.integration

AJS_VERSION = "1.84.3"  # @segment/analytics-next, as checked against Pulse
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "npm"
# A desktop Chrome: HeadlessChrome's own user agent is (rightly) a known bot.
DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--user-agent={DESKTOP}",
    # nothing but loopback: a request to Segment's CDN would fail here, not hang
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]  # fmt: skip

STORE = Path(__file__).resolve().parents[1] / "data" / "segment_store.html"
SENT = 7  # page, viewed, 2 x added, identify, checkout, order


def _bundle() -> Path:
    """The UMD bundle of @segment/analytics-next from npm (``npm pack``), cached."""
    umd = CACHE / f"analytics-next-{AJS_VERSION}" / "package" / "dist" / "umd"
    if (umd / "index.js").exists():
        return umd
    require(shutil.which("npm") is not None, "npm (Debian package npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            ["npm", "pack", f"@segment/analytics-next@{AJS_VERSION}", "--pack-destination", tmp],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        [tgz] = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as tar:
            tar.extractall(umd.parents[2], filter="data")
    return umd


def _shop(root: Path, umd: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    for dest in (root / "vendor" / "analytics-next", root / "cdn" / "analytics-next" / "bundles"):
        shutil.copytree(umd, dest)
    shutil.copy(STORE, root / "store.html")
    (root / "thanks.html").write_text("<!doctype html><title>Thanks</title><p>Thanks!</p>")
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def test_analytics_next_in_a_browser_reaches_the_warehouse(
    api: RunningApi, warehouse_dsn: str, tmp_path: Path
) -> None:
    require(Path("/usr/bin/chromium").exists(), "Debian chromium (/usr/bin/chromium)")
    require(Path("/usr/bin/chromedriver").exists(), "Debian chromium-driver")
    require(importlib.util.find_spec("selenium") is not None, "selenium (PyPI, dev extra)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server, port = _shop(tmp_path / "shop", _bundle())
    shop = f"http://localhost:{port}"  # another origin than the API's 127.0.0.1
    key = api.services.keys.create("ingest", origins=(shop,))
    user, order = f"shopper-{uuid.uuid4().hex[:6]}", f"o-{uuid.uuid4().hex[:6]}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ajs-profile-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        host = api.url.split("://")[1]
        query = urlencode({"host": host, "key": key, "user": user, "order": order,
                           "utm_source": "news", "utm_medium": "email"})  # fmt: skip
        driver.get(f"{shop}/store.html?{query}")
        deadline = time.monotonic() + 60
        while "thanks" not in driver.current_url and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "thanks" in driver.current_url, driver.page_source[:500]
        while time.monotonic() < deadline:  # keepalive requests outlive the page
            if sum(len(api.read(t)) for t in api.topics.all) >= SENT:
                break
            time.sleep(0.5)
        console = driver.get_log("browser")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
    letters = api.read(api.topics.dlq)
    assert not letters, [(r.headers, r.value[:200]) for r in letters]
    arrived = sum(len(api.read(t)) for t in api.topics.events)
    assert arrived == SENT, console

    with drained_topics(api.bootstrap, api.topics, warehouse_dsn, tmp_path, "ajs") as warehouse:
        rows = warehouse.query(
            "SELECT type, user_id, country, device, channel, order_id, revenue_eur, session_key "
            "FROM events FINAL"
        ).result_rows
        expected = ["add_to_cart", "add_to_cart", "begin_checkout", "identify", "page_view",
                    "product_view", "purchase"]  # fmt: skip
        assert sorted(r[0] for r in rows) == expected, json.dumps(rows, default=str)
        assert {r[1] for r in rows} == {user}  # the anonymous part counts under the user
        assert {(r[2], r[3], r[4]) for r in rows} == {("GB", "desktop", "email")}
        [purchase] = [r for r in rows if r[0] == "purchase"]
        assert purchase[5:7] == (order, pytest.approx(68.9))
        assert len({r[7] for r in rows}) == 1  # one session
        assert warehouse.query("SELECT count() FROM bot_events").result_rows == [(0,)]
