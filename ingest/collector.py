"""The one path every event takes in: validate, route by type, dead-letter the rest.

The HTTP collector and ``pulse replay`` both go through :class:`Collector`, so a file and a
request are judged by exactly the same rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from prometheus_client import Counter

from ingest.events import Event, encode_event, validate
from ingest.producer import Batch, EventProducer
from ingest.topics import Topics

__all__ = ["BodyError", "Collector", "IngestResult", "RejectedEvent", "split_body"]

EVENTS_ACCEPTED = Counter("pulse_events_accepted_total", "Events accepted at the edge", ["source"])
EVENTS_REJECTED = Counter(
    "pulse_events_rejected_total", "Events rejected at the edge (sent to the DLQ)", ["source"]
)


class BodyError(ValueError):
    """A request body that cannot be split into events at all."""


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """One rejected event: its position in the batch and why."""

    index: int
    reason: str


@dataclass
class IngestResult:
    """What happened to a batch: accepted count and every rejection."""

    accepted: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)

    def merge(self, other: IngestResult) -> None:
        """Add another batch's outcome to this one."""
        self.accepted += other.accepted
        self.rejected.extend(other.rejected)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Collector:
    """Validates raw events and routes them to their topics or the dead-letter topic."""

    def __init__(
        self,
        producer: EventProducer,
        topics: Topics,
        currencies: frozenset[str],
        *,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._currencies = currencies
        self._clock = clock

    def submit(
        self, raws: Iterable[bytes], batch: Batch, *, source: str, start: int = 0
    ) -> IngestResult:
        """Validate and queue ``raws`` on ``batch`` (the caller waits for delivery)."""
        result = IngestResult()
        now_ms = self._clock()
        topics, currencies = self._topics, self._currencies
        for index, raw in enumerate(raws, start=start):
            checked = validate(raw, now_ms=now_ms, currencies=currencies)
            if isinstance(checked, Event):
                batch.send(
                    topics.for_type(checked.type),
                    checked.user_id.encode(),
                    encode_event(checked),
                )
                result.accepted += 1
            else:
                batch.send(
                    topics.dlq,
                    None,
                    raw,
                    [("pulse.reason", checked.reason.encode()), ("pulse.source", source.encode())],
                )
                result.rejected.append(RejectedEvent(index, checked.reason))
        EVENTS_ACCEPTED.labels(source).inc(result.accepted)
        EVENTS_REJECTED.labels(source).inc(len(result.rejected))
        return result

    def ingest(self, raws: Iterable[bytes], *, source: str, timeout: float = 30.0) -> IngestResult:
        """Validate, send and wait until the broker acknowledged every record."""
        batch = self._producer.batch()
        result = self.submit(raws, batch, source=source)
        batch.wait(timeout)
        return result


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def split_body(body: bytes) -> list[bytes]:
    """Split a JSON-array or JSONL body into one ``bytes`` per event.

    A malformed JSON array is a :class:`BodyError`; in JSONL each non-blank line is an
    event on its own, so one bad line is one rejected event, not a failed request.
    """
    stripped = body.strip()
    if not stripped:
        raise BodyError("empty body: send a JSON array or JSON lines")
    if stripped.startswith(b"["):
        try:
            return [bytes(raw) for raw in _raw_list.decode(stripped)]
        except msgspec.DecodeError as exc:
            raise BodyError(f"malformed JSON array: {exc}") from None
    return [line for line in (ln.strip() for ln in stripped.split(b"\n")) if line]
