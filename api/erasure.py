"""Forgetting users (CONTRACT §11): ``DELETE /v1/users/{user_id}`` and ``pulse users forget``.

For each id (hashed first when ids are pseudonymised, as the edge did):

1. count the user's rows (the answer says what was erased);
2. announce the erasure on the erasures topic, keyed by the id, so the running flow drops
   the user's state (in memory and saved) and from then on the user's events older than the
   erasure (:mod:`flows.erasure`); its sink deletes the user's rows too, after writing those
   it read before the erasure, so nothing comes back whether or not this request still
   waits;
3. wait (bounded) until the flow acknowledged it (``flow_progress`` of that record);
4. delete every row of the user and mark the user's minutes for the rollups
   (:func:`warehouse.erasure.erase_rows`; idempotent, so the flow's own delete and this one
   may come in either order); with no flow running, also the user's saved flow state;
5. record the audit row: when, by which key, the salted hash of the id.

A second request for the same id finds nothing and changes nothing but the audit.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from flows.erasure import encode_erasure
from flows.shard import shard_of_key
from flows.state_store import ShardStore
from ingest.errors import PulseError
from ingest.privacy import Pseudonymizer
from warehouse.client import Client
from warehouse.erasure import KINDS, audit, count_rows, erase_rows, flow_has_read
from warehouse.queries import complete_until
from warehouse.rollups import MINUTE_ROLLUPS, refresh
from warehouse.writer import WarehouseWriter

__all__ = ["Erased", "Eraser", "NotAnnounced", "announce_erasure", "erase_saved_state"]

Announce = Callable[[str, int], tuple[str, int, int] | None]


class NotAnnounced(PulseError):
    """The broker did not take an erasure: nothing was erased (the flow must hear of it)."""


@dataclass(frozen=True)
class Erased:
    """What one erasure request erased."""

    id_hash: str  # the salted hash the audit keeps
    counts: dict[str, int]
    flow_acknowledged: bool

    def document(self) -> dict[str, Any]:
        """The API's answer."""
        return {"erased": self.counts, "id_hash": self.id_hash,
                "flow_acknowledged": self.flow_acknowledged}  # fmt: skip


def announce_erasure(
    bootstrap: str, topic: str, user_id: str, before_ms: int, timeout: float = 10.0
) -> tuple[str, int, int] | None:
    """Publish an erasure record; ``(topic, partition, offset)`` once the broker has it, or
    None when it cannot be reached within ``timeout`` seconds."""
    where: list[tuple[str, int, int]] = []

    def delivered(error: Any, msg: Any) -> None:
        if error is None:
            where.append((msg.topic(), msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": int(timeout * 1000),
                         "log_level": 2})  # fmt: skip
    try:
        producer.produce(topic, encode_erasure(user_id, before_ms), user_id.encode(),
                         on_delivery=delivered)  # fmt: skip
        producer.flush(timeout + 1)
    except KafkaException:
        return None
    return where[0] if where else None


def erase_saved_state(state_dir: Path, user_ids: Iterable[str]) -> None:
    """Remove users from the flow's saved shard logs while no flow runs (the embedded
    warehouse's owner, the CLI, knows none does)."""
    by_shard: dict[str, set[str]] = {}
    for user in user_ids:
        by_shard.setdefault(shard_of_key(user.encode()), set()).add(user)
    for shard, users in by_shard.items():
        path = state_dir / f"shard-{shard}.sqlite3"
        if not path.exists():
            continue
        store = ShardStore(path, resume_gen=1 << 62)  # keeps every record (deletes none)
        try:
            store.erase(dict.fromkeys(users), 0)
        finally:
            store.close()


@dataclass
class Eraser:
    """Forgets users: see the module's docstring."""

    client: Client
    salt: bytes
    announce: Announce | None = None  # None: no broker (then only offline state)
    pseudonymize: Pseudonymizer | None = None
    saved_state: list[Path] = field(default_factory=list)  # offline: shard logs to clean
    ack_timeout_s: float = 30.0
    allowed_lateness: timedelta = timedelta(minutes=10)  # the rollups' (PULSE_ALLOWED_LATENESS)
    clock: Callable[[], float] = time.time

    def stored_id(self, user_id: str) -> str:
        """The id as the warehouse holds it (the pseudonym when pseudonymising)."""
        return self.pseudonymize(user_id) if self.pseudonymize is not None else user_id

    def id_hash(self, user_id: str) -> str:
        """The audit's salted hash of an id (HMAC-SHA256 with the salt, hex)."""
        return hmac.new(self.salt, user_id.encode(), hashlib.sha256).hexdigest()

    def forget(self, user_id: str, key_name: str) -> Erased:
        """Erase one user everywhere; what went."""
        stored = self.stored_id(user_id)
        at = datetime.fromtimestamp(self.clock(), UTC)
        before = count_rows(self.client, stored)
        acknowledged = False
        where = None
        if self.announce is not None:
            where = self.announce(stored, int(at.timestamp() * 1000) + 1)
            if where is None:  # a flow would keep the user's state: erase nothing yet
                raise NotAnnounced(
                    "the erasure could not be handed to the flow: the Kafka broker did not "
                    "acknowledge it; nothing was erased, try again"
                )
        if where is not None:
            deadline = time.monotonic() + self.ack_timeout_s
            while not (acknowledged := flow_has_read(self.client, *where)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        with WarehouseWriter.lock():
            found = erase_rows(self.client, stored)
        for state_dir in self.saved_state:
            erase_saved_state(state_dir, [stored])
        if any(found.values()):
            # The complete minutes now, their hours and days: no need to wait for the
            # flow's next refresh (queries already read dirty minutes from raw rows).
            until = complete_until(self.client, self.allowed_lateness)
            if until is not None:
                refresh(self.client, until, minutes_from=at - MINUTE_ROLLUPS)
        # what was stored when asked, plus what arrived (in flight) until the delete
        counts = {k: max(before[k], found[k]) for k in KINDS}
        erased = Erased(self.id_hash(stored), counts, acknowledged)
        audit(self.client, at=at, key_name=key_name, id_hash=erased.id_hash, counts=counts,
              flow_acknowledged=acknowledged)  # fmt: skip
        return erased
