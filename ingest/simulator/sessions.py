"""The session model: who arrives, how they move through the funnel, and when.

Everything is drawn in vectorised numpy batches (one call per quantity for all sessions of
a time chunk). A session lands on a page, browses (page views, searches, product views of
one focus category, Zipf-popular), may add products to the cart (each add follows a view
of the same product) and remove some, may begin checkout, and may purchase what is left.
Funnel rates are calibrated so the session shares in :class:`MarketConfig` hold exactly in
expectation; conversion varies by device and channel around that mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.simulator.market import Market

__all__ = [
    "ADD_TO_CART",
    "BEGIN_CHECKOUT",
    "PAGE_VIEW",
    "PRODUCT_VIEW",
    "PURCHASE",
    "REMOVE_FROM_CART",
    "SEARCH",
    "Cart",
    "Events",
    "SessionlessGuard",
    "Sessions",
    "build_events",
    "draw_sessions",
]

Arr = npt.NDArray[Any]
PAGE_VIEW, SEARCH, PRODUCT_VIEW, ADD_TO_CART, REMOVE_FROM_CART, BEGIN_CHECKOUT, PURCHASE = range(7)
PAGE_VARIANTS = 6  # non-landing page views pick one of these (see encode.page_fragments)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Sessions:
    """Sessions of one chunk (arrays of equal length), ordered by start."""

    prefix: str  # id namespace: session id = prefix + hex(sn)
    sn: Arr
    start: Arr  # epoch ms
    country: Arr
    user: Arr
    device: Arr
    ua: Arr  # -1: the events say `device`; else an index into Market.user_agents
    channel: Arr
    category: Arr  # the one category this session shops in
    sessionless: Arr  # events carry no session_id
    landing: Arr  # uniform draw choosing the landing page / referrer
    bot: bool = False
    end: Arr = field(default_factory=lambda: np.empty(0, np.int64))  # last event ts
    checkout_ts: Arr = field(default_factory=lambda: np.empty(0, np.int64))  # -1: none
    purchase_ts: Arr = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.sn)


@dataclass
class Events:
    """Events of a chunk's sessions, ordered by (session, time)."""

    sess: Arr
    etype: Arr
    product: Arr  # -1 when not a product event
    qty: Arr
    aux: Arr  # page variant (-1 landing) / query index
    aux2: Arr  # search results_count
    k: Arr  # position within the session (event id suffix)
    ts: Arr


@dataclass
class Cart:
    """Cart lines (one per add_to_cart), grouped by session."""

    sess: Arr
    product: Arr
    qty: Arr
    removed: Arr
    first: Arr  # per session: index of its first line
    count: Arr  # per session: number of lines


def is_sessionless(market: Market, user: Arr) -> Arr:
    """Users (a fixed hash-chosen share) whose events carry no session_id."""
    h = (user.astype(np.uint64) * _GOLDEN) >> np.uint64(11)
    return h.astype(np.float64) / 2.0**53 < market.config.sessionless_share


def draw_sessions(
    rng: np.random.Generator,
    market: Market,
    start: Arr,
    country: Arr,
    sn: Arr,
    prefix: str,
    *,
    force: dict[str, Arr] | None = None,
) -> Sessions:
    """Draw the attributes of ``len(start)`` sessions.

    ``force`` replaces the drawn ``device``/``channel``/``category`` (the draws still
    happen, so the random stream does not depend on what is forced).
    """
    n = len(start)
    cfg = market.config
    force = force or {}
    u = rng.random((8, n))
    idx = np.where(
        u[0] < cfg.returning_share,
        (u[1] * market.active_count[country]).astype(np.int64),
        (u[1] * market.user_count[country]).astype(np.int64),
    )
    user = market.user_offset[country] + idx
    device = force.get("device", np.searchsorted(market.device_cdf, u[2], side="right"))
    ua = np.where(
        u[3] < cfg.ua_only_share,
        market.ua_first[device] + (u[4] * market.ua_count[device]).astype(np.int64),
        -1,
    )
    channel = force.get("channel", np.searchsorted(market.channel_cdf, u[5], side="right"))
    category = force.get("category", np.searchsorted(market.category_cdf, u[6], side="right"))
    return Sessions(
        prefix=prefix,
        sn=sn,
        start=start,
        country=country,
        user=user,
        device=device,
        ua=ua,
        channel=channel,
        category=category,
        sessionless=is_sessionless(market, user),
        landing=u[7],
    )


def _segments(counts: Arr) -> Arr:
    """Session index of each item when session i has counts[i] items."""
    return np.repeat(np.arange(len(counts)), counts)


