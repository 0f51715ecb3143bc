"""What ``pulse demo`` simulates so that its incident is an insight within 5 minutes.

The detector learns before it judges (about 170 buckets at 1 minute), so the demo's
simulated run starts a few hours ago: those hours are back-filled as fast as the pipeline
takes them, the rest runs live at wall-clock speed, with a ``conversion_drop`` a minute
in (at 80 events/s the backtest detects it 2 minutes after it starts, at any hour).
Back-filled buckets are learnt from, not raised (`insights.runner`); the live incident is
raised as soon as its buckets are complete — keep ``PULSE_ALLOWED_LATENESS`` short for
the demo (the simulator sends nothing late), e.g. 30 s.

The demo's shop has no time of day: its traffic stays at the same rate around the clock.
Three hours of history cannot teach the detector the daily curve, so with the usual one
the morning and evening ramps were themselves raised as insights ("Sessions overall rose
20%") and, with a series already in an anomaly, the drop was not raised at some hours
(backtest of the demo: missed at 09:00, 18:00 and 21:00 UTC on a weekday; with flat
traffic found 2 minutes in at every hour, with no other insight).

:class:`DemoTraffic` feeds the run to the collector of the running stack and starts the
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

__all__ = ["DEMO_HISTORY", "DEMO_INCIDENT", "DemoTraffic", "demo_market", "demo_simulation"]

DEMO_INCIDENT = "conversion_drop:device=mobile,at=+1m,for=30m,depth=0.9"
DEMO_HISTORY = timedelta(hours=3)  # what the detector learns from before the live traffic


def demo_market() -> MarketConfig:
    """The simulator's marketplace with the same traffic at every hour and day."""
    return replace(
        MarketConfig(), hourly_weekday=(1.0,) * 24, hourly_weekend=(1.0,) * 24,
        day_factors=(1.0,) * 7,
    )  # fmt: skip


def demo_simulation(
    now: datetime | None = None,
    *,
    rate: float = 80.0,
    history: timedelta = DEMO_HISTORY,
    live: timedelta = timedelta(hours=2),
    incident: str = DEMO_INCIDENT,
    seed: int = 0,
) -> SimConfig:
    """One run from ``now - history`` to ``now + live``, the incident's ``at`` counted from
    ``now``: published paced from its start (:class:`DemoTraffic`), what lies before the
    wall clock is the back-fill, the rest live traffic.

    One run, not a history and a live run: two runs meet at a seam where the sessions going
    on are cut in the first and start again, as other sessions of other users, in the
    second — every minute around the seam counted them twice (a spike of sessions, visitors
    and session starts on every chart)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    drop = parse_incident(incident)
    if isinstance(drop.at, timedelta):
        drop = replace(drop, at=now + drop.at)
    return SimConfig(
        rate=rate, duration=history + live, seed=seed, start=now - history,
        incidents=(drop,), market=demo_market(),
    )  # fmt: skip


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
    """The demo's feeder: one simulated run published paced from its start, so that what
    lies before the wall clock (the history) goes as fast as the broker takes it and the
    rest at wall-clock speed; detection starts (``start_detector``) once the history is in
    the warehouse.

    While the flow catches up on a back-fill, its topics progress unevenly: the event-time
    watermark can pass minutes whose page views are not written yet, and the detector
    would learn those gaps and report them ("page views nearly stopped"), with its
    series in anomalies that then hide the live incident."""

    def __init__(
        self,
        collector: Collector,
        producer: EventProducer,
        run: SimConfig,
        start_detector: Callable[[], _Stoppable],
        on_history: Callable[[int, bool], object] | None = None,
    ) -> None:
        """``run`` starts at the wall-clock time its first event is due (in the past for a
        back-fill; at now for a resumed demo whose history is in the warehouse).
        ``on_history`` is told, once, how many events of history there are and whether they
        are in the warehouse (False: the flow was still writing them when detection began)."""
        self.collector, self.producer, self.run = collector, producer, run
        self._start_detector = start_detector
        self._on_history = on_history
        self.stop = threading.Event()
        self.detector: _Stoppable | None = None
        self._lock = threading.Lock()
        self._feeder = threading.Thread(target=self._feed, name="pulse-demo-traffic", daemon=True)

    def _feed(self) -> None:
        publish(self.run, self.collector, self.producer, speed=1.0, stop=self.stop,
                due_from=self.run.start, caught_up=self._caught_up)  # fmt: skip

    def _caught_up(self, history: int) -> None:
        threading.Thread(
            target=self._detect_when_written, args=(history,), name="pulse-demo-detect",
            daemon=True,
        ).start()  # fmt: skip

    def _detect_when_written(self, history: int) -> None:
        written = _written(history, self.stop)  # after the timeout, detect anyway
        if history and self._on_history is not None and not self.stop.is_set():
            self._on_history(history, written)
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
