"""Alert payloads of CONTRACT §8 (delivery is tested against the real Alertmanager)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from insights.alerts import AlertConfig, alertmanager_alert, webhook_body
from insights.lifecycle import Insight

T = datetime(2025, 1, 8, 13, 5, tzinfo=UTC)
INSIGHT = Insight(
    id="abc123", status="open", metric="orders", slice="country=DE", interval="1m",
    direction="down", change=-0.5, observed=20.0, expected=40.0, started_at=T,
    detected_at=T + timedelta(minutes=3), updated_at=T, severity="warning",
    summary="Orders in DE fell 50% since 13:05.", description="Orders in DE: 20.0/min...",
    recommendation="Orders in DE fell 50% since 13:05 while add-to-cart is normal: check "
    "payment and checkout for DE.",
)  # fmt: skip


def test_an_open_insight_is_a_firing_alert() -> None:
    alert = alertmanager_alert(INSIGHT, "http://pulse:8000/")
    assert alert["labels"] == {
        "alertname": "PulseAnomaly", "metric": "orders", "slice": "country=DE",
        "severity": "warning", "insight_id": "abc123",
    }  # fmt: skip
    notes = alert["annotations"]
    assert notes["summary"] == INSIGHT.summary
    assert notes["description"].endswith("check payment and checkout for DE.")
    assert notes["insight_url"] == "http://pulse:8000/v1/insights/abc123"
    assert notes["dashboard_url"] == "http://pulse:8000/?insight=abc123"
    assert alert["startsAt"] == "2025-01-08T13:05:00Z" and "endsAt" not in alert


def test_a_resolved_insight_ends_its_alert() -> None:
    done = replace(INSIGHT, status="resolved", resolved_at=T + timedelta(minutes=30))
    assert alertmanager_alert(done, "http://pulse:8000")["endsAt"] == "2025-01-08T13:35:00Z"
    body = webhook_body(done, "resolved", "http://pulse:8000")
    assert body["event"] == "resolved" and body["insight"]["status"] == "resolved"
    assert body["insight"]["url"] == "http://pulse:8000/v1/insights/abc123"


def test_targets_are_the_configured_receivers() -> None:
    assert AlertConfig().targets == ()
    assert AlertConfig(alertmanager_url="http://am:9093").targets == ("alertmanager",)
    both = AlertConfig(alertmanager_url="http://am:9093", webhook_url="http://hook")
    assert both.targets == ("alertmanager", "webhook")
