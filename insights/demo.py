"""What ``pulse demo`` simulates so that its incident is an insight within 5 minutes.

The detector learns before it judges (about 170 buckets at 1 minute), so the demo first
back-fills a few hours of ordinary traffic as fast as the pipeline takes it, then runs
live traffic at wall-clock speed with a ``conversion_drop`` a minute in (at 80 events/s
the backtest detects it 2-3 minutes after it starts, at any hour). Back-filled
buckets are learnt from, not raised (`insights.runner`); the live incident is raised as
soon as its buckets are complete — keep ``PULSE_ALLOWED_LATENESS`` short for the demo
(the simulator sends nothing late), e.g. 30 s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.simulator import SimConfig, parse_incident

__all__ = ["DEMO_INCIDENT", "demo_simulations"]

DEMO_INCIDENT = "conversion_drop:device=mobile,at=+1m,for=30m,depth=0.9"


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
    past = SimConfig(rate=rate, duration=history, seed=seed, start=now - history)
    present = SimConfig(
        rate=rate, duration=live, seed=seed + 1, start=now, incidents=(parse_incident(incident),)
    )
    return past, present
