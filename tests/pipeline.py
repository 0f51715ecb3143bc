"""Driving the real pipeline in tests: events -> collector -> broker -> flow -> warehouse."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.topics import Topics, ensure_topics
from insights.runner import DetectConfig
from warehouse.client import Client, connect
from warehouse.migrate import migrate
from warehouse.queries import complete_until


@dataclass
class Drained:
    accepted: list[bytes]  # accepted raw events, in the order they were sent
    rejected: int


def publish(bootstrap: str, topics: Topics, raws: Sequence[bytes]) -> Drained:
    """Send ``raws`` through the collector exactly as the HTTP route and replay do."""
    fx = load_fx_rates()
    producer = ConfluentProducer(bootstrap)
    collector = Collector(producer, topics, fx.currencies)
    result = collector.ingest(raws, source="test", timeout=60)
    producer.close()
    bad = {r.index for r in result.rejected}
    return Drained([r for i, r in enumerate(raws) if i not in bad], len(bad))


def run_pipeline(
    bootstrap: str, dsn: str, database: str, raws: Sequence[bytes], tmp, **config: Any
) -> Drained:
    """Publish to fresh topics and drain them into ``database`` with the real flow (more of
    its ``FlowConfig`` in ``config``)."""
    topics = Topics(prefix=f"p{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, partitions=4)
    drained = publish(bootstrap, topics, raws)
    flow = FlowConfig(bootstrap, topics, dsn, database, load_fx_rates(), idle_stop_s=1.5, **config)
    run_flow(flow, workers=1, recovery_dir=tmp / "recovery")
    return drained


@contextlib.contextmanager
def drained_database(
    bootstrap: str, dsn: str, raws: Sequence[bytes], tmp_factory, name: str, **config: Any
) -> Iterator[tuple[Client, Drained]]:
    """A fresh database (``name_`` and a random suffix) holding what the real flow wrote of
    ``raws`` (its recovery state in a new directory of ``tmp_factory``; more of its
    ``FlowConfig`` in ``config``); dropped on leaving."""
    database = f"{name}_{uuid.uuid4().hex[:8]}"
    client = connect(dsn, database)
    migrate(client)
    try:
        yield (
            client,
            run_pipeline(bootstrap, dsn, database, raws, tmp_factory.mktemp("flow"), **config),
        )
    finally:
        client.command(f"DROP DATABASE `{database}`")


@contextlib.contextmanager
def drained_topics(
    bootstrap: str, topics: Topics, dsn: str, tmp, name: str, idle_stop_s: float = 5
) -> Iterator[Client]:
    """A fresh database (``name_`` and a random suffix) holding what the real flow wrote of
    everything already in ``topics`` (e.g. what a running API published; recovery state under
    ``tmp``); dropped on leaving."""
    database = f"{name}_{uuid.uuid4().hex[:8]}"
    client = connect(dsn, database)
    migrate(client)
    try:
        config = FlowConfig(bootstrap, topics, dsn, database, load_fx_rates(),
                            idle_stop_s=idle_stop_s)  # fmt: skip
        run_flow(config, workers=1, recovery_dir=tmp / "recovery")
        yield client
    finally:
        client.command(f"DROP DATABASE `{database}`")


def detection_until(client: Client, until: datetime, live_horizon: timedelta,
                    **extra: object) -> DetectConfig:  # fmt: skip
    """Detection over a drained database whose ``complete_until`` is ``until`` (the allowed
    lateness makes it so), with 4 h of history per interval."""
    watermark = complete_until(client, timedelta(0))
    assert watermark is not None
    return DetectConfig(
        allowed_lateness=watermark - until,
        history={"1m": timedelta(hours=4), "1h": timedelta(hours=4)},
        live_horizon=live_horizon,
        **extra,  # type: ignore[arg-type]
    )


COUNTRIES = ["DE", "PL", "SE", "HU", "GB", None]
CURRENCY = {"DE": "EUR", "PL": "PLN", "SE": "SEK", "HU": "HUF", "GB": "GBP", None: "EUR"}
UAS = ["Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile", "Mozilla/5.0 (iPad; CPU OS 17)",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", None]  # fmt: skip
CATEGORIES = ["shoes", "books", "toys", None]


def synthetic_events(
    n_sessions: int, start: datetime, seed: int = 7, *, visitors: bool = False
) -> list[bytes]:
    """An adversarial mix: explicit and derived sessions, missing attributes, every type,
    several currencies, repeated event_ids and order_ids, arrival up to 3 h out of order,
    an invalid event, over ``start`` + 2 days (cross a DST change by choosing ``start``).
    With ``visitors``, also visits that identify mid-way and crawlers' events (CONTRACT §9)."""
    rng = random.Random(seed)
    out: list[dict] = []
    for s in range(n_sessions):
        user = f"u{rng.randrange(n_sessions // 3 + 1)}"
        explicit = rng.random() < 0.7
        t = start + timedelta(seconds=rng.randrange(2 * 86400))
        country = rng.choice(COUNTRIES)
        ctx = {"country": country, "channel": rng.choice(["direct", "paid", "email", None])}
        if rng.random() < 0.5:
            ctx["device"] = rng.choice(["desktop", "mobile", "tablet"])
        else:
            ctx["user_agent"] = rng.choice(UAS)
        cur = CURRENCY[country]
        for k in range(rng.choice([1, 1, 2, 3, 5, 8])):
            t += timedelta(seconds=rng.choice([5, 60, 600, 1799, 1800]))
            kind = rng.choice(["page_view", "product_view", "product_view", "search",
                               "add_to_cart", "begin_checkout", "purchase", "remove_from_cart",
                               "wishlist"])  # fmt: skip
            e: dict = {"event_id": f"e{s}-{k}", "type": kind, "user_id": user,
                       "ts": int(t.timestamp() * 1000) if k % 2 else t.isoformat()}  # fmt: skip
            if explicit:
                e["session_id"] = f"s{s}"
            e.update(
                {k2: v for k2, v in ctx.items() if v is not None and (k == 0 or k2 != "country")}
            )
            pid = f"p{rng.randrange(30)}"
            cat = rng.choice(CATEGORIES)
            if kind in ("product_view", "add_to_cart", "remove_from_cart"):
                e.update(product_id=pid, price=round(rng.uniform(1, 500), 2), currency=cur)
                if cat:
                    e["category"] = cat
            elif kind == "search":
                e.update(query="shoes", results_count=rng.randrange(50))
            elif kind == "begin_checkout":
                e.update(cart_value=round(rng.uniform(1, 500), 2), currency=cur)
            elif kind == "purchase":
                items = [_item(rng) for _ in range(rng.randint(1, 3))]
                revenue = round(sum(i["price"] * i["quantity"] for i in items), 2)
                e.update(
                    order_id=f"o{s}-{rng.randrange(2)}", currency=cur, items=items, revenue=revenue
                )
            out.append(e)
    if visitors:  # CONTRACT §9: stitched visits and crawlers
        out += _stitched_and_bots(random.Random(seed + 1), n_sessions // 10 + 1, start)
    # Arrival order differs from event time: each event is up to 3 h late (the flow
    # remembers 48 h per user, far beyond PULSE_ALLOWED_LATENESS).
    jitter = {id(e): rng.uniform(0, 3 * 3600) for e in out}
    out.sort(key=lambda e: _epoch(e["ts"]) + jitter[id(e)])
    repeats = [dict(rng.choice(out)) for _ in range(len(out) // 20)]  # client re-sends
    out.extend(repeats)
    out.insert(3, {"event_id": "bad", "type": "page_view"})  # rejected at the edge
    return [msgspec.json.encode(e) for e in out]


BOT_UAS = ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
           "UptimeRobot/2.0 (http://www.uptimerobot.com/)"]  # fmt: skip


def _stitched_and_bots(rng: random.Random, n: int, start: datetime) -> list[dict]:
    """CONTRACT §9: visits that browse anonymously then identify (the anonymous part counts
    under the user: one visitor, one session), and crawlers (in no number)."""
    out: list[dict] = []
    for s in range(n):
        anonymous, user = f"anon{s}", f"member{s}"
        t = start + timedelta(seconds=rng.randrange(2 * 86400))
        session = {"session_id": f"vs{s}"} if rng.random() < 0.3 else {}
        steps = [("page_view", None), ("product_view", None), ("identify", user),
                 ("add_to_cart", user), ("purchase", user)][: rng.randint(3, 5)]  # fmt: skip
        for k, (kind, who) in enumerate(steps):
            t += timedelta(seconds=rng.choice([5, 60, 300]))  # the visit lasts < 30 min
            e: dict = {"event_id": f"v{s}-{k}", "type": kind, "ts": int(t.timestamp() * 1000),
                       "user_id": who or anonymous, "country": "DE", **session}  # fmt: skip
            if who:
                e["anonymous_id"] = anonymous
            if kind in ("product_view", "add_to_cart"):
                e.update(product_id="p1", price=10.0, currency="EUR")
            elif kind == "purchase":
                items = [{"product_id": "p1", "price": 10.0, "quantity": 1}]
                e.update(order_id=f"vo{s}", revenue=10.0, currency="EUR", items=items)
            out.append(e)
        bot = {"event_id": f"b{s}", "type": "page_view", "user_id": f"bot{s % 3}",
               "ts": int(t.timestamp() * 1000), "user_agent": rng.choice(BOT_UAS)}  # fmt: skip
        out.append(bot)
        out.append({**bot, "event_id": f"bf{s}", "user_agent": None, "bot": True})
    return out


def _epoch(ts: int | str) -> float:
    return ts / 1000 if isinstance(ts, int) else datetime.fromisoformat(ts).timestamp()


def _item(rng: random.Random) -> dict:
    item = {"product_id": f"p{rng.randrange(30)}", "price": round(rng.uniform(1, 300), 2),
            "quantity": rng.randint(1, 3)}  # fmt: skip
    if category := rng.choice(CATEGORIES):
        item["category"] = category
    return item


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
