"""Attribution: which slice carries a change, which funnel step broke, and the likely cause.

An insight is raised on whichever series crossed first — often an aggregate ("conversion
overall fell 55 %") — but what people act on is *where* and *why*. From the detector's
own series (observed against their seasonal expectation since the onset) this module:

1. **finds the slice that carries the change.** For each one-dimension slice ``v`` of
   country, device and channel, the change of the metric in ``v`` is set against its
   change in the rest of the traffic (the aggregate minus ``v``). A slice carries the
   change when it moved significantly, the rest moved less than half as much, and the
   slice holds at least half of the aggregate's change; the largest such contrast wins.
   When no slice stands out the change is everywhere (the aggregate) — also when the
   insight was raised on a slice but the rest of the shop moved the same way, in
   proportion (at least half as much) and beyond its noise: a change spread over every
   value of a dimension is the aggregate's, whichever value crossed first. The slice against
   the rest is split exactly into a **rate** change inside the slice and a **mix** shift
   (the slice's share of sessions changing), as in `insights.drilldown`. A rate that
   moved only through mix (a high-converting channel losing traffic) is found on
   sessions instead;
2. **reads the funnel in that slice**: session → add to cart → checkout → purchase, each
   step's conversion since the onset against the half hour before (from a `Funnel`:
   the warehouse, or the simulation in the backtest); without one, from the watched
   rates: session → add to cart (``add_to_cart_rate``) and add to cart → purchase
   (``conversion_rate / add_to_cart_rate``), observed against expected;
3. **classifies the cause** from the funnel and traffic of that slice:

   * ``traffic`` — sessions moved with the shopping rates kept (or bots: more sessions
     that do not shop);
   * ``tracking`` — events of one type vanish while the people are still there: page
     views per session fall while those left shop as much or more, add-to-carts fall
     while purchases go on, or purchases disappear completely while checkouts go on;
   * ``pricing`` — order value moved while orders did not;
   * ``product`` — fewer sessions add to cart, and so fewer buy (product pages, search,
     stock);
   * ``checkout`` — people still add to cart but do not reach or complete the checkout
     (payment provider, checkout).

Pure logic over `insights.engine.DetectionEngine` windows; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

from insights.baseline import Window
from insights.drilldown import Contribution, SliceStats, decompose
from insights.engine import DetectionEngine, signed_deviance
from insights.series import WATCHED_BY_NAME, SeriesKey, Slice

__all__ = ["CAUSES", "FUNNEL", "Attribution", "Cause", "Funnel", "Step", "attribute", "classify"]

FUNNEL = ("sessions", "carts", "checkouts", "purchases")
"""What a `Funnel` counts in a window: sessions, and those with an add-to-cart, a
begin-checkout and a purchase."""
Funnel = Callable[[Slice, datetime, datetime], Mapping[str, float] | None]
"""``(slice, start, end) -> {FUNNEL name: count}`` over ``[start, end)`` (None: unknown),
from the warehouse (`insights.reader.funnel_counts`) or a simulation."""
_BEFORE = timedelta(minutes=30)  # the funnel's steps before the onset: the expectation

Cause = Literal["checkout", "product", "traffic", "tracking", "pricing", ""]
CAUSES: dict[str, str] = {
    "checkout": "payment or checkout",
    "product": "product pages, search or stock",
    "traffic": "traffic",
    "tracking": "tracking",
    "pricing": "prices",
}
"""Cause class -> how it reads in a sentence."""

_DIMS = ("country", "device", "channel")
_MIN_Z = 3.0  # a slice's own change must be this significant to carry the change
_CONTRAST = 0.5  # the rest of the traffic moved less than this share of the slice's change
_CARRY = 0.5  # the slice holds at least this share of the aggregate's change
_MATERIAL = 0.15  # a relative change of a rate worth calling moved
_NOTED = 0.1  # ...and one worth noting beside another
_VANISHED = 30.0
"""A step with none taken where this many were expected lost its events (tracking): a
90 % outage leaves 3 on average (none 5 % of the time); below that many a partial outage
can leave none. A payment outage also loses checkouts, which rules it out first."""


@dataclass(frozen=True)
class Step:
    """One funnel step's conversion in the slice, observed against expected."""

    name: str
    observed: float
    expected: float
    done: float = math.nan
    """Sessions that took the step since the onset (NaN when not counted)..."""
    expected_done: float = math.nan
    """...and how many were expected to, at the rate before."""

    @property
    def change(self) -> float:
        return self.observed / self.expected - 1.0 if self.expected > 0 else 0.0


