"""How each incident changes the generated traffic of one time chunk.

Every incident draws from its own random stream (seeded by run seed, incident index and
chunk), never from the base stream. So a run with an incident is the same run without it
plus exactly the incident's changes: events outside its slice and window are untouched,
byte for byte. That is what makes the ground truth exact.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.simulator.defaults import EVENT_TYPES
from ingest.simulator.incidents import Incident
from ingest.simulator.market import Market
from ingest.simulator.sessions import (
    BEGIN_CHECKOUT,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    Cart,
    Events,
    Sessions,
    draw_sessions,
    is_sessionless,
)

__all__ = ["ActiveIncident", "Group", "resolve_incidents"]

Arr = npt.NDArray[Any]


@dataclass
class Group:
    """Sessions and events of one chunk, plus what incidents did to them."""

    s: Sessions
    e: Events
    cart: Cart
    keep: Arr  # events that will be sent
    emit: Arr  # when each event is sent (epoch ms)
    price_factor: Arr  # per event (product events)
    line_factor: tuple[Arr, Arr]  # per cart line, at checkout and at purchase
    dup_rows: list[Arr] = field(default_factory=list)  # events sent twice ...
    dup_emit: list[Arr] = field(default_factory=list)  # ... the copy at this time

    @classmethod
    def of(cls, s: Sessions, e: Events, cart: Cart, lo_ms: int, hi_ms: int) -> Group:
        """A fresh group sending the events with ``lo_ms <= ts < hi_ms`` on time."""
        n_lines = len(cart.sess)
        return cls(
            s=s,
            e=e,
            cart=cart,
            keep=(e.ts >= lo_ms) & (e.ts < hi_ms),
            emit=e.ts.copy(),
            price_factor=np.ones(len(e.ts)),
            line_factor=(np.ones(n_lines), np.ones(n_lines)),
        )


@dataclass
class ActiveIncident:
    """An incident resolved against a market and a run: window in ms, slice as masks."""

    index: int
    key: int  # stream id: from the incident's canonical SPEC, not its position
    incident: Incident
    begin: int
    end: int
    country_ok: Arr
    device_ok: Arr
    channel_ok: Arr
    category_ok: Arr
    product_hit: Arr  # price_error: products whose price is wrong
    seed: int
    affected: int = 0  # events removed, added, repriced, delayed or duplicated
    spike_sn: int = 0

    def rng(self, chunk: int) -> np.random.Generator:
        """This incident's random stream for one chunk."""
        seq = np.random.SeedSequence([self.seed, 0x51C, self.key, chunk])
        return np.random.Generator(np.random.PCG64(seq))

    def sessions_in_slice(self, s: Sessions) -> Arr:
        """Sessions whose country, device, channel and focus category match."""
        return (
            self.country_ok[s.country]
            & self.device_ok[s.device]
            & self.channel_ok[s.channel]
            & self.category_ok[s.category]
        )

    def in_window(self, ts: Arr) -> Arr:
        """Which timestamps fall in ``[begin, end)``."""
        return (ts >= self.begin) & (ts < self.end)

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether the window meets ``[lo, hi)``."""
        return self.begin < hi and lo < self.end

    def apply(self, rng: np.random.Generator, g: Group) -> None:
        """Change ``g`` in place as this incident does (not traffic_spike: see spike)."""
        inc, e, s = self.incident, g.e, g.s
        kind = inc.kind
        in_slice = self.sessions_in_slice(s)
        if kind == "traffic_drop":
            hit = _pick(rng, in_slice & self.in_window(s.start), inc.depth)
            self._remove(g, hit[e.sess])
        elif kind in ("conversion_drop", "checkout_failure"):
            hit = _pick(rng, in_slice & self.in_window(s.purchase_ts), inc.depth)
            # Only events inside the window go: a checkout begun just before the outage
            # stays, so nothing outside the window changes.
            first_lost = PURCHASE if kind == "checkout_failure" else BEGIN_CHECKOUT
            lost = (e.etype >= first_lost) & self.in_window(e.ts)
            self._remove(g, hit[e.sess] & lost)
        elif kind == "price_error":
            self._reprice(g, in_slice)
        elif kind == "tracking_loss":
            event = EVENT_TYPES.index(inc.event)
            rows = in_slice[e.sess] & (e.etype == event) & self.in_window(e.ts) & g.keep
            self._remove(g, _pick(rng, rows, inc.depth))
        elif kind in ("late_events", "duplicates"):
            candidates = in_slice[e.sess] & self.in_window(e.ts) & g.keep
            rows = np.flatnonzero(_pick(rng, candidates, inc.depth))
            lag = int(inc.delay.total_seconds() * 1000)
            self.affected += len(rows)
            if kind == "late_events":
                g.emit[rows] = np.maximum(g.emit[rows], e.ts[rows] + lag)
            else:
                g.dup_rows.append(rows)
                g.dup_emit.append(g.emit[rows] + lag)

    def _remove(self, g: Group, rows: Arr) -> None:
        gone = rows & g.keep
        self.affected += int(gone.sum())
        g.keep &= ~gone

    def _reprice(self, g: Group, in_slice: Arr) -> None:
        e, s, cart, factor = g.e, g.s, g.cart, self.incident.factor
        product_event = (e.etype >= PRODUCT_VIEW) & (e.etype <= REMOVE_FROM_CART)
        rows = product_event & in_slice[e.sess] & self.in_window(e.ts)
        rows[rows] = self.product_hit[e.product[rows]]
        g.price_factor[rows] *= factor
        self.affected += int((rows & g.keep).sum())
        line_hit = self.product_hit[cart.product] & in_slice[cart.sess]
        for when, lines, etype in (
            (s.checkout_ts, g.line_factor[0], BEGIN_CHECKOUT),
            (s.purchase_ts, g.line_factor[1], PURCHASE),
        ):
            hit_lines = line_hit & self.in_window(when[cart.sess])
            lines[hit_lines] *= factor
            sessions = np.zeros(len(s), dtype=bool)
            sessions[cart.sess[hit_lines]] = True
            self.affected += int((sessions[e.sess] & (e.etype == etype) & g.keep).sum())

    def spike(
        self, rng: np.random.Generator, market: Market, lam: Arr, lo: int, hi: int, prefix: str
    ) -> Sessions | None:
        """Extra sessions for a traffic_spike over ``[lo, hi)`` ∩ window, or None.

        ``lam`` is the base session rate per country (sessions/ms); the extra rate is
        ``depth`` times the base rate of the slice.
        """
        a, b = max(lo, self.begin), min(hi, self.end)
        if a >= b:
            return None
        inc = self.incident
        cfg = market.config
        country_rate = lam * self.country_ok
        share = (
            _share([w for _, w, _ in cfg.devices], self.device_ok)
            * _share([w for _, w, _ in cfg.channels], self.channel_ok)
            * _share([c.weight for c in cfg.categories], self.category_ok)
        )
        n = int(rng.poisson(inc.depth * float(country_rate.sum()) * share * (b - a)))
        if n == 0:
            return None
        start = np.sort(a + (rng.random(n) * (b - a)).astype(np.int64))
        country = _choose(rng, country_rate, n)
        device_w = np.array([w for _, w, _ in cfg.devices]) * self.device_ok
        channel_w = np.array([w for _, w, _ in cfg.channels]) * self.channel_ok
        category_w = np.array([c.weight for c in cfg.categories]) * self.category_ok
        force = {
            "device": _choose(rng, device_w, n),
            "channel": _choose(rng, channel_w, n),
            "category": _choose(rng, category_w, n),
        }
        sn = np.arange(self.spike_sn, self.spike_sn + n)
        self.spike_sn += n
        s = draw_sessions(rng, market, start, country, sn, prefix, force=force)
        if inc.source == "bots":
            # Crawlers: a fresh visitor id per hit, outside the customer population.
            s.user = cfg.users + (self.key % 4096) * 1_000_000_000 + sn
            s.bot = True
        else:
            _move_off_sessionless(market, s)
        s.sessionless = np.zeros(n, dtype=bool)
        return s


def resolve_incidents(
    incidents: tuple[Incident, ...], market: Market, start_ms: int, seed: int
) -> list[ActiveIncident]:
    """Windows in ms and slice masks over the market's indices, one per incident."""
    out = []
    seen: dict[str, int] = {}
    for index, inc in enumerate(incidents):
        begin, end = inc.window_ms(start_ms)
        # Keyed by what the incident is, so adding or reordering other incidents never
        # changes what this one does (incidents compose exactly).
        text = inc.canonical
        seen[text] = seen.get(text, -1) + 1
        key = zlib.crc32(f"{text}#{seen[text]}".encode())
        hit_seq = np.random.SeedSequence([seed, 0xB1D, key])
        out.append(
            ActiveIncident(
                index=index,
                key=key,
                incident=inc,
                begin=begin,
                end=end,
                country_ok=_mask(market.codes, inc.country),
                device_ok=_mask(market.device_names, inc.device),
                channel_ok=_mask(market.channel_names, inc.channel),
                category_ok=_mask(market.category_names, inc.category),
                product_hit=np.random.Generator(np.random.PCG64(hit_seq)).random(
                    len(market.product_ids)
                )
                < inc.depth,
                seed=seed,
            )
        )
    return out


def _mask(names: tuple[str, ...], chosen: tuple[str, ...]) -> Arr:
    return np.array([not chosen or name in chosen for name in names], dtype=bool)


def _pick(rng: np.random.Generator, candidates: Arr, depth: float) -> Arr:
    """Each candidate with probability ``depth`` (draws only for candidates)."""
    out = candidates.copy()
    idx = np.flatnonzero(candidates)
    if depth < 1.0 and len(idx):
        out[idx] = rng.random(len(idx)) < depth
    return out


def _share(weights: list[float], ok: Arr) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float(w[ok].sum() / w.sum())


def _choose(rng: np.random.Generator, weights: Arr, n: int) -> Arr:
    cdf = np.cumsum(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), len(weights) - 1)


def _move_off_sessionless(market: Market, s: Sessions) -> None:
    """Spike sessions send session ids, so they must not belong to sessionless users."""
    lo, count = market.user_offset[s.country], market.user_count[s.country]
    bad = is_sessionless(market, s.user)
    while bad.any():
        s.user[bad] = lo[bad] + (s.user[bad] - lo[bad] + 1) % count[bad]
        bad = is_sessionless(market, s.user)
