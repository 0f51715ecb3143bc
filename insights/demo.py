"""What ``pulse demo`` simulates so that its incident is an insight within 5 minutes.

The detector learns before it judges (about 170 buckets at 1 minute), so the demo first
back-fills a few hours of ordinary traffic as fast as the pipeline takes it, then runs
live traffic at wall-clock speed with a ``conversion_drop`` a minute in (at 80 events/s
the backtest detects it 2 minutes after it starts, at any hour). Back-filled buckets are
learnt from, not raised (`insights.runner`); the live incident is raised as soon as its
buckets are complete — keep ``PULSE_ALLOWED_LATENESS`` short for the demo (the simulator
sends nothing late), e.g. 30 s.

The demo's shop has no time of day: its traffic stays at the same rate around the clock.
Three hours of history cannot teach the detector the daily curve, so with the usual one
the morning and evening ramps were themselves raised as insights ("Sessions overall rose
20%") and, with a series already in an anomaly, the drop was not raised at some hours
(backtest of the demo: missed at 09:00, 18:00 and 21:00 UTC on a weekday; with flat
traffic found 2 minutes in at every hour, with no other insight).

:class:`DemoTraffic` feeds both to the collector of the running stack and starts the
detector once the history is in the warehouse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client import REGISTRY

from ingest.collector import Collector
from ingest.producer import EventProducer
from ingest.simulator import SimConfig, parse_incident
from ingest.simulator.config import MarketConfig
from ingest.simulator.publish import publish

__all__ = ["DEMO_HISTORY", "DEMO_INCIDENT", "DemoTraffic", "demo_market", "demo_simulations"]

DEMO_INCIDENT = "conversion_drop:device=mobile,at=+1m,for=30m,depth=0.9"
DEMO_HISTORY = timedelta(hours=3)  # what the detector learns from before the live traffic


def demo_market() -> MarketConfig:
    """The simulator's marketplace with the same traffic at every hour and day."""
    return replace(
        MarketConfig(), hourly_weekday=(1.0,) * 24, hourly_weekend=(1.0,) * 24,
        day_factors=(1.0,) * 7,
    )  # fmt: skip


def demo_simulations(
    now: datetime | None = None,
    *,
    rate: float = 80.0,
    history: timedelta = DEMO_HISTORY,
    live: timedelta = timedelta(hours=2),
    incident: str = DEMO_INCIDENT,
    seed: int = 0,
) -> tuple[SimConfig, SimConfig]:
    """(history to publish at ``speed=None``, live traffic to publish at ``speed=1``)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    market = demo_market()
    past = SimConfig(rate=rate, duration=history, seed=seed, start=now - history, market=market)
    present = SimConfig(
        rate=rate, duration=live, seed=seed + 1, start=now,
        incidents=(parse_incident(incident),), market=market,
    )  # fmt: skip
    return past, present


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def _written(count: int, stop: threading.Event, timeout: float = 600.0) -> bool:
    """Wait until this process's flow has written ``count`` events to the warehouse
    (``pulse_flow_events_total``); False when stopped or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if (REGISTRY.get_sample_value("pulse_flow_events_total") or 0) >= count:
            return True
        stop.wait(0.5)
    return False


class DemoTraffic:
    """The demo's feeder: the history as fast as the broker takes it, then live traffic;
    detection starts (``start_detector``) once the history is in the warehouse.

    While the flow catches up on a back-fill, its topics progress unevenly: the event-time
    watermark can pass minutes whose page views are not written yet, and the detector
    would learn those gaps and report them ("page views nearly stopped"), with its
    series in anomalies that then hide the live incident."""

    def __init__(
        self,
        collector: Collector,
        producer: EventProducer,
        past: SimConfig | None,
        live: SimConfig,
        start_detector: Callable[[], _Stoppable],
        on_history: Callable[[int], object] | None = None,
    ) -> None:
        """``past`` None: no back-fill (a resumed demo whose history is in the warehouse).
        ``on_history`` is told how many events of history are in the warehouse, once."""
        self.collector, self.producer, self.past, self.live = collector, producer, past, live
        self._start_detector = start_detector
        self._on_history = on_history
        self.stop = threading.Event()
        self.detector: _Stoppable | None = None
        self._lock = threading.Lock()
        self._feeder = threading.Thread(target=self._feed, name="pulse-demo-traffic", daemon=True)

    def _feed(self) -> None:
        accepted = 0
        if self.past is not None:
            sent = publish(self.past, self.collector, self.producer, speed=None, stop=self.stop)
            accepted = sent.accepted
        threading.Thread(
            target=self._detect_when_written, args=(accepted,), name="pulse-demo-detect",
            daemon=True,
        ).start()  # fmt: skip
        publish(self.live, self.collector, self.producer, speed=1.0, stop=self.stop)

    def _detect_when_written(self, history: int) -> None:
        written = _written(history, self.stop)  # after the timeout, detect anyway
        if written and history and self._on_history is not None and not self.stop.is_set():
            self._on_history(history)
        with self._lock:
            if self.stop.is_set():
                return
            self.detector = self._start_detector()

    def start(self) -> None:
        """Start feeding (in a thread)."""
        self._feeder.start()

    def close(self) -> None:
        """Stop feeding and the detector it started."""
        with self._lock:
            self.stop.set()
        self._feeder.join(10)
        if self.detector is not None:
            self.detector.stop()
