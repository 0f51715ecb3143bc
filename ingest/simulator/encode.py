"""Events to JSON lines, fast: preformatted fragments joined by one f-string per event.

The hot path of the simulator. Everything that repeats (a session's user/country/device/
channel, a product's id/category/local price, page paths) is formatted once and looked up
with numpy fancy indexing; only the parts unique to an event (id suffix, ts, payload
choice) are formatted per event. Output is compact JSON with ``ts`` in epoch ms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.simulator.defaults import EVENT_TYPES
from ingest.simulator.market import Market
from ingest.simulator.sessions import (
    BEGIN_CHECKOUT,
    PAGE_VARIANTS,
    PAGE_VIEW,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    SEARCH,
    Cart,
    Events,
    Sessions,
)

__all__ = ["Encoder"]

Arr = npt.NDArray[Any]
_MAX_REFERRERS = 6  # landing variants per (channel, category); referrer lists divide it
_UTM = {
    "paid": "?utm_source=google&utm_medium=cpc",
    "email": "?utm_source=newsletter&utm_medium=email",
    "social": "?utm_source=social&utm_medium=social",
}


def _objects(values: list[str]) -> Arr:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class Encoder:
    """Formats the events of one market; caches product fragments across chunks."""

    def __init__(self, market: Market) -> None:
        self._m = market
        self._n_products = len(market.product_ids)
        self._country = _objects([f'"country":"{c}",' for c in market.codes])
        self._device_or_ua = _objects(
            [f'"device":"{d}",' for d in market.device_names]
            + [f'"user_agent":"{ua}",' for ua in market.user_agents]
        )
        self._channel = _objects([f'"channel":"{c}"' for c in market.channel_names])
        self._types = _objects(list(EVENT_TYPES))
        pages = []
        for cat in market.category_names:
            paths = ("/", f"/c/{cat}", f"/c/{cat}?page=2", "/deals", "/cart", "/account")
            assert len(paths) == PAGE_VARIANTS
            pages += [f',"page":"{p}"' for p in paths]
        self._pages = _objects(pages)
        self._landings = _objects(
            [
                self._landing_text(ch, cat, pick)
                for ch in range(len(market.channel_names))
                for cat in range(len(market.category_names))
                for pick in range(_MAX_REFERRERS)
            ]
        )
        self._queries = [c.queries for c in market.config.categories]
        self._qty = _objects([f',"quantity":{q}' for q in range(64)])
        self._product = np.full(len(market.codes) * self._n_products, None, dtype=object)
        self._filled = np.zeros(len(self._product), dtype=bool)
        self._suffix = _objects([f"-{k:x}" for k in range(512)])

    def lines(
        self,
        s: Sessions,
        e: Events,
        cart: Cart,
        sel: Arr,
        price_factor: Arr,
        line_factor: tuple[Arr, Arr],
    ) -> Arr:
        """JSON text of events ``sel`` (object array of str, aligned with ``sel``).

        ``price_factor`` multiplies the price of each selected product event;
        ``line_factor`` = (at checkout, at purchase) multipliers of each cart line.
        """
        keys, ctx = self._session_text(s, np.unique(e.sess[sel]))
        sess, et = e.sess[sel], e.etype[sel]
        payload = np.empty(len(sel), dtype=object)

        is_pv = et == PAGE_VIEW
        aux = e.aux[sel]
        landing = np.flatnonzero(is_pv & (aux < 0))
        other = np.flatnonzero(is_pv & (aux >= 0))
        payload[other] = self._pages[s.category[sess[other]] * PAGE_VARIANTS + aux[other]]
        payload[landing] = self._landing(s, sess[landing])

        search = np.flatnonzero(et == SEARCH)
        if len(search):
            payload[search] = self._search(s, sess[search], aux[search], e.aux2[sel][search])

        prod = np.flatnonzero((et >= PRODUCT_VIEW) & (et <= REMOVE_FROM_CART))
        if len(prod):
            payload[prod] = (
                self._products(s.country[sess[prod]], e.product[sel][prod], price_factor[prod])
                + self._qty[e.qty[sel][prod]]
            )

        for kind, factor in ((BEGIN_CHECKOUT, line_factor[0]), (PURCHASE, line_factor[1])):
            rows = np.flatnonzero(et == kind)
            if len(rows):
                payload[rows] = self._order(s, cart, sess[rows], keys, factor, kind == PURCHASE)

        k = e.k[sel]
        if k.max(initial=0) >= len(self._suffix):
            self._suffix = _objects([f"-{i:x}" for i in range(int(k.max()) * 2)])
        event_id = keys[sess] + self._suffix[k]
        return _objects(
            [
                f'{{"event_id":"{i}","type":"{t}","ts":{ts},{c}{p}}}'
                for i, t, ts, c, p in zip(
                    event_id.tolist(),
                    self._types[et].tolist(),
                    e.ts[sel].tolist(),
                    ctx[sess].tolist(),
                    payload.tolist(),
                    strict=True,
                )
            ]
        )

    def _session_text(self, s: Sessions, used: Arr) -> tuple[Arr, Arr]:
        """Per session (only ``used`` ones are filled): its id, and its context fields."""
        m = self._m
        prefix = s.prefix
        keys = [f"{prefix}{n:x}" for n in s.sn[used].tolist()]
        sid = _objects(
            [
                "" if anonymous else f'"session_id":"{k}",'
                for k, anonymous in zip(keys, s.sessionless[used].tolist(), strict=True)
            ]
        )
        device = np.where(s.ua[used] >= 0, len(m.device_names) + s.ua[used], s.device[used])
        context = (
            _objects([f'"user_id":"u{u}",' for u in s.user[used].tolist()])
            + sid
            + self._country[s.country[used]]
            + self._device_or_ua[device]
            + self._channel[s.channel[used]]
        )
        key_of = np.empty(len(s), dtype=object)
        key_of[used] = keys
        ctx_of = np.empty(len(s), dtype=object)
        ctx_of[used] = context
        return key_of, ctx_of

    def _landing(self, s: Sessions, rows: Arr) -> Arr:
        pick = (s.landing[rows] * _MAX_REFERRERS).astype(np.int64)
        cats = len(self._m.category_names)
        return self._landings[(s.channel[rows] * cats + s.category[rows]) * _MAX_REFERRERS + pick]

    def _landing_text(self, channel: int, category: int, pick: int) -> str:
        """Landing page (with campaign tags) and referrer; ``pick`` chooses the referrer."""
        m = self._m
        name = m.channel_names[channel]
        path = "/" if name == "direct" else f"/c/{m.category_names[category]}"
        text = f',"page":"{path}{_UTM.get(name, "")}"'
        referrers = m.referrers(channel)
        if referrers:
            text += f',"referrer":"{referrers[pick * len(referrers) // _MAX_REFERRERS]}"'
        return text

    def _search(self, s: Sessions, rows: Arr, query: Arr, results: Arr) -> list[str]:
        queries = self._queries
        return [
            f',"page":"/search","query":"{queries[c][q % len(queries[c])]}","results_count":{r}'
            for c, q, r in zip(
                s.category[rows].tolist(), query.tolist(), results.tolist(), strict=True
            )
        ]

    def _products(self, country: Arr, product: Arr, factor: Arr) -> Arr:
        """Product fragments from a lazily filled (country, product) table."""
        key = country * self._n_products + product
        table = self._product
        missing = ~self._filled[key]
        if missing.any():
            new = np.unique(key[missing])
            self._filled[new] = True
            table[new] = [
                self._product_text(c, p, 1.0)
                for c, p in zip(
                    (new // self._n_products).tolist(), (new % self._n_products).tolist(),
                    strict=True,
                )
            ]  # fmt: skip
        frags = table[key]
        odd = np.flatnonzero(factor != 1.0)
        if len(odd):
            frags[odd] = [
                self._product_text(c, p, f)
                for c, p, f in zip(
                    country[odd].tolist(), product[odd].tolist(), factor[odd].tolist(),
                    strict=True,
                )
            ]  # fmt: skip
        return frags

    def _product_text(self, country: int, product: int, factor: float) -> str:
        m = self._m
        pid = m.product_ids[product]
        price = self._price(country, product, factor)
        cat = m.category_names[m.product_category[product]]
        return (
            f',"page":"/p/{pid}","product_id":"{pid}","category":"{cat}",'
            f'"price":{price},"currency":"{m.currencies[country]}"'
        )

    def _price(self, country: int, product: int, factor: float) -> float:
        return round(float(self._m.local_price[country, product]) * factor, 2)

    def _order(
        self, s: Sessions, cart: Cart, rows: Arr, keys: Arr, factor: Arr, purchase: bool
    ) -> list[str]:
        """begin_checkout (cart_value) or purchase (order) payloads of sessions ``rows``."""
        m = self._m
        out = []
        for row in rows.tolist():
            country = int(s.country[row])
            first, count = int(cart.first[row]), int(cart.count[row])
            lines: dict[int, list[float]] = {}  # product -> [price, quantity]
            for j in range(first, first + count):
                if cart.removed[j]:
                    continue
                product = int(cart.product[j])
                price = self._price(country, product, float(factor[j]))
                line = lines.setdefault(product, [price, 0])
                line[1] += int(cart.qty[j])
            total = round(sum(p * q for p, q in lines.values()), 2)
            currency = m.currencies[country]
            if not purchase:
                out.append(f',"page":"/checkout","cart_value":{total},"currency":"{currency}"')
                continue
            items = ",".join(
                f'{{"product_id":"{m.product_ids[p]}",'
                f'"category":"{m.category_names[m.product_category[p]]}",'
                f'"price":{price},"quantity":{int(qty)}}}'
                for p, (price, qty) in lines.items()
            )
            out.append(
                f',"page":"/checkout/confirmation","order_id":"o{keys[row]}","revenue":{total},'
                f'"currency":"{currency}","items":[{items}]'
            )
        return out
