"""Insights in ClickHouse (``warehouse/sql/003_insights.sql``): save, list, act, label.

Two writers touch an insight: the detector (it grows, resolves itself) and people
(acknowledge, resolve, label). Each write is a new row version; before writing, the
detector's copy is merged with what people did to the stored one, so an acknowledgement
made while the detector runs is never undone. Values are always bound by the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from ingest.times import as_utc
from insights.drilldown import Contribution
from insights.lifecycle import Insight, Member, transition, with_feedback
from warehouse.clock import next_version

__all__ = ["COLUMNS", "InsightNotFound", "InsightStore", "insight_document", "write_lock"]

COLUMNS = [
    "id", "status", "metric", "slice", "interval", "direction", "change", "observed",
    "expected", "severity", "impact_eur_per_hour", "explanation", "started_at", "detected_at",
    "updated_at", "acknowledged_at", "resolved_at", "resolved_by", "summary", "description",
    "recommendation", "contributors", "members", "feedback", "feedback_note", "cause", "version",
]  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS[:-1])} FROM insights FINAL"
# Serialises this process's inserts into the insights tables and the alert outbox.
write_lock = threading.Lock()


class InsightNotFound(LookupError):
    """No insight has this id."""


def _row(i: Insight, version: int) -> list[Any]:
    return [
        i.id, i.status, i.metric, i.slice, i.interval, i.direction, float(i.change),
        float(i.observed), float(i.expected), i.severity, float(i.impact_eur_per_hour),
        i.explanation, i.started_at, i.detected_at, i.updated_at, i.acknowledged_at,
        i.resolved_at, i.resolved_by, i.summary, i.description, i.recommendation,
        msgspec.json.encode([asdict(c) for c in i.contributors]).decode(),
        msgspec.json.encode([asdict(m) for m in i.members]).decode(),
        i.feedback or "", i.feedback_note, i.cause, version,
    ]  # fmt: skip


def _member(d: dict[str, Any]) -> Member:
    for k in ("onset", "detected", "recovered_at"):
        if d.get(k):
            d[k] = datetime.fromisoformat(d[k])
    return Member(**d)


def _insight(row: Sequence[Any]) -> Insight:
    d = dict(zip(COLUMNS, row, strict=False))
    for k in ("started_at", "detected_at", "updated_at", "acknowledged_at", "resolved_at"):
        d[k] = None if d[k] is None else as_utc(d[k])
    d["contributors"] = tuple(Contribution(**c) for c in msgspec.json.decode(d["contributors"]))
    d["members"] = tuple(_member(m) for m in msgspec.json.decode(d["members"]))
    d["feedback"] = d["feedback"] or None
    return Insight(**d)


def _merge(ours: Insight, stored: Insight | None) -> Insight:
    """The detector's copy, keeping what people did to the stored one."""
    if stored is None:
        return ours
    merged = replace(ours, feedback=stored.feedback, feedback_note=stored.feedback_note)
    if stored.status == "resolved" and stored.resolved_by == "user":
        merged = replace(
            merged, status="resolved", resolved_at=stored.resolved_at, resolved_by="user"
        )
    elif stored.status == "acknowledged" and merged.status == "open":
        merged = replace(merged, status="acknowledged", acknowledged_at=stored.acknowledged_at)
    elif stored.acknowledged_at and merged.acknowledged_at is None:
        merged = replace(merged, acknowledged_at=stored.acknowledged_at)
    return merged


