"""Injected incidents: the SPEC syntax, their parameters and the ground truth they leave.

How each kind changes the generated traffic lives in :mod:`ingest.simulator.effects`;
this module is the user-facing side: parsing, validation and which metrics (docs/metrics.md) an
incident is expected to move (and in which direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from ingest.simulator.defaults import CHANNELS, DEVICES, EVENT_TYPES
from ingest.simulator.timeutil import format_ms, parse_duration, parse_time, to_ms

__all__ = [
    "INCIDENT_KINDS",
    "Incident",
    "IncidentKind",
    "check_incident",
    "parse_incident",
    "simulate_cli_help",
    "truth_entry",
]

IncidentKind = Literal[
    "conversion_drop",
    "checkout_failure",
    "traffic_spike",
    "traffic_drop",
    "price_error",
    "tracking_loss",
    "late_events",
    "duplicates",
]
INCIDENT_KINDS: tuple[str, ...] = get_args(IncidentKind)
SLICE_DIMS = ("country", "device", "channel", "category")

_DEFAULT_DEPTH = {
    "conversion_drop": 0.5,
    "checkout_failure": 0.5,
    "traffic_spike": 1.0,
    "traffic_drop": 0.5,
    "price_error": 1.0,
    "tracking_loss": 1.0,
    "late_events": 1.0,
    "duplicates": 0.1,
}
_DEFAULT_DELAY = {"late_events": timedelta(minutes=5), "duplicates": timedelta(seconds=2)}
_MAX_SPIKE = 100.0
_DESCRIPTION = {
    "conversion_drop": "payment outage: would-be buyers lose their checkout and purchase",
    "checkout_failure": "checkout breaks: sessions begin checkout but the purchase never comes",
    "traffic_spike": "extra sessions arrive in the slice (campaign traffic or bots)",
    "traffic_drop": "sessions in the slice stop arriving",
    "price_error": "prices in the slice are wrong by a factor (e.g. a misplaced decimal)",
    "tracking_loss": "one event type stops arriving from the slice",
    "late_events": "the slice's events reach the pipeline late (event time unchanged)",
    "duplicates": "a client re-sends the slice's events (same bytes, same event_id)",
}

simulate_cli_help = """\
Incident SPEC: KIND[:key=value,...], repeatable; incidents compose.
  KIND: conversion_drop | checkout_failure | traffic_spike | traffic_drop | price_error |
        tracking_loss | late_events | duplicates
  slice:  country=DE  device=mobile  channel=paid  category=shoes  (A|B for several; AND)
  at=+5m     offset from --start, or an ISO time (default +5m)
  for=10m    duration (default 10m)
  depth=0.6  share of the slice hit, 0..1 (defaults: conversion_drop/checkout_failure/
             traffic_drop 0.5, duplicates 0.1, others 1); traffic_spike: relative
             extra sessions, 1 = double (default 1, up to 100)
  traffic_spike source=campaign|bots (default campaign; bots: one product view each)
  price_error factor=10 (price multiplier, default 10)
  tracking_loss event=TYPE (default purchase)
  late_events delay=5m (default 5m); duplicates delay=2s (re-send lag, default 2s)
