"""Insights: related anomalies grouped into one, and their life open → acknowledged → resolved.

An `Insight` is what a person acts on. The anomalies of one cause — orders, revenue and
conversion in DE, the dip it leaves in the aggregate, the hourly series an hour later —
become its *members*: `InsightBook.apply` attaches an opened anomaly to an active insight
when their slices can describe the same traffic (`insights.series.compatible`) and it
started near the insight's *onset* (a series of the insight coming back — flapping, or
overshooting as it recovers — joins near its own recovery instead; a later one joins only
when a change of the insight still under way carries into it, `_carries`): two incidents
an hour apart are two insights, however long the first one stays open. Traffic and order
anomalies join only along one slice path (a traffic drop in ``paid`` lowers orders in
``paid``, not in ``DE``), and an anomaly inside the slice of a member joins only when
that member's change explains it (`_explains`: the traffic drop everywhere lowers
sessions and orders in NL, not NL's add-to-cart rate). An insight
resolves itself once every member is back to normal; people acknowledge, resolve and
label it (`transition`, `with_feedback`). A ``false_positive`` label mutes new insights
of the same series and size for a week (`Mute`): later runs learn from it.

Pure logic: times come from the buckets, storage is `insights.store`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from insights.drilldown import Contribution
from insights.engine import Anomaly, AnomalyEvent
from insights.series import (
    INTERVAL_SECONDS,
    WATCHED_BY_NAME,
    compatible,
    contains,
    parse_slice,
    slice_label,
)

__all__ = [
    "ACTIONS",
    "BookConfig",
    "Insight",
    "InsightBook",
    "InvalidTransition",
    "Member",
    "Mute",
    "Severity",
    "Status",
    "insight_id",
    "mutes_from",
    "transition",
    "with_feedback",
]

Status = Literal["open", "acknowledged", "resolved"]
Severity = Literal["critical", "warning", "info"]
Label = Literal["true_positive", "false_positive"]
ACTIONS = ("ack", "resolve")


class InvalidTransition(ValueError):
    """An action that the insight's status does not allow (e.g. ack a resolved one)."""


@dataclass(frozen=True)
class Member:
    """One series anomaly inside an insight."""

    metric: str
    slice: str
    interval: str
    onset: datetime
    detected: datetime
    score: float
    observed: float
    expected: float
    change: float
    recovered_at: datetime | None = None

    @classmethod
    def of(cls, a: Anomaly) -> Member:
        return cls(
            a.key.metric, slice_label(a.key.slice), a.key.interval, a.onset, a.detected,
            a.score, a.observed, a.expected, a.change,
        )  # fmt: skip

    @property
    def family(self) -> str:
        return WATCHED_BY_NAME[self.metric].family if self.metric in WATCHED_BY_NAME else ""

    def same_series(self, a: Anomaly) -> bool:
        return (self.metric, self.slice, self.interval) == (
            a.key.metric,
            slice_label(a.key.slice),
            a.key.interval,
        )


@dataclass(frozen=True)
class Insight:
    """A grouped anomaly with its explanation, severity and status."""

    id: str
    status: Status
    metric: str
    slice: str
    interval: str
    direction: Literal["up", "down"]
    change: float
    observed: float
    expected: float
    started_at: datetime
    detected_at: datetime
    updated_at: datetime
    severity: Severity = "info"
    impact_eur_per_hour: float = 0.0
    explanation: str = ""
    cause: str = ""
    """The cause class (`insights.attribution.CAUSES`; '' when unknown)."""
    contributors: tuple[Contribution, ...] = ()
    members: tuple[Member, ...] = ()
    summary: str = ""
    description: str = ""
    recommendation: str = ""
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str = ""
    feedback: Label | None = None
    feedback_note: str = ""

    @property
    def active(self) -> bool:
        return self.status != "resolved"

    @property
    def open_members(self) -> list[Member]:
        return [m for m in self.members if m.recovered_at is None]


