"""One shard of the flow's users: their states folded event by event, saved incrementally.

Engine-agnostic like :mod:`flows.logic`: the flow hands a shard the events of its users in
arrival order, asks it for a snapshot at each epoch (a generation number; the changed
users' states go to the :class:`~flows.state_store.ShardStore`), and to forget users idle
for longer than the retention.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import msgspec

from flows.logic import Enriched, FlowRules, StepOutput, UserState, step
from flows.state_store import ShardStore

__all__ = ["SHARDS", "Shard", "shard_of", "shard_of_key"]

SHARDS = 64  # fixed: a shard's saved state is found again by its number
_KEYS = [f"{i:02d}" for i in range(SHARDS)]
_DECODE = msgspec.msgpack.Decoder(UserState).decode


def shard_of(user_id: str) -> str:
    """The shard key of a user: the same in every process and run."""
    return shard_of_key(user_id.encode())


def shard_of_key(key: bytes) -> str:
    """The shard key of a Kafka record keyed by ``user_id`` (its UTF-8 bytes)."""
    return _KEYS[zlib.crc32(key) % SHARDS]


class Shard:
    """The users of one shard, in memory, with their changes since the last snapshot."""

    def __init__(self, rules: FlowRules, store: ShardStore, gen: int = 0) -> None:
        self._rules = rules
        self._store = store
        self.gen = gen
        self._users: dict[str, UserState] = {}
        # Users changed (None: forgotten) since the last snapshot, when saving at all.
        self._dirty: dict[str, UserState | None] = {}
        self._track = store.persistent

    def __len__(self) -> int:
        return len(self._users)

    def fold(
        self, events: Sequence[Enriched], settled_ms: int | None = None
    ) -> list[StepOutput | None]:
        """Fold events in arrival order; what each changed (None: a repeated event_id).
        ``settled_ms``: how far in event time every partition has been read (see
        :meth:`~flows.logic.UserState.prune`)."""
        users, dirty, rules, store = self._users, self._dirty, self._rules, self._store
        out: list[StepOutput | None] = []
        for e in events:
            user = e.event.user_id
            state = users.get(user)
            if state is None:
                if store.resumed and user not in dirty:
                    saved = store.load(user)
                    state = None if saved is None else _DECODE(saved)
                state, changes = step(state, e, rules, settled_ms)
                users[user] = state
            else:
                _, changes = step(state, e, rules, settled_ms)
            if self._track:
                dirty[user] = state
            out.append(changes)
        return out

    def forget(self, horizon_ms: int) -> int:
        """Forget users whose newest event is older than ``horizon_ms``; how many."""
        idle = [u for u, s in self._users.items() if s.newest_ms < horizon_ms]
        for user in idle:
            del self._users[user]
        saved = [u for u in self._store.idle_users(horizon_ms) if u not in self._users]
        if self._track:
            self._dirty.update(dict.fromkeys([*idle, *saved]))
        return len(idle) + len(saved)

    def snapshot(self) -> int:
        """Save the users changed since the last snapshot; the generation to resume from."""
        if self._dirty:
            self.gen += 1
            rewrite = self._store.to_rewrite(self.gen)  # compaction of the store
            for user in rewrite:
                if user in self._users and user not in self._dirty:
                    self._dirty[user] = self._users[user]
            self._store.save(
                self.gen,
                [
                    (user, 0, None) if state is None else (user, state.newest_ms, state)
                    for user, state in self._dirty.items()
                ],
                [user for user in rewrite if user not in self._dirty],
            )
            self._dirty = {}
        return self.gen
