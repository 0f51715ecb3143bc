"""The event flow: Kafka topics -> user shards -> decode, de-dup, sessions, rows -> ClickHouse.

Thin Bytewax wiring around :mod:`flows.logic`; see ``docs/architecture.md``. The source
only routes each record by its Kafka key (the ``user_id``, CONTRACT §6) to a shard of
users; the shard's step decodes, folds and encodes the rows, so what crosses between
Bytewax processes is raw records and encoded rows, both cheap to send, never the flow's
objects; the sink only writes.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from prometheus_client import Counter, Gauge, Histogram

from flows.bots import bot_rows, is_bot_read
from flows.config import FlowConfig
from flows.dead_letters import DeadLetter, DeadLetterSink
from flows.erasure import ERASED, Erasure, Erasures, decode_erasure, read_erasures
from flows.kafka_source import RoutingKafkaSource
from flows.logic import FlowRules, enrich
from flows.rows import Part, Progress, Read, batch_rows, merge_progress, progress_rows
from flows.shard import Shard, shard_of_key
from flows.state_store import ShardStore
from ingest.events import Rejection, validate
from ingest.fx import FxRates
from ingest.privacy import EdgePrivacy
from warehouse.client import connect, presence_check
from warehouse.erasure import erase_rows
from warehouse.experiment_totals import refresh as refresh_experiments
from warehouse.migrate import migrate
from warehouse.queries import complete_until
from warehouse.retention import expunge, purge
from warehouse.rollups import PASSES, refresh, settled_until
from warehouse.writer import BackgroundWriter, Encoded, WarehouseWriter

__all__ = ["build_flow"]


FLOW_EVENTS = Counter("pulse_flow_events_total", "Events written to the warehouse by the flow")
FLOW_DUPLICATES = Counter("pulse_flow_duplicates_total", "Repeated event_ids dropped by the flow")
FLOW_NEWEST = Gauge("pulse_flow_newest_event_seconds", "Event time of the newest event written")
FLOW_SNAPSHOT = Histogram(
    "pulse_flow_snapshot_seconds", "Saving one shard's changed users at an epoch's end"
)
FLOW_USERS = Gauge(
    "pulse_flow_users", "Users whose state the flow holds in memory, by shard", ["shard"]
)
FLOW_STATE_BYTES = Gauge(
    "pulse_flow_state_bytes",
    "Bytes of the encoded states of the users the flow holds, by shard",
    ["shard"],
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


Record = tuple[bytes, str, int, int]  # a record as read: value, topic, partition, offset


class _UserId(msgspec.Struct):
    user_id: str
    anonymous_id: str | None = None


_user_id = msgspec.json.Decoder(_UserId).decode


def _route(key: bytes | None, value: bytes, topic: str, partition: int, offset: int) -> Any:
    """A Kafka record -> ``(shard, record)``: the shard of its key, which is the visitor
    (``anonymous_id``, else ``user_id``: ``docs/architecture.md``), or of the visitor in
    the value, for a record produced without a key."""
    if key is None:
        try:
            ids = _user_id(value)
            key = (ids.anonymous_id or ids.user_id).encode()
        except msgspec.MsgspecError:
            key = b""  # not a Pulse event: the shard's step dead-letters it
    return shard_of_key(key), (value, topic, partition, offset)


def _no_ip(value: bytes) -> bytes:
    """A record's bytes without an IP address, for its dead letter (CONTRACT §11): only a
    producer bypassing the edge can have written one to an event topic."""
    return _EDGE.dead_letter(value)[0] if b'"ip"' in value else value


_EDGE = EdgePrivacy()


def _decoder(fx: FxRates, read: _ReadSoFar, erasures_topic: str | None = None) -> Any:
    """A record -> its enriched event and where it was read from, or a dead letter for a
    record the flow cannot decode or store.

    Only a producer bypassing the edge can put such records on the event topics. They are
    judged by the edge's rules, less the clock and size ones (``ingest.events.validate``),
    so the verdict on a record is the same on every read of it."""

    parts = read.parts
    currencies = fx.currencies

    def decode(
        value: bytes, topic: str, partition: int, offset: int
    ) -> Read | DeadLetter | Erasure:
        if topic == erasures_topic:  # CONTRACT §11: forget a user (flows.erasure)
            return decode_erasure(value, topic, partition, offset)
        try:
            event = validate(value, now_ms=None, currencies=currencies, max_bytes=None)
            if type(event) is Rejection:
                return DeadLetter(_no_ip(value), event.reason, topic, partition, offset)
            enriched = enrich(event, fx)  # type: ignore[arg-type]
        except Exception as exc:  # no record may stop the flow, not even an unforeseen one
            _log.exception("cannot process record %s/%s@%s", topic, partition, offset)
            reason = f"cannot process: {type(exc).__name__}: {exc}"[:500]
            return DeadLetter(_no_ip(value), reason, topic, partition, offset)
        part = parts.get((topic, partition))
        if part is None:
            part = parts[(topic, partition)] = Part(topic, partition)
        if enriched.ts_ms > part.newest_ms:
            part.newest_ms = enriched.ts_ms
        return Read(enriched, part, offset)

    return decode


class Rows(NamedTuple):
    """What one shard's step made of a batch of records, for the sink to write."""

    encoded: Encoded  # events, sessions and duplicates rows, encoded
    events: int
    duplicates: int
    newest_ms: int
    progress: Progress
    erased: tuple[str, ...] = ()  # users erased after this batch's events (flows.erasure)


