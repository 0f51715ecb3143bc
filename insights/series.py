"""Which (metric, slice) series the detector watches, and the values it is fed.

A *slice* is a tuple of ``(dimension, value)`` pairs in CONTRACT order (``()`` is the
aggregate, labelled ``all``). Every watched metric is watched on the aggregate and on each
country, device and channel value with enough traffic, at 1-minute and 1-hour resolution.
A rate is fed with the count behind it (`Watched.weight`) so a dip on a handful of
sessions is not an incident (the detector's volume awareness).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "INTERVAL_SECONDS",
    "METRIC_LABELS",
    "SLICE_DIMS",
    "WATCHED",
    "WATCHED_BY_NAME",
    "Obs",
    "Selection",
    "SeriesKey",
    "Slice",
    "Volume",
    "Watched",
    "compatible",
    "contains",
    "parse_slice",
    "select_series",
    "slice_label",
    "slice_text",
]

Slice = tuple[tuple[str, str], ...]
Family = Literal["traffic", "funnel", "orders", "price"]
SLICE_DIMS = ("country", "device", "channel", "category")
INTERVAL_SECONDS = {"1m": 60, "1h": 3600}


@dataclass(frozen=True)
class Watched:
    """A metric the detector watches; ``weight`` names the metric counting its trials,
    and ``share`` says the rate is a share of them (0..1: sessions that bought), so its
    noise is binomial."""

    metric: str
    kind: Literal["count", "money", "ratio"]
    family: Family
    weight: str | None = None
    share: bool = False


WATCHED: tuple[Watched, ...] = (
    Watched("sessions", "count", "traffic"),
    Watched("pageviews", "count", "traffic"),
    Watched("orders", "count", "orders"),
    Watched("revenue", "money", "orders"),
    Watched("conversion_rate", "ratio", "orders", weight="sessions", share=True),
    Watched("add_to_cart_rate", "ratio", "funnel", weight="sessions", share=True),
    Watched("aov", "ratio", "price", weight="orders"),
)
WATCHED_BY_NAME = {w.metric: w for w in WATCHED}

METRIC_LABELS = {
    "sessions": "Sessions",
    "pageviews": "Page views",
    "orders": "Orders",
    "revenue": "Revenue",
    "conversion_rate": "Conversion",
    "add_to_cart_rate": "Add-to-cart rate",
    "aov": "Average order value",
}


@dataclass(frozen=True, order=True)
class SeriesKey:
    """One watched series: metric, slice and bucket interval (``1m`` or ``1h``)."""

    metric: str
    slice: Slice = ()
    interval: str = "1m"

    @property
    def label(self) -> str:
        """``conversion_rate[country=DE]@1m``: for logs and tests."""
        return f"{self.metric}[{slice_label(self.slice)}]@{self.interval}"

    @property
    def watched(self) -> Watched:
        return WATCHED_BY_NAME[self.metric]


@dataclass(frozen=True)
class Obs:
    """A closed bucket's value and, for a rate, the count behind it."""

    value: float | None
    weight: float | None = None


def slice_label(sl: Slice) -> str:
    """``country=DE,device=mobile`` (the alert label format) or ``all``."""
    return ",".join(f"{d}={v}" for d, v in sl) or "all"


def slice_text(sl: Slice) -> str:
    """A slice for a sentence: ``in DE on mobile``, ``from paid traffic``, ``overall``."""
    parts = []
    for dim, value in sl:
        if dim == "country":
            parts.append(f"in {value}")
        elif dim == "device":
            parts.append(f"on {value}")
        elif dim == "channel":
            parts.append(f"from {value} traffic")
        else:
            parts.append(f"in {value}")
    return " ".join(parts) or "overall"


def parse_slice(label: str) -> Slice:
    """Inverse of `slice_label`; dimensions are put in CONTRACT order."""
    if not label or label == "all":
        return ()
    pairs = []
    for part in label.split(","):
        dim, sep, value = part.partition("=")
        if not sep or dim not in SLICE_DIMS or not value:
            raise ValueError(f"expected a slice like country=DE,device=mobile, got {label!r}")
        pairs.append((dim, value))
    return tuple(sorted(pairs, key=lambda p: SLICE_DIMS.index(p[0])))


def compatible(a: Slice, b: Slice) -> bool:
    """Whether two slices can describe the same traffic (no dimension disagrees)."""
    da = dict(a)
    return all(da.get(dim, value) == value for dim, value in b)


def contains(parent: Slice, child: Slice) -> bool:
    """Whether ``child`` is ``parent`` or a sub-slice of it."""
    return set(parent) <= set(child)


@dataclass(frozen=True)
class Volume:
    """Typical (median) sessions and orders per bucket of a slice."""

    sessions: float
    orders: float


@dataclass(frozen=True)
class Selection:
    """How much traffic a slice needs before its series are watched (per bucket).

    Traffic metrics need sessions; the order metrics (orders, revenue, conversion,
    add-to-cart, AOV) need orders: a minute of a small country holds one or two orders,
    and its revenue is one customer's basket, not a signal. Such slices are still
    watched at 1 hour. The aggregate is always watched.
    """

    min_sessions: Mapping[str, float] = field(default_factory=lambda: {"1m": 50.0, "1h": 500.0})
    min_orders: Mapping[str, float] = field(default_factory=lambda: {"1m": 5.0, "1h": 30.0})


def select_series(
    volumes: Mapping[Slice, Volume], interval: str, rule: Selection | None = None
) -> list[SeriesKey]:
    """The watched series at ``interval``: every metric of the aggregate, and of each
    one-dimension slice the metrics its volume supports."""
    rule = rule or Selection()
    min_sessions = rule.min_sessions.get(interval, 0.0)
    min_orders = rule.min_orders.get(interval, 0.0)
    slices = sorted(
        (sl for sl in volumes if len(sl) == 1),
        key=lambda sl: (SLICE_DIMS.index(sl[0][0]), sl[0][1]),
    )
    out = [SeriesKey(w.metric, (), interval) for w in WATCHED]
    for sl in slices:
        vol = volumes[sl]
        for w in WATCHED:
            enough = vol.sessions >= min_sessions
            if w.family != "traffic":
                enough = enough and vol.orders >= min_orders
            if enough:
                out.append(SeriesKey(w.metric, sl, interval))
    return out
