"""Per-bucket metric series straight from a simulation run, for fast backtests.

Running a week of traffic through broker, flow and warehouse takes hours; the detector
only needs the per-bucket numbers. `simulate_counts` runs the real simulator
(`ingest.simulator`) but, instead of encoding every event to JSON, reads its event arrays
and adds them up per bucket and slice exactly as METRICS.md defines the watched metrics:
distinct sessions with an event in the bucket, page views, orders, revenue in EUR (the
purchase events *are* encoded, so revenue is what the pipeline would read), sessions with
a purchase or an add-to-cart. Re-sent copies (``duplicates``) are left out as the flow's
de-duplication does; ``late_events`` keep their event time, as in the warehouse.

The slice of an event is its session's country, device and channel (the simulator keeps
them fixed per session, as the flow does from the first event). An integration test
checks these numbers against the real pipeline's warehouse answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ingest.fx import FxRates, load_fx_rates
from ingest.simulator import SimConfig
from ingest.simulator.effects import Group
from ingest.simulator.encode import Encoder
from ingest.simulator.engine import Run
from ingest.simulator.sessions import (
    ADD_TO_CART,
    BEGIN_CHECKOUT,
    PAGE_VIEW,
    PRODUCT_VIEW,
    PURCHASE,
)
from insights.series import INTERVAL_SECONDS, Obs, SeriesKey, Slice, Volume

__all__ = ["QUANTITIES", "SimCounts", "simulate_counts"]

Arr = npt.NDArray[Any]
QUANTITIES = ("sessions", "pageviews", "orders", "revenue", "buyers", "carters", "checkouters")


@dataclass(frozen=True)
class SimCounts:
    """Base counts per bucket and slice for one interval: ``counts[q][bucket, slice]``."""

    interval: str
    origin: datetime  # start of bucket 0
    slices: tuple[Slice, ...]
    counts: dict[str, Arr]

    @property
    def buckets(self) -> int:
        return int(self.counts["sessions"].shape[0])

    def bucket_start(self, i: int) -> datetime:
        return self.origin + timedelta(seconds=INTERVAL_SECONDS[self.interval] * i)

    def metric(self, metric: str, col: int) -> tuple[Arr, Arr | None]:
        """Values (NaN where a ratio is undefined) and weights of one watched metric."""
        c = {q: a[:, col] for q, a in self.counts.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "conversion_rate":
                return c["buyers"] / np.where(c["sessions"] > 0, c["sessions"], np.nan), c[
                    "sessions"
                ]
            if metric == "add_to_cart_rate":
                return c["carters"] / np.where(c["sessions"] > 0, c["sessions"], np.nan), c[
                    "sessions"
                ]
            if metric == "aov":
                return c["revenue"] / np.where(c["orders"] > 0, c["orders"], np.nan), c["orders"]
        return c[metric].astype(np.float64), None

    def funnel(self, sl: Slice, start: datetime, end: datetime) -> dict[str, float] | None:
        """`insights.attribution.Funnel` over the buckets in ``[start, end)``: per-bucket
        sessions, and those with an add-to-cart, a checkout, a purchase, summed."""
        if sl not in self.slices:
            return None
        step = timedelta(seconds=INTERVAL_SECONDS[self.interval])
        lo = max(int((start - self.origin) / step), 0)
        hi = min(int((end - self.origin) / step), self.buckets)
        if hi <= lo:
            return None
        col = self.slices.index(sl)
        names = {"sessions": "sessions", "carts": "carters", "checkouts": "checkouters",
                 "purchases": "buyers"}  # fmt: skip
        return {k: float(self.counts[q][lo:hi, col].sum()) for k, q in names.items()}

    def volumes(self) -> dict[Slice, Volume]:
        """Median sessions and orders per bucket of each slice (to choose the series)."""
        sessions = np.median(self.counts["sessions"], axis=0)
        orders = np.median(self.counts["orders"], axis=0)
        return {
            sl: Volume(float(s), float(o))
            for sl, s, o in zip(self.slices, sessions, orders, strict=True)
        }

    def observations(
        self, keys: list[SeriesKey]
    ) -> Iterator[tuple[datetime, dict[SeriesKey, Obs]]]:
        """Per bucket in time order: the observation of every series of ``keys``."""
        table = {k: self.metric(k.metric, self.slices.index(k.slice)) for k in keys}
        for i in range(self.buckets):
            row = {}
            for key, (values, weights) in table.items():
                v = float(values[i])
                w = None if weights is None else float(weights[i])
                row[key] = Obs(None if v != v else v, w)
            yield self.bucket_start(i), row


class _CountingRun(Run):
    """The simulator run, adding its sent events up instead of encoding them."""

    def __init__(self, config: SimConfig, fx: FxRates, intervals: tuple[str, ...]) -> None:
        super().__init__(config)
        m = self.market
        self.fx = fx
        self.slices: tuple[Slice, ...] = (
            (),
            *((("country", c),) for c in m.codes),
            *((("device", d),) for d in m.device_names),
            *((("channel", c),) for c in m.channel_names),
        )
        self.intervals = intervals
        self.origin = {i: _floor(self.start_ms, INTERVAL_SECONDS[i] * 1000) for i in intervals}
        self.n_buckets = {
            i: -(-(self.end_ms - self.origin[i]) // (INTERVAL_SECONDS[i] * 1000)) for i in intervals
        }
        width = len(self.slices)
        self.acc = {
            i: {q: np.zeros(self.n_buckets[i] * width) for q in QUANTITIES} for i in intervals
        }

    def _park(
        self, encoder: Encoder, g: Group, pending: dict[int, list[tuple[Arr, Arr]]], t0: int,
        step: int,
    ) -> None:  # fmt: skip
        sel = np.flatnonzero(g.keep)
        if not len(sel):
            return
        m, s, e = self.market, g.s, g.e
        n_c, n_d = len(m.codes), len(m.device_names)
        cols = np.stack(
            [np.zeros(len(s), np.int64), 1 + s.country, 1 + n_c + s.device,
             1 + n_c + n_d + s.channel]
        )  # fmt: skip
        ts, sess, et = e.ts[sel], e.sess[sel], e.etype[sel]
        buy = et == PURCHASE
        revenue = self._revenue(encoder, g, sel[buy])
        for interval in self.intervals:
            width_ms = INTERVAL_SECONDS[interval] * 1000
            b = (ts - self.origin[interval]) // width_ms
            acc = self.acc[interval]
            pv = (et == PAGE_VIEW) | (et == PRODUCT_VIEW)
            self._add(acc["pageviews"], b[pv], cols[:, sess[pv]])
            self._add(acc["orders"], b[buy], cols[:, sess[buy]])
            self._add(acc["revenue"], b[buy], cols[:, sess[buy]], revenue)
            for name, rows in (("sessions", None), ("buyers", buy), ("carters", et == ADD_TO_CART),
                               ("checkouters", et == BEGIN_CHECKOUT)):  # fmt: skip
                bb, ss = (b, sess) if rows is None else (b[rows], sess[rows])
                key = np.unique(bb * len(s) + ss)
                self._add(acc[name], key // len(s), cols[:, key % len(s)])

    def _add(self, acc: Arr, bucket: Arr, cols: Arr, weights: Arr | None = None) -> None:
        if not len(bucket):
            return
        width = len(self.slices)
        lo = int(bucket.min()) * width  # add into the touched buckets only
        for row in cols:
            part = np.bincount(bucket * width + row - lo, weights=weights)
            acc[lo : lo + len(part)] += part

    def _revenue(self, encoder: Encoder, g: Group, rows: Arr) -> Arr:
        """EUR revenue of purchase events ``rows``, read from their encoded JSON."""
        if not len(rows):
            return np.zeros(0)
        lines = encoder.lines(g.s, g.e, g.cart, rows, g.price_factor[rows], g.line_factor)
        out = np.empty(len(rows))
        for i, line in enumerate(lines.tolist()):
            doc = msgspec.json.decode(line)
            out[i] = self.fx.to_eur(doc["revenue"], doc["currency"], doc["ts"])
        return out


def _floor(ms: int, width: int) -> int:
    return ms - ms % width


def simulate_counts(
    config: SimConfig, intervals: tuple[str, ...] = ("1m", "1h"), fx: FxRates | None = None
) -> dict[str, SimCounts]:
    """Run the simulator and return the base counts per interval."""
    run = _CountingRun(config, fx or load_fx_rates(config.market.fx_file), intervals)
    for _ in run.batches():
        pass  # _park consumed every group; nothing is emitted
    width = len(run.slices)
    out = {}
    for interval in intervals:
        counts = {
            q: a.reshape(run.n_buckets[interval], width) for q, a in run.acc[interval].items()
        }
        origin = datetime.fromtimestamp(run.origin[interval] / 1000, UTC)
        out[interval] = SimCounts(interval, origin, run.slices, counts)
    return out