def insight_id(a: Anomaly) -> str:
    """A stable id: the same anomaly found again after a restart names the same insight."""
    text = f"{a.key.metric}|{slice_label(a.key.slice)}|{a.key.interval}|{a.onset.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def transition(insight: Insight, action: str, at: datetime) -> Insight:
    """Apply a person's ``ack`` or ``resolve``; raises InvalidTransition if not allowed."""
    if action not in ACTIONS:
        raise InvalidTransition(f"unknown action {action!r}; use ack or resolve")
    if insight.status == "resolved":
        raise InvalidTransition(f"insight {insight.id} is already resolved")
    if action == "ack":
        if insight.status == "acknowledged":
            return insight
        return replace(insight, status="acknowledged", acknowledged_at=at, updated_at=at)
    return replace(insight, status="resolved", resolved_at=at, resolved_by="user", updated_at=at)


def with_feedback(insight: Insight, label: str, note: str, at: datetime) -> Insight:
    """Record a ``true_positive`` / ``false_positive`` label (any status)."""
    if label not in ("true_positive", "false_positive"):
        raise InvalidTransition("label must be true_positive or false_positive")
    return replace(insight, feedback=label, feedback_note=note, updated_at=at)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Mute:
    """No new insight from this series for a while, unless clearly bigger than the one
    labelled a false positive."""

    metric: str
    slice: str
    interval: str
    max_change: float
    until: datetime

    def silences(self, a: Anomaly) -> bool:
        return (
            (a.key.metric, slice_label(a.key.slice), a.key.interval)
            == (self.metric, self.slice, self.interval)
            and a.detected <= self.until
            and abs(a.change) <= 2.0 * self.max_change
        )


def mutes_from(insights: Iterable[Insight], days: float = 7.0) -> list[Mute]:
    """The mutes that the false-positive labels among ``insights`` ask for."""
    out = []
    for i in insights:
        if i.feedback != "false_positive":
            continue
        until = i.updated_at + timedelta(days=days)
        for m in i.members:
            out.append(Mute(m.metric, m.slice, m.interval, abs(m.change), until))
    return out


@dataclass(frozen=True)
class BookConfig:
    """How close in time an anomaly must start to join an insight, per interval."""

    group_window: dict[str, timedelta] = field(
        default_factory=lambda: {"1m": timedelta(minutes=15), "1h": timedelta(hours=2)}
    )


_DRIVES: dict[str, frozenset[str]] = {
    "sessions": frozenset({"sessions", "pageviews", "orders", "revenue"}),
    "pageviews": frozenset({"pageviews", "sessions"}),
    "orders": frozenset({"orders", "revenue"}),
    "revenue": frozenset({"revenue"}),
    "conversion_rate": frozenset({"conversion_rate", "orders", "revenue"}),
    "add_to_cart_rate": frozenset({"add_to_cart_rate", "conversion_rate", "orders", "revenue"}),
    "aov": frozenset({"aov", "revenue"}),
}
"""Metric -> the metrics its change carries into, in the same direction: fewer sessions
mean fewer orders, not a lower add-to-cart rate."""


def _explains(wide: Member, a: Anomaly) -> bool:
    """Whether the change of ``wide``, on a slice holding the anomaly's, and the anomaly's
    can be one: the same direction, and one metric carries into the other (a slice moving
    as the whole moved, or the slice whose loss shows in the whole). A slice moving in a
    metric or direction the whole's change does not explain has a cause of its own."""
    same_way = (wide.change > 0) == (a.change > 0)
    metric = a.key.metric
    linked = metric in _DRIVES.get(wide.metric, ()) or wide.metric in _DRIVES.get(metric, ())
    return same_way and (linked or metric == wide.metric)


def _carries(wide: Member, a: Anomaly) -> bool:
    """Whether ``wide``'s change, on a slice holding the anomaly's, carries into it: the
    same direction, and the anomaly's metric one that ``wide``'s moves."""
    if not contains(parse_slice(wide.slice), a.key.slice):
        return False
    same_way = (wide.change > 0) == (a.change > 0)
    return same_way and a.key.metric in _DRIVES.get(wide.metric, frozenset({wide.metric}))


def _related(m: Member, a: Anomaly) -> bool:
    ms, als = parse_slice(m.slice), a.key.slice
    if not compatible(ms, als):
        return False
    if ms != als and contains(ms, als):
        return _explains(m, a)  # a slice inside the member's: only what its change explains
    a_family = a.key.watched.family
    if (m.family == "traffic") == (a_family == "traffic"):
        return True
    return contains(ms, als) or contains(als, ms)