@dataclass(frozen=True)
class Attribution:
    """Where a change sits, which funnel step broke, and its likely cause."""

    slice: Slice
    """The slice that carries the change (``()``: everywhere)."""
    metric: str
    """The metric the slice was found on (the insight's, or sessions for a mix shift)."""
    effect: Literal["rate", "mix", "volume", ""]
    contributors: tuple[Contribution, ...]
    steps: tuple[Step, ...]
    broken: str
    """The funnel step that broke ('' when none did)."""
    cause: Cause
    changes: dict[str, float]
    """Relative changes in the slice: sessions, pageviews, orders, rates, aov."""


@dataclass(frozen=True)
class _Part:
    """A metric's numerator and denominator totals, expected and observed."""

    base_num: float
    base_den: float
    cur_num: float
    cur_den: float

    def change(self, ratio: bool) -> float:
        if ratio:
            if self.base_den <= 0 or self.cur_den <= 0 or self.base_num <= 0:
                return 0.0
            return (self.cur_num / self.cur_den) / (self.base_num / self.base_den) - 1.0
        return self.cur_num / self.base_num - 1.0 if self.base_num > 0 else 0.0

    def z(self, ratio: bool, share: bool) -> float:
        """Significance of the change: binomial for shares, Poisson for counts."""
        if ratio and share:
            if self.cur_den <= 0 or self.base_den <= 0:
                return 0.0
            expected = self.base_num / self.base_den * self.cur_den
            return signed_deviance(self.cur_num, expected, self.cur_den)
        if ratio:  # other rates (AOV): by the count behind them, roughly
            return self.change(True) * math.sqrt(max(self.cur_den, 0.0))
        return signed_deviance(self.cur_num, self.base_num)

    def z_beside(self, other: _Part, ratio: bool, share: bool) -> float:
        """Significance of this part's change beside ``other``'s: against the expectation
        moved as ``other`` moved (a slice that fell with the rest of the shop is not it)."""
        moved = 1.0 + other.change(ratio)
        scaled = _Part(self.base_num * moved, self.base_den, self.cur_num, self.cur_den)
        if ratio and not share:
            return (self.change(True) - other.change(True)) * math.sqrt(max(self.cur_den, 0.0))
        return scaled.z(ratio, share)

    def minus(self, other: _Part) -> _Part:
        return _Part(
            max(self.base_num - other.base_num, 0.0), max(self.base_den - other.base_den, 0.0),
            max(self.cur_num - other.cur_num, 0.0), max(self.cur_den - other.cur_den, 0.0),
        )  # fmt: skip


def _totals(w: Window) -> tuple[float, float]:
    """(expected, observed) totals of a count window."""
    return w.expected * w.buckets, w.observed * w.buckets


def _part(
    engine: DetectionEngine, metric: str, sl: Slice, interval: str, since: datetime,
    until: datetime,
) -> _Part | None:  # fmt: skip
    """The metric in ``sl`` over ``[since, until)`` as totals (None: not watched there)."""
    watched = WATCHED_BY_NAME[metric]
    num = engine.change(SeriesKey(metric, sl, interval), since, until)
    if num is None:
        return None
    if watched.kind != "ratio":
        base, cur = _totals(num)
        den = engine.change(SeriesKey("sessions", sl, interval), since, until)
        d_base, d_cur = _totals(den) if den is not None and metric != "sessions" else (0.0, 0.0)
        return _Part(base, d_base, cur, d_cur)
    den = engine.change(SeriesKey(watched.weight or "sessions", sl, interval), since, until)
    if den is None:
        return None
    d_base, d_cur = _totals(den)
    # a rate's window is weighted by the observed weight: its totals are over the observed
    # denominator, the expected rate applied to the expected denominator
    return _Part(num.expected * d_base, d_base, num.observed * d_cur, d_cur)


@dataclass(frozen=True)
class _Candidate:
    dim: str
    value: str
    contrast: float
    contribution: Contribution


