"""Pure, engine-agnostic logic of the event flow: enrichment, de-duplication, sessions.

Nothing here imports Bytewax or a client. The flow keys events by ``user_id`` and folds
each through :func:`step` with that user's :class:`UserState`, so the rules are tested
alone and would move to another engine unchanged.

What a step emits is *current truth*, written idempotently downstream: an event row
(replaced when its session changes, ``rev`` higher), the session's whole aggregate
(replaced on every change), and tombstones for sessions absorbed by a merge.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec

from ingest.events import Event
from ingest.fx import FxRates
from ingest.useragent import device_from_user_agent

__all__ = [
    "KEEP_SESSIONS",
    "Enriched",
    "FlowRules",
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
    retention_ms: int = 48 * 3600 * 1000  # how long ids and sessions are remembered


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
    """An accepted event placed in its session (``rev`` grows when it is moved)."""

    enriched: Enriched
    session_key: str
    is_order: bool  # the first purchase carrying this order_id
    rev: int = 0


class SessionAgg(msgspec.Struct, array_like=True, gc=False):
    """Everything METRICS.md needs of one session, kept exact as events arrive."""

    key: str
    user_id: str
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


class _Span(msgspec.Struct, array_like=True):
    """A derived (inactivity) session and its events, kept so a merge can move them."""

    key: str
    first_ms: int
    last_ms: int
    members: list[Placed] = []


class StepOutput(msgspec.Struct, gc=False):
    """What one event changes downstream.

    Most events change exactly two rows, their own and their session's; the rest of the
    fields are empty tuples unless a merge or an earlier first event reshaped a session.
    """

    placed: Placed  # the event in its session
    session: SessionAgg  # that session's aggregate now
    moved: list[Placed] | tuple[()] = ()  # events a merge moved into the session (rev + 1)
    tombstones: list[tuple[str, int]] | tuple[()] = ()  # (absorbed session key, rev)
    # (first, last) ms of a session whose attributes may have changed (a new first event or
    # a merge): every minute it spans needs its rollups recomputed.
    reattributed: list[tuple[int, int]] | tuple[()] = ()

    @property
    def events(self) -> list[Placed]:
        """Every event row this step changes: the moved ones, then its own."""
        return [*self.moved, self.placed]


class UserState(msgspec.Struct, array_like=True, gc=False):
    """What the flow remembers about one user (snapshotted for recovery).

    Not tracked by the garbage collector, and nothing in it is for most users (the dicts
    hold strings, ints and untracked Structs; ``spans`` is a tuple, empty unless the user
    sends events without ``session_id``): a flow with a million users in memory would
    otherwise spend ~10% of its time having the collector walk them."""

    seen_events: dict[str, int] = {}  # event_id -> ts_ms
    seen_orders: dict[str, int] | None = None  # order_id -> ts_ms (None: no order yet)
    sessions: dict[str, SessionAgg] = {}
    spans: tuple[_Span, ...] = ()
    arrivals: int = 0
    newest_ms: int = 0
    # The event time after which something remembered may be older than the retention
    # behind the newest event (0: nothing remembered yet).
    prune_after: int = 0

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
        seen = {k: v for k, v in self.seen_events.items() if v >= horizon}
        self.seen_events = seen
        if self.seen_orders:
            self.seen_orders = {k: v for k, v in self.seen_orders.items() if v >= horizon}
        if len(self.sessions) > KEEP_SESSIONS:
            self.sessions = {k: s for k, s in self.sessions.items() if s.last_ms >= horizon}
        if self.spans:
            self.spans = tuple(s for s in self.spans if s.last_ms >= horizon)
        oldest = min(seen.values(), default=newest)  # a span's events are among them
        self.prune_after = max(oldest + retention, newest + retention // 4)


def _place_derived(
    state: UserState, placed: Placed, timeout_ms: int
) -> tuple[Placed, list[Placed], list[tuple[str, int]]]:
    """Put an event without ``session_id`` into its inactivity session.

    A gap of exactly the timeout stays in the session. An event that bridges two sessions
    merges them: the later one's events move (re-emitted with a higher ``rev``) and its
    aggregate becomes a tombstone. Returns the placed event, the moved ones, the tombstones.
    """
    ts = placed.enriched.ts_ms
    moved: list[Placed] = []
    tombstones: list[tuple[str, int]] = []
    near = [s for s in state.spans if s.first_ms - timeout_ms <= ts <= s.last_ms + timeout_ms]
    if not near:
        span = _Span(f"{placed.enriched.event.user_id}/{ts}", ts, ts)
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
            for member in other.members:
                moved_one = Placed(member.enriched, span.key, member.is_order, member.rev + 1)
                span.members.append(moved_one)
                moved.append(moved_one)
        span.first_ms, span.last_ms = min(span.first_ms, ts), max(span.last_ms, ts)
    placed = Placed(placed.enriched, span.key, placed.is_order, placed.rev)
    span.members.append(placed)
    return placed, moved, tombstones


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
    seen = state.seen_events
    if ev.event_id in seen:
        return state, None
    seen[ev.event_id] = ts
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
        orders = state.seen_orders
        if orders is None:
            orders = state.seen_orders = {}
        is_order = ev.order_id not in orders
        orders.setdefault(ev.order_id, ts)
    session_id = ev.session_id
    moved: list[Placed] | tuple[()] = ()
    tombstones: list[tuple[str, int]] | tuple[()] = ()
    reattributed: list[tuple[int, int]] | tuple[()] = ()
    if session_id is not None:
        placed = Placed(e, session_id, is_order)
        session = state.sessions.get(session_id)
    else:
        placed, moved, tombstones = _place_derived(
            state, Placed(e, "", is_order), rules.session_timeout_ms
        )
        session = state.sessions.get(placed.session_key)
    if session is None:
        session = SessionAgg(placed.session_key, ev.user_id, ts, ts, state.arrivals,
                             ev.country, e.device, ev.channel)  # fmt: skip
        state.sessions[placed.session_key] = session
        session.add(e, ts, state.arrivals)
    else:
        first_ms, first_arrival = session.first_ms, session.first_arrival
        session.add(e, ts, state.arrivals)
        if tombstones or session.first_ms != first_ms or session.first_arrival != first_arrival:
            reattributed = [(session.first_ms, session.last_ms)]
    # The session is the state object itself: it may have moved on by the time the sink
    # writes it, and then the sink writes a newer truth, which is what the table keeps.
    return state, StepOutput(placed, session, moved or (), tombstones or (), reattributed)


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
