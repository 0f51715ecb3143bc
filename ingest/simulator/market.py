"""The marketplace built from a :class:`MarketConfig`: arrays the session generator indexes.

Countries (currency, time zone, traffic weight, price level), user blocks per country, a
catalog whose product popularity is Zipf within each category, local prices with
currency-typical rounding (``49.99`` EUR, ``499`` SEK, ``12990`` HUF), devices with user
agents, channels, and the weekly seasonality curve. Building is deterministic: the catalog
comes from ``catalog_seed``, so product ids and prices are the same for every run seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.fx import load_fx_rates
from ingest.simulator.config import MarketConfig
from ingest.simulator.defaults import REFERRERS, USER_AGENTS

__all__ = ["Market", "build_market", "market_for", "round_prices"]

Arr = npt.NDArray[Any]
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_CENTS_99 = frozenset({"EUR", "GBP", "PLN", "RON", "BGN", "USD"})
_WHOLE_9 = frozenset({"SEK", "DKK", "NOK", "CZK"})


@dataclass(frozen=True, eq=False)
class Market:
    """Everything the generator looks up, as numpy arrays and preformatted JSON fragments."""

    config: MarketConfig
    # countries
    codes: tuple[str, ...]
    currencies: tuple[str, ...]
    country_weight: Arr  # normalised shares of sessions
    utc_offset_ms: Arr  # standard offsets
    eur_per_unit: Arr  # FX at the run's start, for calibration only
    user_offset: Arr  # first user index of each country's block
    user_count: Arr
    active_count: Arr  # returning-user pool at the front of each block
    # devices and channels
    device_names: tuple[str, ...]
    device_cdf: Arr
    device_conv: Arr
    channel_names: tuple[str, ...]
    channel_cdf: Arr
    channel_conv: Arr
    conv_norm: float  # E[device multiplier x channel multiplier]
    user_agents: tuple[str, ...]
    ua_first: Arr  # per device: first index into user_agents
    ua_count: Arr
    # catalog
    category_names: tuple[str, ...]
    category_cdf: Arr
    category_first: Arr  # products are stored in category blocks, most popular first
    category_stop: Arr
    product_category: Arr
    product_ids: tuple[str, ...]
    popularity_cdf: Arr  # block c holds c + cumulative share, so one searchsorted samples all
    local_price: Arr  # [country, product] in local currency, rounded
    # seasonality: 7 x 24 knots (Monday 00:00 local first), weekly mean 1
    season_knots: Arr

    def sample_products(self, category: Arr, u: Arr) -> Arr:
        """Zipf-popular products of the given categories, from uniforms ``u`` in [0, 1)."""
        idx = np.searchsorted(self.popularity_cdf, category + u, side="right")
        return np.minimum(idx, self.category_stop[category] - 1)

    def season(self, utc_ms: int, offsets_ms: Arr) -> Arr:
        """Seasonal factor (weekly mean 1) at local times ``utc_ms + offsets_ms``."""
        local = utc_ms + offsets_ms
        day = local // _DAY_MS
        hour = (local - day * _DAY_MS) / _HOUR_MS
        h0 = hour.astype(np.int64)
        knot = ((day + 3) % 7) * 24 + h0  # 1970-01-01 was a Thursday (index 3)
        frac = hour - h0
        knots = self.season_knots
        return knots[knot] * (1.0 - frac) + knots[(knot + 1) % 168] * frac

    def referrers(self, channel: int) -> tuple[str, ...]:
        """Landing-page referrers of a channel (empty: none sent)."""
        return REFERRERS.get(self.channel_names[channel], ())


def _cdf(weights: list[float]) -> Arr:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def round_prices(values: Arr, currency: str) -> Arr:
    """Shelf prices as shops in that currency write them (charm endings)."""
    v = np.maximum(values, 0.5)
    if currency in _CENTS_99:
        out = np.where(v < 2, np.round(v, 2), np.ceil(v) - 0.01)
    elif currency == "CHF":
        out = np.where(v < 2, np.round(v, 2), np.ceil(v) - 0.10)
    elif currency in _WHOLE_9:
        out = np.where(v < 10, np.maximum(np.round(v), 1.0), np.ceil(v / 10) * 10 - 1)
    elif currency == "HUF":
        out = np.where(v < 100, np.ceil(v / 10) * 10, np.ceil(v / 100) * 100 - 10)
    else:
        out = v
    return np.round(out, 2)


@lru_cache(maxsize=8)
def build_market(config: MarketConfig, day: int) -> Market:
    """The market for a run whose start falls on epoch ``day`` (prices use that day's FX)."""
    rng = np.random.Generator(np.random.PCG64(config.catalog_seed))
    countries = config.countries
    fx = load_fx_rates(config.fx_file)
    missing = sorted({c.currency for c in countries} - fx.currencies)
    if missing:
        raise ValueError(f"market currencies missing from the FX table: {', '.join(missing)}")
    eur = np.array([fx.rate(c.currency, day * _DAY_MS) for c in countries])
    weight = np.array([c.weight for c in countries], dtype=np.float64)
    weight /= weight.sum()
    counts = np.maximum(np.floor(weight * config.users).astype(np.int64), 1)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    active = np.maximum((counts * config.active_user_share).astype(np.int64), 1)

    dev_share = [s for _, s, _ in config.devices]
    dev_conv = np.array([m for _, _, m in config.devices])
    ch_share = [s for _, s, _ in config.channels]
    ch_conv = np.array([m for _, _, m in config.channels])
    # Mean multiplier, so device/channel differences leave overall conversion unchanged.
    norm = float(_shares(dev_share) @ dev_conv * (_shares(ch_share) @ ch_conv))
    device_names = tuple(d for d, _, _ in config.devices)
    agents: list[str] = []
    ua_first, ua_count = [], []
    for name in device_names:
        ua_first.append(len(agents))
        agents.extend(USER_AGENTS[name])
        ua_count.append(len(USER_AGENTS[name]))

    cats = config.categories
    cat_w = np.array([c.weight for c in cats], dtype=np.float64)
    sizes = np.maximum(np.floor(cat_w / cat_w.sum() * config.products).astype(np.int64), 2)
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    stop = first + sizes
    n_products = int(stop[-1])
    product_category = np.repeat(np.arange(len(cats)), sizes)
    pop_cdf = np.empty(n_products, dtype=np.float64)
    eur_price = np.empty(n_products, dtype=np.float64)
    mean_price = 0.0
    for c, spec in enumerate(cats):
        ranks = np.arange(1, sizes[c] + 1, dtype=np.float64)
        pop = ranks**-config.zipf_exponent
        pop /= pop.sum()
        block = slice(int(first[c]), int(stop[c]))
        pop_cdf[block] = c + np.cumsum(pop)
        pop_cdf[int(stop[c]) - 1] = c + 1.0
        prices = spec.median_eur * np.exp(spec.price_sigma * rng.standard_normal(int(sizes[c])))
        eur_price[block] = prices
        mean_price += cat_w[c] / cat_w.sum() * float(np.dot(pop, prices))
    # Product ids are a shuffled range so an id says nothing about category or rank.
    numbers = rng.permutation(n_products) + 100_000
    product_ids = tuple(f"p{n}" for n in numbers.tolist())

    # Level prices so that a basket of mean size costs aov_eur (after local rounding).
    level = np.array([c.price_level for c in countries])
    level /= float(np.dot(weight, level))
    purchase_share = np.zeros(n_products)
    for c in range(len(cats)):
        block = slice(int(first[c]), int(stop[c]))
        share = np.diff(pop_cdf[block], prepend=float(c))
        purchase_share[block] = cat_w[c] / cat_w.sum() * share
    target_item = config.aov_eur / config.mean_items_per_order()
    scale = target_item / mean_price
    local = np.empty((len(countries), n_products))
    for _ in range(3):  # rounding moves the mean a little; re-aim twice
        for i, country in enumerate(countries):
            local[i] = round_prices(eur_price * scale * level[i] / eur[i], country.currency)
        expected = float(weight @ (local * eur[:, None]) @ purchase_share)
        scale *= target_item / expected

    knots = np.array(
        [
            config.day_factors[d] * (config.hourly_weekend if d >= 5 else config.hourly_weekday)[h]
            for d in range(7)
            for h in range(24)
        ]
    )
    knots /= knots.mean()
    return Market(
        config=config,
        codes=tuple(c.code for c in countries),
        currencies=tuple(c.currency for c in countries),
        country_weight=weight,
        utc_offset_ms=np.array([c.utc_offset_h * _HOUR_MS for c in countries], dtype=np.int64),
        eur_per_unit=eur,
        user_offset=offsets,
        user_count=counts,
        active_count=active,
        device_names=device_names,
        device_cdf=_cdf(dev_share),
        device_conv=dev_conv,
        channel_names=tuple(c for c, _, _ in config.channels),
        channel_cdf=_cdf(ch_share),
        channel_conv=ch_conv,
        conv_norm=norm,
        user_agents=tuple(agents),
        ua_first=np.array(ua_first, dtype=np.int64),
        ua_count=np.array(ua_count, dtype=np.int64),
        category_names=tuple(c.name for c in cats),
        category_cdf=_cdf(list(cat_w)),
        category_first=first,
        category_stop=stop,
        product_category=product_category,
        product_ids=product_ids,
        popularity_cdf=pop_cdf,
        local_price=local,
        season_knots=knots,
    )


def market_for(config: MarketConfig, start_ms: int) -> Market:
    """:func:`build_market` for a run starting at ``start_ms``."""
    return build_market(config, start_ms // _DAY_MS)


def _shares(shares: list[float]) -> Arr:
    arr = np.asarray(shares, dtype=np.float64)
    return arr / arr.sum()