def build_events(rng: np.random.Generator, market: Market, s: Sessions) -> tuple[Events, Cart]:
    """Walk every session through the funnel; fills ``s.end/checkout_ts/purchase_ts``."""
    cfg = market.config
    n = len(s)
    if s.bot:
        return _bot_events(rng, market, s)
    v = rng.random((4, n))
    bounce = v[0] < cfg.bounce_rate
    engaged = ~bounce
    p_conv = (
        cfg.conversion_rate
        / max(1.0 - cfg.bounce_rate, 1e-9)
        * market.device_conv[s.device]
        * market.channel_conv[s.channel]
        / market.conv_norm
    )
    conv = engaged & (v[1] < p_conv)
    # Non-converters cart / check out with the probabilities that make the session
    # shares come out at add_to_cart_rate / checkout_rate.
    q_cart = _ratio(
        cfg.add_to_cart_rate - cfg.conversion_rate, 1.0 - cfg.bounce_rate - cfg.conversion_rate
    )
    q_checkout = _ratio(
        cfg.checkout_rate - cfg.conversion_rate, cfg.add_to_cart_rate - cfg.conversion_rate
    )
    cart = conv | (engaged & (v[2] < q_cart))
    checkout = conv | (cart & (v[3] < q_checkout))
    n_pv = rng.poisson(cfg.extra_page_views, n) * engaged
    n_search = rng.poisson(cfg.searches, n) * engaged
    n_browse = (1 + rng.poisson(cfg.browse_product_views - 1.0, n)) * engaged
    n_add = (1 + rng.poisson(cfg.extra_cart_adds, n)) * cart

    # Cart lines; a session that checks out keeps its first line so the order is non-empty.
    item_sess = _segments(n_add)
    m = len(item_sess)
    first_line = np.cumsum(n_add) - n_add
    w = rng.random((3, m))
    item_product = market.sample_products(s.category[item_sess], w[0])
    qty_cdf = np.cumsum(cfg.quantity_weights) / sum(cfg.quantity_weights)
    item_qty = 1 + np.minimum(np.searchsorted(qty_cdf, w[1], side="right"), len(qty_cdf) - 1)
    keep_first = checkout[item_sess] & (np.arange(m) == first_line[item_sess])
    removed = (w[2] < cfg.remove_prob) & ~keep_first
    cart_lines = Cart(item_sess, item_product, item_qty, removed, first_line, n_add)

    pv_sess, search_sess, browse_sess = _segments(n_pv), _segments(n_search), _segments(n_browse)
    rm_lines = np.flatnonzero(removed)
    n_keys = len(pv_sess) + len(search_sess) + len(browse_sess) + m + len(rm_lines)
    keys = rng.random(n_keys)
    cuts = np.cumsum([len(pv_sess), len(search_sess), len(browse_sess), m])
    k_pv, k_search, k_browse, k_cart, k_rm = np.split(keys, cuts)
    k_cart = k_cart * 0.97  # leave room for the add and a later remove before checkout
    k_add = k_cart + 1e-6
    k_rm = k_add[rm_lines] + (1.0 - k_add[rm_lines]) * k_rm
    co_sess, pu_sess = np.flatnonzero(checkout), np.flatnonzero(conv)

    page_variant = rng.integers(0, PAGE_VARIANTS, len(pv_sess))
    query = rng.integers(0, 1 << 30, len(search_sess))
    results = np.where(
        rng.random(len(search_sess)) < 0.06,
        0,
        np.exp(np.log(120.0) + 1.2 * rng.standard_normal(len(search_sess))).astype(np.int64),
    )
    browse_product = market.sample_products(s.category[browse_sess], rng.random(len(browse_sess)))

    def col(*parts: Arr) -> Arr:
        return np.concatenate(parts)

    def const(value: int, size: int) -> Arr:
        return np.full(size, value, dtype=np.int64)

    nrm, nco, npu = len(rm_lines), len(co_sess), len(pu_sess)
    sizes = (n, len(pv_sess), len(search_sess), len(browse_sess), m, m, nrm, nco, npu)
    sess = col(
        np.arange(n), pv_sess, search_sess, browse_sess, item_sess, item_sess,
        item_sess[rm_lines], co_sess, pu_sess,
    )  # fmt: skip
    etype = np.repeat(
        np.array([PAGE_VIEW, PAGE_VIEW, SEARCH, PRODUCT_VIEW, PRODUCT_VIEW, ADD_TO_CART,
                  REMOVE_FROM_CART, BEGIN_CHECKOUT, PURCHASE]),
        sizes,
    )  # fmt: skip
    key = col(
        np.full(n, -1.0), k_pv, k_search, k_browse, k_cart, k_add, k_rm,
        np.full(nco, 1.5), np.full(npu, 2.0),
    )  # fmt: skip
    product = col(
        const(-1, n + len(pv_sess) + len(search_sess)), browse_product, item_product,
        item_product, item_product[rm_lines], const(-1, nco + npu),
    )  # fmt: skip
    qty = col(const(1, n + len(pv_sess) + len(search_sess) + len(browse_sess) + m),
              item_qty, item_qty[rm_lines], const(1, nco + npu))  # fmt: skip
    rest = const(0, len(key) - n - len(pv_sess) - len(query))
    aux = col(const(-1, n), page_variant, query, rest)
    aux2 = col(const(0, n + len(pv_sess)), results, rest)

    order = np.lexsort((key, sess))
    sess, etype, product, qty = sess[order], etype[order], product[order], qty[order]
    aux, aux2 = aux[order], aux2[order]
    total = len(sess)
    first = np.searchsorted(sess, np.arange(n))
    k = np.arange(total) - first[sess]
    # Dwell time before each event: log-normal around a per-type median, capped well
    # below the 30-minute session timeout so a session never splits in two.
    medians = np.asarray(cfg.gap_median_s)[etype]
    gap = np.minimum(medians * np.exp(cfg.gap_sigma * rng.standard_normal(total)), cfg.max_gap_s)
    gap[first] = 0.0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first][sess]
    ts = s.start[sess] + (elapsed * 1000.0).astype(np.int64)
    events = Events(sess, etype, product, qty, aux, aux2, k, ts)
    _session_times(s, events, first)
    return events, cart_lines