def _carrier(
    engine: DetectionEngine, metric: str, interval: str, since: datetime, until: datetime,
    within: Slice = (),
) -> tuple[list[_Candidate], float]:  # fmt: skip
    """Slices (inside ``within``) that carry the change of ``metric``, best first, and the
    aggregate's change."""
    watched = WATCHED_BY_NAME[metric]
    ratio = watched.kind == "ratio"
    whole = _part(engine, metric, within, interval, since, until)
    if whole is None:
        return [], 0.0
    total = whole.change(ratio)
    if abs(whole.z(ratio, watched.share)) < _MIN_Z:
        return [], total  # the whole did not move beyond its noise: nothing to share out
    out: list[_Candidate] = []
    taken = {d for d, _ in within}
    for key in engine.series_keys():
        if key.metric != metric or key.interval != interval or len(key.slice) != len(within) + 1:
            continue
        extra = [p for p in key.slice if p not in within]
        if len(extra) != 1 or extra[0][0] in taken or extra[0][0] not in _DIMS:
            continue
        part = _part(engine, metric, key.slice, interval, since, until)
        if part is None:
            continue
        rest = whole.minus(part)
        mine, theirs = part.change(ratio), rest.change(ratio)
        z = part.z(ratio, watched.share)
        if mine * total <= 0 or abs(z) < _MIN_Z:
            continue
        if abs(theirs) > _CONTRAST * abs(mine) and theirs * mine > 0:
            continue
        if abs(part.z_beside(rest, ratio, watched.share)) < _MIN_Z:
            continue  # not told apart from the rest of the shop beyond noise
        dim, value = extra[0]
        dec = decompose(
            dim,
            [SliceStats(value, part.base_num, part.base_den, part.cur_num, part.cur_den),
             SliceStats("rest", rest.base_num, rest.base_den, rest.cur_num, rest.cur_den)],
            ratio,
        )  # fmt: skip
        own = next(c for c in dec.contributions if c.value == value)
        if metric == "sessions":  # traffic itself: its change is all volume
            own = replace(own, effect="volume")
        if own.share < _CARRY:
            continue
        out.append(_Candidate(dim, value, abs(mine) - abs(theirs), own))
    out.sort(key=lambda c: -c.contrast)
    return out, total


def _spread(
    engine: DetectionEngine, metric: str, sl: Slice, interval: str, since: datetime,
    until: datetime,
) -> bool:  # fmt: skip
    """Whether the change of ``metric`` in ``sl`` is the aggregate's: the whole moved, and
    the rest of the shop moved the same way, at least half as much and beyond its noise
    (a traffic drop everywhere first crossing in one country is not that country's; the
    share keeps a model error of a percent, significant on 40,000 sessions a minute, from
    counting)."""
    watched = WATCHED_BY_NAME[metric]
    ratio = watched.kind == "ratio"
    whole = _part(engine, metric, (), interval, since, until)
    part = _part(engine, metric, sl, interval, since, until)
    if whole is None or part is None or abs(whole.z(ratio, watched.share)) < _MIN_Z:
        return False
    rest = whole.minus(part)
    mine, theirs = part.change(ratio), rest.change(ratio)
    in_proportion = mine * theirs > 0 and abs(theirs) >= _CONTRAST * abs(mine)
    return in_proportion and abs(rest.z(ratio, watched.share)) >= _MIN_Z


def _window(
    engine: DetectionEngine, metric: str, sl: Slice, interval: str, since: datetime,
    until: datetime,
) -> Window | None:  # fmt: skip
    for candidate in (sl, sl[:1], ()):
        w = engine.change(SeriesKey(metric, candidate, interval), since, until)
        if w is not None:
            return w if candidate == sl else None
    return None


def attribute(
    engine: DetectionEngine, metric: str, sl: Slice, interval: str, since: datetime,
    until: datetime, funnel: Funnel | None = None,
) -> Attribution:  # fmt: skip
    """Attribute the change of ``metric`` seen on ``sl`` since ``since``; see the module
    docstring. A change on a slice is looked for inside it too (DE → DE on mobile, when
    those series are watched — usually they are not, and the warehouse drill-down of
    `insights.narrative` refines instead)."""
    found_on = metric
    scope: Slice = ()
    candidates, _ = _carrier(engine, metric, interval, since, until)
    if not candidates and metric != "sessions":
        # a rate that moved only through mix, or a count through traffic: on sessions
        by_traffic, sessions_change = _carrier(engine, "sessions", interval, since, until)
        if by_traffic and abs(sessions_change) >= 0.05:
            candidates, found_on = by_traffic, "sessions"
    if candidates:
        best = candidates[0]
        scope = ((best.dim, best.value),)
    elif sl and not _spread(engine, metric, sl, interval, since, until):
        scope = sl  # the insight's own slice, when nothing finer stands out overall
    contributors = tuple(c.contribution for c in candidates[:3])
    effect = contributors[0].effect if contributors else ""
    changes: dict[str, float] = {}
    for m in ("sessions", "pageviews", "orders", "revenue", "conversion_rate",
              "add_to_cart_rate", "aov"):  # fmt: skip
        w = _window(engine, m, scope, interval, since, until)
        if w is not None and math.isfinite(w.change):
            changes[m] = w.change
    steps = _funnel_steps(funnel, scope, since, until) if funnel is not None else ()
    steps = steps or _steps(engine, scope, interval, since, until)
    broken = min(steps, key=lambda s: s.change).name if steps else ""
    if steps and min(s.change for s in steps) > -_MATERIAL:
        broken = ""
    cause = classify(changes, steps)
    if found_on == "sessions" and cause in ("", "checkout", "product"):
        cause = "traffic"
    return Attribution(scope, found_on, effect, contributors, steps, broken, cause, changes)


