"""On-call notifications: Alertmanager v2 (CONTRACT §8) and a plain webhook, via an outbox.

Every notification is first written to the ``alert_outbox`` table, then sent; a row is
marked delivered only when the receiver answered 2xx. A receiver that is down only delays
delivery (retries back off up to ``max_backoff``); nothing is lost, across restarts too.

Alertmanager gets one alert per active insight, re-sent every ``resend_every`` while the
insight is open (Alertmanager resolves alerts that stop coming), and the same alert with
``endsAt`` once it is resolved. An alert's labels are fixed when it first fires (its
identity in Alertmanager); annotations follow the insight. The webhook gets a JSON
document per event (``firing``, ``resolved``) with the whole insight.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge

from ingest.times import aware
from insights.lifecycle import Insight
from insights.store import insight_document, write_lock
from warehouse.clock import next_version

__all__ = ["AlertConfig", "Delivery", "Notifier", "alertmanager_alert", "webhook_body"]

_log = logging.getLogger(__name__)
DELIVERIES = Counter(
    "pulse_alert_deliveries_total", "Alert notifications sent", ["target", "outcome"]
)
PENDING = Gauge("pulse_alert_outbox_pending", "Alert notifications not yet delivered")
_OUTBOX = [
    "id", "insight_id", "target", "event", "payload", "created_at", "attempts", "last_error",
    "next_attempt_at", "delivered_at", "version",
]  # fmt: skip


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go and how often they are repeated."""

    alertmanager_url: str | None = None
    webhook_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    """Base of the links in alerts (the API and its dashboards)."""
    resend_every: timedelta = timedelta(seconds=60)
    timeout_s: float = 5.0
    max_backoff: timedelta = timedelta(minutes=5)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(
            t
            for t, url in (("alertmanager", self.alertmanager_url), ("webhook", self.webhook_url))
            if url
        )


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def alertmanager_alert(i: Insight, public_url: str) -> dict[str, Any]:
    """The Alertmanager v2 alert of an insight (CONTRACT §8)."""
    base = public_url.rstrip("/")
    insight_url = f"{base}/v1/insights/{i.id}"
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "PulseAnomaly",
            "metric": i.metric,
            "slice": i.slice,
            "severity": i.severity,
            "insight_id": i.id,
        },
        "annotations": {
            "summary": i.summary,
            "description": f"{i.description} {i.recommendation}".strip(),
            "dashboard_url": f"{base}/?insight={i.id}",
            "insight_url": insight_url,
        },
        "startsAt": _iso(i.started_at),
        "generatorURL": insight_url,
    }
    if i.resolved_at is not None:
        alert["endsAt"] = _iso(i.resolved_at)
    return alert


def webhook_body(i: Insight, event: str, public_url: str) -> dict[str, Any]:
    """The plain webhook's JSON: the event and the insight's API document."""
    return {
        "source": "pulse",
        "event": event,
        "insight": insight_document(i, public_url.rstrip("/")),
    }


