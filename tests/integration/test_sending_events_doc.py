"""Every code block of ``docs/sending-events.md``, extracted and run against a test stack
(free loopback ports, a throw-away ``PULSE_HOME``) with only its placeholders replaced (the
key, the host, the broker, the topic): the web page in headless Chromium with Segment's
own bundle, the Python SDK, curl, a Kafka producer, ``pulse replay`` and ``pulse simulate
--format segment`` posted with curl. A block no test claims fails the suite."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import RunningApi, free_port, require
from tests.integration.test_segment_browser import CHROME_FLAGS, _bundle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sending-events.md"
VENV_BIN = ROOT / ".venv" / "bin"
# what each kind of block is recognised by
SIGNATURES = {
    "browser": ("html", "AnalyticsNext"),
    "python_sdk": ("python", "segment.analytics"),
    "curl": ("bash", "/v1/events"),
    "kafka": ("python", "confluent_kafka"),
    "replay": ("bash", "pulse replay"),
    "simulate": ("bash", "pulse simulate --format segment"),
}


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M)


def _block(kind: str) -> str:
    lang, marker = SIGNATURES[kind]
    [code] = [code for lg, code in _blocks() if lg == lang and marker in code]
    return code


def _for(api: RunningApi, code: str) -> str:
    """The block with its placeholders pointing at the test stack."""
    return code.replace("pk_…", api.keys["ingest"]).replace("https://pulse.example.com", api.url)


def _records(api: RunningApi) -> list[dict]:
    return [json.loads(r.value) for t in api.topics.events for r in api.read(t)]


def test_every_block_is_exercised() -> None:
    claimed = [
        kind
        for lang, code in _blocks()
        for kind, (lg, marker) in SIGNATURES.items()
        if lg == lang and marker in code
    ]
    assert sorted(claimed) == sorted(SIGNATURES), [(lg, c[:60]) for lg, c in _blocks()]


def test_web_page_block(api: RunningApi, tmp_path: Path) -> None:
    require(Path("/usr/bin/chromium").exists(), "Debian chromium (/usr/bin/chromium)")
    require(Path("/usr/bin/chromedriver").exists(), "Debian chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    umd = _bundle()
    shop_dir = tmp_path / "shop"
    for dest in ("vendor/analytics-next", "cdn/analytics-next/bundles"):
        shutil.copytree(umd, shop_dir / dest)
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shop_dir))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shop = f"http://localhost:{port}"  # another origin than the API's, allowed for the key
    key = api.services.keys.create("ingest", origins=(shop,))
    html = (
        _block("browser")
        .replace("pk_…", key)
        .replace("pulse.example.com/segment/v1", f"{api.url.split('://')[1]}/segment/v1")
        .replace('protocol: "https"', 'protocol: "http"')
    )
    (shop_dir / "index.html").write_text(f"<!doctype html><html><body>\n{html}</body></html>\n")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="doc-profile-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(f"{shop}/index.html")
        deadline = time.monotonic() + 60
        while len(_records(api)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        console = driver.get_log("browser")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()
    assert not api.read(api.topics.dlq)
    records = _records(api)
    assert sorted(r["type"] for r in records) == ["page_view", "product_view"], console
    [viewed] = [r for r in records if r["type"] == "product_view"]
    assert (viewed["product_id"], viewed["price"], viewed["currency"]) == ("sku-1", 59.9, "EUR")


def test_python_sdk_block(api: RunningApi) -> None:
    done = subprocess.run([sys.executable, "-c", _for(api, _block("python_sdk"))],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not api.read(api.topics.dlq)
    [order] = _records(api)
    assert (order["type"], order["user_id"], order["anonymous_id"]) == (
        "purchase", "user-1", "anon-1")  # fmt: skip
    assert order["order_id"] == "o-1" and order["revenue"] == pytest.approx(59.9)


def test_curl_block(api: RunningApi) -> None:
    require(shutil.which("curl") is not None, "curl")
    done = subprocess.run(["bash", "-c", f"set -e\n{_for(api, _block('curl'))}"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [(r["event_id"], r["type"]) for r in _records(api)] == [("e1", "page_view")]


def test_kafka_producer_block(api: RunningApi) -> None:
    code = (
        _block("kafka")
        .replace("kafka.example.com:9092", api.bootstrap)
        .replace('"user.pageviews"', json.dumps(api.topics.for_type("page_view")))
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [record] = api.read(api.topics.for_type("page_view"))
    assert record.key == b"u1" and json.loads(record.value)["event_id"] == "e2"


def _pulse_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PATH=f"{VENV_BIN}:{env['PATH']}", PULSE_HOME=str(tmp_path / "home"), TZ="UTC")
    env.update(PULSE_API_PORT=str(free_port()), PULSE_BROKER_LISTEN=f"127.0.0.1:{free_port()}")
    return env


def test_replay_block(tmp_path: Path) -> None:
    require((VENV_BIN / "pulse").exists(), "the clone's .venv (make install)")
    env = _pulse_env(tmp_path)
    script = f"set -e\ntrap 'pulse stop >/dev/null 2>&1 || true' EXIT\n{_block('replay')}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert "accepted=1 rejected=0" in done.stdout, done.stdout


def test_simulate_segment_block(api: RunningApi, tmp_path: Path) -> None:
    require((VENV_BIN / "pulse").exists(), "the clone's .venv (make install)")
    require(shutil.which("curl") is not None, "curl")
    # the five minutes before now, as in the docs, follow the time of day (at 01:00 UTC 939
    # messages, and a crawler is not sure to come): a weekday evening's instead, always alike
    block = _block("simulate").replace("--duration 5m", "--duration 5m --start 2026-11-17T18:00Z")
    assert "--start" in block
    script = f"set -e\n{_for(api, block)}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=_pulse_env(tmp_path),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    bodies = (tmp_path / "segment.jsonl").read_text().splitlines()
    messages = [m for body in bodies for m in json.loads(body)["batch"]]
    assert len(messages) > 1000 and all(len(json.loads(b)["batch"]) <= 100 for b in bodies)
    assert not api.read(api.topics.dlq)
    records = _records(api)
    assert sorted(r["event_id"] for r in records) == sorted(m["messageId"] for m in messages)
    assert any(r["type"] == "identify" for r in records)  # visits that log in
    assert any(r.get("bot") for r in records)  # crawlers, flagged
