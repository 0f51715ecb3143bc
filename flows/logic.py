"""Pure, engine-agnostic logic of the event flow: enrichment, de-duplication, sessions.

Nothing here imports Bytewax or a client. The flow keys events by ``user_id`` and folds
each through :func:`step` with that user's :class:`UserState`, so the rules are tested
alone and would move to another engine unchanged.

What a step emits is *current truth*, written idempotently downstream: an event row, the
session's whole aggregate (replaced on every change), and for a merge of derived sessions,
tombstones for the sessions absorbed and the moves of their events' rows.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec

from flows.ids import IdSet, id_hash
from ingest.events import Event
from ingest.fx import FxRates
from ingest.useragent import device_from_user_agent

__all__ = [
    "KEEP_SESSIONS",
    "Enriched",
    "FlowRules",
    "Move",
    "Placed",
    "SessionAgg",
    "StepOutput",
    "UserState",
    "enrich",
    "step",
]

_PAGEVIEW_TYPES = frozenset({"page_view", "product_view"})
KEEP_SESSIONS = 16  # a user's sessions older than the retention are forgotten beyond this


class FlowRules(msgspec.Struct, frozen=True):
    """The knobs of the flow, from the settings."""

    session_timeout_ms: int = 30 * 60 * 1000
    # How long (event time) ids and sessions are remembered: a repeat is found up to this
    # late, a session's events are exact up to this minus the timeout (docs/architecture.md)
    retention_ms: int = 48 * 3600 * 1000


# msgspec Structs rather than dataclasses: built in C (the flow makes several per event),
# and snapshotted as compact arrays. gc=False where nothing can refer back to the object.


class Enriched(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An event with money in EUR and its device resolved."""

    event: Event
    ts_ms: int  # the event's time, epoch milliseconds
    device: str | None
    price_eur: float | None
    cart_value_eur: float | None
    revenue_eur: float | None
    items_eur: tuple[float, ...]


