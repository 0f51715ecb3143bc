"""``pulse replay --wait`` while ``pulse up`` runs on the same home: that stack holds the
embedded warehouse and its flow writes what is published, so the replay watches the
stack's ``/metrics`` until its flow has taken in as many more events as were accepted
(written, dropped as repeated, or dead-lettered). Other traffic into the same stack can
end the wait early; the tour and scripts that replay into a quiet stack are exact."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.settings import Settings
from ingest import pidfile
from ingest.errors import PulseError

__all__ = ["flow_counters", "running_stack_api", "wait_written"]

# What the flow has done with what it read: written, dropped as repeated, dead-lettered.
_TAKEN = ("pulse_flow_events_total", "pulse_flow_dead_letters_total")
_DUPLICATES = "pulse_flow_duplicates_total"


def running_stack_api(settings: Settings) -> str | None:
    """The API base URL of the ``pulse up`` / ``pulse demo`` running on this home, if any."""
    running = pidfile.read_live(settings.pulse_pid_file)
    address = running.extra.get("api") if running is not None else None
    return f"http://{address}" if address else None


def flow_counters(api: str) -> dict[str, float]:
    """The flow's counters on the stack's ``/metrics`` (summed over their labels)."""
    try:
        text = httpx.get(f"{api}/metrics", timeout=10).text
    except httpx.HTTPError as exc:
        raise PulseError(f"the running stack's API at {api} does not answer: {exc}") from None
    sums = dict.fromkeys((*_TAKEN, _DUPLICATES), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
    return sums


def wait_written(
    api: str, before: dict[str, float], accepted: int, *, stall_s: float = 120.0
) -> int:
    """Wait until the stack's flow has taken in ``accepted`` more events than ``before``
    (written, or dropped as repeated or dead-lettered); returns the repeated ones dropped
    since ``before``. Fails when nothing moves for ``stall_s``."""
    last, moved = None, time.monotonic()
    while True:
        now = flow_counters(api)
        taken = sum(now[k] - before[k] for k in (*_TAKEN, _DUPLICATES))
        if taken >= accepted:
            return int(now[_DUPLICATES] - before[_DUPLICATES])
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise PulseError(
                f"the running stack's flow took in {taken:,.0f} of {accepted:,} events and "
                f"has not moved for {stall_s:.0f} s; see its log"
            )
        time.sleep(0.5)
