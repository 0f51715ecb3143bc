"""What an insight says: headline, drill-down, impact, severity and a recommendation.

`gather` collects the evidence for an insight from the engine's series (and, when given,
a finer drill-down such as DE → device from the warehouse); `describe` turns it into the
fields people read. Severity comes from impact: revenue lost (or mis-charged) per hour in
the slice, as a share of the expected revenue per hour of the whole shop. Pure logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from insights.attribution import CAUSES, Cause, Funnel, Step, attribute
from insights.drilldown import Contribution, Decomposition, explain
from insights.engine import DetectionEngine
from insights.lifecycle import Insight, Member, Severity
from insights.series import (
    INTERVAL_SECONDS,
    METRIC_LABELS,
    WATCHED_BY_NAME,
    SeriesKey,
    Slice,
    parse_slice,
    slice_label,
    slice_text,
)

__all__ = [
    "DEFINITIONS",
    "Advice",
    "Evidence",
    "Joint",
    "Refiner",
    "describe",
    "gather",
    "headline",
    "severity",
]

# Which member speaks for the insight: the most specific slice, then this order.
_PRIORITY = ("conversion_rate", "aov", "add_to_cart_rate", "sessions", "orders", "revenue",
             "pageviews")  # fmt: skip
_DIMS = ("country", "device", "channel")
_COMPANIONS = ("sessions", "pageviews", "orders", "revenue", "conversion_rate",
               "add_to_cart_rate", "aov")  # fmt: skip

Refiner = Callable[[str, Slice, datetime, datetime], Mapping[str, Decomposition]]
"""``(metric, slice, since, until) -> decomposition of the slice's change by each other
dimension`` — e.g. from warehouse queries; used to name a two-dimension slice."""


@dataclass(frozen=True)
class Evidence:
    """Everything `describe` needs, measured over ``[onset, until)``."""

    metric: str
    slice: Slice
    interval: str
    onset: datetime
    until: datetime
    observed: float
    expected: float
    change: float
    companions: Mapping[str, float] = field(default_factory=dict)
    contributors: tuple[Contribution, ...] = ()
    explanation: str = ""
    impact_eur_per_hour: float = 0.0
    revenue_per_hour: float = 0.0
    traffic_share: float = 0.0
    cause: Cause = ""
    """The cause class (`insights.attribution.CAUSES`)."""
    steps: tuple[Step, ...] = ()
    broken: str = ""
    """The funnel step that broke ('' when none did)."""


def headline(insight: Insight) -> Member:
    """The member that speaks for the insight (still-open members first; never one that
    joined as it settled)."""
    own = [m for m in insight.members if not m.settling] or list(insight.members)
    pool = [m for m in own if m.recovered_at is None] or own
    traffic = [m for m in pool if m.family == "traffic"]
    # traffic and rates moving opposite ways in one slice (bots: more sessions, fewer
    # add-to-carts; lost page tags: fewer sessions, higher conversion): traffic speaks
    opposed = any(
        (t.change > 0) != (r.change > 0)
        for t in traffic
        for r in pool
        if r.slice == t.slice and r.metric in ("conversion_rate", "add_to_cart_rate")
    )

    def rank(m: Member) -> int:
        if opposed and m.family == "traffic":
            return -1
        return _PRIORITY.index(m.metric) if m.metric in _PRIORITY else 99

    return min(
        pool,
        key=lambda m: (-len(parse_slice(m.slice)), m.interval != "1m", rank(m), -abs(m.change)),
    )


def gather(
    engine: DetectionEngine,
    insight: Insight,
    until: datetime,
    refine: Refiner | None = None,
    funnel: Funnel | None = None,
) -> Evidence:
    """The evidence for ``insight`` from the engine's series up to ``until``: the slice
    that carries the change, the funnel step that broke and the cause
    (`insights.attribution`), and the numbers of the metric in that slice."""
    top = headline(insight)
    interval, metric, since = top.interval, top.metric, top.onset
    att = attribute(engine, metric, parse_slice(top.slice), interval, since, until, funnel)
    sl = att.slice
    observed, expected, change = top.observed, top.expected, top.change
    if parse_slice(top.slice) != sl:
        own = engine.change(SeriesKey(metric, sl, interval), since, until)
        if own is None and att.metric != metric:
            metric = att.metric  # the rate is not watched there: its traffic speaks
            own = engine.change(SeriesKey(metric, sl, interval), since, until)
        if own is not None and math.isfinite(own.change):
            observed, expected, change = own.observed, own.expected, own.change
    named: list[Contribution] = list(att.contributors)
    if refine is not None and not sl:
        # nothing stands out among the watched slices (small slices are not watched each
        # minute): the warehouse's drill-down of the whole shop
        wide = explain(refine(metric, (), since, until), cover=0.7, max_slices=1)
        if wide and wide[0].share >= 0.7 and wide[0].change * change > 0:
            sl = ((wide[0].dim, wide[0].value),)
            named = [wide[0]]
            att = attribute(engine, metric, sl, interval, since, until, funnel)
            att = replace(att, slice=sl, effect=wide[0].effect)
    if refine is not None and len(sl) == 1:
        finer = explain(refine(metric, sl, since, until), cover=0.7, max_slices=1)
        if finer and finer[0].share >= 0.7 and finer[0].change * change > 0:
            best = finer[0]
            sl = tuple(sorted((*sl, (best.dim, best.value)), key=lambda p: _DIMS.index(p[0])))
            change = best.change
            named = [best, *named]
    companions = {}
    for m in _COMPANIONS:
        for candidate in (sl, sl[:1], ()):
            w = engine.change(SeriesKey(m, candidate, interval), since, until)
            if w is not None:
                if candidate == sl or m == metric:
                    companions[m] = w.change
                break
    per_hour = 3600.0 / INTERVAL_SECONDS[interval]
    impact = 0.0
    for candidate in (sl, sl[:1], ()):
        rev = engine.change(SeriesKey("revenue", candidate, interval), since, until)
        if rev is not None:
            impact = (rev.observed - rev.expected) * per_hour
            break
    total = engine.change(SeriesKey("revenue", (), interval), since, until)
    sess_all = engine.change(SeriesKey("sessions", (), interval), since, until)
    sess_sl = engine.change(SeriesKey("sessions", sl[:1], interval), since, until)
    share = (
        sess_sl.expected / sess_all.expected
        if sess_sl and sess_all and sess_all.expected > 0
        else 1.0
    )
    return Evidence(
        metric=metric, slice=sl, interval=interval, onset=since, until=until,
        observed=observed, expected=expected, change=change, companions=companions,
        contributors=tuple(named[:4]), explanation=att.effect,
        impact_eur_per_hour=impact,
        revenue_per_hour=(total.expected * per_hour) if total else 0.0,
        traffic_share=share, cause=att.cause, steps=att.steps, broken=att.broken,
    )  # fmt: skip


def severity(ev: Evidence) -> Severity:
    """critical: ≥ 5% of the shop's revenue per hour at stake; warning: ≥ 1%, or a
    halving (or doubling) of a slice holding ≥ 5% of the traffic; info otherwise."""
    share = abs(ev.impact_eur_per_hour) / ev.revenue_per_hour if ev.revenue_per_hour > 0 else 0.0
    if share >= 0.05:
        return "critical"
    if share >= 0.01 or (abs(ev.change) >= 0.5 and ev.traffic_share >= 0.05):
        return "warning"
    return "info"


def _moved(change: float) -> str:
    if change <= -0.95:
        return "stopped (−100%)" if change <= -0.995 else f"nearly stopped ({change:+.0%})"
    if change >= 1.0:
        return f"rose to {1 + change:.1f}× the usual"
    return f"{'rose' if change > 0 else 'fell'} {abs(change):.0%}"


def _normal(change: float | None) -> bool:
    return change is None or abs(change) < 0.1


def _for(sl: Slice) -> str:
    label = " ".join(v for _, v in sl)
    return f" for {label}" if label else ""


class Joint(Enum):
    """How a recommendation joins its advice's reason to the headline."""

    BECAUSE = ": "  # <headline>: conversion rose at the same time, so ...: <action>
    WHILE = " while "  # <headline> while add-to-cart is normal: <action>
    ALSO = "; "  # <headline>; purchases stopped while traffic is normal: <action>