def _bot_events(rng: np.random.Generator, market: Market, s: Sessions) -> tuple[Events, Cart]:
    """Bots (scrapers) fetch one product page per session and leave."""
    n = len(s)
    sess = np.arange(n)
    product = market.sample_products(s.category, rng.random(n))
    ones, zeros = np.ones(n, np.int64), np.zeros(n, np.int64)
    events = Events(sess, np.full(n, PRODUCT_VIEW), product, ones, zeros, zeros, zeros, s.start)
    _session_times(s, events, sess)
    empty = np.empty(0, np.int64)
    return events, Cart(empty, empty, empty, empty.astype(bool), zeros, zeros)


def _session_times(s: Sessions, events: Events, first: Arr) -> None:
    n = len(s)
    last = np.append(first[1:], len(events.sess)) - 1
    s.end = events.ts[last] if n else np.empty(0, np.int64)
    s.checkout_ts = np.full(n, -1, np.int64)
    s.purchase_ts = np.full(n, -1, np.int64)
    co = events.etype == BEGIN_CHECKOUT
    s.checkout_ts[events.sess[co]] = events.ts[co]
    pu = events.etype == PURCHASE
    s.purchase_ts[events.sess[pu]] = events.ts[pu]


def _ratio(num: float, den: float) -> float:
    return min(max(num / den, 0.0), 1.0) if den > 0 else 0.0


class SessionlessGuard:
    """Keeps sessionless users' sessions > ``session_gap_s`` apart.

    Without a session_id the pipeline cuts sessions at 30-minute gaps, so two sessions of
    one such user closer than that would merge. A session that would come too close is
    handed to the next user of the same country block who does send session ids.
    """

    def __init__(self, market: Market) -> None:
        self._market = market
        self._gap_ms = int(market.config.session_gap_s * 1000)
        self._last_end: dict[int, int] = {}

    def resolve(self, s: Sessions) -> None:
        """Fix ``s.user``/``s.sessionless`` in place (``s`` ordered by start)."""
        market, last_end, gap = self._market, self._last_end, self._gap_ms
        for i in np.flatnonzero(s.sessionless).tolist():
            user, start = int(s.user[i]), int(s.start[i])
            previous = last_end.get(user)
            if previous is None or start - previous > gap:
                last_end[user] = int(s.end[i])
                continue
            c = int(s.country[i])
            lo, count = int(market.user_offset[c]), int(market.user_count[c])
            while True:
                user = lo + (user - lo + 1) % count
                if not is_sessionless(market, np.array([user]))[0]:
                    break
            s.user[i] = user
            s.sessionless[i] = False

    def prune(self, now_ms: int) -> None:
        """Forget users whose last session ended long enough ago to never conflict."""
        horizon = now_ms - self._gap_ms
        self._last_end = {u: e for u, e in self._last_end.items() if e >= horizon}
