"""The marketing channel of a visit (``channel``, docs/events.md) from its campaign and referrer.

The rules follow the usual default channel grouping of web analytics: the campaign's
``utm_medium`` decides when there is one (``cpc`` is paid, ``email`` is email ...), a click
id of an ad network in the landing URL means paid, and otherwise the referrer's host does
(a search engine is organic, a social network social, another site referral; none, or the
shop itself, direct).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

__all__ = ["channel_of"]

_MEDIUM = {
    **dict.fromkeys(
        (
            "cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "cpm", "cpv",
            "cpa", "display", "banner", "retargeting", "paid_social", "paidsocial",
            "paid-social", "shopping", "ads",
        ),
        "paid",
    ),
    **dict.fromkeys(("email", "e-mail", "e_mail", "newsletter", "mail"), "email"),
    **dict.fromkeys(
        ("social", "social-network", "social_network", "social-media", "social_media", "sm"),
        "social",
    ),
    "organic": "organic",
    **dict.fromkeys(("referral", "affiliate", "partner"), "referral"),
}  # fmt: skip
# Ad networks' click ids: a landing URL carrying one came from a paid ad.
_CLICK_IDS = frozenset({"gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "ttclid"})
_SEARCH = ("google", "bing", "duckduckgo", "yahoo", "yandex", "baidu", "ecosia", "qwant",
           "startpage", "naver", "seznam", "search.brave")  # fmt: skip
_SOCIAL = ("facebook", "instagram", "twitter", "linkedin", "pinterest", "reddit", "tiktok",
           "youtube", "snapchat", "tumblr", "threads", "mastodon", "vk", "whatsapp")  # fmt: skip
_SOCIAL_HOSTS = frozenset({"t.co", "x.com", "lnkd.in", "fb.me", "m.me"})
_MAIL_HOSTS = ("mail.google.", "outlook.live.", "mail.yahoo.", "webmail.")
_MAX_CACHED = 512  # longer starts of a URL are not kept in the cache


def _host(url: str | None) -> str:
    if not url:
        return ""
    start = url.find("//")
    if start < 0:  # no authority (urlsplit still decides: it drops tabs, newlines)
        return _host_of(url)
    # the authority ends at the first of / ? # after "//": the host depends on what comes
    # before that alone, which repeats from one URL of a site to the next (cached)
    end = len(url)
    for delimiter in "/?#":
        found = url.find(delimiter, start + 2, end)
        if found >= 0:
            end = found
    return _host_of(url) if end > _MAX_CACHED else _cached_host_of(url[:end])


def _host_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


_cached_host_of = lru_cache(maxsize=4096)(_host_of)


def _labelled(host: str, names: tuple[str, ...]) -> bool:
    labels = host.split(".")
    return any(name in labels or host.startswith(name + ".") for name in names)


@lru_cache(maxsize=4096)
def _from_referrer(referrer_host: str, page_host: str) -> str:
    if not referrer_host or referrer_host == page_host:
        return "direct"
    if any(referrer_host.startswith(m) for m in _MAIL_HOSTS):
        return "email"
    if _labelled(referrer_host, _SEARCH):
        return "organic"
    if referrer_host in _SOCIAL_HOSTS or _labelled(referrer_host, _SOCIAL):
        return "social"
    return "referral"


def _click_id(page: str | None) -> bool:
    if not page or "?" not in page:
        return False
    try:
        query = urlsplit(page).query
    except ValueError:
        return False
    return any(name in _CLICK_IDS for name, _ in parse_qsl(query))


def channel_of(
    *, medium: str | None, source: str | None, referrer: str | None, page: str | None
) -> str:
    """``direct|organic|paid|email|social|referral`` from the campaign's medium and source
    (``utm_medium``/``utm_source``), the landing page's URL and the referrer."""
    if medium:
        known = _MEDIUM.get(medium.strip().lower())
        if known is not None:
            return known
    if _click_id(page):
        return "paid"
    if medium or source:  # a tagged campaign of no known medium: its source decides
        host = (source or "").strip().lower()
        via = _from_referrer(host, "") if host else "referral"
        return via if via != "direct" else "referral"
    return _from_referrer(_host(referrer), _host(page))
