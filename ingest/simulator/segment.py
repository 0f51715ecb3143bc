"""Simulated traffic as Segment messages (CONTRACT §9): ``pulse simulate --format segment``.

Each simulated event becomes the message a storefront instrumented with Segment's SDKs
would send for it: ``page`` for page views, E-commerce spec v2 ``track`` calls for the
rest, the country as the shopper's address (``context.ip``), the device as a user agent,
the channel as the campaign's medium. Two kinds of traffic only this format carries:

- **visits that log in**: a share of the visits (by a hash of the visit's key) browse
  anonymously (``anonymousId`` only) for their first :data:`LOGIN_AT` events, then send an
  ``identify`` carrying both ids and both ids on every later message;
- **crawlers**: a share of the visits also get a crawler's hit on their landing page.

The choices are pure functions of each event (its visit's key and its position in the
visit), so a re-sent or late event is sent with the same ids as its first copy. Next to
each message comes the §5 event it stands for (:class:`Translated`): what the polars
reference reads, and what the Segment API must make of the message.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from ingest.privacy import country_of_ip
from ingest.simulator import SimConfig, ground_truth, iter_events, truth_path
from ingest.simulator.defaults import USER_AGENTS

__all__ = [
    "ANONYMOUS_SHARE",
    "BATCH_MESSAGES",
    "BOT_SHARE",
    "CRAWLERS",
    "LOGIN_AT",
    "Translated",
    "batch_body",
    "iter_segment",
    "write_segment",
]

ANONYMOUS_SHARE = 0.3  # visits that start anonymous and log in
BOT_SHARE = 0.02  # visits whose landing page a crawler also fetches
LOGIN_AT = 2  # position in the visit of the first identified event
BATCH_MESSAGES = 100  # messages per batch body written (analytics-node's default flushAt: 15)
SHOP = "https://shop.example"
CRAWLERS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "UptimeRobot/2.0 (http://www.uptimerobot.com/)",
)
# The campaign (utm source, medium) that tags each channel: the medium alone decides it.
_CAMPAIGN = {
    "paid": ("google", "cpc"),
    "email": ("newsletter", "email"),
    "social": ("social", "social"),
    "organic": ("google", "organic"),
    "referral": ("partner", "referral"),
}
_TRACKS = {
    "product_view": "Product Viewed",
    "add_to_cart": "Product Added",
    "remove_from_cart": "Product Removed",
    "begin_checkout": "Checkout Started",
    "purchase": "Order Completed",
    "search": "Products Searched",
    "experiment_exposure": "Experiment Viewed",
}
_VISIT_FIELDS = ("session_id", "country", "device", "user_agent", "channel")
_PRODUCT_FIELDS = ("product_id", "category", "price", "quantity", "currency")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Translated:
    """One Segment message and the §5 event it stands for."""

    emit_ms: int  # when to send it (as the simulator's events)
    event: dict[str, Any]
    message: dict[str, Any]


def iter_segment(
    config: SimConfig, *, anonymous_share: float = ANONYMOUS_SHARE, bot_share: float = BOT_SHARE
) -> Iterator[Translated]:
    """The simulated events of ``config`` as Segment messages, in emission order, with the
    logins and crawler hits described in the module docstring."""
    for emit_ms, line in iter_events(config):
        for event, anonymous in _visit_events(_decode(line), anonymous_share, bot_share):
            yield Translated(emit_ms, event, _message(event, anonymous=anonymous))


def batch_body(messages: list[dict[str, Any]], sent_at_ms: int | None = None) -> bytes:
    """A ``/segment/v1/batch`` body holding ``messages`` (with the client's ``sentAt``)."""
    body: dict[str, Any] = {"batch": messages}
    if sent_at_ms is not None:
        body["sentAt"] = _iso(sent_at_ms)
    return _encode(body)


def write_segment(
    config: SimConfig, path: Path | str, progress: Callable[[int], None] | None = None
) -> int:
    """Write the traffic as ``/segment/v1/batch`` bodies, one per line (up to
    :data:`BATCH_MESSAGES` messages each, ready to POST), and the ground truth beside it.
    ``progress`` is called with the number of messages written since its last call.
    Returns the number of messages written."""
    path = Path(path)
    written = 0
    with path.open("wb") as out:
        batch: list[dict[str, Any]] = []
        for sent in iter_segment(config):
            batch.append(sent.message)
            if len(batch) == BATCH_MESSAGES:
                out.write(batch_body(batch) + b"\n")
                written += len(batch)
                if progress is not None:
                    progress(len(batch))
                batch = []
        if batch:
            out.write(batch_body(batch) + b"\n")
            written += len(batch)
            if progress is not None:
                progress(len(batch))
    truth = ground_truth(config)
    truth["messages"] = written
    truth_path(path).write_text(json.dumps(truth, indent=2) + "\n")
    return written


def _share(key: str, salt: bytes) -> float:
    return zlib.crc32(salt + key.encode()) / 2**32


def _visit_events(
    event: dict[str, Any], anonymous_share: float, bot_share: float
) -> list[tuple[dict[str, Any], bool]]:
    """The §5 events one simulated event stands for: itself (its ids as the visit had
    them then), preceded by the visit's ``identify`` or a crawler's hit where due; each
    with whether its ``user_id`` is an anonymous id (sent as ``anonymousId`` alone)."""
    key, _, position = str(event["event_id"]).rpartition("-")
    try:
        k = int(position, 16)
    except ValueError:  # not a visit's own event (an experiment exposure): identified
        key, k = "", LOGIN_AT
    country = event.get("country")
    if country is not None and _address(country) is None:
        del event["country"]  # no address of that country to send it with
    if event.get("device") is not None and event["device"] not in USER_AGENTS:
        del event["device"]
    event.setdefault("channel", "direct")  # no campaign, no referrer (CONTRACT §9)
    out: list[tuple[dict[str, Any], bool]] = []
    anonymous_only = False
    if key and k == 0 and _share(key, b"bot") < bot_share:
        crawler = {"event_id": f"{key}-bot", "type": "page_view", "ts": event["ts"],
                   "user_id": f"crawler-{key}", "channel": "direct", "page": event.get("page", "/"),
                   "user_agent": CRAWLERS[zlib.crc32(key.encode()) % len(CRAWLERS)]}  # fmt: skip
        out.append((crawler, True))
    if key and _share(key, b"anon") < anonymous_share:
        anonymous = f"anon-{key}"
        if k < LOGIN_AT:
            event["user_id"], anonymous_only = anonymous, True
        else:
            event["anonymous_id"] = anonymous
            if k == LOGIN_AT:  # logs in here (a re-sent copy repeats the same identify)
                login = {"event_id": f"{key}-login", "type": "identify", "ts": event["ts"],
                         "user_id": event["user_id"], "anonymous_id": anonymous}  # fmt: skip
                login.update((f, event[f]) for f in _VISIT_FIELDS if f in event)
                out.append((login, False))
    out.append((event, anonymous_only))
    return out


@lru_cache(maxsize=64)
def _address(country: str) -> str | None:
    """An address the IP-to-country data places in ``country`` (found in the data shipped
    with the package, so nothing is downloaded and none is written here)."""
    for a in range(1, 224):
        for b in range(256):
            ip = f"{a}.{b}.7.9"
            if country_of_ip(ip) == country:
                return ip
    return None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _message(event: dict[str, Any], *, anonymous: bool) -> dict[str, Any]:
    """The Segment message of a §5 event (E-commerce spec v2 names, the context);
    ``anonymous``: its ``user_id`` is an anonymous id."""
    kind = event["type"]
    message: dict[str, Any] = {"messageId": event["event_id"], "timestamp": _iso(event["ts"])}
    if (anonymous_id := event.get("anonymous_id")) is not None:
        message["userId"], message["anonymousId"] = event["user_id"], anonymous_id
    elif anonymous:
        message["anonymousId"] = event["user_id"]
    else:
        message["userId"] = event["user_id"]
    message["context"] = _context(event)
    props: dict[str, Any] = {}
    if kind == "page_view":
        message["type"] = "page"
    elif kind == "identify":
        message["type"] = "identify"
    else:
        message["type"] = "track"
        message["event"] = _TRACKS.get(kind, kind)
        props = _properties(event)
    if props:
        message["properties"] = props
    return message


def _context(event: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {"library": {"name": "pulse-simulator", "version": "1"}}
    if (country := event.get("country")) is not None:
        context["ip"] = _address(country)
    agent = event.get("user_agent")
    if agent is None and (device := event.get("device")) is not None:
        agent = USER_AGENTS[device][0]
    if agent is not None:
        context["userAgent"] = agent
    if (path := event.get("page")) is not None:
        page = {"path": path.split("?")[0], "url": SHOP + path}
        if (referrer := event.get("referrer")) is not None:
            page["referrer"] = referrer
        context["page"] = page
    if (campaign := _CAMPAIGN.get(event.get("channel", "direct"))) is not None:
        context["campaign"] = {"source": campaign[0], "medium": campaign[1]}
    if (session := event.get("session_id")) is not None:
        context["sessionId"] = session
    return context


def _properties(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["type"]
    if kind in ("product_view", "add_to_cart", "remove_from_cart"):
        return {f: event[f] for f in _PRODUCT_FIELDS if f in event}
    if kind == "begin_checkout":
        return {"value": event.get("cart_value"), "currency": event.get("currency")}
    if kind == "purchase":
        return {"order_id": event.get("order_id"), "revenue": event.get("revenue"),
                "currency": event.get("currency"), "products": event.get("items", [])}  # fmt: skip
    if kind == "search":
        return {"query": event.get("query"), "results_count": event.get("results_count")}
    if kind == "experiment_exposure":
        return {"experiment_id": event.get("experiment"), "variation_id": event.get("variant")}
    return {}
