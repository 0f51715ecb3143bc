"""A small producer interface over librdkafka (confluent-kafka).

Configured for no silent loss: acks from all in-sync replicas, idempotence and retries. A
batch is confirmed only when the broker has acknowledged every record; a broker outage
surfaces as :class:`~ingest.errors.DeliveryError`, never as silent loss.
:class:`ConfluentProducer` (~580K msg/s here) is what the collector, ``pulse replay`` and
the simulator use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from ingest.errors import BrokerError, DeliveryError

__all__ = ["Batch", "ConfluentProducer", "EventProducer"]

Headers = list[tuple[str, bytes]]
_log = logging.getLogger(__name__)
RECREATED = Counter(
    "pulse_producer_recreated_total", "Kafka producer clients recreated after a fatal error"
)
# deliveries failing this long while the broker answers: the client is recreated
_STALLED_S = 5.0
# readiness: records wait and no acknowledgement came for this long
_TICK_S = 0.001  # how often an event loop awaiting acknowledgements polls the client
_HANDOVER_S = 0.2  # a loop that did not poll for this long: the poll thread takes over
_OVERDUE_S = 2.0
# delivery errors meaning the broker no longer knows this producer: recreate at once
_STATE_LOST = frozenset(
    {"PRODUCER_FENCED", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER",
     "INVALID_PRODUCER_EPOCH", "INVALID_PRODUCER_ID_MAPPING", "_FATAL"}
)  # fmt: skip


class Batch(ABC):
    """Records sent together and confirmed together."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        """Queue one record (may block briefly while the client's queue is full)."""

    @abstractmethod
    def wait(self, timeout: float = 30.0) -> None:
        """Block until every record is acknowledged; raise DeliveryError otherwise."""

    async def wait_async(self, timeout: float = 30.0) -> None:
        """:meth:`wait` for an event loop: the loop goes on serving while the broker
        acknowledges (this default waits in a worker thread)."""
        await asyncio.to_thread(self.wait, timeout)

    def _record_failure(self, error: object) -> None:
        with self._lock:
            self.failed += 1
            self.first_error = self.first_error or str(error)


class EventProducer(ABC):
    """What the collector, replay and simulator need from a Kafka client."""

    @abstractmethod
    def batch(self) -> Batch:
        """Start a batch of records to be confirmed together."""

    def batch_would_block(self) -> bool:
        """Whether :meth:`batch` may block now (e.g. while the client is recreated): an
        event loop then calls it from a worker thread."""
        return True

    @abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued and release the client."""

    def check(self) -> None:  # noqa: B027 - optional: most producers have nothing to add
        """Readiness: raise when records sent now could not be delivered."""


class ConfluentProducer(EventProducer):
    """librdkafka through confluent-kafka: fast, idempotent, acks=all.

    One thread polls the client, so each batch's acknowledgements arrive as they come
    and a request waits for its own (no polling steps from the callers' threads). The
    producer recovers by itself: a fatal client error (fenced, idempotence state lost —
    e.g. the broker restarted empty) or a broker answering with another cluster id makes it
    recreate the client (and run ``on_new_broker``, e.g. to create the topics again).
    While the broker is known to be unreachable, :meth:`batch` fails at once.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        delivery_timeout_s: float = 30.0,
        on_new_broker: Callable[[], object] | None = None,
        **extra: Any,
    ) -> None:
        self._config = {
            "bootstrap.servers": bootstrap,
            "client.id": "pulse-ingest",
            "enable.idempotence": True,
            "acks": "all",
            # a request waits for its acknowledgements: send at once (concurrent requests
            # still share broker requests), 5 ms cost every request 4 ms more at p50
            "linger.ms": 1,
            # one request in flight per broker: under load the records that come while it
            # is out go together in the next one (bigger batches, far less CPU in the
            # client and the broker per record: docs/benchmarks.md, Segment API); an idle
            # producer still sends after the 1 ms linger
            "max.in.flight.requests.per.connection": 1,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "log_level": 0,  # outages surface as DeliveryError and readiness, not as logs
            "error_cb": self._on_error,
            **extra,
        }
        self._on_new_broker = on_new_broker
        self._prepared = True  # on_new_broker ran since the client was (re)created
        self._health = _Health()
        self._closed = threading.Event()
        self._wake = threading.Event()  # something for the watcher to look at
        # batches awaited on an event loop: while there are, that loop polls the client
        # (see _LoopPoller) and the poll thread stands aside
        self._loop_poller: _LoopPoller | None = None
        self._loop_polled = 0.0  # when a loop last polled (monotonic)
        self._loop_polling = threading.Event()  # cleared while a loop polls
        self._producer = self._new_client()
        self._poller = threading.Thread(target=self._poll, name="pulse-producer-poll", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="pulse-producer-watch",
                                         daemon=True)  # fmt: skip
        self._poller.start()
        self._watcher.start()
        self._wake.set()  # learn the cluster id

    def _new_client(self) -> Any:
        from confluent_kafka import Producer

        return Producer(self._config)

    def batch(self) -> Batch:
        self._health.usable()  # raises DeliveryError while the broker is known to be down
        return _ConfluentBatch(self)

    def batch_would_block(self) -> bool:
        return self._health.fatal is not None  # batch() waits for the recreated client

    def _delivered(self, error: Any) -> None:
        self._health.delivered(error)

    def _stalled(self, since: float) -> None:
        self._health.failed("acknowledgements overdue", since)
        self._wake.set()

    def check(self) -> None:
        """Readiness: raise :class:`BrokerError` unless the client is healthy and reaches
        the broker now."""
        from confluent_kafka import KafkaException

        self._health.ready(len(self._producer))
        try:
            self._producer.list_topics(timeout=2.0)
        except KafkaException as exc:
            raise BrokerError(f"the producer cannot reach the broker ({_name(exc)})") from None

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._wake.set()
        self._poller.join(2)
        self._watcher.join(5)

    # -- the client's threads ------------------------------------------------------------

    def _on_error(self, error: Any) -> None:
        """librdkafka's error callback (on the poll thread)."""
        if error.fatal():
            self._health.broken(_name(error))
            _log.warning("the Kafka producer hit a fatal error (%s): recreating it", _name(error))
        else:
            self._health.suspect = True  # e.g. all brokers down: find out whether it lasts
        self._wake.set()

    def _poll(self) -> None:
        while not self._closed.is_set():
            if time.monotonic() - self._loop_polled < _HANDOVER_S:
                # an event loop polls now: stand aside (no GIL tug of war), and take over
                # should it stop without saying so (its loop closed)
                self._loop_polling.wait(_HANDOVER_S)
            else:
                self._producer.poll(0.2)

    def _poll_on(self, loop: asyncio.AbstractEventLoop) -> _LoopPoller:
        """The poller of ``loop`` (one loop polls at a time: the first that asked)."""
        poller = self._loop_poller
        if poller is None or not poller.usable(loop):
            poller = self._loop_poller = _LoopPoller(self, loop)
        return poller

    def _watch(self) -> None:
        """Probe the broker while something looks wrong; recreate the client when it is
        broken, the broker is another one, or deliveries keep failing although the broker
        answers (the broker lost the producer's idempotence state: librdkafka may then
        retry for ever instead of reporting a fatal error)."""
        from confluent_kafka import KafkaException

        health = self._health
        while not self._closed.is_set():
            self._wake.wait(0.5 if health.suspect or health.failing_since else 5.0)
            self._wake.clear()
            if self._closed.is_set():
                return
            if health.fatal is not None:
                self._recreate(f"fatal error {health.fatal}")
                continue
            if health.failing_since is not None and health.last_error in _STATE_LOST:
                self._recreate(f"the broker lost this producer's state ({health.last_error})")
                continue
            if not (health.suspect or health.failing_since) and health.cluster_id is not None:
                continue
            try:
                meta = self._producer.list_topics(timeout=2.0)
            except KafkaException as exc:
                health.unreachable(_name(exc))
                health.suspect = True
                continue
            known = health.cluster_id
            if known is not None and meta.cluster_id and meta.cluster_id != known:
                self._recreate("the broker was replaced (new cluster id)")
                health.cluster_id = meta.cluster_id
                continue
            health.reachable(meta.cluster_id or known)
            self._prepare()
            failing = health.failing_since
            if failing is not None and time.monotonic() - failing >= _STALLED_S:
                self._recreate(f"deliveries fail although the broker answers ({health.last_error})")

    def _recreate(self, why: str) -> None:
        """Replace the client: what the old one still holds fails (its requests answer
        503), new batches use the new one."""
        old = self._producer
        try:
            self._producer = self._new_client()
        except Exception as exc:  # keep the old one; try again later
            _log.warning("could not recreate the Kafka producer: %s", exc)
            self._health.suspect = True
            return
        _log.warning("Kafka producer recreated: %s", why)
        RECREATED.inc()
        with contextlib.suppress(Exception):
            old.purge()
        with contextlib.suppress(Exception):
            old.flush(1.0)  # serves the purged records' callbacks: their batches fail
        self._prepared = self._on_new_broker is None
        self._prepare()
        self._health.recovered()

    def _prepare(self) -> None:
        """Run ``on_new_broker`` after a recreation (again at the next probes until it
        succeeds: the broker may still be starting)."""
        if self._prepared or self._on_new_broker is None:
            return
        try:
            self._on_new_broker()
            self._prepared = True
        except Exception as exc:
            _log.warning("preparing the new Kafka client failed (retrying): %s", exc)
            self._health.suspect = True


def _is_kafka_error(exc: BaseException) -> bool:
    from confluent_kafka import KafkaException

    return isinstance(exc, KafkaException)


def _name(error: Any) -> str:
    """A Kafka error's code name (its text may carry addresses)."""
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(error, KafkaException) and error.args:
        error = error.args[0]
    if isinstance(error, KafkaError):
        return str(error.name())
    return type(error).__name__


class _Health:
    """What the producer knows about its client and the broker (written by its threads)."""

    def __init__(self) -> None:
        self.fatal: str | None = None
        self.suspect = True
        self.cluster_id: str | None = None
        self.down: str | None = None  # why the broker is unreachable, while it is
        self.failing_since: float | None = None  # deliveries failing, none succeeded since
        self.last_error = ""
        self.last_progress = time.monotonic()  # of the acknowledgements (or failures)
        self._recovered = threading.Event()
        self._recovered.set()

    def broken(self, why: str) -> None:
        self._recovered.clear()
        self.fatal = why

    def unreachable(self, why: str) -> None:
        self.down = why

    def reachable(self, cluster_id: str | None) -> None:
        self.down = None
        self.suspect = False
        self.cluster_id = cluster_id

    def recovered(self) -> None:
        self.fatal = None
        self.suspect = True  # probe the new client at once
        self.failing_since = None
        self._recovered.set()

    def delivered(self, error: Any) -> None:
        self.last_progress = time.monotonic()
        if error is None:
            self.failing_since = None
        else:
            self.failed(_name(error))

    def failed(self, why: str, since: float | None = None) -> None:
        """A delivery failed, or a batch (sent at ``since``) waited in vain for its
        acknowledgements."""
        self.last_error = why
        since = time.monotonic() if since is None else since
        if self.failing_since is None or since < self.failing_since:
            self.failing_since = since

    def usable(self) -> None:
        """Raise DeliveryError while nothing sent now could be delivered."""
        if self.fatal is not None and (not self._recovered.wait(5.0) or self.fatal is not None):
            raise DeliveryError(0, f"the Kafka client is being recreated ({self.fatal})")
        if self.down is not None:
            raise DeliveryError(0, f"the Kafka broker is unreachable ({self.down})")

    def ready(self, waiting: int) -> None:
        """Raise unless records sent now would be delivered; ``waiting``: records the
        client holds unacknowledged."""
        if self.fatal is not None:
            raise BrokerError(f"the producer hit a fatal error ({self.fatal}) and is recovering")
        if self.down is not None:
            raise BrokerError(f"the broker is unreachable ({self.down})")
        if self.failing_since is not None:
            since = time.monotonic() - self.failing_since
            raise BrokerError(f"deliveries have failed for {since:.0f} s ({self.last_error})")
        overdue = time.monotonic() - self.last_progress
        if waiting and overdue > _OVERDUE_S:
            raise BrokerError(
                f"{waiting} record(s) wait for acknowledgements, none came for {overdue:.0f} s"
            )


class _ConfluentBatch(Batch):
    """The records of one request, answered on the poll thread.

    Counted without a lock (once per record on two threads, it was a tenth of the
    collector's time): only the sending thread changes ``sent`` and ``_dropped``, and only
    before sealing; only the poll thread changes ``_answered``. Whichever of the two sees
    the other's last write finishes the batch (both may: :meth:`_finish` runs once)."""

    def __init__(self, owner: ConfluentProducer) -> None:
        super().__init__()
        self._owner = owner
        self._answered = 0  # acknowledged or failed, as reported by the client
        self._dropped = 0  # refused by the client at once: no report will come
        self._sealed = False
        self._finished = False
        self._done = threading.Event()
        self._on_done: Callable[[], object] | None = None  # wakes an event loop's wait
        self._created = time.monotonic()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._owner._delivered(err)
            self._record_failure(err)
        answered = self._answered = self._answered + 1
        if not answered & 255 and err is None:  # a long batch shows progress as it goes
            self._owner._delivered(None)
        if self._sealed and answered + self._dropped == self.sent:
            self._finish()

    def _finish(self) -> None:
        """Every record is answered."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._answered > self.failed - self._dropped:  # some record was acknowledged
            self._owner._delivered(None)
        self._done.set()
        if self._on_done is not None:
            self._on_done()

    def _seal(self) -> None:
        self._sealed = True
        if self._answered + self._dropped == self.sent:
            self._finish()

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        self.sent += 1
        while True:
            client = self._owner._producer  # the current one (it is replaced on recovery)
            try:
                if headers is None:  # positional: keywords cost 0.7 µs a record to parse
                    client.produce(topic, value, key, -1, self._on_delivery)
                else:
                    client.produce(topic, value, key, headers=headers,
                                   on_delivery=self._on_delivery)  # fmt: skip
                return
            except BufferError:  # local queue full: the poll thread drains it
                time.sleep(0.002)
            except Exception as exc:  # e.g. the client is in a fatal state
                if not _is_kafka_error(exc):
                    raise
                self._record_failure(_name(exc))
                self._dropped += 1
                return

    def wait(self, timeout: float = 30.0) -> None:
        self._seal()
        if not self._done.wait(timeout):
            self._owner._stalled(self._created)
        self._raise_unless_delivered()

    async def wait_async(self, timeout: float = 30.0) -> None:
        # the loop polls the client while it waits (_LoopPoller): the acknowledgements'
        # callbacks run on the loop's thread and resolve the future directly, instead of
        # 100 GIL hand-overs per request between the loop and a poll thread
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        here = threading.get_ident()

        def wake() -> None:
            if threading.get_ident() == here:
                _resolve(answered)
                return
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown, timed out)
                loop.call_soon_threadsafe(_resolve, answered)

        self._on_done = wake  # before sealing: whoever finishes sees it
        self._seal()
        if answered.done():
            self._raise_unless_delivered()
            return
        poller = self._owner._poll_on(loop)
        poller.join()
        try:
            await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            self._owner._stalled(self._created)
        finally:
            poller.leave()
        self._raise_unless_delivered()

    def _raise_unless_delivered(self) -> None:
        pending = self.sent - self._answered - self._dropped
        if pending > 0 or self.failed:
            raise DeliveryError(
                pending + self.failed, self.first_error or "timed out waiting for acks"
            )


class _LoopPoller:
    """Polls a producer's client from an event loop every ``_TICK_S`` while batches are
    awaited on it: the delivery callbacks then run between the loop's other callbacks.
    A client polled from its own thread instead took the GIL once per record, and the
    hand-overs with a busy loop cost more CPU than the callbacks themselves."""

    def __init__(self, owner: ConfluentProducer, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop
        self._waiting = 0
        self._ticking = False
        self._last_waiter = 0.0  # when the last batch was answered (monotonic)

    def usable(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether batches awaited on ``loop`` are served: this poller's loop runs and is
        ``loop`` or busy (another loop's batches are then resolved thread-safely)."""
        return not self._loop.is_closed() and (self._loop is loop or self._waiting > 0)

    def join(self) -> None:
        self._waiting += 1
        if not self._ticking:
            self._ticking = True
            self._loop.call_soon_threadsafe(self._tick)

    def leave(self) -> None:
        self._waiting -= 1
        self._last_waiter = time.monotonic()

    def _tick(self) -> None:
        owner = self._owner
        now = owner._loop_polled = time.monotonic()
        owner._loop_polling.clear()
        owner._producer.poll(0)
        # polling on a little after the last batch: under steady traffic the next one
        # comes soon, and the thread would otherwise take over in between
        if self._waiting or now - self._last_waiter < _HANDOVER_S / 2:
            self._loop.call_later(_TICK_S, self._tick)
        else:
            self._ticking = False
            owner._loop_polled = 0.0
            owner._loop_polling.set()  # the thread polls again


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
