"""The time loop: seasonal arrivals per chunk, incidents, encoding, ordered emission.

Simulated time advances in chunks (60 s at the default rate, shorter at high rates so a
chunk holds ~30K events). Per chunk, each country's session arrivals are Poisson with a
rate following its local-time seasonality; their events (which may run into later chunks)
are encoded at once and parked in per-chunk emission buckets. Once chunk ``c`` has been
generated no later session can emit into bucket ``c``, so it is sorted and released.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.simulator.config import SimConfig
from ingest.simulator.effects import ActiveIncident, Group, resolve_incidents
from ingest.simulator.encode import Encoder
from ingest.simulator.experiments import ExperimentStream
from ingest.simulator.market import Market, market_for
from ingest.simulator.sessions import SessionlessGuard, build_events, draw_sessions
from ingest.simulator.timeutil import eu_summer_time, to_ms

__all__ = ["Run", "chunk_ms"]

Arr = npt.NDArray[Any]
_HOUR_MS = 3_600_000
_EVENTS_PER_CHUNK = 30_000


def chunk_ms(rate: float) -> int:
    """Chunk length for a rate: whole seconds, 1 .. 60."""
    return int(min(60, max(1, _EVENTS_PER_CHUNK // max(int(rate), 1)))) * 1000


class Run:
    """One simulation run; iterate :meth:`batches` once."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.start_ms = to_ms(config.start)
        self.end_ms = self.start_ms + int(config.duration.total_seconds() * 1000)
        self.market: Market = market_for(config.market, self.start_ms)
        self.incidents: list[ActiveIncident] = resolve_incidents(
            config.incidents, self.market, self.start_ms, config.seed
        )
        self.prefix = f"{config.seed:x}.{self.start_ms // 1000:x}-"
        self.events = 0
        # experiments change the lines after the market made them (their own module)
        self.experiments = (
            ExperimentStream(config.experiments, config.seed) if config.experiments else None
        )

    def batches(self) -> Iterator[tuple[Arr, list[str]]]:
        """``(emit_ms, lines)`` batches in non-decreasing emit order over the whole run."""
        cfg, market = self.config, self.market
        rng = np.random.Generator(np.random.PCG64(cfg.seed))
        encoder = Encoder(market)
        guard = SessionlessGuard(market)
        step = chunk_ms(cfg.rate)
        t0 = self.start_ms - int(cfg.market.warmup.total_seconds() * 1000)
        # Sessions per ms at a seasonal factor of 1, by country.
        per_ms = cfg.rate / cfg.market.expected_events_per_session() / 1000.0
        base_rate = per_ms * market.country_weight
        pending: dict[int, list[tuple[Arr, Arr]]] = {}
        next_sn = 0
        n_chunks = -(-(self.end_ms - t0) // step)
        for chunk in range(n_chunks):
            lo = t0 + chunk * step
            hi = min(lo + step, self.end_ms)
            mid = (lo + hi) // 2
            offsets = market.utc_offset_ms + (_HOUR_MS if eu_summer_time(mid) else 0)
            lam = base_rate * market.season(mid, offsets)
            counts = rng.poisson(lam * (hi - lo))
            n = int(counts.sum())
            start = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
            country = np.repeat(np.arange(len(counts)), counts)
            order = np.argsort(start, kind="stable")
            s = draw_sessions(
                rng, market, start[order], country[order], np.arange(next_sn, next_sn + n),
                self.prefix,
            )  # fmt: skip
            next_sn += n
            e, cart = build_events(rng, market, s)
            guard.resolve(s)
            groups = [Group.of(s, e, cart, self.start_ms, self.end_ms)]
            streams: dict[int, np.random.Generator] = {}
            for inc in self.incidents:
                if inc.incident.kind == "traffic_spike" and inc.overlaps(lo, hi):
                    stream = streams.setdefault(inc.index, inc.rng(chunk))
                    prefix = f"{self.prefix}x{inc.key:x}."
                    extra = inc.spike(stream, market, lam, lo, hi, prefix)
                    if extra is not None:
                        e2, cart2 = build_events(stream, market, extra)
                        groups.append(Group.of(extra, e2, cart2, self.start_ms, self.end_ms))
            for inc in self.incidents:
                if inc.incident.kind == "traffic_spike" or inc.end <= lo:
                    continue  # a window that ended before this chunk cannot touch its events
                stream = streams.setdefault(inc.index, inc.rng(chunk))
                for g in groups:
                    inc.apply(stream, g)
            for g in groups:
                self._park(encoder, g, pending, t0, step)
            if chunk % 60 == 59:
                guard.prune(lo)
            ready = pending.pop(chunk, None)
            if ready:
                yield self._experimented(self._release(ready))
        for bucket in sorted(pending):
            yield self._experimented(self._release(pending[bucket]))

    def _experimented(self, batch: tuple[Arr, list[str]]) -> tuple[Arr, list[str]]:
        if self.experiments is None:
            return batch
        emit, lines = self.experiments.apply(batch[0].tolist(), batch[1])
        self.events += len(lines) - len(batch[1])
        return np.asarray(emit, dtype=np.int64), lines

    def _park(
        self, encoder: Encoder, g: Group, pending: dict[int, list[tuple[Arr, Arr]]], t0: int,
        step: int,
    ) -> None:  # fmt: skip
        """Encode a group's sent events and file them under their emission chunk."""
        sel = np.flatnonzero(g.keep)
        if not len(sel):
            return
        lines = encoder.lines(g.s, g.e, g.cart, sel, g.price_factor[sel], g.line_factor)
        emit = g.emit[sel]
        if g.dup_rows:
            rows = np.concatenate(g.dup_rows)
            lines = np.concatenate((lines, lines[np.searchsorted(sel, rows)]))
            emit = np.concatenate((emit, np.concatenate(g.dup_emit)))
        self.events += len(emit)
        order = np.argsort(emit, kind="stable")
        emit, lines = emit[order], lines[order]
        bucket = (emit - t0) // step
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        for b, em, ln in zip(
            bucket[np.concatenate(([0], cuts))].tolist(), np.split(emit, cuts),
            np.split(lines, cuts), strict=True,
        ):  # fmt: skip
            pending.setdefault(b, []).append((em, ln))

    @staticmethod
    def _release(parts: list[tuple[Arr, Arr]]) -> tuple[Arr, list[str]]:
        """Merge a bucket's parts (parked in generation order) into emission order."""
        if len(parts) == 1:
            emit, lines = parts[0]
            return emit, lines.tolist()
        emit = np.concatenate([p[0] for p in parts])
        lines = np.concatenate([p[1] for p in parts])
        order = np.argsort(emit, kind="stable")
        return emit[order], lines[order].tolist()