class InsightStore:
    """Reads and writes the ``insights`` tables through one client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _insert(self, insights: Iterable[Insight]) -> None:
        with write_lock:
            rows = [_row(i, next_version()) for i in insights]
            if rows:
                self.client.insert("insights", rows, column_names=COLUMNS)

    def get(self, insight_id: str) -> Insight | None:
        """One insight by id."""
        rows = self.client.query(
            f"{_SELECT} WHERE id = {{id:String}}", parameters={"id": insight_id}
        ).result_rows
        return _insight(rows[0]) if rows else None

    def many(self, ids: Sequence[str]) -> dict[str, Insight]:
        """Several insights by id."""
        if not ids:
            return {}
        rows = self.client.query(
            f"{_SELECT} WHERE id IN {{ids:Array(String)}}", parameters={"ids": list(ids)}
        ).result_rows
        return {r[0]: _insight(r) for r in rows}

    def save(self, insights: Sequence[Insight]) -> list[Insight]:
        """Write the detector's versions, merged with people's actions; return them."""
        stored = self.many([i.id for i in insights])
        merged = [_merge(i, stored.get(i.id)) for i in insights]
        self._insert(merged)
        return merged

    def find(
        self,
        *,
        since: datetime | None = None,
        status: str | None = None,
        severity: str | None = None,
        metric: str | None = None,
        limit: int = 200,
    ) -> list[Insight]:
        """Insights, newest first, filtered by start time, status, severity and metric."""
        conds, params = [], {"limit": limit}
        if since is not None:
            conds.append("(started_at >= {since:DateTime64(3)} OR status != 'resolved')")
            params["since"] = as_utc(since)  # type: ignore[assignment]
        for name, value in (("status", status), ("severity", severity), ("metric", metric)):
            if value:
                conds.append(f"{name} = {{{name}:String}}")
                params[name] = value  # type: ignore[assignment]
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        sql = f"{_SELECT}{where} ORDER BY started_at DESC, id LIMIT {{limit:UInt32}}"
        return [_insight(r) for r in self.client.query(sql, parameters=params).result_rows]

    def active(self) -> list[Insight]:
        """Every insight not resolved."""
        rows = self.client.query(f"{_SELECT} WHERE status != 'resolved'").result_rows
        return [_insight(r) for r in rows]

    def resolved_by_themselves(self, since: datetime) -> list[Insight]:
        """Insights that resolved themselves since ``since`` (still settling: an anomaly
        of the incident settling may reopen them, `insights.lifecycle`)."""
        rows = self.client.query(
            f"{_SELECT} WHERE status = 'resolved' AND resolved_by = 'auto'"
            " AND resolved_at >= {since:DateTime64(3)}",
            parameters={"since": as_utc(since)},
        ).result_rows
        return [_insight(r) for r in rows]

    def labelled(self, since: datetime) -> list[Insight]:
        """Insights labelled since ``since`` (for the detector's mutes)."""
        rows = self.client.query(
            f"{_SELECT} WHERE feedback != '' AND updated_at >= {{since:DateTime64(3)}}",
            parameters={"since": as_utc(since)},
        ).result_rows
        return [_insight(r) for r in rows]

    def act(self, insight_id: str, action: str, at: datetime) -> Insight:
        """``ack`` or ``resolve`` by a person (raises InvalidTransition, InsightNotFound)."""
        current = self.get(insight_id)
        if current is None:
            raise InsightNotFound(insight_id)
        changed = transition(current, action, at)
        if changed is not current:
            self._insert([changed])
        return changed

    def feedback(self, insight_id: str, label: str, note: str, at: datetime) -> Insight:
        """Label an insight true or false positive; kept in the history too."""
        current = self.get(insight_id)
        if current is None:
            raise InsightNotFound(insight_id)
        changed = with_feedback(current, label, note, at)
        self._insert([changed])
        with write_lock:
            self.client.insert(
                "insight_feedback",
                [[insight_id, label, note, as_utc(at)]],
                column_names=["insight_id", "label", "note", "at"],
            )
        return changed


def insight_document(i: Insight, base_url: str = "") -> dict[str, Any]:
    """The API's JSON form of an insight."""

    def iso(ts: datetime | None) -> str | None:
        return ts.isoformat() if ts else None

    return {
        "id": i.id,
        "status": i.status,
        "severity": i.severity,
        "metric": i.metric,
        "slice": i.slice,
        "interval": i.interval,
        "direction": i.direction,
        "change": i.change,
        "observed": i.observed,
        "expected": i.expected,
        "impact_eur_per_hour": round(i.impact_eur_per_hour, 2),
        "explanation": i.explanation or None,
        "cause": i.cause or None,
        "started_at": iso(i.started_at),
        "detected_at": iso(i.detected_at),
        "updated_at": iso(i.updated_at),
        "acknowledged_at": iso(i.acknowledged_at),
        "resolved_at": iso(i.resolved_at),
        "resolved_by": i.resolved_by or None,
        "summary": i.summary,
        "description": i.description,
        "recommendation": i.recommendation,
        "contributors": [
            {"slice": c.label, "share": c.share, "effect": c.effect, "change": c.change}
            for c in i.contributors
        ],
        "related": [
            {
                "metric": m.metric,
                "slice": m.slice,
                "interval": m.interval,
                "change": m.change,
                "onset": iso(m.onset),
                "detected": iso(m.detected),
                "recovered_at": iso(m.recovered_at),
            }
            for m in i.members
        ],
        "feedback": {"label": i.feedback, "note": i.feedback_note} if i.feedback else None,
        "url": f"{base_url}/v1/insights/{i.id}",
    }
