"""The built-in Experiments page in headless Chromium: a person enters a read key and sees
users per variant, the SRM verdict, the lift table with its interval bars and the
cumulative lift charts, all drawn from ``/v1/experiments`` (a screenshot is saved to
``tests/artifacts/experiments.png``; whole-page ones at desktop and phone width to
``docs/img/`` with ``PULSE_UPDATE_SCREENSHOT=1``)."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from bench.pages import browser, enter_key, serve
from tests.conftest import require
from tests.integration.test_experiment_insights import _buy, _expose

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def test_the_experiments_page_shows_every_panel(warehouse, tmp_path) -> None:
    require(Path("/usr/bin/chromium").exists(), "Debian chromium (/usr/bin/chromium)")
    require(Path("/usr/bin/chromedriver").exists(), "Debian chromium-driver")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    for day in range(5):
        at = t0 + timedelta(days=day, hours=1)
        _expose(warehouse, "checkout", "control", range(day * 500, (day + 1) * 500), at)
        _expose(warehouse, "checkout", "B", range(day * 400, (day + 1) * 400), at)
        _buy(warehouse, "checkout", "control", range(day * 500, day * 500 + 60),
             at + timedelta(hours=1))  # fmt: skip
        _buy(warehouse, "checkout", "B", range(day * 400, day * 400 + 30), at + timedelta(hours=1))
    store = KeyStore(tmp_path / "keys.json")
    app = create_app(Services(keys=store, warehouse=warehouse))
    with serve(app, store) as served:
        driver = browser(1280, 1100)
        try:
            driver.get(served.url + "/#pulse-experiments")
            enter_key(driver, served.keys["read"])
            deadline = time.monotonic() + 60
            states: list[str] = []
            while time.monotonic() < deadline:
                states = driver.execute_script(
                    "return [...document.querySelectorAll('.panel')].map(p => p.dataset.state)"
                )
                if states and all(s in ("ok", "error", "empty") for s in states):
                    break
                time.sleep(0.5)
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "experiments.png"))
            assert states == ["ok"] * 5, states
            text = driver.find_element("id", "grid").text
            assert "Sample ratio mismatch" in text  # 2500 vs 2000 on an equal split
            assert "conversion" in text and "chance to win" in text
            for device, width in (("desktop", 1280), ("phone", 390)):
                _whole_page(driver, width, f"pages-{device}-experiments.png")
        finally:
            driver.quit()


def _whole_page(driver, width: int, name: str) -> None:
    """A screenshot of the whole page at ``width`` (a window as tall as the document) to
    tests/artifacts/, and to docs/img/ with PULSE_UPDATE_SCREENSHOT=1; nothing wider than
    the window."""
    driver.set_window_size(width, 900)
    time.sleep(1.0)  # the charts redraw to the new width
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"
    ), name
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 140, 6000))
    time.sleep(1.0)
    driver.save_screenshot(str(ARTIFACTS / name))
    if os.environ.get("PULSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / name, DOCS_IMG / name)
