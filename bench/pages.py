"""Weight and time to first chart of the built-in pages, in headless Chromium on loopback.

Fills a fresh embedded warehouse through the real pipeline (simulator traffic with an
ongoing incident -> collector -> embedded broker -> Bytewax flow -> chDB), saves the
incident's insight in the warehouse's insights store, serves the real API (``api.app``)
and loads ``/`` N times with the browser cache disabled:

    .venv/bin/python bench/pages.py [--loads 5] [--events-per-second 4]

Reports the compressed bytes of the page itself (HTML, JS, CSS, chart library), the bytes of
the first load including its API answers, and the time from navigation start to the first
chart drawn with data (median and worst). Targets: first chart < 1 s, page < 500 KB.

The helpers here (demo data, serving, the browser) are shared with
``tests/integration/test_pages_browser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402

from api.app import create_app  # noqa: E402
from api.deps import Services  # noqa: E402
from api.keys import KeyStore  # noqa: E402
from insights.attribution import classify  # noqa: E402
from insights.drilldown import Contribution  # noqa: E402
from insights.lifecycle import Insight, Member  # noqa: E402
from insights.narrative import Evidence, describe  # noqa: E402
from insights.series import Slice, parse_slice, slice_label  # noqa: E402
from insights.store import InsightStore  # noqa: E402
from tests.servers import serve_in_thread  # noqa: E402
from warehouse.client import Client  # noqa: E402
from warehouse.queries import MetricQuery, metric_series  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INCIDENT = "conversion_drop:device=mobile,at=+{at}m,for=60m,depth=0.8"  # at: end - 45 min


@dataclass
class Demo:
    """A warehouse database filled with simulated traffic, and the incident's truth."""

    database: str
    start: datetime
    end: datetime
    truth: dict[str, Any]
    events: int


def fill_demo(
    bootstrap: str,
    dsn: str,
    database: str,
    tmp: Path,
    *,
    rate: float = 6.0,
    hours: int = 6,
    seed: int = 3,
) -> Demo:
    """``hours`` of simulated traffic ending now, with a conversion drop on mobile for the
    last 45 minutes (still going on), plus the same window a week earlier (for "vs last
    week"), driven through the real pipeline into ``database``."""
    from ingest.simulator import SimConfig, ground_truth, iter_events, parse_incident
    from tests.pipeline import run_pipeline
    from warehouse.client import connect
    from warehouse.migrate import migrate

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    incident = parse_incident(INCIDENT.format(at=hours * 60 - 45))
    config = SimConfig(rate=rate, duration=end - start, seed=seed, start=start,
                       incidents=(incident,))  # fmt: skip
    last_week = SimConfig(rate=rate, duration=end - start, seed=seed + 1,
                          start=start - timedelta(days=7))  # fmt: skip
    # Event ids embed the seed and start, so the two runs never collide.
    raws = [line for _, line in iter_events(last_week)] + [line for _, line in iter_events(config)]
    client = connect(dsn, database)
    migrate(client)
    client.close()
    run_pipeline(bootstrap, dsn, database, raws, tmp)
    return Demo(database, start, end, ground_truth(config), len(raws))


def _mean(client: Client, metric: str, sl: Slice, start: datetime, end: datetime) -> float:
    """The mean 1-minute value of ``metric`` in slice ``sl`` over ``[start, end)``."""
    q = MetricQuery(metric, start, end, "1m", where=dict(sl), tz="UTC")
    values = [p["value"] for p in metric_series(client, q) if p["value"] is not None]
    return statistics.fmean(values) if values else 0.0


def _moves(
    client: Client, sl: Slice, since: datetime, until: datetime
) -> dict[str, tuple[float, float]]:
    """(observed, expected) per minute of the watched metrics in ``sl`` since the onset,
    expected being the same minutes a week earlier."""
    week = timedelta(days=7)
    return {
        m: (_mean(client, m, sl, since, until), _mean(client, m, sl, since - week, until - week))
        for m in ("conversion_rate", "orders", "revenue", "sessions", "add_to_cart_rate")
    }


def _change(observed: float, expected: float) -> float:
    return observed / expected - 1 if expected else 0.0