def _steps(
    engine: DetectionEngine, sl: Slice, interval: str, since: datetime, until: datetime
) -> tuple[Step, ...]:
    carts = _window(engine, "add_to_cart_rate", sl, interval, since, until)
    buys = _window(engine, "conversion_rate", sl, interval, since, until)
    out = []
    if carts is not None:
        out.append(Step("session → add to cart", carts.observed, carts.expected))
    if carts is not None and buys is not None and carts.observed > 0 and carts.expected > 0:
        out.append(Step("add to cart → purchase", buys.observed / carts.observed,
                        buys.expected / carts.expected))  # fmt: skip
    return tuple(out)


def _funnel_steps(funnel: Funnel, sl: Slice, since: datetime, until: datetime) -> tuple[Step, ...]:
    """The funnel's step conversions since the onset against the half hour before it."""
    before = funnel(sl, since - max(_BEFORE, until - since), since)
    now = funnel(sl, since, until)
    if not before or not now:
        return ()
    names = ("session → add to cart", "add to cart → checkout", "checkout → purchase")
    out: list[Step] = []
    for name, (prev, step) in zip(names, pairwise(FUNNEL), strict=True):
        b_prev, b_step = before.get(prev, 0.0), before.get(step, 0.0)
        n_prev, n_step = now.get(prev, 0.0), now.get(step, 0.0)
        if b_prev <= 0 or b_step <= 0 or n_prev <= 0:
            return tuple(out)
        out.append(Step(name, n_step / n_prev, b_step / b_prev, n_step, n_prev * b_step / b_prev))
    return tuple(out)


def classify(changes: dict[str, float], steps: tuple[Step, ...] = ()) -> Cause:
    """The cause class from a slice's relative changes and funnel steps (module docstring)."""
    sessions = changes.get("sessions", 0.0)
    pageviews = changes.get("pageviews", 0.0)
    conversion = changes.get("conversion_rate", 0.0)
    carts = changes.get("add_to_cart_rate", 0.0)
    aov = changes.get("aov", 0.0)
    orders = changes.get("orders", 0.0)
    step = {s.name: s.change for s in steps}
    last = next((s for s in steps if s.name == "checkout → purchase"), None)
    vanished = last is not None and last.done == 0 and last.expected_done >= _VANISHED
    # the watched rate has the better expectation (seasonal, learnt); the funnel's is the
    # half hour before
    to_cart = carts if "add_to_cart_rate" in changes else step.get("session → add to cart", 0.0)
    to_checkout = step.get("add to cart → checkout", 0.0)
    to_buy = step.get("checkout → purchase", step.get("add to cart → purchase",
                      (1 + conversion) / (1 + carts) - 1))  # fmt: skip
    rates_down = min(conversion, carts) <= -_MATERIAL
    per_session = (1 + pageviews) / (1 + sessions) - 1 if sessions > -1 else 0.0
    if pageviews <= -_NOTED and per_session <= -_NOTED and not rates_down:
        # the tag loses page views, not visitors: a session vanishes only when all its
        # page views went, so page views per session fall, and those left shop as much or
        # more. (Fewer sessions with higher rates alone is also a traffic drop's first
        # minutes: the sessions already there keep shopping while new ones stop coming,
        # with their page views per session about as before.)
        return "tracking"
    if abs(sessions) >= _MATERIAL:
        return "traffic"
    if abs(aov) >= _MATERIAL and abs(orders) < _MATERIAL and not rates_down:
        return "pricing"
    if to_cart <= -_MATERIAL:
        # fewer add-to-carts while purchases go on: the add-to-cart events are missing
        return "tracking" if conversion > -_MATERIAL / 2 else "product"
    if to_checkout <= -_MATERIAL:
        return "checkout"  # shoppers with a cart never reach the checkout (payment outage)
    if vanished:
        return "tracking"  # checkouts go on, purchase events are gone entirely
    if to_buy <= -_MATERIAL or conversion <= -_MATERIAL:
        return "checkout"
    if abs(aov) >= _MATERIAL:
        return "pricing"
    return ""
