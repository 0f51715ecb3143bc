"""The built-in pages in headless Chromium, on data the real pipeline put in the warehouse.

The real API app serves the page; the simulator's incident (ongoing) is an insight in the
warehouse's insights store. A person opens ``/``, types a read key, sees the Business
overview's charts with data and the insight, cannot acknowledge it with a read key,
switches to an admin key and acknowledges it: read back from ClickHouse, it is
acknowledged. The key never shows up in a URL. A screenshot is saved to
``tests/artifacts/`` (and to ``docs/img/overview.png`` with ``PULSE_UPDATE_SCREENSHOT=1``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from bench.pages import browser, enter_key, fill_demo, incident_insights, serve, wait_first_chart
from insights.store import InsightStore
from tests.conftest import require
from warehouse.client import connect

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "overview.png"


@pytest.fixture(scope="module")
def site(broker, warehouse_dsn, tmp_path_factory):
    require(Path("/usr/bin/chromium").exists(), "Debian chromium (/usr/bin/chromium)")
    require(Path("/usr/bin/chromedriver").exists(), "Debian chromium-driver")
    require(importlib.util.find_spec("selenium") is not None, "selenium (PyPI, dev extra)")
    tmp = tmp_path_factory.mktemp("pages")
    database = f"pages_{uuid.uuid4().hex[:8]}"
    demo = fill_demo(broker.bootstrap, warehouse_dsn, database, tmp)
    client = connect(warehouse_dsn, database)
    insights = incident_insights(client, demo.truth, demo.end)
    services = Services(keys=KeyStore(tmp / "keys.json"), warehouse=client)
    with serve(create_app(services), services.keys) as served:
        served.database = database  # type: ignore[attr-defined]  # for the tests' own queries
        served.start = demo.start.timestamp()  # type: ignore[attr-defined]  # the data's start
        yield served, insights, InsightStore(client)
    client.command(f"DROP DATABASE `{database}`")


# Collects what the Content-Security-Policy blocks, from before the page's first script.
_WATCH_CSP = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation',"
    " (e) => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));"
)


def _watch_csp(driver) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH_CSP})


def _panels(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.panel')].map(p => ({"
        " title: p.querySelector('h3').textContent, state: p.dataset.state,"
        " points: Number(p.dataset.points || 0), canvas: !!p.querySelector('canvas')}))"
    )


def test_overview_renders_and_an_insight_is_acknowledged(site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    served, insights, store = site
    driver = browser(1280, 1180)
    _watch_csp(driver)
    try:
        driver.get(served.url + "/")
        enter_key(driver, served.keys["read"])
        first_chart_ms = wait_first_chart(driver)
        WebDriverWait(driver, 20).until(lambda d: all(p["state"] != "loading" for p in _panels(d)))
        panels = _panels(driver)
        errors = [p for p in panels if p["state"] == "error"]
        assert not errors, f"panels failed: {errors}"
        charts = [p for p in panels if p["canvas"] and p["points"] > 0]
        assert len(charts) >= 5, f"too few charts with data: {panels}"
        stats = [p for p in panels if p["state"] == "ok" and p["points"] > 0]
        assert len(stats) >= 12
        assert first_chart_ms < 5000

        # The key lives in this tab's sessionStorage, never in a URL the page requested.
        key = served.keys["read"]
        assert driver.execute_script("return sessionStorage.getItem('pulse.key')") == key
        urls = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert any("/v1/metrics/" in u for u in urls)
        assert not [u for u in urls if key in u] and key not in driver.current_url

        # The incident is listed; a read key is shown no Ack or Resolve, and told who can.
        first = insights[0].id
        assert "mobile" in insights[0].summary and insights[0].direction == "down"
        listed = f".insight[data-id='{first}']"
        button = f"{listed} button[data-act='ack']"
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, listed))
        assert not driver.find_elements(By.CSS_SELECTOR, ".insight button")
        assert "an admin key can acknowledge" in driver.page_source
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "overview.png"))
        if os.environ.get("PULSE_UPDATE_SCREENSHOT") == "1":
            DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / "overview.png", DOCS_IMG)
        assert getattr(store.get(first), "status", None) == "open"  # nothing changed

        # With an admin key it is acknowledged and leaves the open list.
        driver.find_element(By.ID, "key-button").click()
        enter_key(driver, served.keys["admin"])
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, button))
        driver.find_element(By.CSS_SELECTOR, button).click()
        WebDriverWait(driver, 10).until(
            lambda d: not d.find_elements(By.CSS_SELECTOR, f".insight[data-id='{first}']")
        )
        stored = store.get(first)  # read back from ClickHouse
        assert stored is not None and stored.status == "acknowledged"
        # the page works under its security headers: nothing was blocked
        assert driver.execute_script("return window.__csp") == []
        assert stored.acknowledged_at is not None
        driver.save_screenshot(str(ARTIFACTS / "overview-after-ack.png"))
    finally:
        driver.quit()


def test_every_dashboard_loads_on_a_phone(site) -> None:
    served, _, _ = site
    driver = browser(390, 844)
    try:
        driver.get(served.url + "/")
        enter_key(driver, served.keys["read"])
        wait_first_chart(driver)
        from selenium.webdriver.support.wait import WebDriverWait

        for uid in ("pulse-funnel", "pulse-products", "pulse-engagement", "pulse-anomalies",
                    "pulse-pipeline", "pulse-overview"):  # fmt: skip
            driver.execute_script(f"location.hash = '{uid}'")
            WebDriverWait(driver, 20).until(
                lambda d: (
                    d.execute_script("return document.querySelectorAll('.panel').length")
                    and all(p["state"] != "loading" for p in _panels(d))
                )
            )
            panels = _panels(driver)
            assert not [p for p in panels if p["state"] == "error"], (uid, panels)
            assert [p for p in panels if p["state"] == "ok"], (uid, panels)
            # Nothing wider than the phone's screen.
            assert driver.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1"
            ), uid
            driver.save_screenshot(str(ARTIFACTS / f"phone-{uid}.png"))
    finally:
        driver.quit()


PAGES = {
    "pulse-overview": "overview",
    "pulse-funnel": "funnel",
    "pulse-products": "products",
    "pulse-engagement": "engagement",
    "pulse-anomalies": "anomalies",
    "pulse-pipeline": "pipeline",
}  # the Experiments page: test_experiments_page_browser.py


@pytest.mark.parametrize(("device", "width"), [("desktop", 1280), ("phone", 390)])
def test_screenshots_of_every_page(site, device: str, width: int) -> None:
    """Every built-in page, whole (its full height), at desktop and phone width: saved to
    tests/artifacts/pages-<device>-<page>.png (and docs/img/ with PULSE_UPDATE_SCREENSHOT=1)
    once every panel has settled without an error and nothing is wider than the screen."""
    from selenium.webdriver.support.wait import WebDriverWait

    served, _, _ = site
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser(width, 900)
    try:
        driver.get(served.url + "/#pulse-overview")
        enter_key(driver, served.keys["read"])
        wait_first_chart(driver)
        for uid, name in PAGES.items():
            driver.set_window_size(width, 900)
            driver.execute_script(f"location.hash = '{uid}'")
            WebDriverWait(driver, 30).until(
                lambda d, uid=uid: (
                    _settled(d) and d.execute_script("return location.hash") == "#" + uid
                )
            )
            panels = _panels(driver)
            assert not [p for p in panels if p["state"] == "error"], (uid, panels)
            assert driver.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1"
            ), uid
            # the previous board, still loading when this one was chosen, drew nothing here
            # (its tiles once landed in the Funnel's panels of the same index); Pipeline
            # health's counters show a number until they have a rate
            assert uid == "pulse-pipeline" or not driver.execute_script(
                "return document.querySelectorAll('.panel.timeseries .body > .value,"
                " .panel.funnel .body > .value, .panel.table .body > .value').length"
            ), uid
            # the whole page: a window as tall as the document (charts redraw to their width)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(int(height) + 140, 6000))
            WebDriverWait(driver, 30).until(_settled)
            shot = ARTIFACTS / f"pages-{device}-{name}.png"
            driver.save_screenshot(str(shot))
            _publish(shot, shot.name)
    finally:
        driver.quit()


def _stats(driver) -> dict:
    return driver.execute_script("return window.pulseStats.charts")


def _settled(driver) -> bool:
    return bool(driver.execute_script("return document.querySelectorAll('.panel').length")) and all(
        p["state"] != "loading" for p in _panels(driver)
    )


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")


def test_pages_read_as_a_newcomer_expects(site, warehouse_dsn) -> None:
    """Issue #20, point 6: labelled tiles, breakdowns ranked by volume, one date format,
    ranges that fit the data, insight shading only on its slice, controls by scope, no empty
    space under the funnel's tables, every tab in sight on a phone. Screenshots at desktop
    and phone width go to tests/artifacts/ (and docs/img/ with PULSE_UPDATE_SCREENSHOT=1)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.support.wait import WebDriverWait

    served, _, _ = site
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser(1280, 1400)
    try:
        driver.get(served.url + "/#pulse-overview")
        enter_key(driver, served.keys["read"])
        wait_first_chart(driver)
        WebDriverWait(driver, 30).until(_settled)

        # Tiles say what they show: a total over the range, or the last complete bucket.
        notes = driver.execute_script(
            "return [...document.querySelectorAll('.panel.stat')].map(p => "
            "[p.querySelector('h3').textContent, p.querySelector('.note').textContent])"
        )
        for title, note in notes:
            assert note.startswith(("total over the range: ", "last complete ")), (title, note)
        by_title = dict(notes)
        assert by_title["Orders"].startswith("total over the range")
        assert by_title["Visitors"].startswith("last complete ")

        # Shading only on the slice the insight concerns: the mobile drop is not shaded on
        # the overall conversion chart, and is on the chart by device.
        charts = _stats(driver)
        assert charts["Conversion rate vs last week"]["shaded"] == 0
        assert charts["Conversion by device"]["shaded"] >= 1

        # Ranges that fit the data: over 24 h the charts start where the 6 h of data start.
        Select(driver.find_element(By.ID, "range")).select_by_value("24h")
        WebDriverWait(driver, 30).until(
            lambda d: _settled(d) and (_stats(d).get("Revenue vs last week") or {}).get("first")
        )
        WebDriverWait(driver, 30).until(
            lambda d: _stats(d)["Revenue vs last week"]["first"] >= site_start(site) - 600
        )
        driver.save_screenshot(str(ARTIFACTS / "desktop-overview.png"))
        _publish(ARTIFACTS / "desktop-overview.png", "pages-desktop-24h.png")
        Select(driver.find_element(By.ID, "range")).select_by_value("6h")

        # One date format, from the chosen zone: the insight (acknowledged by the test above,
        # or still open) says since when as 2026-12-06 14:35.
        driver.execute_script("location.hash = 'pulse-anomalies'")
        WebDriverWait(driver, 30).until(
            lambda d: _settled(d) and d.find_elements(By.CSS_SELECTOR, ".insight .meta")
        )
        meta = driver.find_element(By.CSS_SELECTOR, ".insight .meta").text
        since = re.search(r"since (\S+ \S+)", meta)
        assert since and _DATE.match(since.group(1)), meta

        # Breakdowns ranked by volume: conversion by country shows the countries with the
        # most sessions, not the best-converting small ones.
        driver.execute_script("location.hash = 'pulse-funnel'")
        WebDriverWait(driver, 30).until(
            lambda d: _settled(d) and "Conversion by country" in _stats(d)
        )
        shown = _stats(driver)["Conversion by country"]["labels"]
        client = connect(warehouse_dsn, served.database)
        biggest = [r[0] for r in client.query(
            "SELECT country, uniqExact(session_key) AS n FROM events WHERE country != '' "
            "GROUP BY country ORDER BY n DESC, country LIMIT 8").result_rows]  # fmt: skip
        assert len(set(shown) & set(biggest)) >= 7, (shown, biggest)

        # No empty space under the funnel's tables.
        gaps = driver.execute_script(
            "return [...document.querySelectorAll('.panel.funnel')].map(p => "
            "p.getBoundingClientRect().height - p.querySelector('h3').offsetHeight "
            "- p.querySelector('.sub').offsetHeight - p.querySelector('.body').scrollHeight "
            "- p.querySelector('.note').offsetHeight)"
        )
        assert gaps and max(gaps) < 40, gaps
        driver.save_screenshot(str(ARTIFACTS / "desktop-funnel.png"))
        _publish(ARTIFACTS / "desktop-funnel.png", "pages-desktop-funnel.png")
    finally:
        driver.quit()

    phone = browser(390, 844)
    try:
        phone.get(served.url + "/#pulse-overview")
        enter_key(phone, served.keys["read"])
        wait_first_chart(phone)
        WebDriverWait(phone, 30).until(_settled)
        # Every tab is in sight and can be tapped.
        tabs = phone.execute_script(
            "return [...document.querySelectorAll('#tabs a')].map(a => {"
            " const r = a.getBoundingClientRect();"
            " const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
            " const inside = r.left >= 0 && r.right <= window.innerWidth + 1;"
            " return [a.textContent, inside, hit === a]; })"
        )
        assert len(tabs) == 7 and all(inside and hit for _, inside, hit in tabs), tabs
        phone.save_screenshot(str(ARTIFACTS / "phone-overview.png"))
        _publish(ARTIFACTS / "phone-overview.png", "pages-phone.png")
    finally:
        phone.quit()


def site_start(site) -> float:
    served, _, _ = site
    return float(served.start)


def _publish(shot: Path, name: str) -> None:
    """Copy a screenshot into docs/img/ when asked (PULSE_UPDATE_SCREENSHOT=1)."""
    if os.environ.get("PULSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_IMG.parent / name)