def incident_insights(client: Client, truth: dict[str, Any], now: datetime) -> list[Insight]:
    """Insights for the simulator's incidents (its ground truth), saved in the warehouse's
    insights store and returned.

    Each is worded by the detector's narrative (`insights.narrative.describe`) from the
    warehouse's numbers: the incident's slice since it began against the same minutes a
    week earlier. The detector's scoring is not run here: at the few events per second
    this fills (to stay quick) it does not raise a drop on one device at every hour of the
    simulated day; ``tests/integration/test_insights_pipeline.py`` covers detection.
    """
    out = []
    for entry in truth["incidents"]:
        sl = parse_slice(entry["slice_label"])
        onset = datetime.fromisoformat(entry["start"])
        moves = _moves(client, sl, onset, now)
        overall = _moves(client, (), onset, now)
        label = slice_label(sl)
        members = tuple(
            Member(m, label, "1m", onset, now, 1.0, *moves[m], _change(*moves[m]))
            for m in (move["metric"] for move in entry["metrics"])
            if m in moves
        )
        head = members[0]
        revenue, sessions = moves["revenue"], moves["sessions"]
        evidence = Evidence(
            metric=head.metric, slice=sl, interval="1m", onset=onset, until=now,
            observed=head.observed, expected=head.expected, change=head.change,
            companions={m: _change(*v) for m, v in moves.items()}, explanation="rate",
            contributors=tuple(
                Contribution(d, v, 1.0, "rate", head.change) for d, v in sl[:1]
            ),
            cause=classify({m: _change(*v) for m, v in moves.items()}),
            impact_eur_per_hour=(revenue[0] - revenue[1]) * 60,
            revenue_per_hour=overall["revenue"][1] * 60,
            traffic_share=sessions[1] / overall["sessions"][1] if overall["sessions"][1] else 1,
        )  # fmt: skip
        key = f"{entry['spec']}|{entry['start']}"
        insight = Insight(
            id=hashlib.sha256(key.encode()).hexdigest()[:16], status="open",
            metric=head.metric, slice=head.slice, interval="1m", direction="down",
            change=head.change, observed=head.observed, expected=head.expected,
            started_at=onset, detected_at=now, updated_at=now, members=members,
        )  # fmt: skip
        out.append(describe(insight, evidence, "UTC", now=now))
    return InsightStore(client).save(out)


@dataclass
class Served:
    """A running API: its URL and keys by scope."""

    url: str
    keys: dict[str, str]
    server: Any = field(repr=False)


@contextlib.contextmanager
def serve(app: FastAPI, store: KeyStore) -> Iterator[Served]:
    """``app`` under uvicorn on a free loopback port, with a read and an admin key."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    keys = {scope: store.create(scope) for scope in ("read", "admin")}
    server, thread = serve_in_thread(app, port)
    try:
        yield Served(f"http://127.0.0.1:{port}", keys, server)
    finally:
        server.should_exit = True
        thread.join(10)


def browser(width: int = 1280, height: int = 900) -> Any:
    """Headless Chromium (Debian's) through chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='pulse-chromium-')}",
                 f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def enter_key(driver: Any, key: str) -> None:
    """Type ``key`` into the page's key dialog, as a person does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 10).until(ec.visibility_of_element_located((By.ID, "key-input")))
    field_ = driver.find_element(By.ID, "key-input")
    field_.clear()
    field_.send_keys(key)
    driver.find_element(By.ID, "key-save").click()


def wait_first_chart(driver: Any, timeout: float = 20) -> int:
    """Milliseconds from navigation start to the first chart drawn with data."""
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.documentElement.dataset.firstChart")
    )
    return int(driver.execute_script("return document.documentElement.dataset.firstChart"))


def measure(url: str, key: str, loads: int) -> dict[str, Any]:
    """Cold loads of ``url``: transfer sizes and time to first chart."""
    driver = browser(390, 844)  # a phone-sized window
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        driver.get(url)
        enter_key(driver, key)  # kept in sessionStorage for the reloads below
        wait_first_chart(driver)
        times, page_bytes, total_bytes = [], [], []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(url)
            times.append(wait_first_chart(driver))
            time.sleep(1.0)  # let the remaining panels finish
            entries = driver.execute_script(
                "return [performance.getEntriesByType('navigation')[0]]"
                ".concat(performance.getEntriesByType('resource'))"
                ".map(e => [e.name, e.transferSize || 0])"
            )
            static = sum(size for name, size in entries if "/v1/" not in name)
            page_bytes.append(static)
            total_bytes.append(sum(size for _, size in entries))
        return {
            "loads": loads,
            "first_chart_ms_median": statistics.median(times),
            "first_chart_ms_max": max(times),
            "page_kb_compressed": round(max(page_bytes) / 1024, 1),
            "first_load_kb_with_data": round(max(total_bytes) / 1024, 1),
        }
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--events-per-second", type=float, default=6.0)
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()

    from ingest.broker import EmbeddedBroker
    from warehouse.client import connect

    with tempfile.TemporaryDirectory(prefix="pulse-bench-pages-") as tmp_name:
        tmp = Path(tmp_name)
        with (
            socket_port() as port,
            EmbeddedBroker(f"127.0.0.1:{port}", log_file=tmp / "b.log") as b,
        ):
            dsn = f"chdb://{tmp / 'warehouse'}"
            database = f"bench_{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            demo = fill_demo(b.bootstrap, dsn, database, tmp, rate=args.events_per_second)
            print(f"filled {demo.events:,} events in {time.monotonic() - started:.1f} s",
                  file=sys.stderr)  # fmt: skip
            client = connect(dsn, database)
            incident_insights(client, demo.truth, demo.end)
            services = Services(keys=KeyStore(tmp / "keys.json"), warehouse=client)
            with serve(create_app(services), services.keys) as served:
                result = measure(f"{served.url}/#pulse-overview", served.keys["read"], args.loads)
    result["events"] = demo.events
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    """A free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port


if __name__ == "__main__":
    main()