class Placed(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An accepted event placed in its session."""

    enriched: Enriched
    session_key: str
    is_order: bool  # the first purchase carrying this order_id


class SessionAgg(msgspec.Struct, array_like=True, gc=False):
    """Everything METRICS.md needs of one session, kept exact as events arrive (its key
    and user are where it is kept)."""

    first_ms: int
    last_ms: int
    first_arrival: int  # tie-break between events of the same first time: arrival order
    country: str | None
    device: str | None
    channel: str | None
    events: int = 0
    pageviews: int = 0
    rev: int = 0

    def add(self, e: Enriched, ts: int, arrival: int) -> None:
        if ts < self.first_ms or (ts == self.first_ms and arrival < self.first_arrival):
            self.first_ms, self.first_arrival = ts, arrival
            self.country, self.device, self.channel = e.event.country, e.device, e.event.channel
        if ts > self.last_ms:
            self.last_ms = ts
        self.events += 1
        if e.event.type in _PAGEVIEW_TYPES:
            self.pageviews += 1
        self.rev += 1

    def absorb(self, other: SessionAgg) -> None:
        if (other.first_ms, other.first_arrival) < (self.first_ms, self.first_arrival):
            self.first_ms, self.first_arrival = other.first_ms, other.first_arrival
            self.country, self.device, self.channel = other.country, other.device, other.channel
        self.last_ms = max(self.last_ms, other.last_ms)
        self.events += other.events
        self.pageviews += other.pageviews
        self.rev = max(self.rev, other.rev) + 1


class Move(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A merge moved every event of session ``old`` into session ``new``. Their rows are
    already written (or in the same batch): the warehouse rewrites them with the new key,
    finding them by their times (:func:`flows.ids.pack_times`) and the old key."""

    old: str
    new: str
    times: bytes


class _Span(msgspec.Struct, array_like=True, gc=False):
    """A derived (inactivity) session and the times of its events: the events themselves
    are in the warehouse, where a merge has their rows moved (:class:`Move`)."""

    key: str
    first_ms: int
    last_ms: int
    times: bytearray = bytearray()  # pack_times of its events, in arrival order


class StepOutput(msgspec.Struct, gc=False):
    """What one event changes downstream.

    Most events change exactly two rows, their own and their session's; the rest of the
    fields are empty tuples unless a merge or an earlier first event reshaped a session.
    """

    placed: Placed  # the event in its session
    session: SessionAgg  # that session's aggregate now (its key: placed.session_key)
    moves: list[Move] | tuple[()] = ()  # sessions a merge moved into the session
    tombstones: list[tuple[str, int]] | tuple[()] = ()  # (absorbed session key, rev)
    # (first, last) ms of a session whose attributes may have changed (a new first event or
    # a merge): every minute it spans needs its rollups recomputed.
    reattributed: list[tuple[int, int]] | tuple[()] = ()
    # The visitor identified in this event (CONTRACT §9): (anonymous id, session key,
    # first ms, last ms) of the session whose anonymous rows now count under the user.
    identified: tuple[str, str, int, int] | None = None


class UserState(msgspec.Struct, array_like=True, gc=False):
    """What the flow remembers about one user (encoded while the user is idle, and
    snapshotted for recovery: see :mod:`flows.shard`).

    Compact by design, since a flow holds millions: ids as 16-byte entries of an
    :class:`~flows.ids.IdSet`, a session's aggregate without its key or user, a derived
    session's events as their times. Not tracked by the garbage collector (nothing in it
    can refer back to it)."""

    events: IdSet = msgspec.field(default_factory=IdSet)  # event ids and their times
    orders: IdSet | None = None  # order ids and their times (None: no order yet)
    sessions: dict[str, SessionAgg] = {}
    spans: tuple[_Span, ...] = ()  # derived sessions, for events without session_id
    arrivals: int = 0
    newest_ms: int = 0
    # The event time after which something remembered may be older than the retention
    # behind the newest event (0: nothing remembered yet).
    prune_after: int = 0
    # The user this (anonymous) visitor identified as (CONTRACT §9; None: not yet). Last,
    # with a default: states saved before it existed decode unchanged.
    identity: str | None = None

    def prune(self, rules: FlowRules, settled_ms: int | None = None) -> None:
        """Forget the ids and derived sessions older than the retention behind the user's
        newest event, or behind ``settled_ms`` when that is earlier, so a user who keeps
        coming back holds only the retention's worth of them. Sessions are forgotten
        only beyond :data:`KEEP_SESSIONS`: a session whose ``session_id`` comes back after
        a long gap must still find its aggregate.

        ``settled_ms`` is how far in event time every partition has been read: a user's
        events come from several topics, read at different paces, so an older event of
        the user may still be on its way from a topic that is behind.

        Its cost is linear in the state, so it runs only once something may have aged
        out, and then at least a quarter of the retention later: a busy user pays for it
        about once every quarter retention of event time, not on every event.
        """
        retention = rules.retention_ms
        newest = self.newest_ms
        horizon = (newest if settled_ms is None else min(newest, settled_ms)) - retention
        oldest = self.events.prune(horizon)  # a span's events are among them
        if self.orders:
            self.orders.prune(horizon)
        if len(self.sessions) > KEEP_SESSIONS:
            self.sessions = {k: s for k, s in self.sessions.items() if s.last_ms >= horizon}
        if self.spans:
            self.spans = tuple(s for s in self.spans if s.last_ms >= horizon)
        oldest = newest if oldest is None else oldest
        self.prune_after = max(oldest + retention, newest + retention // 4)


def _place_derived(
    state: UserState, e: Enriched, timeout_ms: int
) -> tuple[str, list[Move], list[tuple[str, int]]]:
    """Put an event without ``session_id`` into its inactivity session.

    A gap of exactly the timeout stays in the session. An event that bridges two sessions
    merges them: the later one's events move (:class:`Move`) and its aggregate becomes a
    tombstone. Returns the session's key, the moves, the tombstones.
    """
    ts = e.ts_ms
    moves: list[Move] = []
    tombstones: list[tuple[str, int]] = []
    near = [s for s in state.spans if s.first_ms - timeout_ms <= ts <= s.last_ms + timeout_ms]
    if not near:
        span = _Span(f"{e.event.user_id}/{ts}", ts, ts)
        state.spans = (*state.spans, span)
    else:
        near.sort(key=lambda s: s.first_ms)
        span = near[0]
        for other in near[1:]:
            state.spans = tuple(s for s in state.spans if s is not other)
            span.first_ms = min(span.first_ms, other.first_ms)
            span.last_ms = max(span.last_ms, other.last_ms)
            gone = state.sessions.pop(other.key)
            state.sessions[span.key].absorb(gone)
            tombstones.append((other.key, gone.rev + 1))
            moves.append(Move(other.key, span.key, bytes(other.times)))
            span.times += other.times
        span.first_ms, span.last_ms = min(span.first_ms, ts), max(span.last_ms, ts)
    span.times += ts.to_bytes(8, "little", signed=True)
    return span.key, moves, tombstones


def step(
    state: UserState | None, e: Enriched, rules: FlowRules, settled_ms: int | None = None
) -> tuple[UserState, StepOutput | None]:
    """Fold one enriched event into its user's state.

    Returns the new state and what changed, or None for a repeated ``event_id`` (counted
    once: the first arrival wins). ``settled_ms``: see :meth:`UserState.prune`.
    """
    state = state or UserState()
    ev = e.event
    ts = e.ts_ms
    if not state.events.add(id_hash(ev.event_id), ts):
        return state, None
    identified = False
    if ev.anonymous_id is not None:  # the visitor says who they are
        identified = state.identity != ev.user_id
        state.identity = ev.user_id
    elif state.identity is not None and ev.user_id != state.identity:
        e = _as_user(e, state.identity)  # an anonymous event of an identified visitor
        ev = e.event
    if ts > state.newest_ms:
        state.newest_ms = ts
        if ts > state.prune_after:
            if state.prune_after:
                state.prune(rules, settled_ms)
            else:  # the first event: nothing can age out for a retention
                state.prune_after = ts + rules.retention_ms
    state.arrivals += 1
    is_order = False
    if ev.order_id is not None and ev.type == "purchase":
        orders = state.orders
        if orders is None:
            orders = state.orders = IdSet()
        is_order = orders.add(id_hash(ev.order_id), ts)
    key = ev.session_id
    moves: list[Move] | tuple[()] = ()
    tombstones: list[tuple[str, int]] | tuple[()] = ()
    reattributed: list[tuple[int, int]] | tuple[()] = ()
    if key is None:
        key, moves, tombstones = _place_derived(state, e, rules.session_timeout_ms)
    session = state.sessions.get(key)
    if session is None:
        session = SessionAgg(ts, ts, state.arrivals, ev.country, e.device, ev.channel)
        state.sessions[key] = session
        session.add(e, ts, state.arrivals)
    else:
        first_ms, first_arrival = session.first_ms, session.first_arrival
        session.add(e, ts, state.arrivals)
        if tombstones or session.first_ms != first_ms or session.first_arrival != first_arrival:
            reattributed = [(session.first_ms, session.last_ms)]
    # The session is the state object itself: it may have moved on by the time the sink
    # writes it, and then the sink writes a newer truth, which is what the table keeps.
    placed = Placed(e, key, is_order)
    out = StepOutput(placed, session, moves or (), tombstones or (), reattributed)
    if identified and ev.anonymous_id is not None:
        # the visit's anonymous rows (those of this session) now count under the user
        out.identified = (ev.anonymous_id, key, session.first_ms, session.last_ms)
        if not reattributed:
            out.reattributed = [(session.first_ms, session.last_ms)]
    return state, out


def _as_user(e: Enriched, user_id: str) -> Enriched:
    """``e`` as an event of ``user_id`` (its visitor identified as that user)."""
    return msgspec.structs.replace(e, event=msgspec.structs.replace(e.event, user_id=user_id))


def enrich(event: Event, fx: FxRates) -> Enriched:
    """Money to EUR at the event's dated rate; device from the user agent when absent."""
    device = event.device or _device(event.user_agent)
    ts = event.ts if type(event.ts) is int else event.ts_ms  # int once normalised
    cur = event.currency
    if cur is None:  # most events carry no money
        return Enriched(event, ts, device, None, None, None, ())
    rate = fx.rate(cur, ts)
    price, cart, revenue = event.price, event.cart_value, event.revenue
    return Enriched(
        event=event,
        ts_ms=ts,
        device=device,
        price_eur=None if price is None else price * rate,
        cart_value_eur=None if cart is None else cart * rate,
        revenue_eur=None if revenue is None else revenue * rate,
        items_eur=tuple(i.price * rate for i in event.items or ()),
    )


_device = lru_cache(maxsize=4096)(device_from_user_agent)  # user agents repeat a lot
