"""Experiment exposures as warehouse rows (CONTRACT §10; table ``exposures``).

Kept apart from :mod:`flows.rows`: an ``experiment_exposure`` event is written as an
``events`` row like any other (it counts in ``events``) and, here, as one ``exposures``
row naming its experiment and variant, in the column order of
:data:`warehouse.schema.COLUMNS`. ``version`` is left 0 (the writer stamps it).
"""

from __future__ import annotations

from flows.logic import Enriched

__all__ = ["EXPOSURE", "exposure_row"]

EXPOSURE = "experiment_exposure"


def exposure_row(e: Enriched) -> list[object] | None:
    """The ``exposures`` row of an enriched event, or None when it is not an exposure
    (validation makes ``experiment`` and ``variant`` required for one)."""
    ev = e.event
    if ev.type != EXPOSURE or ev.experiment is None or ev.variant is None:
        return None
    return [ev.experiment, ev.user_id, e.ts_ms, ev.event_id, ev.variant, 0]
