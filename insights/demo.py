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
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ingest.simulator import SimConfig, parse_incident
from ingest.simulator.config import MarketConfig

__all__ = ["DEMO_INCIDENT", "demo_market", "demo_simulations"]

DEMO_INCIDENT = "conversion_drop:device=mobile,at=+1m,for=30m,depth=0.9"


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
    history: timedelta = timedelta(hours=3),
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