@dataclass
class Delivery:
    """What one `Notifier.deliver` pass did."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    pending: int = 0


@dataclass
class _Row:
    id: str
    insight_id: str
    target: str
    event: str
    payload: str
    created_at: datetime
    attempts: int
    last_error: str
    next_attempt_at: datetime
    delivered_at: datetime | None

    def values(self) -> list[Any]:
        return [
            self.id, self.insight_id, self.target, self.event, self.payload, self.created_at,
            self.attempts, self.last_error, self.next_attempt_at, self.delivered_at, next_version(),
        ]  # fmt: skip


class Notifier:
    """Writes notifications to the outbox and delivers them."""

    def __init__(
        self, client: Client, config: AlertConfig, http: httpx.Client | None = None
    ) -> None:
        self.client = client
        self.config = config
        self.http = http or httpx.Client(timeout=config.timeout_s)
        self._last_resend: datetime | None = None

    # -- the outbox ----------------------------------------------------------------------

    def _rows(self, where: str, params: dict[str, Any]) -> list[_Row]:
        sql = f"SELECT {', '.join(_OUTBOX[:-1])} FROM alert_outbox FINAL WHERE {where}"
        out = []
        for r in self.client.query(sql, parameters=params).result_rows:
            row = _Row(*r)
            row.created_at = aware(row.created_at)
            row.next_attempt_at = aware(row.next_attempt_at)
            row.delivered_at = None if row.delivered_at is None else aware(row.delivered_at)
            out.append(row)
        return out

    def _write(self, rows: Sequence[_Row]) -> None:
        if rows:
            with write_lock:
                self.client.insert("alert_outbox", [r.values() for r in rows], column_names=_OUTBOX)

    def enqueue(self, insights: Sequence[Insight], now: datetime) -> int:
        """Record the notifications these (changed) insights call for; returns how many."""
        targets = self.config.targets
        if not targets or not insights:
            return 0
        wanted: dict[str, tuple[Insight, str, str]] = {}
        for i in insights:
            event = "resolved" if i.status == "resolved" else "firing"
            for target in targets:
                wanted[f"{i.id}/{target}/{event}"] = (i, target, event)
        existing = {r.id for r in self._rows("id IN {ids:Array(String)}", {"ids": list(wanted)})}
        new = []
        for row_id, (i, target, event) in wanted.items():
            if row_id in existing:
                continue
            body = (
                alertmanager_alert(i, self.config.public_url)
                if target == "alertmanager"
                else webhook_body(i, event, self.config.public_url)
            )
            new.append(
                _Row(
                    row_id,
                    i.id,
                    target,
                    event,
                    msgspec.json.encode(body).decode(),
                    now,
                    0,
                    "",
                    now,
                    None,
                )
            )
        self._write(new)
        return len(new)

    def pending(self) -> int:
        """Notifications written but not yet delivered."""
        rows = self.client.query(
            "SELECT count() FROM alert_outbox FINAL WHERE delivered_at IS NULL"
        ).result_rows
        return int(rows[0][0]) if rows else 0

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, active: Sequence[Insight], now: datetime) -> Delivery:
        """Send what is due: undelivered rows, and Alertmanager re-sends while open."""
        report = Delivery()
        waiting = self._rows("delivered_at IS NULL", {})
        if self.config.alertmanager_url:
            am = [r for r in waiting if r.target == "alertmanager"]
            self._alertmanager(active, am, any(r.next_attempt_at <= now for r in am), now, report)
        if self.config.webhook_url:
            for row in waiting:
                if row.target == "webhook" and row.next_attempt_at <= now:
                    self._send_webhook(row, now, report)
        report.pending = self.pending()
        PENDING.set(report.pending)
        return report

    def _alertmanager(
        self,
        active: Sequence[Insight],
        waiting: list[_Row],
        retry_due: bool,
        now: datetime,
        report: Delivery,
    ) -> None:
        """One POST with every active insight's alert and every undelivered resolve."""
        resend = self._last_resend is None or now - self._last_resend >= self.config.resend_every
        if not retry_due and not (resend and (active or waiting)):
            return
        due = waiting
        ids = [i.id for i in active]
        firing = {
            r.insight_id: r
            for r in self._rows(
                "target = 'alertmanager' AND event = 'firing' "
                "AND insight_id IN {ids:Array(String)}",
                {"ids": ids},
            )
        }
        alerts: list[dict[str, Any]] = []
        for i in active:
            fresh = alertmanager_alert(i, self.config.public_url)
            row = firing.get(i.id)
            if row is not None:  # keep the labels it first fired with: its identity
                fresh["labels"] = msgspec.json.decode(row.payload)["labels"]
            alerts.append(fresh)
        resolved = [r for r in due if r.event == "resolved"]
        alerts += [msgspec.json.decode(r.payload) for r in resolved]
        if not alerts:
            return
        url = self.config.alertmanager_url or ""
        if not urlsplit(url).path.rstrip("/").endswith("/api/v2/alerts"):
            url = url.rstrip("/") + "/api/v2/alerts"
        error = self._post(url, alerts)
        delivered_ids = {r.id for r in due}
        # a resolve supersedes a firing that never got through
        delivered_ids |= {f"{r.insight_id}/alertmanager/firing" for r in resolved}
        rows = due + [
            r
            for r in self._rows(
                "id IN {ids:Array(String)} AND delivered_at IS NULL",
                {"ids": sorted(delivered_ids - {r.id for r in due})},
            )
        ]
        self._settle("alertmanager", rows, error, now, report, count=len(alerts))
        if error is None:
            self._last_resend = now

    def _send_webhook(self, row: _Row, now: datetime, report: Delivery) -> None:
        error = self._post(self.config.webhook_url or "", msgspec.json.decode(row.payload))
        self._settle("webhook", [row], error, now, report, count=1)

    def _post(self, url: str, body: Any) -> str | None:
        """POST JSON; None on 2xx, else a short reason (no URL secrets)."""
        try:
            r = self.http.post(
                url, content=msgspec.json.encode(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__} reaching {_redact(url)}"
        if 200 <= r.status_code < 300:
            return None
        return f"HTTP {r.status_code} from {_redact(url)}"

    def _settle(
        self, target: str, rows: list[_Row], error: str | None, now: datetime, report: Delivery,
        count: int,
    ) -> None:  # fmt: skip
        if error is None:
            DELIVERIES.labels(target, "ok").inc(count)
            report.sent[target] = report.sent.get(target, 0) + count
            for r in rows:
                r.delivered_at, r.last_error = now, ""
                r.attempts += 1
        else:
            DELIVERIES.labels(target, "error").inc(count)
            report.failed[target] = report.failed.get(target, 0) + count
            _log.warning("alert delivery to %s failed: %s (will retry)", target, error)
            for r in rows:
                r.attempts += 1
                r.last_error = error
                wait = min(
                    5.0 * math.pow(2, r.attempts - 1), self.config.max_backoff.total_seconds()
                )
                r.next_attempt_at = now + timedelta(seconds=wait)
        self._write(rows)
