"""The one path every event takes in: validate, route by type, dead-letter the rest.

The HTTP collector and ``pulse replay`` both go through :class:`Collector`, so a file and a
request are judged by exactly the same rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import Counter

from ingest.events import MAX_EVENT_BYTES, Event, encode_event, validate, validate_fields
from ingest.privacy import EdgePrivacy
from ingest.producer import Batch, EventProducer
from ingest.topics import TOPIC_BY_TYPE, Topics
from ingest.useragent import is_bot

__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "BodyError",
    "Collector",
    "GeneralEvent",
    "IngestResult",
    "RejectedEvent",
    "split_body",
]

EVENTS_ACCEPTED = Counter("pulse_events_accepted_total", "Events accepted at the edge", ["source"])
EVENTS_REJECTED = Counter(
    "pulse_events_rejected_total", "Events rejected at the edge (sent to the DLQ)", ["source"]
)
BOT_EVENTS = Counter(
    "pulse_bot_events_total",
    "Accepted events flagged as sent by a known crawler, bot or monitor (CONTRACT §9): "
    "stored apart, left out of every metric",
    ["source"],
)


# A dead letter keeps the original bytes up to this size: half of librdkafka's default
# message.max.bytes (1,000,000), so that a record with its headers always fits. Longer
# ones (only an event of a near-1 MiB body) keep their start and a ``pulse.truncated``
# header with the original size.
MAX_DEAD_LETTER_BYTES = 512 * 1024


class BodyError(ValueError):
    """A request body that cannot be split into events at all."""


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """One rejected event: its position in the batch and why."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class GeneralEvent:
    """One accepted event whose type is none of the known ones (docs/events.md): it is kept as
    a general event, counted in ``events`` only. Said in the answer: it is often a typo."""

    index: int
    type: str


@dataclass
class IngestResult:
    """What happened to a batch: accepted count, every rejection, and the accepted events of
    an unknown type."""

    accepted: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)
    general: list[GeneralEvent] = field(default_factory=list)

    def merge(self, other: IngestResult) -> None:
        """Add another batch's outcome to this one."""
        self.accepted += other.accepted
        self.rejected.extend(other.rejected)
        self.general.extend(other.general)


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
        privacy: EdgePrivacy | None = None,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._currencies = currencies
        self._clock = clock
        # CONTRACT §11: an address only derives a country; ids pseudonymised if configured
        self._privacy = privacy or EdgePrivacy()
        self._topic_of = {kind: topics.for_type(kind) for kind in TOPIC_BY_TYPE}

    def submit(
        self,
        raws: Iterable[bytes | dict[str, Any]],
        batch: Batch,
        *,
        source: str,
        start: int = 0,
        client_ip: str | None = None,
        originals: Sequence[bytes] | None = None,
    ) -> IngestResult:
        """Validate and queue ``raws`` on ``batch`` (the caller waits for delivery).
        Each event is its JSON bytes, or its fields when a translator made them from what
        the client sent (a Segment message, :mod:`ingest.segment`): judged by the same
        rules (:func:`~ingest.events.validate_fields`). ``client_ip``: the sending
        browser's address, for the country of events that carry neither ``country`` nor
        ``ip`` (docs/events.md); used, never stored. ``originals``: what the client sent
        for each of ``raws`` when that was translated: a rejected event's dead letter keeps
        those bytes."""
        result = IngestResult()
        bots = 0
        now_ms = self._clock()
        currencies, privacy, topic_of = self._currencies, self._privacy, self._topic_of
        send = batch.send
        for index, raw in enumerate(raws, start=start):
            if isinstance(raw, dict):
                checked = validate_fields(raw, now_ms=now_ms, currencies=currencies)
            else:
                checked = validate(raw, now_ms=now_ms, currencies=currencies)
            if isinstance(checked, Event):
                checked = privacy.accepted(checked, raw, client_ip)
                if checked.bot or (checked.user_agent is not None and is_bot(checked.user_agent)):
                    checked = _as_bot(checked)
                    bots += 1
                kind = checked.type
                send(
                    topic_of.get(kind) or self._topics.for_type(kind),
                    # the visitor: both parts of an anonymous-then-identified visit carry
                    # the anonymous id, so they share a partition and a shard of the flow
                    (checked.anonymous_id or checked.user_id).encode(),
                    encode_event(checked),
                )
                result.accepted += 1
                if kind not in TOPIC_BY_TYPE:
                    result.general.append(GeneralEvent(index, kind))
            else:
                original = originals[index - start] if originals is not None else raw
                if not isinstance(original, bytes):  # fields without their message's bytes
                    original = msgspec.json.encode(original)
                self.dead_letter(batch, original, checked.reason, source=source)
                result.rejected.append(RejectedEvent(index, checked.reason))
        EVENTS_ACCEPTED.labels(source).inc(result.accepted)
        EVENTS_REJECTED.labels(source).inc(len(result.rejected))
        if bots:
            BOT_EVENTS.labels(source).inc(bots)
        return result

    def dead_letter(self, batch: Batch, raw: bytes, reason: str, *, source: str) -> None:
        """Queue ``raw`` on the dead-letter topic with ``reason`` (scrubbed of addresses and,
        when pseudonymising, of raw ids; truncated to what one Kafka message holds)."""
        headers = [("pulse.reason", reason.encode()), ("pulse.source", source.encode())]
        value, scrubbed = self._privacy.dead_letter(raw)
        if scrubbed:  # no address, no raw id in Kafka (CONTRACT §11)
            headers.append(("pulse.scrubbed", ",".join(scrubbed).encode()))
        if len(value) > MAX_DEAD_LETTER_BYTES:  # would not fit one Kafka message
            headers.append(("pulse.truncated", str(len(value)).encode()))
            value = value[:MAX_DEAD_LETTER_BYTES]
        batch.send(self._topics.dlq, None, value, headers)

    def ingest(
        self,
        raws: Iterable[bytes],
        *,
        source: str,
        timeout: float = 30.0,
        client_ip: str | None = None,
    ) -> IngestResult:
        """Validate, send and wait until the broker acknowledged every record."""
        batch = self._producer.batch()
        result = self.submit(raws, batch, source=source, client_ip=client_ip)
        batch.wait(timeout)
        return result

    async def ingest_async(
        self,
        raws: Sequence[bytes | dict[str, Any]],
        *,
        source: str,
        timeout: float = 30.0,
        client_ip: str | None = None,
        originals: Sequence[bytes] | None = None,
        refused: Sequence[tuple[bytes, str]] = (),
    ) -> IngestResult:
        """:meth:`ingest` on an event loop: validation and sending run on the loop (tens of
        microseconds per event), the wait for acknowledgements does not hold a thread.
        ``originals`` as in :meth:`submit`; ``refused``: messages already judged
        unacceptable (their bytes and why), dead-lettered in the same batch."""
        producer = self._producer
        if producer.batch_would_block():
            batch = await asyncio.to_thread(producer.batch)
        else:
            batch = producer.batch()
        result = self.submit(raws, batch, source=source, client_ip=client_ip, originals=originals)
        for raw, reason in refused:
            self.dead_letter(batch, raw, reason, source=source)
        if refused:
            EVENTS_REJECTED.labels(source).inc(len(refused))
        await batch.wait_async(timeout)
        return result


