"""Reading a user's state as saved before 2026-12-06, so a flow upgraded while its recovery
state is kept (``pulse flow`` against a Kafka cluster) resumes where it was.

That layout kept event and order ids as strings with their times, each session's key and
user in its aggregate, and a derived session's events whole. They become the current
:class:`~flows.logic.UserState`: ids hashed, sessions without key or user, a derived
session's events as their times.
"""

from __future__ import annotations

import msgspec

from flows.ids import IdSet, id_hash, pack_times
from flows.logic import SessionAgg, UserState, _Span

__all__ = ["decode_legacy"]


class _Session(msgspec.Struct, array_like=True):
    key: str
    user_id: str
    first_ms: int
    last_ms: int
    first_arrival: int
    country: str | None
    device: str | None
    channel: str | None
    events: int = 0
    pageviews: int = 0
    rev: int = 0


class _Enriched(msgspec.Struct, array_like=True):
    event: msgspec.Raw
    ts_ms: int


class _Placed(msgspec.Struct, array_like=True):
    enriched: _Enriched


class _OldSpan(msgspec.Struct, array_like=True):
    key: str
    first_ms: int
    last_ms: int
    members: list[_Placed] = []


class _State(msgspec.Struct, array_like=True):
    seen_events: dict[str, int] = {}
    seen_orders: dict[str, int] | None = None
    sessions: dict[str, _Session] = {}
    spans: tuple[_OldSpan, ...] = ()
    arrivals: int = 0
    newest_ms: int = 0
    prune_after: int = 0


_decode = msgspec.msgpack.Decoder(_State).decode


def _ids(ids: dict[str, int]) -> IdSet:
    out = IdSet()
    for value, ts in ids.items():
        out.add(id_hash(value), ts)
    return out


def decode_legacy(encoded: bytes | memoryview) -> UserState:
    """The current state of a user saved in the earlier layout."""
    old = _decode(encoded)
    sessions = {
        key: SessionAgg(s.first_ms, s.last_ms, s.first_arrival, s.country, s.device,
                        s.channel, s.events, s.pageviews, s.rev)
        for key, s in old.sessions.items()
    }  # fmt: skip
    spans = tuple(
        _Span(s.key, s.first_ms, s.last_ms, pack_times([m.enriched.ts_ms for m in s.members]))
        for s in old.spans
    )
    return UserState(
        events=_ids(old.seen_events),
        orders=None if old.seen_orders is None else _ids(old.seen_orders),
        sessions=sessions,
        spans=spans,
        arrivals=old.arrivals,
        newest_ms=old.newest_ms,
        prune_after=old.prune_after,
    )