@dataclass(frozen=True)
class Advice:
    """What to check (``action``), and what was seen that points there (``reason``,
    joined to the headline by ``joint``)."""

    action: str
    reason: str = ""
    joint: Joint = Joint.BECAUSE

    def after(self, headline: str) -> str:
        """The recommendation: the headline, the reason, what to check."""
        if not self.reason:
            return f"{headline}: {self.action}"
        return f"{headline}{self.joint.value}{self.reason}: {self.action}"


def _step_text(ev: Evidence) -> str:
    """``the add to cart → purchase step fell 90 %`` for the broken step ('' if none)."""
    step = next((s for s in ev.steps if s.name == ev.broken), None)
    if step is None:
        return ""
    return f"the {step.name} step {_moved(step.change)}"


def _by_cause(ev: Evidence) -> Advice | None:
    """The advice that follows from the cause class (None: no class, see `_advice`)."""
    where = _for(ev.slice)
    comp = ev.companions
    broke = _step_text(ev)
    carts = comp.get("add_to_cart_rate")
    if ev.cause == "checkout":
        reason = (
            f"shoppers still add to cart ({carts:+.0%}) but {broke}"
            if carts is not None and broke and _normal(carts)
            else (broke or "fewer sessions complete the purchase")
        )
        return Advice(f"check the payment provider and the checkout{where}", reason, Joint.ALSO)
    if ev.cause == "product":
        return Advice(
            f"check product pages, search, stock and the add-to-cart button{where}",
            broke or "fewer sessions add to cart",
            Joint.ALSO,
        )
    if ev.cause == "pricing":
        return Advice(
            f"check product prices, discounts and currency conversion{where}",
            "orders are normal",
            Joint.WHILE,
        )
    if ev.cause == "tracking":
        sessions, pageviews = comp.get("sessions") or 0.0, comp.get("pageviews") or 0.0
        if sessions < -0.1 or pageviews < -0.2:
            return Advice(
                f"check the page tracking tag{where}",
                "page views fell while those who remain shop as much or more",
            )
        if (carts or 0.0) < -0.1:
            return Advice(
                f"check the add-to-cart tracking event{where}",
                "add-to-carts fell while purchases go on",
            )
        return Advice(
            f"check the purchase tracking tag, then the payment provider{where}",
            f"{broke or 'purchases vanished'} while traffic is normal",
            Joint.ALSO,
        )
    return None