class _WarehouseSink(FixedPartitionedSink[Any, None]):
    """Writers to the warehouse. With chDB there is exactly one, so that however many
    Bytewax processes run, only the one holding it opens the embedded warehouse."""

    def __init__(self, config: FlowConfig) -> None:
        self._config = config

    def list_parts(self) -> list[str]:
        return [f"warehouse-{i}" for i in range(self._config.sink_partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _WarehousePartition:
        config = self._config
        client = connect(config.warehouse_dsn, config.database)
        migrate(client)  # whichever runner started the flow, the schema is there
        # one retention pass per warehouse, not one per writer; the refresh on a client of
        # its own, so that it runs beside the writes
        rollups = _Rollups(
            connect(config.warehouse_dsn, config.database, create=False),
            config,
            purges=for_part == self.list_parts()[0],
        )
        writer = BackgroundWriter(
            WarehouseWriter(client, presence_check(config.warehouse_dsn)),
            after=rollups.after_write,
            stop=config.stop,
            status=config.write_status,
        )
        return _WarehousePartition(writer, rollups, client, config.idle_tick_s)


_SETTLE = timedelta(seconds=1)
_WAIT_S = 60.0  # the longest a stop or an erasure waits for a refresh under way


class _Rollups:
    """Keeps the rollups current: every few seconds, recompute the dirty minutes that are
    complete (older than the watermark minus the allowed lateness).

    The periodic refresh runs on a thread of its own, on its own client, beside the
    writes (``warehouse.rollups.refresh`` is safe against concurrent writes): a backlog's
    minutes are recomputed while the rest of it is still written, on the core the flow's
    thread leaves, and neither the writes nor an epoch's snapshot wait for a refresh
    (docs/benchmarks.md, issue #21). A refresh that took long spaces the next ones out, so
    it never takes more than about half of the time. The retention pass runs on the
    writer's thread between two writes, never during a refresh; at stop and after an
    erasure the caller refreshes everything complete itself, after any refresh under way."""

    def __init__(self, client: Any, config: FlowConfig, *, purges: bool = True) -> None:
        self._client = client
        self._lateness = config.allowed_lateness
        self._minute_rollups = config.minute_rollups
        self._every_s = config.rollup_every_s
        self._gap_s = config.rollup_every_s
        self._last = time.monotonic()
        self._purges = purges
        self._retention = config.retention
        self._purge_every_s = config.retention_every_s
        self._clock = config.clock
        self._purged: float | None = None  # when the last retention pass ran (clock)
        self._busy = threading.Lock()  # one refresh or retention pass at a time
        self._written = threading.Event()  # writes since the refresh thread last looked
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pulse-rollups", daemon=True)
        self._thread.start()

    def after_write(self) -> None:
        """After each write (on the writer's thread): the retention pass when one is due
        and no refresh is under way, this flow's or another's in this process (an
        erasure's: ``PASSES``), else after a later write; and a word to the refresh thread.
        The writes never wait for a refresh."""
        if self._purge_due() and self._busy.acquire(blocking=False):
            try:
                if PASSES.acquire(blocking=False):
                    try:
                        self._purge()
                    finally:
                        PASSES.release()
            finally:
                self._busy.release()
        self._written.set()

    def _run(self) -> None:
        while True:
            self._written.wait()  # an idle sink still writes now and then (idle_tick_s)
            if self._closing.wait(max(0.0, self._gap_s - (time.monotonic() - self._last))):
                return
            self._written.clear()
            try:
                self.maybe_refresh()
            except Exception as exc:  # the marks stay: the next refresh recomputes them
                _log.warning("refreshing the rollups failed: %s", exc)

    def close(self) -> None:
        """Stop the refresh thread (after the refresh under way, if any, for a while)."""
        self._closing.set()
        self._written.set()
        self._thread.join(_WAIT_S)

    def maybe_refresh(self, *, force: bool = False) -> None:
        """Refresh now (``force``: everything complete, whenever the last one ran), else if
        the last refresh is long enough ago. A refresh under way for too long (a server
        not answering) is not waited for: the marks stay, the next refresh does it."""
        if not self._busy.acquire(timeout=_WAIT_S):
            _log.warning("a rollup refresh is still under way after %.0f s: not waiting", _WAIT_S)
            return
        try:
            # another refresh of this process (an erasure's) may hold the passes: waited
            # for as long as this flow's own
            if not PASSES.acquire(timeout=_WAIT_S):
                _log.warning("another rollup refresh is under way after %.0f s: not waiting",
                             _WAIT_S)  # fmt: skip
                return
            try:
                self._refresh(force)
            finally:
                PASSES.release()
        finally:
            self._busy.release()

    def _refresh(self, force: bool) -> None:
        if not force and time.monotonic() - self._last < self._gap_s:
            return
        began = time.monotonic()
        # At stop (and after an erasure), everything complete; in between, not beyond
        # a partition still draining a backlog (warehouse.rollups.settled_until).
        if force:
            until = complete_until(self._client, self._lateness)
        else:
            until = settled_until(self._client, self._lateness, datetime.now(UTC))
        if until is not None:
            kept = self._minute_rollups
            now = datetime.fromtimestamp(self._clock(), UTC)
            refresh(self._client, until, minutes_from=None if kept is None else now - kept)
        # the experiments' kept sums (warehouse/experiment_totals.py); a write younger
        # than a second may be another writer's, still committing
        refresh_experiments(self._client, settle=_SETTLE)
        self._last = time.monotonic()
        ROLLUP_REFRESH.observe(self._last - began)
        self._gap_s = max(self._every_s, self._last - began)

    def _purge_due(self) -> bool:
        return self._purges and (
            self._purged is None or self._clock() - self._purged >= self._purge_every_s
        )

    def _purge(self) -> None:
        """At start and then every so often (``after_write``): a retention pass
        (PULSE_RETENTION), and the rows deleted since (by it or by erasures) rewritten out
        of their parts on disk."""
        now = self._purged = self._clock()
        if self._retention is not None:
            purged = purge(self._client, self._retention, datetime.fromtimestamp(now, UTC))
            if any(purged.rows.values()):
                _log.info("retention: dropped raw rows before %s: %s", purged.horizon, purged.rows)
        expunge(self._client)


class _WarehousePartition(StatefulSinkPartition[Rows, None]):
    """Writes the shards' encoded rows on the writer's thread. Every write of an epoch is
    done before the epoch's snapshot, so Bytewax never commits an epoch whose rows a crash
    could still lose."""

    def __init__(
        self, writer: BackgroundWriter, rollups: _Rollups, client: Any, tick_s: float
    ) -> None:
        self._writer = writer
        self._rollups = rollups
        self._client = client
        # An idle flow writes nothing, and the rollups' refresh and the retention pass run
        # after writes: an empty write now and then lets them run while nothing comes.
        self._idle = threading.Event()
        self._tick_s = tick_s
        threading.Thread(target=self._tick, name="pulse-sink-tick", daemon=True).start()

    def _tick(self) -> None:
        while not self._idle.wait(self._tick_s):
            try:
                self._writer.submit_encoded(Encoded({}, 0, None))
            except Exception:  # the writer gave up: the flow is stopping
                return

    def snapshot(self) -> None:
        self._writer.flush()
        return None  # every write is idempotent: nothing else to remember

    def close(self) -> None:
        self._idle.set()
        self._writer.flush()
        self._rollups.close()
        try:
            self._rollups.maybe_refresh(force=True)
        except Exception as exc:  # the marks stay: the next start recomputes them
            _log.warning("refreshing the rollups at stop failed: %s", exc)

    def write_batch(self, items: list[Rows]) -> None:
        progress: Progress = {}
        for rows in items:
            merge_progress(progress, rows.progress)
        FLOW_EVENTS.inc(sum(rows.events for rows in items))
        FLOW_DUPLICATES.inc(sum(rows.duplicates for rows in items))
        newest = max((rows.newest_ms for rows in items), default=0)
        if newest:
            FLOW_NEWEST.set(newest / 1000)
        batches = [rows.encoded for rows in items]
        if progress:
            now_ms = time.time_ns() // 1_000_000
            batches.append(
                WarehouseWriter.encode({"flow_progress": progress_rows(progress, now_ms)})
            )
        if batches:
            self._writer.submit_encoded(Encoded.join(batches))
        erased = [user for rows in items for user in rows.erased]
        if erased:
            # The rows read before the erasure are written (flush), then deleted here too:
            # whether or not whoever asked is still waiting, nothing of the user stays.
            self._writer.flush()
            with WarehouseWriter.lock():
                found = [erase_rows(self._client, user) for user in erased]
            if any(n for counts in found for n in counts.values()):
                self._rollups.maybe_refresh(force=True)


_CHECK = timedelta(minutes=10)  # how often a shard looks for idle users


class _ShardLogic(StatefulBatchLogic[tuple[str, list[Record]], Rows | DeadLetter, tuple[str, int]]):
    """One :class:`~flows.shard.Shard` behind Bytewax's stateful operator.

    Bytewax's snapshot is only the shard's key and generation; the users changed since the
    last one are saved in the shard's store (``flows.state_store``), so a snapshot costs
    what changed, not the shard's whole state, and Bytewax's per-key work is per batch.
    """

    def __init__(
        self,
        rules: FlowRules,
        read: _ReadSoFar,
        decode: Any,
        state_dir: Path | None,
        resume: tuple[str, int] | None,
        erased: dict[str, int] | None = None,
    ) -> None:
        self._rules = rules
        self._read = read
        self._decode = decode
        self._state_dir = state_dir
        self._erasures = Erasures(erased)  # users erased, and since when
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
        # an eighth of a short retention: users idle for it are held at most 12.5% longer
        # (a pass reads the header of each user held: docs/benchmarks.md, "Flow: a
        # retention pass")
        return datetime.now(UTC) + min(timedelta(milliseconds=self._rules.retention_ms / 8), _CHECK)

    def on_batch(
        self, values: list[tuple[str, list[Record]]]
    ) -> tuple[list[Rows | DeadLetter], bool]:
        shard = self._shard if self._shard is not None else self._open(values[0][0], None)
        decode = self._decode
        reads = []
        bots: list[Read] = []
        letters: list[Rows | DeadLetter] = []
        erasures = self._erasures
        erased: list[Erasure] = []
        for _, records in values:
            for value, topic, partition, offset in records:
                read = decode(value, topic, partition, offset)
                if type(read) is Read:
                    if erasures and erasures.covers(read.event):
                        ERASED.inc()  # read after its user was erased: never stored
                        continue
                    if is_bot_read(read):  # CONTRACT §9: stored apart, in no metric
                        bots.append(read)
                        continue
                    reads.append(read)
                elif type(read) is Erasure:
                    erasures.add(read)
                    erased.append(read)
                else:
                    letters.append(read)
        if not reads and not erased and not bots:
            return letters, StatefulBatchLogic.RETAIN
        if reads:
            folded = shard.fold([read.event for read in reads], self._read.settled_ms())
            batch = batch_rows([(reads, folded)])
            if bots:
                batch.tables["bot_events"] = bot_rows(bots, batch.progress)
            encoded = WarehouseWriter.encode(batch.tables, batch.minutes, batch.spans)
            rows = Rows(encoded, batch.events, batch.duplicates, batch.newest_ms, batch.progress)
        else:
            progress: Progress = {}
            tables = {"bot_events": bot_rows(bots, progress)} if bots else {}
            rows = Rows(WarehouseWriter.encode(tables), 0, 0, 0, progress)
        if erased:
            # After the batch's events: their rows are written before the erasure is
            # acknowledged (flow_progress of the erasures topic, written last), and the
            # service that asked deletes the user's rows once it sees that.
            users = {e.user_id for e in erased}
            shard.erase(users)
            for e in erased:
                rows.progress[(e.topic, e.partition)] = (0, e.offset)
            rows = rows._replace(erased=tuple(sorted(users)))
        letters.append(rows)
        return letters, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime:
        return self._wake

    def on_notify(self) -> tuple[list[Rows], bool]:
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
        with FLOW_SNAPSHOT.time():
            gen = self._shard.snapshot()
        FLOW_USERS.labels(self._key).set(len(self._shard))
        FLOW_STATE_BYTES.labels(self._key).set(self._shard.held_bytes)
        return self._key, gen


def build_flow(config: FlowConfig) -> Dataflow:
    """The dataflow reading every event topic into the warehouse."""
    rules = config.rules

    read = _ReadSoFar()
    decode = _decoder(config.fx, read, config.topics.erasures)
    erased = read_erasures(config.bootstrap, config.topics.erasures)

    flow = Dataflow("pulse_events")
    source = RoutingKafkaSource(
        [config.bootstrap],
        (*config.topics.events, config.topics.erasures),
        _route,
        batch_size=config.batch_size,
        idle_s=config.idle_stop_s,
        stop=config.stop,
        drain=config.drain,
    )
    # (shard, (shard, [records])) per shard and fetch, in read order
    by_shard = op.input("kafka_shards", flow, source)
    # (shard, Rows | DeadLetter): a batch's rows, and the records it could not use
    out = op.stateful_batch(
        "fold_shards",
        by_shard,
        lambda resume: _ShardLogic(rules, read, decode, config.state_dir, resume, erased),
    )
    split = op.branch("dead_or_alive", out, _is_dead_letter)
    letters = op.map("dead_letter", split.trues, _value)
    op.output("dead_letters", letters, DeadLetterSink(config.bootstrap, config.topics.dlq))
    op.output("warehouse", split.falses, _WarehouseSink(config))
    return flow


def _is_dead_letter(item: tuple[str, Rows | DeadLetter]) -> bool:
    return type(item[1]) is DeadLetter


def _value(item: tuple[str, Any]) -> Any:
    return item[1]
