"""The insight card on the built-in pages, in headless Chromium, at desktop and phone width.

A payment outage on mobile, worded by the detector's narrative and saved in the
warehouse's insights store, is served by the real API app. The card on the Business
overview must say observed vs expected with the metric's definition and bucket, since
when, the slice and the top contributing slices, why (the cause) and the advice, and
link to the chart it concerns (Conversion by device, which then gets the focus); every
tile says what its number is and its bucket. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from bench.pages import browser, enter_key, serve
from insights.attribution import Step
from insights.drilldown import Contribution
from insights.lifecycle import Insight, Member
from insights.narrative import Evidence, describe
from insights.store import InsightStore
from tests.conftest import require
from warehouse.client import Client

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
MOBILE = (("device", "mobile"),)


def _outage(now: datetime) -> Insight:
    onset = now - timedelta(minutes=4)
    evidence = Evidence(
        metric="conversion_rate", slice=MOBILE, interval="1m", onset=onset, until=now,
        observed=0.0037, expected=0.0134, change=-0.72,
        companions={"sessions": -0.02, "orders": -0.7, "add_to_cart_rate": -0.02},
        contributors=(Contribution("device", "mobile", 1.01, "rate", -0.72, 0.55),
                      Contribution("channel", "direct", 0.62, "rate", -0.41, 0.5)),
        explanation="rate", impact_eur_per_hour=-8000.0, revenue_per_hour=40000.0,
        traffic_share=0.55, cause="checkout",
        steps=(Step("add to cart → checkout", 0.21, 0.4), Step("checkout → purchase", 0.6, 0.62)),
        broken="add to cart → checkout",
    )  # fmt: skip
    member = Member("conversion_rate", "device=mobile", "1m", onset, now, 1.0, 0.0037, 0.0134,
                    -0.72)  # fmt: skip
    insight = Insight(
        id="card0000test0001", status="open", metric="conversion_rate", slice="all",
        interval="1m", direction="down", change=-0.55, observed=0.01, expected=0.02,
        started_at=onset, detected_at=now, updated_at=now, members=(member,),
    )  # fmt: skip
    return describe(insight, evidence, "UTC", now=now)


@pytest.fixture
def served(warehouse: Client, tmp_path: Path) -> Any:
    require(Path("/usr/bin/chromium").exists(), "Debian chromium (/usr/bin/chromium)")
    require(Path("/usr/bin/chromedriver").exists(), "Debian chromium-driver")
    require(importlib.util.find_spec("selenium") is not None, "selenium (PyPI, dev extra)")
    InsightStore(warehouse).save([_outage(datetime.now(UTC).replace(microsecond=0))])
    services = Services(keys=KeyStore(tmp_path / "keys.json"), warehouse=warehouse)
    with serve(create_app(services), services.keys) as site:
        yield site


@pytest.mark.parametrize(
    ("width", "height", "name"), [(1280, 1100, "desktop"), (390, 1400, "phone")]
)
def test_the_insight_card_says_what_where_why_and_links_its_chart(
    served: Any, width: int, height: int, name: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver = browser(width, height)
    try:
        driver.get(served.url + "/")
        enter_key(driver, served.keys["read"])
        card = ".insight[data-id='card0000test0001']"
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, card))
        text = driver.find_element(By.CSS_SELECTOR, card).text
        assert "0.37 % vs 1.34 % expected (-72 %)" in text, text
        assert "session conversion: sessions with a purchase / sessions, per minute" in text
        assert "conversion_rate · device=mobile · since " in text
        assert "top slices: device=mobile (101 % of the change, rate)" in text
        assert "Cause: payment or checkout." in text
        assert "check the payment provider and the checkout for mobile" in text
        driver.execute_script(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})", card
        )
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"insight-card-{name}.png"))
        # nothing wider than the screen
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        # every tile and chart of a metric says what its number is and its bucket
        subs = driver.execute_script(
            "return [...document.querySelectorAll('.panel')].map(p => ["
            " p.querySelector('h3').textContent, p.querySelector('.sub').textContent])"
        )
        tiles = dict(subs)
        assert tiles["Conversion rate"].startswith("session conversion: sessions with a purchase")
        assert "last complete" in tiles["Conversion rate"] and "bucket" in tiles["Conversion rate"]
        assert tiles["Revenue (GMV)"].endswith("total over the range")
        assert "per 5-min bucket" in tiles["Conversion by device"]
        # the link goes to the chart it concerns, which gets the focus
        link = driver.find_element(By.CSS_SELECTOR, f"{card} a.panel-link")
        assert "Conversion by device" in link.text
        link.click()
        WebDriverWait(driver, 10).until(
            lambda d: (
                d.execute_script(
                    "const p = document.querySelector('.panel.focus');"
                    " return p && p.querySelector('h3').textContent"
                )
                == "Conversion by device"
            )
        )
    finally:
        driver.quit()