def _advice(ev: Evidence) -> Advice:
    known = _by_cause(ev)
    if known is not None:
        return known
    if ev.cause == "traffic" and ev.metric not in ("sessions", "pageviews"):
        # a rate or count that moved with the slice's traffic: the traffic is the lead
        moved = ev.companions.get("sessions") or 0.0
        channel = dict(ev.slice).get("channel")
        if moved > 0:
            return Advice(
                f"check for bot traffic or an unannounced campaign{_for(ev.slice)}",
                f"sessions rose {moved:.0%}",
            )
        if channel:
            return Advice(
                f"check the {channel} campaigns, their budgets and landing pages",
                f"its sessions fell {abs(moved):.0%}",
            )
        return Advice(
            f"check site availability, the CDN and campaigns{_for(ev.slice)}",
            f"sessions fell {abs(moved):.0%}",
        )
    m, c, comp = ev.metric, ev.change, ev.companions
    where = _for(ev.slice)
    carts = comp.get("add_to_cart_rate")
    sessions = comp.get("sessions")
    orders = comp.get("orders")
    rates_up = max(comp.get("conversion_rate") or 0.0, carts or 0.0)
    rates_down = min(comp.get("conversion_rate") or 0.0, carts or 0.0)
    if m in ("sessions", "pageviews"):
        if c < 0 and rates_up > 0.1:
            return Advice(
                f"check the page tracking tag{where}",
                "conversion rose at the same time, so visits are not being counted",
            )
        if c > 0 and rates_down < -0.1:
            return Advice(f"check for bot traffic{where}", "the new visitors do not shop")
        if c < 0:
            if m == "pageviews" and _normal(sessions):
                return Advice(
                    f"check the page tag{where}",
                    "page tracking fell while sessions are normal",
                    Joint.ALSO,
                )
            channel = dict(ev.slice).get("channel")
            if channel:
                return Advice(f"check the {channel} campaigns, their budgets and landing pages")
            return Advice(
                f"check site availability, the CDN, campaigns and the tracking tag{where}"
            )
        return Advice(f"check for bot traffic or an unannounced campaign, and capacity{where}")
    if m in ("aov",) or (m == "revenue" and _normal(orders)):
        what = "product prices, discounts and currency conversion"
        return Advice(f"check {what}{where}", "orders are normal", Joint.WHILE)
    if m == "add_to_cart_rate":
        if c < 0:
            return Advice(f"check product pages, stock, search and the add-to-cart button{where}")
        return Advice(f"check for a promotion or bots adding to carts{where}")
    if c < 0:  # conversion, orders, revenue falling with normal prices
        if c <= -0.9 and _normal(sessions):
            return Advice(
                f"check the payment provider, checkout and the purchase tracking tag{where}",
                "purchases stopped while traffic is normal",
                Joint.ALSO,
            )
        if _normal(carts):
            return Advice(
                f"check payment and checkout{where}", "add-to-cart is normal", Joint.WHILE
            )
        if carts is not None and carts < 0:
            return Advice(
                f"check product pages, search and the cart{where}", "add-to-cart fell too"
            )
        if sessions is not None and sessions < -0.1:
            return Advice(f"check campaigns and site availability{where}", "traffic fell too")
        return Advice(f"check payment and checkout{where}")
    return Advice(f"check for a promotion, a pricing error or duplicated orders{where}")


