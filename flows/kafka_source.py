"""A Kafka source that routes records as it reads, and ends when idle or asked to stop.

Like Bytewax's ``KafkaSource`` (no consumer group, the next offsets as recovery state,
librdkafka's lag in the same gauge) but:

- one input partition per Kafka partition *index*, reading that partition of every topic
  with one consumer: 4 consumers for 6 topics of 4 partitions instead of 24, so the broker
  answers a quarter of the fetches (the event topics are read together anyway);
- each record goes straight through ``route`` into a key and a value, and each fetch is
  emitted as one ``(key, (key, [values in read order]))`` item per key: no message object,
  no separate key step and no per-record work in the engine, which were most of the flow's
  time (the key is repeated in the value: a stateful step then knows its key from its
  first item);
- it notices a topic that restarted (CONTRACT §12): a broker that came back empty, a topic
  deleted and created again (its topic id changed), or a partition whose end is before
  the saved offset. Such a partition is read again from its start — never from the saved
  offset, which would skip records — and what the old one held that the flow had not read
  (up to the highest end offset seen) is counted in ``pulse_broker_lost_records_total``
  and logged. Nothing is read while the broker looks gone until the topics' identity is
  known again; the recovery state carries the topic ids, the cluster id and the highest
  end seen with the offsets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter

__all__ = ["BROKER_LOST", "BROKER_RESETS", "RoutingKafkaSource"]

# (Kafka key, value, topic, partition, offset) -> (key, value) for the flow
Route = Callable[[bytes | None, bytes, str, int, int], tuple[str, Any]]
# The recovery state of one partition index: the next offset of each topic, with what
# identifies the topic read (its id, the cluster's id) and the highest end offset seen, so
# that a topic that restarted is noticed and what was lost with it is counted.
State = dict[str, Any]
# After a fetch that found nothing, the next one waits this long: an idle flow does not
# spin on the broker (Bytewax polls a source again at once unless told when to).
_IDLE_PAUSE = timedelta(milliseconds=20)
_CHECK_EVERY_S = 2.0  # how often the topics' identity is looked up
_SUSPECT_CHECK_S = 0.3  # ... and while the broker looks gone
_DRAIN_IDLE_S = 0.5  # draining: a partition ends once nothing came for this long
_GIVE_UP_S = 30.0  # exit when idle: a partition not known to be read to its end waits this long
_ZERO_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # a broker without topic ids answers this

BROKER_LOST = Counter(
    "pulse_broker_lost_records_total",
    "Records a restarted broker (or re-created topic) lost before the flow read them",
    ["topic"],
)
BROKER_RESETS = Counter(
    "pulse_broker_topic_resets_total",
    "Times a topic partition restarted (new broker, re-created topic, end before the saved "
    "offset) and was read again from its start",
    ["topic"],
)
_log = logging.getLogger(__name__)


def _resumed(resume: Any) -> tuple[str | None, dict[str, list[Any]]]:
    """(cluster id, {topic: [offset, topic id, highest end seen]}) from a saved state; the
    earlier format was ``{topic: offset}``."""
    if not resume:
        return None, {}
    if resume.get("v") == 2:
        cluster = resume.get("cluster")
        return (str(cluster) if cluster else None), {
            t: list(v) for t, v in resume["topics"].items()
        }
    return None, {t: [o, None, 0] for t, o in resume.items() if isinstance(o, int)}


class _Partition(StatefulSourcePartition[Any, State]):
    def __init__(
        self,
        step_id: str,
        consumer_config: dict[str, Any],
        topics: list[str],
        partition: int,
        resume: State | None,
        source: RoutingKafkaSource,
    ) -> None:
        self._cluster, saved = _resumed(resume)
        self._offsets = {t: saved.get(t, [OFFSET_BEGINNING])[0] for t in topics}
        self._ids: dict[str, str | None] = {t: (saved.get(t) or [0, None])[1] for t in topics}
        self._high = {t: (saved.get(t) or [0, None, 0])[2] for t in topics}
        self._partition = partition
        self._source = source
        self._step_id = step_id
        self._consumer = Consumer(
            {**consumer_config, "stats_cb": self._stats, "error_cb": self._on_error}
        )
        self._admin = AdminClient(
            {"bootstrap.servers": consumer_config["bootstrap.servers"], "log_level": 0}
        )
        # Nothing is read until the topics' identity is known: a broker that restarted
        # empty must not be read from the saved offsets.
        self._suspect = True
        self._errors = 0  # connection errors seen (by the error callback)
        self._check: tuple[dict[str, Any], Any, float] | None = None
        self._next_check = 0.0
        self._next_high = 0.0
        self._next_end_check = 0.0
        self._present: set[str] = set()  # topics known to have this partition
        # topics found restarted by their end offset, and when: their new id is learnt from
        # the next lookup begun after that, not counted as another restart
        self._relearn: dict[str, float] = {}
        self._last_warning = 0.0
        self._assign()
        self._last_read = time.monotonic()
        self._awake: datetime | None = None

    def _assign(self) -> None:
        self._consumer.assign([TopicPartition(t, self._partition, o)
                               for t, o in self._offsets.items()])  # fmt: skip

    def _stats(self, stats: str) -> None:
        topics = json.loads(stats)["topics"]
        for topic, offset in self._offsets.items():
            part = topics.get(topic, {}).get("partitions", {}).get(str(self._partition))
            if part is not None and offset >= 0:
                BYTEWAX_CONSUMER_LAG_GAUGE.labels(
                    step_id=self._step_id, topic=topic, partition=self._partition
                ).set(part["ls_offset"] - offset)

    def _on_error(self, error: KafkaError) -> None:
        """The consumer lost the broker (or hit a fatal error): stop reading until the
        topics' identity is known again."""
        if error.fatal():
            raise KafkaException(error)
        self._errors += 1
        self._suspect = True

    # -- noticing a restarted topic ---------------------------------------------------------

    def _look_up(self, now: float) -> None:
        """Start a lookup of the topics' ids and the cluster id when one is due, or take
        the answer of the one under way (never blocks the flow)."""
        if self._check is None:
            if now >= self._next_check:
                topics = TopicCollection(self._source.topics)
                self._check = (
                    self._admin.describe_topics(topics, request_timeout=5.0),
                    self._admin.describe_cluster(request_timeout=5.0),
                    now,
                )
            return
        described, cluster, began = self._check
        if not (cluster.done() and all(f.done() for f in described.values())):
            if now - began > 15.0:  # a lookup that never answers: start another
                self._check, self._next_check = None, now
            return
        self._check = None
        self._next_check = now + (_SUSPECT_CHECK_S if self._suspect else _CHECK_EVERY_S)
        try:
            cluster_id = cluster.result().cluster_id
        except KafkaException:
            return  # the broker is unreachable: keep waiting
        ids: dict[str, str | None] = {}
        added = []
        for topic, future in described.items():
            try:
                description = future.result()
            except KafkaException as exc:
                if (
                    topic in self._offsets
                    and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                ):
                    ids[topic] = None  # deleted (not created again yet)
                continue  # otherwise not known now: judged at the next lookup
            text = str(description.topic_id)
            topic_id = None if text == _ZERO_ID else text
            indexes = {p.id for p in description.partitions}
            self._source.new_partitions(topic, indexes)
            if self._partition in indexes:
                self._present.add(topic)
            else:  # a topic with fewer partitions (the erasures topic has one)
                self._present.discard(topic)
            if topic in self._offsets:
                ids[topic] = topic_id
            elif self._partition in indexes:  # a partition created since this one started
                self._offsets[topic], self._ids[topic], self._high[topic] = (
                    OFFSET_BEGINNING, topic_id, 0)  # fmt: skip
                added.append(topic)
        if added:
            _log.warning("Kafka topics %s have a new partition %d: reading it from its start",
                         ", ".join(added), self._partition)  # fmt: skip
            self._assign()
        self._compare(cluster_id, ids, began)

    def _compare(self, cluster_id: str | None, ids: dict[str, str | None], began: float) -> None:
        new_cluster = self._cluster is not None and cluster_id and cluster_id != self._cluster
        restarted: dict[str, str] = {}
        for topic, topic_id in ids.items():
            if topic in self._relearn:  # restarted already (_check_ends)
                if began >= self._relearn[topic]:  # not an answer from before it
                    del self._relearn[topic]
                    self._ids[topic] = topic_id
                continue
            known = self._ids[topic]
            if topic_id is None:
                if known is not None or self._offsets[topic] > 0:
                    restarted[topic] = "deleted"
            elif known is not None and known != topic_id:
                restarted[topic] = "created again (new topic id)"
            elif known is None and new_cluster and self._offsets[topic] > 0:
                restarted[topic] = "on a new broker (new cluster id)"
            self._ids[topic] = topic_id
        self._cluster = cluster_id or self._cluster
        self._restart(restarted)
        if restarted or self._suspect:
            self._suspect = False
            self._assign()  # records fetched while in doubt are fetched again

    def _restart(self, restarted: dict[str, str]) -> None:
        """Read these topics (partition of this index; topic -> why) again from their
        start; count and log what the old ones held that was not read."""
        if not restarted:
            return
        lost = 0
        for topic in restarted:
            unread = max(0, self._high[topic] - max(self._offsets[topic], 0))
            BROKER_RESETS.labels(topic).inc()
            BROKER_LOST.labels(topic).inc(unread)
            lost += unread
            self._offsets[topic] = OFFSET_BEGINNING
            self._high[topic] = 0
        whys = sorted(set(restarted.values()))
        _log.warning(
            "Kafka partition %d of %s restarted (%s): reading it from its start; %s",
            self._partition, ", ".join(restarted), "; ".join(whys),
            f"{lost} record(s) the flow had not read were lost with the old one (the "
            "embedded broker keeps records in memory only)" if lost else
            "the flow had read everything the old one held",
        )  # fmt: skip

    def _check_ends(self, now: float, read: bool) -> None:
        """Remember the highest end offset seen (what a broker that dies would lose), and
        notice a partition whose end is now before the saved offset (it restarted). After
        each fetch that read records; while idle, every 100 ms."""
        if not read and now < self._next_high:
            return
        self._next_high = now + 0.1
        restarted = {}
        for topic, offset in self._offsets.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, self._partition), cached=True
                )
            except KafkaException:  # a topic not known (yet)
                continue
            if high < 0:
                continue
            if 0 <= high < offset:
                restarted[topic] = f"its end {high} is before the saved offset {offset}"
            elif high > self._high[topic]:
                self._high[topic] = high
        if restarted:
            self._restart(restarted)
            self._relearn.update(dict.fromkeys(restarted, now))
            self._assign()

    def next_batch(self) -> list[Any]:
        src = self._source
        if src.stop is not None and src.stop.is_set():
            raise StopIteration
        now = time.monotonic()
        self._look_up(now)
        if self._suspect:  # the broker looks gone: nothing is read until it is known again
            return self._idle(now)
        errors = self._errors
        msgs = self._consumer.consume(src.batch_size, 0.001)
        now = time.monotonic()
        if self._errors != errors:  # the broker went away during this fetch: in doubt
            return self._idle(now)
        if not msgs:
            self._check_ends(now, False)
            return self._idle(now)
        self._awake = None
        self._last_read = now
        route, partition, offsets = src.route, self._partition, self._offsets
        by_key: dict[str, list[Any]] = {}
        for msg in msgs:
            topic = msg.topic() or ""
            error = msg.error()
            if error is not None:
                self._read_error(topic, error)
                continue
            offset = msg.offset() or 0
            key, value = route(msg.key(), msg.value() or b"", topic, partition, offset)
            offsets[topic] = offset + 1  # resume after the last record read
            values = by_key.get(key)
            if values is None:
                by_key[key] = [value]
            else:
                values.append(value)
        # after this fetch's records count as read: they came from the partition as it was
        # fetched, so a restart noticed now loses only what was never fetched
        self._check_ends(now, True)
        return [(key, (key, values)) for key, values in by_key.items()]

    def _idle(self, now: float) -> list[Any]:
        """Nothing read: end when idle for long enough (``idle_s``, or while draining),
        else ask to be called again shortly."""
        src, idle = self._source, now - self._last_read
        if (
            src.idle_s is not None
            and idle >= src.idle_s
            and self._caught_up(now, idle - src.idle_s)
        ):
            raise StopIteration
        if src.drain is not None and src.drain.is_set() and idle >= _DRAIN_IDLE_S:
            raise StopIteration
        self._awake = datetime.now(UTC) + _IDLE_PAUSE
        return []

    def _caught_up(self, now: float, overdue: float) -> bool:
        """Whether this partition of every topic has been read to its end, so that being
        idle means there is nothing left (a loaded machine can take longer than ``idle_s``
        to look the topics up or to fetch). A broker that cannot be asked for
        ``_GIVE_UP_S`` past the idle time counts as done: nothing more can be read."""
        if self._suspect:
            return overdue >= _GIVE_UP_S
        if now < self._next_end_check:
            return False
        self._next_end_check = now + 0.2
        present = [t for t in self._offsets if t in self._present]
        fetching = {p.topic: p.offset for p in self._consumer.position(
            [TopicPartition(t, self._partition) for t in present])}  # fmt: skip
        for topic in present:
            offset = self._offsets[topic]
            partition = TopicPartition(topic, self._partition)
            try:
                # the ends the last fetches brought (a fetch answers every ~0.5 s while
                # idle); asked of the broker only before any came (asking is slow)
                low, high = self._consumer.get_watermark_offsets(partition, cached=True)
                if high < 0:
                    low, high = self._consumer.get_watermark_offsets(partition, timeout=2.0)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # no such partition: nothing to read
                return overdue >= _GIVE_UP_S
            # the fetch position passes markers that are not records
            at = max(offset, fetching.get(topic, -1))
            if (at if at >= 0 else low) < high:
                return overdue >= _GIVE_UP_S
        return True

    def _read_error(self, topic: str, error: KafkaError) -> None:
        """An error in place of a record: fatal ones stop the flow; an offset out of
        range (the topic restarted, or retention removed what was not read) is read again
        from the start; others (a topic not created yet...) are logged and waited out."""
        if error.fatal():
            raise RuntimeError(f"error reading Kafka topic {topic!r}: {error}")
        if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            if topic in self._offsets:
                self._restart({topic: "no record at the saved offset any more"})
                self._relearn[topic] = time.monotonic()
                self._assign()
            return
        now = time.monotonic()
        if now - self._last_warning > 30.0:
            self._last_warning = now
            _log.warning("reading Kafka topic %s: %s (retrying)", topic, error.name())

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> State:
        topics = {t: [o, self._ids[t], self._high[t]] for t, o in self._offsets.items()}
        return {"v": 2, "cluster": self._cluster, "topics": topics}

    def close(self) -> None:
        self._consumer.close()


