"""The channel of a visit from its campaign, landing page and referrer."""

from __future__ import annotations

import pytest

from ingest.channel import channel_of

SHOP = "https://shop.example/p/1"


@pytest.mark.parametrize(
    ("medium", "source", "referrer", "page", "channel"),
    [
        ("cpc", "google", None, SHOP, "paid"),
        ("Email", None, None, SHOP, "email"),
        ("social", "facebook", None, SHOP, "social"),
        ("organic", None, None, SHOP, "organic"),
        ("affiliate", "x", None, SHOP, "referral"),
        (None, None, None, SHOP + "?gclid=abc", "paid"),
        ("weird", "facebook", None, SHOP, "social"),
        ("weird", "some-blog", None, SHOP, "referral"),
        (None, None, "https://www.google.de/search?q=x", SHOP, "organic"),
        (None, None, "https://duckduckgo.com/", SHOP, "organic"),
        (None, None, "https://t.co/abc", SHOP, "social"),
        (None, None, "https://m.facebook.com/", SHOP, "social"),
        (None, None, "https://mail.google.com/mail/u/0", SHOP, "email"),
        (None, None, "https://blog.example.org/post", SHOP, "referral"),
        (None, None, "https://shop.example/cart", SHOP, "direct"),
        (None, None, None, SHOP, "direct"),
        (None, None, "not a url", None, "direct"),
    ],
)
def test_channel_rules(
    medium: str | None, source: str | None, referrer: str | None, page: str | None, channel: str
) -> None:
    assert channel_of(medium=medium, source=source, referrer=referrer, page=page) == channel