def _as_bot(event: Event) -> Event:
    return event if event.bot else msgspec.structs.replace(event, bot=True)


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
MAX_DEPTH = 64  # an event nests 3 levels (event, items, item); anything this deep is an attack


def _too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON value ``raw`` nests objects and arrays deeper than ``limit``."""
    try:
        value: object = msgspec.json.decode(raw)
    except RecursionError:  # msgspec stops at the interpreter's recursion limit
        return True
    except msgspec.DecodeError:
        return False  # not JSON: validation rejects it with that reason
    level: list[object] = [value]
    for _ in range(limit):  # level by level: the walk itself cannot overflow
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)  # type: ignore[attr-defined]
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _check_depth(raws: list[bytes]) -> list[bytes]:
    for index, raw in enumerate(raws):
        # Only an event with that many brackets can be that deep, and one over the size
        # limit is rejected unread: the common event costs two byte counts.
        many = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
        if many and len(raw) <= MAX_EVENT_BYTES and _too_deep(raw):
            raise BodyError(f"event {index} nests deeper than {MAX_DEPTH} levels")
    return raws


def split_body(body: bytes) -> list[bytes]:
    """Split a JSON-array or JSONL body into one ``bytes`` per event.

    A malformed JSON array is a :class:`BodyError`; in JSONL each non-blank line is an
    event on its own, so one bad line is one rejected event, not a failed request. A body
    nested deeper than ``MAX_DEPTH`` is a :class:`BodyError` (a bounded check: it never
    recurses without limit).
    """
    stripped = body.strip()
    if not stripped:
        raise BodyError("empty body: send a JSON array or JSON lines")
    if stripped.startswith(b"["):
        try:
            raws = [bytes(raw) for raw in _raw_list.decode(stripped)]
        except RecursionError:
            raise BodyError(f"body nests deeper than {MAX_DEPTH} levels") from None
        except msgspec.DecodeError as exc:
            raise BodyError(f"malformed JSON array: {exc}") from None
        return _check_depth(raws)
    return _check_depth([line for line in (ln.strip() for ln in stripped.split(b"\n")) if line])
