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
resolves itself once every member is back to normal. As a member's change ends, the
incident *settles*: an anomaly in a linked metric, in the member's slice or inside it,
starting within a grouping window of the member's recovery (`_settles`: the sessions
coming back after a traffic drop have not shopped yet, so conversion dips; purchases held
back by a checkout failure come in at once) joins its insight — reopening it if it had
resolved itself — as a member that does not speak for it (`Member.settling`): the same
incident, not a new page. People acknowledge, resolve and label an insight (`transition`,
`with_feedback`). A ``false_positive`` label mutes new insights of the same series and
size for a week (`Mute`): later runs learn from it.

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
    settling: bool = False
    """Joined as the insight settled after it had resolved: part of the incident, but
    not what it is about (`insights.narrative.headline` passes over it)."""

    @classmethod
    def of(cls, a: Anomaly, *, settling: bool = False) -> Member:
        return cls(
            a.key.metric, slice_label(a.key.slice), a.key.interval, a.onset, a.detected,
            a.score, a.observed, a.expected, a.change, settling=settling,
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
    """How close in time an anomaly must start to join an insight, per interval; also
    how long a resolved insight settles (an anomaly starting then may reopen it)."""

    group_window: dict[str, timedelta] = field(
        default_factory=lambda: {"1m": timedelta(minutes=15), "1h": timedelta(hours=2)}
    )

    @property
    def settling_for(self) -> timedelta:
        """How long after resolving itself an insight may still be reopened: twice the
        longest window (a coarse anomaly starts up to a bucket before it is found)."""
        return 2 * max(self.group_window.values(), default=timedelta(minutes=15))


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


_DILUTED = frozenset({"conversion_rate", "add_to_cart_rate"})
"""The per-session rates: sessions coming back after a traffic drop have not shopped yet,
so they dip as the traffic recovers (and rise as a spike ends)."""


def _settles(m: Member, a: Anomaly, window: timedelta) -> bool:
    """Whether the anomaly can be ``m``'s change settling, in the member's slice or one
    inside it (a small slice settling does not move the whole shop), starting between
    the member's onset and a grouping ``window`` after its recovery: a metric the member
    carries into moving back the other way (held-back purchases after a checkout
    failure), or the same way while the member's change was under way (the hourly view
    found as it ends); a per-session rate as the member's sessions come back, either way.
    A member that joined settling is not one to settle from (no chains)."""
    if m.settling or m.recovered_at is None:
        return False
    bucket = timedelta(seconds=INTERVAL_SECONDS[a.key.interval])
    if not m.onset - bucket < a.onset <= m.recovered_at + window:
        return False
    if not contains(parse_slice(m.slice), a.key.slice):
        return False
    metric = a.key.metric
    if metric == m.metric or metric in _DRIVES.get(m.metric, ()):
        return (a.change > 0) != (m.change > 0) or a.onset <= m.recovered_at
    return m.metric == "sessions" and metric in _DILUTED


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
        given = list(active)
        self._active: dict[str, Insight] = {i.id: i for i in given if i.active}
        # resolved by themselves not long ago (given ones too: a restart keeps them)
        self._settling: dict[str, Insight] = {
            i.id: i for i in given if not i.active and i.resolved_by == "auto"
        }
        self.mutes = list(mutes)
        self.muted = 0

    def active(self) -> list[Insight]:
        return sorted(self._active.values(), key=lambda i: i.started_at)

    def get(self, insight_id: str) -> Insight | None:
        return self._active.get(insight_id)

    def put(self, insight: Insight) -> None:
        """Store a changed insight (a resolved one leaves the active set; one that
        resolved itself settles for a while)."""
        if insight.active:
            self._active[insight.id] = insight
        else:
            self._active.pop(insight.id, None)
            if insight.resolved_by == "auto":
                self._settling[insight.id] = insight
            else:
                self._settling.pop(insight.id, None)

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
        settled = self._settled(a)
        if settled is not None:
            # the same incident settling: joins it, reopened if it had resolved itself
            # (acknowledged stays acknowledged)
            reopened = not settled.active
            return replace(
                settled,
                status=("acknowledged" if settled.acknowledged_at else "open")
                if reopened
                else settled.status,
                resolved_at=None,
                resolved_by="",
                members=(*settled.members, Member.of(a, settling=True)),
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

    def _settled(self, a: Anomaly) -> Insight | None:
        """The insight, active or resolved by itself, whose change the anomaly can be
        settling (the latest recovered such); forgets resolved ones settled for long."""
        window = self.config.group_window.get(a.key.interval, timedelta(minutes=15))
        horizon = self.config.settling_for
        for key, i in list(self._settling.items()):
            if key in self._active or (i.resolved_at or i.updated_at) + horizon < a.onset:
                del self._settling[key]
        best: Insight | None = None
        best_at = a.onset
        for i in (*self._active.values(), *self._settling.values()):
            if i.feedback == "false_positive" or any(
                m.same_series(a) and m.onset == a.onset for m in i.members
            ):
                continue  # labelled not real; or its own change seen again (a restart)
            for m in i.members:
                rec = m.recovered_at
                if rec is not None and _settles(m, a, window) and (best is None or rec > best_at):
                    best, best_at = i, rec
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
