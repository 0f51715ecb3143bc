"""The event flow: Kafka topics -> decode -> per-user de-dup and sessions -> ClickHouse.

Thin Bytewax wiring around :mod:`flows.logic`; see ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from prometheus_client import Counter, Gauge, Histogram

from flows.config import FlowConfig
from flows.kafka_source import DecodingKafkaSource
from flows.logic import FlowRules, StepOutput, enrich
from flows.rows import Part, Read, batch_rows
from flows.shard import Shard, shard_of
from flows.state_store import ShardStore
from ingest.events import decode_event
from ingest.fx import FxRates
from warehouse.client import connect
from warehouse.migrate import migrate
from warehouse.queries import complete_until
from warehouse.rollups import refresh
from warehouse.writer import BackgroundWriter, WarehouseWriter

__all__ = ["FlowConfig", "build_flow"]  # FlowConfig re-exported for callers


UNDECODABLE = Counter(
    "pulse_flow_undecodable_total", "Records on event topics that are not Pulse events", ["topic"]
)
FLOW_EVENTS = Counter("pulse_flow_events_total", "Events written to the warehouse by the flow")
FLOW_DUPLICATES = Counter("pulse_flow_duplicates_total", "Repeated event_ids dropped by the flow")
FLOW_NEWEST = Gauge("pulse_flow_newest_event_seconds", "Event time of the newest event written")
FLOW_SNAPSHOT = Histogram(
    "pulse_flow_snapshot_seconds", "Saving one shard's changed users at an epoch's end"
)
FLOW_USERS = Gauge(
    "pulse_flow_users", "Users whose state the flow holds in memory, by shard", ["shard"]
)
ROLLUP_REFRESH = Histogram("pulse_rollup_refresh_seconds", "One refresh of the dirty rollups")
_log = logging.getLogger(__name__)


class _ReadSoFar:
    """The partitions a flow has read (shared by its workers in this process), each with
    the newest event time read from it."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], Part] = {}

    def settled_ms(self) -> int | None:
        """How far in event time every partition has been read (None: nothing read yet).
        An event older than that can only come late: a user idle since the retention
        before it is forgotten, and older ids and sessions are pruned against it."""
        return min((p.newest_ms for p in list(self.parts.values())), default=None)


def _decoder(fx: FxRates, read: _ReadSoFar) -> Any:
    """A Kafka record -> ``(shard, Read)``: the key the flow folds on and the enriched
    event (None, counted and logged, for a record that is not a Pulse event)."""

    parts = read.parts

    def decode(value: bytes, topic: str, partition: int, offset: int) -> Any:
        try:
            event = decode_event(value)
        except msgspec.MsgspecError as exc:
            # Only a producer bypassing the edge can put these here: count and log each one.
            UNDECODABLE.labels(topic).inc()
            _log.warning("skipping record %s/%s@%s: %s", topic, partition, offset, exc)
            return None
        enriched = enrich(event, fx)
        part = parts.get((topic, partition))
        if part is None:
            part = parts[(topic, partition)] = Part(topic, partition)
        if enriched.ts_ms > part.newest_ms:
            part.newest_ms = enriched.ts_ms
        return shard_of(event.user_id), Read(enriched, part, offset)

    return decode