class RoutingKafkaSource(FixedPartitionedSource[Any, State]):
    """Every partition of ``topics``, read from the beginning (or the recovered offset)."""

    def __init__(
        self,
        brokers: Iterable[str],
        topics: Iterable[str],
        route: Route,
        *,
        batch_size: int = 5000,
        idle_s: float | None = None,
        stop: threading.Event | None = None,
        drain: threading.Event | None = None,
    ) -> None:
        self.brokers = ",".join(brokers)
        self.topics = list(topics)
        self.route = route
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.stop = stop
        self.drain = drain  # set: end once every partition is read to its end
        self._indexes: set[int] | None = None  # the partition indexes at start
        self._warned: set[tuple[str, int]] = set()

    def new_partitions(self, topic: str, indexes: set[int]) -> None:
        """Say (once) which partitions of ``topic`` no input partition of this flow reads:
        created after it started, they are read from their start after a restart."""
        unread = indexes - (self._indexes or indexes) - {i for t, i in self._warned if t == topic}
        for index in sorted(unread):
            self._warned.add((topic, index))
            _log.warning(
                "Kafka topic %s has a partition %d created after the flow started: it is read "
                "from its start once the flow restarts", topic, index,
            )  # fmt: skip

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self.brokers})
        indexes: set[int] = set()
        for topic in self.topics:
            meta = admin.list_topics(topic).topics[topic]
            if meta.error is not None:
                raise RuntimeError(f"cannot list partitions of Kafka topic {topic!r}: {meta.error}")
            indexes.update(meta.partitions)
        self._indexes = indexes
        return [f"partition-{i}" for i in sorted(indexes)]

    def build_part(self, step_id: str, for_part: str, resume_state: State | None) -> _Partition:
        index = int(for_part.rsplit("-", 1)[1])
        topics = self._topics_with(index)
        config = {
            "group.id": "pulse-flow-unused",  # offsets live in Bytewax's recovery store
            "enable.auto.commit": "false",
            "bootstrap.servers": self.brokers,
            "enable.partition.eof": "false",
            "statistics.interval.ms": 1000,
            # An offset out of range is reported, never silently moved to the end: the
            # partition is then read from its start (see _Partition._read_error).
            "auto.offset.reset": "error",
            "log_level": 2,  # connection errors come to the error callback instead
        }
        return _Partition(step_id, config, topics, index, resume_state, self)

    def _topics_with(self, index: int) -> list[str]:
        """The topics that have partition ``index`` (topics may differ in partitions)."""
        admin = AdminClient({"bootstrap.servers": self.brokers})
        meta = admin.list_topics().topics
        return [t for t in self.topics if t in meta and index in meta[t].partitions]