def describe(
    insight: Insight, ev: Evidence, tz: str = "UTC", *, now: datetime | None = None
) -> Insight:
    """The insight with headline numbers, severity and texts filled from ``ev``."""
    zone = ZoneInfo(tz)
    since = ev.onset.astimezone(zone)
    stamp = (
        since.strftime("%H:%M")
        if now is None or now - ev.onset < timedelta(hours=20)
        else (since.strftime("%Y-%m-%d %H:%M"))
    )
    name = METRIC_LABELS.get(ev.metric, ev.metric)
    where = slice_text(ev.slice)
    headline_text = f"{name} {where} {_moved(ev.change)} since {stamp}"
    recommendation = _advice(ev).after(headline_text)
    recommendation = recommendation[0].upper() + recommendation[1:] + "."
    sev = severity(ev)
    impact = ev.impact_eur_per_hour
    summary = (
        f"{headline_text} ({_money(impact)} per hour)."
        if abs(impact) >= 1
        else (f"{headline_text}.")
    )
    unit = {"1m": "/min", "1h": "/h"}.get(ev.interval, "")
    bucket = {"1m": "per minute", "1h": "per hour"}.get(ev.interval, ev.interval)
    kind = WATCHED_BY_NAME[ev.metric].kind if ev.metric in WATCHED_BY_NAME else "count"
    obs, exp = _value(ev.observed, kind, ev.interval), _value(ev.expected, kind, ev.interval)
    suffix = "" if kind == "ratio" else unit
    definition = DEFINITIONS.get(ev.metric, "")
    parts = [
        f"{name} {where} ({definition + ', ' if definition else ''}{bucket}): "
        f"{obs}{suffix} observed vs {exp}{suffix} expected "
        f"({ev.change:+.0%}) since {since.strftime('%Y-%m-%d %H:%M')} {tz}."
    ]
    explanation = _explanation(ev)
    if explanation:
        parts.append(explanation)
    if ev.contributors:
        named = ", ".join(
            f"{c.label} ({c.share:.0%} of the change, {c.effect})" for c in ev.contributors
        )
        parts.append(f"Top contributing slices: {named}.")
    moved = [
        f"{METRIC_LABELS.get(m, m).lower()} {v:+.0%}"
        for m, v in ev.companions.items()
        if m != ev.metric and math.isfinite(v)
    ]
    if moved:
        parts.append(f"Meanwhile {', '.join(moved)}.")
    if abs(impact) >= 1:
        verb = "at stake" if impact < 0 else "above normal"
        parts.append(f"Revenue {verb}: {_money(impact)} per hour.")
    return replace(
        insight,
        metric=ev.metric,
        slice=slice_label(ev.slice),
        direction="up" if ev.change > 0 else "down",
        change=ev.change,
        observed=ev.observed,
        expected=ev.expected,
        severity=sev,
        impact_eur_per_hour=impact,
        explanation=explanation,
        cause=ev.cause,
        contributors=ev.contributors,
        summary=summary,
        description=" ".join(parts),
        recommendation=recommendation,
    )


DEFINITIONS = {
    "sessions": "sessions with an event",
    "pageviews": "page and product views",
    "orders": "distinct orders",
    "revenue": "EUR",
    "conversion_rate": "sessions with a purchase / sessions",
    "add_to_cart_rate": "sessions with an add-to-cart / sessions",
    "aov": "revenue / orders, EUR",
}
"""What each watched number is (METRIC.md), said beside it so no one confuses them."""

_EFFECTS = {
    "rate": "a rate change inside {slice}, not a mix shift",
    "mix": "a mix shift: {slice}'s share of the sessions changed",
    "volume": "a volume change of {slice}'s traffic",
}


def _explanation(ev: Evidence) -> str:
    """``Cause: payment or checkout. A rate change inside device=mobile, not a mix
    shift; the add to cart → purchase step fell 90%.`` ('' when nothing is known)."""
    parts = []
    if ev.cause:
        parts.append(f"Cause: {CAUSES[ev.cause]}.")
    what = []
    if ev.explanation in _EFFECTS and ev.slice:
        what.append(_EFFECTS[ev.explanation].format(slice=slice_label(ev.slice[:1])))
    elif not ev.slice:
        what.append("the change is everywhere, no slice stands out")
    broke = _step_text(ev)
    if broke:
        what.append(broke)
    if what:
        text = "; ".join(what)
        parts.append(text[0].upper() + text[1:] + ".")
    return " ".join(parts)


def _money(eur: float) -> str:
    return f"EUR {abs(eur):,.0f}"


def _value(v: float, kind: str, interval: str) -> str:
    if kind == "ratio" and abs(v) < 1.5:
        return f"{v:.2%}"
    if kind == "money" or kind == "ratio":
        return f"EUR {v:,.2f}" if kind == "money" else f"{v:,.2f}"
    return f"{v:,.1f}"
