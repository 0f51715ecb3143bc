"""The channel of a visit from its campaign, landing page and referrer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.channel import _host, _host_of, channel_of

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


_URL_PARTS = st.sampled_from(
    ["https:", "http:", "//", "/", "?", "#", ":", "@", "[", "]", "::1", "\t", "\n", " ", "www.",
     "Shop.Example", "a.b", "x=//y", "80", "user", "%20", "é", "mailto:", ""]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(url=st.lists(_URL_PARTS | st.text(max_size=4), max_size=10).map("".join))
def test_a_host_read_from_the_start_of_a_url_is_the_one_of_the_whole_url(url: str) -> None:
    # hosts are cached by the URL up to the end of its authority: the same answer as
    # urlsplit on the whole URL, whatever the URL
    assert _host(url) == _host_of(url)
