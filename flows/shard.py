"""One shard of the flow's users: their states folded event by event, kept encoded at rest,
saved incrementally.

Engine-agnostic like :mod:`flows.logic`: the flow hands a shard the events of its users in
arrival order, asks it for a snapshot at each epoch (a generation number; the changed
users' states go to the :class:`~flows.state_store.ShardStore`), and to forget users idle
for longer than the retention.

A flow holds millions of users, most of them idle at any moment, so a user's state is
kept as the bytes the snapshot encodes anyway (~100-200 bytes for most users, against
~1.4 KB as Python objects) and decoded when the user next shows up: between two
snapshots the users seen since the last one are decoded ("hot"), the rest are bytes.
Those bytes start with a small header, the generation of the record holding that state
and the user's newest event time, so that neither the store's compaction nor forgetting
idle users needs anything else per user.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import msgspec

from flows.logic import Enriched, FlowRules, StepOutput, UserState, step
from flows.state_store import Saved, ShardStore

__all__ = ["SHARDS", "Shard", "shard_of_key"]

SHARDS = 64  # fixed: a shard's saved state is found again by its number
_KEYS = [f"{i:02d}" for i in range(SHARDS)]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(UserState).decode
# A held user: this header, then the encoded state.
_HEADER = struct.Struct("<Iq")  # generation of the record with this state, newest event ms
_HEAD = _HEADER.size


def shard_of_key(key: bytes) -> str:
    """The shard key of a Kafka record keyed by ``user_id`` (its UTF-8 bytes)."""
    return _KEYS[zlib.crc32(key) % SHARDS]


class Shard:
    """The users of one shard: encoded at rest, decoded while they change."""

    def __init__(self, rules: FlowRules, store: ShardStore, gen: int = 0) -> None:
        self._rules = rules
        self._store = store
        self.gen = gen
        # Every user held: header + encoded state as of the last snapshot.
        self._held: dict[str, bytes] = {
            user: _HEADER.pack(g, newest) + state
            for user, (g, newest, state) in store.take_found().items()
        }
        self.held_bytes = sum(len(b) for b in self._held.values())
        self._hot: dict[str, UserState] = {}  # users decoded since the last snapshot
        self._forgotten: list[Saved] = []  # since the last snapshot, when saving at all

    def __len__(self) -> int:
        held = self._held
        return len(held) + sum(1 for user in self._hot if user not in held)

    def fold(
        self, events: Sequence[Enriched], settled_ms: int | None = None
    ) -> list[StepOutput | None]:
        """Fold events in arrival order; what each changed (None: a repeated event_id).
        ``settled_ms``: how far in event time every partition has been read (see
        :meth:`~flows.logic.UserState.prune`)."""
        hot, held, rules = self._hot, self._held, self._rules
        out: list[StepOutput | None] = []
        for e in events:
            ev = e.event
            user = ev.anonymous_id or ev.user_id  # the visitor (flows.logic: identity)
            state = hot.get(user)
            if state is None:
                saved = held.get(user)
                state = UserState() if saved is None else _decode(memoryview(saved)[_HEAD:])
                hot[user] = state
            out.append(step(state, e, rules, settled_ms)[1])
        return out

    def users(self) -> list[str]:
        """The users held."""
        return [*self._held, *(user for user in self._hot if user not in self._held)]

    def state(self, user: str) -> UserState | None:
        """A user's state as it is now (decoded; None: not held)."""
        state = self._hot.get(user)
        saved = self._held.get(user)
        if state is None and saved is not None:
            state = _decode(memoryview(saved)[_HEAD:])
        return state

    def forget(self, horizon_ms: int) -> int:
        """Forget users whose newest event is older than ``horizon_ms``; how many."""
        hot, held = self._hot, self._held
        idle = [u for u, s in hot.items() if s.newest_ms < horizon_ms]
        idle += [u for u, b in held.items()
                 if u not in hot and _HEADER.unpack_from(b)[1] < horizon_ms]  # fmt: skip
        track = self._store.persistent
        for user in idle:
            hot.pop(user, None)
            saved = held.pop(user, None)
            if saved is not None:
                self.held_bytes -= len(saved)
                if track:
                    self._forgotten.append((user, 0, None, _HEADER.unpack_from(saved)[0]))
            elif track:
                self._forgotten.append((user, 0, None, None))
        return len(idle)

    def erase(self, users: set[str]) -> int:
        """Drop these users' states (CONTRACT §11): from memory, and from every saved
        record of the store at once, so no resume brings them back and nothing of them
        stays on disk. How many were held."""
        hot, held, found = self._hot, self._held, 0
        newest_in: dict[str, int | None] = {}
        for user in users:
            state = hot.pop(user, None)
            saved = held.pop(user, None)
            if saved is not None:
                self.held_bytes -= len(saved)
                newest_in[user] = _HEADER.unpack_from(saved)[0]
            else:
                newest_in[user] = None
            found += state is not None or saved is not None
        # a forgotten idle user they may have been: no marker may name them either
        self._forgotten = [f for f in self._forgotten if f[0] not in users]
        self._store.erase(newest_in, self.gen)
        return found

    def snapshot(self) -> int:
        """Encode the users changed since the last snapshot (kept as bytes from now on)
        and save them; the generation to resume from."""
        if not self._hot and not self._forgotten:
            return self.gen
        store = self._store
        persistent = store.persistent
        if persistent:
            self.gen += 1
        gen, held, hot, saved = self.gen, self._held, self._hot, self._forgotten
        pack, header, raw, size = _HEADER.pack, _HEADER.unpack_from, msgspec.Raw, 0
        for user, state in hot.items():
            body = _encode(state)
            newest = state.newest_ms
            before = held.get(user)
            held[user] = pack(gen, newest) + body
            size += len(body) + _HEAD
            if before is not None:
                size -= len(before)
            if persistent:
                saved.append(
                    (user, newest, raw(body), None if before is None else header(before)[0])
                )
        self.held_bytes += size
        if persistent:
            for g, users in store.to_rewrite(gen):  # compaction: save again, unchanged
                for user in users:
                    before = held.get(user)
                    if user in hot or before is None or _HEADER.unpack_from(before)[0] != g:
                        continue
                    newest = _HEADER.unpack_from(before)[1]
                    now = held[user] = pack(gen, newest) + before[_HEAD:]
                    saved.append((user, newest, msgspec.Raw(memoryview(now)[_HEAD:]), g))
            store.save(gen, saved)
        self._hot, self._forgotten = {}, []
        return self.gen