Example: conversion_drop:country=DE,at=+5m,for=10m,depth=0.6
Ground truth (start, end, slice, expected metrics): with --output traffic.jsonl it goes
beside it as traffic.truth.json; sent to Kafka, to $PULSE_HOME/simulations/.
"""


@dataclass(frozen=True)
class Incident:
    """One injected incident. Unset ``depth``/``delay`` take the kind's default.

    ``at`` is an offset from the run's start (timedelta) or an absolute UTC time.
    Slice dimensions are tuples of accepted values; empty means any.
    """

    kind: IncidentKind
    at: timedelta | datetime = timedelta(minutes=5)
    duration: timedelta = timedelta(minutes=10)
    depth: float = math.nan
    country: tuple[str, ...] = ()
    device: tuple[str, ...] = ()
    channel: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    event: str = "purchase"
    delay: timedelta = timedelta(0)
    factor: float = 10.0
    source: Literal["campaign", "bots"] = "campaign"
    _spec: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; expected one of {_kinds()}")
        if math.isnan(self.depth):
            object.__setattr__(self, "depth", _DEFAULT_DEPTH[self.kind])
        if self.delay == timedelta(0) and self.kind in _DEFAULT_DELAY:
            object.__setattr__(self, "delay", _DEFAULT_DELAY[self.kind])
        top = _MAX_SPIKE if self.kind == "traffic_spike" else 1.0
        if not 0.0 < self.depth <= top:
            raise ValueError(f"{self.kind}: depth must be within (0, {top:g}], got {self.depth}")
        if self.duration <= timedelta(0):
            raise ValueError(f"{self.kind}: for= must be a positive duration")
        if self.delay < timedelta(0):
            raise ValueError(f"{self.kind}: delay= must not be negative")
        if not self.factor > 0:
            raise ValueError(f"{self.kind}: factor= must be > 0, got {self.factor}")
        if self.event not in EVENT_TYPES:
            raise ValueError(f"{self.kind}: event= must be one of {', '.join(EVENT_TYPES)}")
        if self.source not in ("campaign", "bots"):
            raise ValueError(f"{self.kind}: source= must be campaign or bots")
        _check_values("device", self.device, tuple(d for d, _, _ in DEVICES))
        _check_values("channel", self.channel, tuple(c for c, _, _ in CHANNELS))
        for code in self.country:
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise ValueError(f"country={code!r}: expected an ISO code like DE")

    def window_ms(self, start_ms: int) -> tuple[int, int]:
        """``[begin, end)`` in epoch ms for a run starting at ``start_ms``."""
        if isinstance(self.at, datetime):
            begin = to_ms(self.at)
        else:
            begin = start_ms + self.at // timedelta(milliseconds=1)
        return begin, begin + self.duration // timedelta(milliseconds=1)

    def slice_dims(self) -> dict[str, tuple[str, ...]]:
        """The restricted dimensions only, in CONTRACT order."""
        return {d: getattr(self, d) for d in SLICE_DIMS if getattr(self, d)}

    @property
    def slice_label(self) -> str:
        """``country=DE,device=mobile`` (alert label format) or ``all``."""
        dims = self.slice_dims()
        return ",".join(f"{d}={'|'.join(v)}" for d, v in dims.items()) or "all"

    @property
    def spec(self) -> str:
        """The SPEC text this incident was parsed from, or the canonical one."""
        return self._spec or self.canonical

    @property
    def canonical(self) -> str:
        """The SPEC with every parameter spelled out (equal incidents, equal text)."""
        return _canonical(self)

    def params(self) -> dict[str, Any]:
        """The kind-specific parameters, for the ground truth."""
        if self.kind == "tracking_loss":
            return {"event": self.event}
        if self.kind in _DEFAULT_DELAY:
            return {"delay_ms": self.delay // timedelta(milliseconds=1)}
        if self.kind == "price_error":
            return {"factor": self.factor}
        if self.kind == "traffic_spike":
            return {"source": self.source}
        return {}


def parse_incident(spec: str) -> Incident:
    """Parse ``KIND[:key=value,...]`` (see :data:`simulate_cli_help`); ValueError if bad."""
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"incident {spec!r}: unknown kind {kind!r}; expected one of {_kinds()}")
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"incident {spec!r}: expected key=value, got {part!r}")
        if key in values or (key == "for" and "duration" in values):
            raise ValueError(f"incident {spec!r}: {key} given twice")
        try:
            name, parsed = _parse_value(kind, key, value)
        except ValueError as exc:
            raise ValueError(f"incident {spec!r}: {exc}") from None
        values[name] = parsed
    try:
        return Incident(kind=kind, _spec=text, **values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"incident {spec!r}: {exc}") from None


def check_incident(
    incident: Incident, *, countries: tuple[str, ...], categories: tuple[str, ...]
) -> None:
    """Reject slices naming a country or category the market does not have."""
    try:
        _check_values("country", incident.country, countries)
        _check_values("category", incident.category, categories)
    except ValueError as exc:
        raise ValueError(f"incident {incident.spec!r}: {exc}") from None


def truth_entry(incident: Incident, index: int, start_ms: int) -> dict[str, Any]:
    """The ground-truth record of one incident (see :func:`~ingest.simulator.ground_truth`)."""
    begin, end = incident.window_ms(start_ms)
    final, transient = expected_metrics(incident)
    return {
        "index": index,
        "kind": incident.kind,
        "spec": incident.spec,
        "description": _DESCRIPTION[incident.kind],
        "start": format_ms(begin),
        "end": format_ms(end),
        "start_ms": begin,
        "end_ms": end,
        "slice": {d: list(v) for d, v in incident.slice_dims().items()},
        "slice_label": incident.slice_label,
        "depth": incident.depth,
        "params": incident.params(),
        "metrics": [{"metric": m, "direction": d} for m, d in final],
        "transient_metrics": [{"metric": m, "direction": d} for m, d in transient],
    }


_Moves = list[tuple[str, str]]
_ORDERS_DOWN: _Moves = [
    ("conversion_rate", "down"),
    ("orders", "down"),
    ("revenue", "down"),
    ("units", "down"),
    ("revenue_per_visitor", "down"),
]
_TRAFFIC = ["events", "pageviews", "sessions", "visitors", "orders", "revenue", "units"]
_LOSS: dict[str, _Moves] = {
    "page_view": [
        ("events", "down"),
        ("pageviews", "down"),
        ("sessions", "down"),  # one-page (bounced) sessions vanish entirely
        ("visitors", "down"),
        ("bounce_rate", "down"),
        ("pages_per_session", "down"),
        ("conversion_rate", "up"),
        ("add_to_cart_rate", "up"),
        ("revenue_per_visitor", "up"),
    ],
    "product_view": [("events", "down"), ("pageviews", "down"), ("pages_per_session", "down")],
    "search": [("events", "down")],
    "add_to_cart": [("events", "down"), ("add_to_cart_rate", "down")],
    "remove_from_cart": [("events", "down")],
    "begin_checkout": [("events", "down")],
    "purchase": [("events", "down"), *_ORDERS_DOWN],
}
# Category slices are product metrics only (docs/metrics.md "Products").
_LOSS_PRODUCTS: dict[str, _Moves] = {
    "product_view": [("views", "down"), ("view_to_purchase_rate", "up")],
    "add_to_cart": [("add_to_carts", "down")],
    "purchase": [("units", "down"), ("revenue", "down"), ("view_to_purchase_rate", "down")],
}


def expected_metrics(incident: Incident) -> tuple[_Moves, _Moves]:
    """(metrics moved in the warehouse, metrics moved only until late events arrive)."""
    kind, products = incident.kind, bool(incident.category)
    up_or_down = "up" if incident.factor >= 1 else "down"
    if kind in ("conversion_drop", "checkout_failure"):
        if products:
            return [("units", "down"), ("revenue", "down"), ("view_to_purchase_rate", "down")], []
        return list(_ORDERS_DOWN), []
    if kind == "traffic_spike" and incident.source == "bots":
        if products:
            return [("views", "up"), ("view_to_purchase_rate", "down")], []
        bots: _Moves = [(m, "up") for m in ("events", "pageviews", "sessions", "visitors")]
        bots += [("bounce_rate", "up"), ("pages_per_session", "down")]
        bots += [("avg_session_duration_s", "down"), ("conversion_rate", "down")]
        return [*bots, ("add_to_cart_rate", "down"), ("revenue_per_visitor", "down")], []
    if kind in ("traffic_spike", "traffic_drop"):
        way = "up" if kind == "traffic_spike" else "down"
        if products:
            return [(m, way) for m in ("views", "add_to_carts", "units", "revenue")], []
        return [(m, way) for m in _TRAFFIC], []
    if kind == "price_error":
        if products:
            return [("revenue", up_or_down)], []
        return [(m, up_or_down) for m in ("aov", "revenue", "revenue_per_visitor")], []
    if kind == "tracking_loss":
        return list((_LOSS_PRODUCTS if products else _LOSS).get(incident.event, [])), []
    if kind == "late_events":
        if products:
            return [], [(m, "down") for m in ("views", "add_to_carts", "units", "revenue")]
        return [], [(m, "down") for m in _TRAFFIC]
    return [], []  # duplicates: de-duplication by event_id must leave every metric unchanged


def _parse_value(kind: str, key: str, value: str) -> tuple[str, Any]:
    if key in SLICE_DIMS:
        return key, tuple(v.strip() for v in value.split("|") if v.strip())
    if key == "at":
        if value.startswith("+"):
            return "at", parse_duration(value[1:])
        try:
            return "at", parse_duration(value)
        except ValueError:
            return "at", parse_time(value)
    if key == "for":
        return "duration", parse_duration(value)
    if key in ("depth", "factor"):
        try:
            return key, float(value)
        except ValueError:
            raise ValueError(f"{key}= expects a number, got {value!r}") from None
    allowed = {"event": "tracking_loss", "source": "traffic_spike"}
    allowed_delay = ("late_events", "duplicates")
    if key == "delay" and kind in allowed_delay:
        return "delay", parse_duration(value)
    if key in allowed and allowed[key] == kind:
        return key, value
    if key == "factor" or key == "delay" or key in allowed:
        raise ValueError(f"{key}= does not apply to {kind}")
    keys = [*SLICE_DIMS, "at", "for", "depth", "event", "delay", "factor", "source"]
    raise ValueError(f"unknown key {key!r}; expected one of {', '.join(keys)}")


def _check_values(dim: str, values: tuple[str, ...], known: tuple[str, ...]) -> None:
    for value in values:
        if value not in known:
            raise ValueError(f"{dim}={value!r} is unknown; expected one of {', '.join(known)}")


def _canonical(incident: Incident) -> str:
    parts = [f"{d}={'|'.join(v)}" for d, v in incident.slice_dims().items()]
    at = incident.at
    if isinstance(at, datetime):
        parts.append(f"at={format_ms(to_ms(at))}")
    else:
        parts.append(f"at=+{_fmt_duration(at)}")
    parts += [f"for={_fmt_duration(incident.duration)}", f"depth={incident.depth:g}"]
    if incident.kind == "tracking_loss":
        parts.append(f"event={incident.event}")
    if incident.kind in _DEFAULT_DELAY:
        parts.append(f"delay={_fmt_duration(incident.delay)}")
    if incident.kind == "price_error":
        parts.append(f"factor={incident.factor:g}")
    if incident.kind == "traffic_spike":
        parts.append(f"source={incident.source}")
    return f"{incident.kind}:{','.join(parts)}"


def _fmt_duration(span: timedelta) -> str:
    ms = span // timedelta(milliseconds=1)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _kinds() -> str:
    return ", ".join(INCIDENT_KINDS)
