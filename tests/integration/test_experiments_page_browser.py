"""The built-in Experiments page in headless Chromium: a person enters a read key and sees
users per variant, the SRM verdict, the lift table with its interval bars and the
cumulative lift charts, all drawn from ``/v1/experiments`` (a screenshot is saved to
``tests/artifacts/experiments.png``)."""

from __future__ import annotations

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
        finally:
            driver.quit()
