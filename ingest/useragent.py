"""Device class, OS and browser from a User-Agent string (``ua-parser``, the maintained
port of Browserscope's rules, compiled lazily: building every rule up front takes seconds,
which stalled a flow's first batch long enough to look idle), for events that do not
say their device (docs/events.md), and known crawlers, bots and monitors (``crawlerdetect``,
CONTRACT §9).

User agents repeat a lot (a few thousand cover most traffic), so every answer is cached.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from crawlerdetect import CrawlerDetect
from ua_parser import BasicResolver, Parser, load_lazy_builtins

__all__ = ["Agent", "describe", "device_from_user_agent", "is_bot"]

_MAX_UA = 2048  # longer "user agents" are not browsers; and they would bloat the cache
_TABLET_DEVICES = ("iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10")
_MOBILE_OS = frozenset(
    {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS"}
)
_crawlers = CrawlerDetect()
_parser = Parser(BasicResolver(load_lazy_builtins()))


class Agent(NamedTuple):
    """What a user agent says: device class (``desktop|mobile|tablet``), OS, browser."""

    device: str
    os: str | None
    browser: str | None


@lru_cache(maxsize=8192)
def describe(user_agent: str) -> Agent:
    """The device class, OS family and browser family of a (non-empty) user agent."""
    result = _parser.parse(user_agent[:_MAX_UA])
    os = result.os.family if result.os is not None else None
    browser = result.user_agent.family if result.user_agent is not None else None
    family = result.device.family if result.device is not None else ""
    if any(marker in family or marker in user_agent for marker in _TABLET_DEVICES):
        device = "tablet"
    elif os == "Android" and "Mobile" not in user_agent:
        device = "tablet"  # Android phones say "Mobile"; tablets do not
    elif os in _MOBILE_OS or "Mobi" in user_agent or "iPhone" in user_agent:
        device = "mobile"
    else:
        device = "desktop"
    return Agent(device, os if os != "Other" else None, browser if browser != "Other" else None)


def device_from_user_agent(user_agent: str | None) -> str | None:
    """``tablet`` / ``mobile`` / ``desktop`` (see :func:`describe`); None without a UA."""
    if not user_agent:
        return None
    return describe(user_agent).device


@lru_cache(maxsize=8192)
def _crawler(user_agent: str) -> bool:
    return bool(_crawlers.isCrawler(user_agent[:_MAX_UA]))


def is_bot(user_agent: str | None) -> bool:
    """Whether the user agent is a known crawler, bot or monitoring tool."""
    return bool(user_agent) and _crawler(user_agent)