class InsightBook:
    """The active insights and the grouping of new anomalies into them."""

    def __init__(
        self,
        active: Iterable[Insight] = (),
        mutes: Sequence[Mute] = (),
        config: BookConfig | None = None,
    ) -> None:
        self.config = config or BookConfig()
        self._active: dict[str, Insight] = {i.id: i for i in active if i.active}
        self.mutes = list(mutes)
        self.muted = 0

    def active(self) -> list[Insight]:
        return sorted(self._active.values(), key=lambda i: i.started_at)

    def get(self, insight_id: str) -> Insight | None:
        return self._active.get(insight_id)

    def put(self, insight: Insight) -> None:
        """Store a changed insight (a resolved one leaves the active set)."""
        if insight.active:
            self._active[insight.id] = insight
        else:
            self._active.pop(insight.id, None)

    def apply(self, events: Sequence[AnomalyEvent]) -> list[Insight]:
        """Group opened anomalies and recover members; return every insight changed."""
        changed: dict[str, Insight] = {}
        for ev in events:
            insight = self._open(ev.anomaly, ev.at) if ev.kind == "opened" else self._recover(ev)
            if insight is not None:
                changed[insight.id] = insight
                self.put(insight)
        return list(changed.values())

    def _open(self, a: Anomaly, at: datetime) -> Insight | None:
        home = self._home(a)
        if home is not None:
            if any(m.same_series(a) and m.recovered_at is None for m in home.members):
                return None
            members = (*home.members, Member.of(a))
            return replace(
                home,
                members=members,
                started_at=min(home.started_at, a.onset),
                updated_at=at,
            )
        if any(m.silences(a) for m in self.mutes):
            self.muted += 1
            return None
        return Insight(
            id=insight_id(a),
            status="open",
            metric=a.key.metric,
            slice=slice_label(a.key.slice),
            interval=a.key.interval,
            direction=a.direction,
            change=a.change,
            observed=a.observed,
            expected=a.expected,
            started_at=a.onset,
            detected_at=a.detected,
            updated_at=at,
            members=(Member.of(a),),
        )

    def _home(self, a: Anomaly) -> Insight | None:
        window = self.config.group_window.get(a.key.interval, timedelta(minutes=15))
        step = timedelta(seconds=INTERVAL_SECONDS[a.key.interval])
        best: Insight | None = None
        for i in self._active.values():
            # near the insight's onset: an insight open for an hour does not swallow the
            # next incident; a series of its own coming back (flapping, or overshooting
            # as it recovers) joins near its recovery
            anchor = max(
                (m.recovered_at or a.onset for m in i.members if m.same_series(a)),
                default=i.started_at,
            )
            anchor = max(anchor, i.started_at)
            if i.started_at - window > a.onset + step:
                continue
            # later: only what a change of the insight still under way carries into
            # (conversion up everywhere, then in GB), not another incident's
            late = a.onset > anchor + window
            if late and not any(m.recovered_at is None and _carries(m, a) for m in i.members):
                continue
            if not any(_related(m, a) for m in i.members):
                continue
            if best is None or i.started_at > best.started_at:
                best = i
        return best

    def _recover(self, ev: AnomalyEvent) -> Insight | None:
        a = ev.anomaly
        for i in self._active.values():
            members = list(i.members)
            for n, m in enumerate(members):
                if m.same_series(a) and m.recovered_at is None and m.onset == a.onset:
                    members[n] = replace(m, recovered_at=ev.at)
                    updated = replace(i, members=tuple(members), updated_at=ev.at)
                    if all(x.recovered_at is not None for x in members):
                        updated = replace(
                            updated, status="resolved", resolved_at=ev.at, resolved_by="auto"
                        )
                    return updated
        return None


def relative(observed: float, expected: float) -> float:
    """``observed / expected - 1``, 0 when both are 0."""
    if expected == 0:
        return 0.0 if observed == 0 else math.copysign(1.0, observed)
    return observed / expected - 1.0