class _WarehouseSink(FixedPartitionedSink[Any, None]):
    """Writers to the warehouse. With chDB there is exactly one, so that however many
    Bytewax processes run, only the one holding it opens the embedded warehouse."""

    def __init__(self, config: FlowConfig) -> None:
        self._config = config

    def list_parts(self) -> list[str]:
        return [f"warehouse-{i}" for i in range(self._config.sink_partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WarehousePartition:
        client = connect(self._config.warehouse_dsn, self._config.database)
        migrate(client)  # whichever runner started the flow, the schema is there
        rollups = _Rollups(client, self._config)
        writer = BackgroundWriter(WarehouseWriter(client), after=rollups.maybe_refresh)
        return _WarehousePartition(writer, rollups)


class _Rollups:
    """Keeps the rollups current: every few seconds, recompute the dirty minutes that are
    complete (older than the watermark minus the allowed lateness). A refresh that took
    long spaces the next ones out, so it never takes more than ~1/5 of the sink's time."""

    def __init__(self, client: Any, config: FlowConfig) -> None:
        self._client = client
        self._lateness = config.allowed_lateness
        self._every_s = config.rollup_every_s
        self._gap_s = config.rollup_every_s
        self._last = time.monotonic()

    def maybe_refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self._gap_s:
            return
        began = time.monotonic()
        until = complete_until(self._client, self._lateness)
        if until is not None:
            refresh(self._client, until)
        self._last = time.monotonic()
        ROLLUP_REFRESH.observe(self._last - began)
        self._gap_s = max(self._every_s, 4 * (self._last - began))


class _WarehousePartition(StatefulSinkPartition[Any, None]):
    """Builds rows on the flow's thread and writes them on the writer's. Every write of an
    epoch is done before the epoch's snapshot, so Bytewax never commits an epoch whose
    rows a crash could still lose."""

    def __init__(self, writer: BackgroundWriter, rollups: _Rollups) -> None:
        self._writer = writer
        self._rollups = rollups

    def snapshot(self) -> None:
        self._writer.flush()
        return None  # every write is idempotent: nothing else to remember

    def close(self) -> None:
        self._writer.flush()
        self._rollups.maybe_refresh(force=True)

    def write_batch(self, batches: list[tuple[list[Read], list[StepOutput | None]]]) -> None:
        batch = batch_rows(batches, time.time_ns() // 1_000_000)
        FLOW_EVENTS.inc(batch.events)
        FLOW_DUPLICATES.inc(batch.duplicates)
        if batch.newest_ms:
            FLOW_NEWEST.set(batch.newest_ms / 1000)
        self._writer.submit(batch.tables, batch.minutes)


_CHECK = timedelta(minutes=10)  # how often a shard looks for idle users


_Folded = tuple[list[Read], list[StepOutput | None]]  # reads and what each changed


class _ShardLogic(StatefulBatchLogic[list[Read], _Folded, tuple[str, int]]):
    """One :class:`~flows.shard.Shard` behind Bytewax's stateful operator.

    Bytewax's snapshot is only the shard's key and generation; the users changed since the
    last one are saved in the shard's store (``flows.state_store``), so a snapshot costs
    what changed, not the shard's whole state, and Bytewax's per-key work is per batch.
    """

    def __init__(
        self,
        rules: FlowRules,
        read: _ReadSoFar,
        state_dir: Path | None,
        resume: tuple[str, int] | None,
    ) -> None:
        self._rules = rules
        self._read = read
        self._state_dir = state_dir
        self._shard: Shard | None = None
        self._key = ""
        if resume is not None:  # a fresh shard learns its key from its first event
            self._open(*resume)
        self._wake = self._next_check()

    def _open(self, key: str, resume_gen: int | None) -> Shard:
        path = None if self._state_dir is None else self._state_dir / f"shard-{key}.sqlite3"
        self._key = key
        self._shard = Shard(self._rules, ShardStore(path, resume_gen), resume_gen or 0)
        return self._shard

    def _next_check(self) -> datetime:
        # a quarter of a short retention: users idle for it are held at most 25% longer
        return datetime.now(UTC) + min(timedelta(milliseconds=self._rules.retention_ms / 4), _CHECK)

    def on_batch(self, values: list[list[Read]]) -> tuple[list[_Folded], bool]:
        reads = values[0] if len(values) == 1 else [r for batch in values for r in batch]
        shard = self._shard or self._open(shard_of(reads[0].event.event.user_id), None)
        folded = shard.fold([read.event for read in reads], self._read.settled_ms())
        return [(reads, folded)], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime:
        return self._wake

    def on_notify(self) -> tuple[list[_Folded], bool]:
        """Forget users whose newest event is older than the retention behind what every
        partition has been read to: the state stays bounded however many users come and
        go."""
        settled = self._read.settled_ms()
        if self._shard is not None and settled is not None:
            self._shard.forget(settled - self._rules.retention_ms)
        self._wake = self._next_check()
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[str, int]:
        if self._shard is None:
            return self._key, 0
        FLOW_USERS.labels(self._key).set(len(self._shard))
        with FLOW_SNAPSHOT.time():
            return self._key, self._shard.snapshot()


def build_flow(config: FlowConfig) -> Dataflow:
    """The dataflow reading every event topic into the warehouse."""
    rules = config.rules

    read = _ReadSoFar()

    flow = Dataflow("pulse_events")
    source = DecodingKafkaSource(
        [config.bootstrap],
        config.topics.events,
        _decoder(config.fx, read),
        batch_size=config.batch_size,
        idle_s=config.idle_stop_s,
        stop=config.stop,
    )
    # (shard, [reads]) per shard and fetch: decoded, enriched, in arrival order
    by_shard = op.input("kafka_shards", flow, source)
    folded = op.stateful_batch(
        "fold_shards", by_shard, lambda resume: _ShardLogic(rules, read, config.state_dir, resume)
    )
    op.output("warehouse", folded, _WarehouseSink(config))
    return flow
