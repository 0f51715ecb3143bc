"""The default marketplace, as data: countries, categories, devices, channels, seasonality.

Numbers are rough public e-commerce shapes for Europe (traffic shares by country, local
price levels, evening peaks), not measurements; every one is a parameter of
:class:`~ingest.simulator.config.MarketConfig` and can be replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHANNELS",
    "DAY_FACTORS",
    "DEFAULT_CATEGORIES",
    "DEFAULT_COUNTRIES",
    "DEVICES",
    "EVENT_TYPES",
    "HOURLY_WEEKDAY",
    "HOURLY_WEEKEND",
    "REFERRERS",
    "USER_AGENTS",
    "CategorySpec",
    "CountrySpec",
]


@dataclass(frozen=True)
class CountrySpec:
    """One market: ISO code, currency, time zone, traffic weight and price level.

    ``utc_offset_h`` is the standard (winter) offset; every country here follows the EU
    summer-time rule (+1 h from the last Sunday of March to the last Sunday of October,
    switching at 01:00 UTC), so local time needs no tz database and cannot drift with one.
    ``price_level`` scales EUR list prices before conversion (1.0 = German prices).
    """

    code: str
    currency: str
    tz: str
    utc_offset_h: int
    weight: float
    price_level: float


@dataclass(frozen=True)
class CategorySpec:
    """A catalog category: share of sessions focused on it, price shape and search terms."""

    name: str
    weight: float
    median_eur: float
    price_sigma: float
    queries: tuple[str, ...]


# The funnel's event types, in the order the simulator numbers them.
EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "search",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
)

DEFAULT_COUNTRIES: tuple[CountrySpec, ...] = (
    CountrySpec("DE", "EUR", "Europe/Berlin", 1, 17.0, 1.00),
    CountrySpec("GB", "GBP", "Europe/London", 0, 14.0, 1.05),
    CountrySpec("FR", "EUR", "Europe/Paris", 1, 13.0, 1.00),
    CountrySpec("IT", "EUR", "Europe/Rome", 1, 9.0, 0.97),
    CountrySpec("ES", "EUR", "Europe/Madrid", 1, 8.0, 0.95),
    CountrySpec("PL", "PLN", "Europe/Warsaw", 1, 7.0, 0.82),
    CountrySpec("NL", "EUR", "Europe/Amsterdam", 1, 5.0, 1.02),
    CountrySpec("SE", "SEK", "Europe/Stockholm", 1, 2.8, 1.06),
    CountrySpec("BE", "EUR", "Europe/Brussels", 1, 2.6, 1.01),
    CountrySpec("AT", "EUR", "Europe/Vienna", 1, 2.3, 1.02),
    CountrySpec("CH", "CHF", "Europe/Zurich", 1, 2.2, 1.30),
    CountrySpec("CZ", "CZK", "Europe/Prague", 1, 2.0, 0.84),
    CountrySpec("RO", "RON", "Europe/Bucharest", 2, 2.0, 0.76),
    CountrySpec("DK", "DKK", "Europe/Copenhagen", 1, 1.6, 1.10),
    CountrySpec("PT", "EUR", "Europe/Lisbon", 0, 1.6, 0.90),
    CountrySpec("HU", "HUF", "Europe/Budapest", 1, 1.4, 0.80),
    CountrySpec("GR", "EUR", "Europe/Athens", 2, 1.3, 0.88),
    CountrySpec("IE", "EUR", "Europe/Dublin", 0, 1.2, 1.05),
    CountrySpec("FI", "EUR", "Europe/Helsinki", 2, 1.2, 1.05),
    CountrySpec("BG", "BGN", "Europe/Sofia", 2, 0.8, 0.72),
    CountrySpec("SK", "EUR", "Europe/Bratislava", 1, 0.8, 0.86),
    CountrySpec("HR", "EUR", "Europe/Zagreb", 1, 0.6, 0.86),
    CountrySpec("LT", "EUR", "Europe/Vilnius", 2, 0.5, 0.83),
    CountrySpec("SI", "EUR", "Europe/Ljubljana", 1, 0.4, 0.88),
    CountrySpec("EE", "EUR", "Europe/Tallinn", 2, 0.3, 0.89),
)

DEFAULT_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "electronics", 0.10, 90.0, 0.9, ("headphones", "bluetooth speaker", "smartwatch", "tv")
    ),
    CategorySpec("phones", 0.06, 180.0, 0.7, ("iphone", "samsung galaxy", "phone case", "charger")),
    CategorySpec("computers", 0.05, 260.0, 0.8, ("laptop", "monitor", "keyboard", "ssd")),
    CategorySpec("home", 0.10, 30.0, 0.8, ("bed linen", "lamp", "storage box", "curtains")),
    CategorySpec("kitchen", 0.07, 28.0, 0.8, ("coffee machine", "knife set", "pan", "blender")),
    CategorySpec("fashion", 0.16, 32.0, 0.6, ("dress", "jeans", "winter jacket", "t-shirt")),
    CategorySpec("shoes", 0.08, 55.0, 0.5, ("sneakers", "running shoes", "boots", "sandals")),
    CategorySpec("beauty", 0.09, 17.0, 0.6, ("perfume", "face cream", "shampoo", "lipstick")),
    CategorySpec("sports", 0.08, 35.0, 0.8, ("yoga mat", "dumbbells", "bike helmet", "tent")),
    CategorySpec("toys", 0.07, 24.0, 0.7, ("lego", "board game", "puzzle", "doll")),
    CategorySpec("books", 0.08, 13.0, 0.4, ("novel", "cookbook", "children book", "comic")),
    CategorySpec("garden", 0.06, 40.0, 0.9, ("garden hose", "plant pot", "lawn mower", "grill")),
)

# Devices and channels: (name, share of sessions, conversion multiplier). Multipliers are
# renormalised so the overall conversion stays at MarketConfig.conversion_rate.
DEVICES: tuple[tuple[str, float, float], ...] = (
    ("desktop", 0.25, 1.45),
    ("mobile", 0.70, 0.85),
    ("tablet", 0.05, 1.10),
)
CHANNELS: tuple[tuple[str, float, float], ...] = (
    ("direct", 0.25, 1.25),
    ("organic", 0.30, 1.00),
    ("paid", 0.20, 0.90),
    ("email", 0.08, 1.80),
    ("social", 0.10, 0.50),
    ("referral", 0.07, 1.10),
)

# Referrer of a session's landing page by channel (direct and email arrive without one).
REFERRERS: dict[str, tuple[str, ...]] = {
    "organic": ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/"),
    "paid": ("https://www.google.com/", "https://www.facebook.com/"),
    "social": (
        "https://www.instagram.com/",
        "https://www.tiktok.com/",
        "https://www.facebook.com/",
    ),
    "referral": (
        "https://www.idealo.de/",
        "https://www.pricerunner.com/",
        "https://www.reddit.com/",
    ),
}

# User agents for sessions that send no `device` field; the pipeline derives the device
# from them (ingest.useragent), so each must map back to the device it is listed under.
USER_AGENTS: dict[str, tuple[str, ...]] = {
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36",
    ),
    "tablet": (
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    ),
}

# Relative session arrivals by local hour (value at hh:00, linear in between): a night
# trough, a lunch bump and an evening peak; weekends start later and shop through midday.
HOURLY_WEEKDAY: tuple[float, ...] = (
    0.32, 0.18, 0.12, 0.10, 0.10, 0.14, 0.30, 0.55, 0.80, 0.95, 1.02, 1.08,
    1.15, 1.12, 1.08, 1.08, 1.12, 1.22, 1.40, 1.65, 1.85, 1.80, 1.35, 0.75,
)  # fmt: skip
HOURLY_WEEKEND: tuple[float, ...] = (
    0.42, 0.26, 0.16, 0.12, 0.10, 0.11, 0.18, 0.32, 0.58, 0.88, 1.10, 1.22,
    1.28, 1.25, 1.20, 1.16, 1.16, 1.22, 1.35, 1.55, 1.75, 1.70, 1.30, 0.82,
)  # fmt: skip
# Monday .. Sunday: Sunday evening is the busiest shopping time of the week, Friday the quietest.
DAY_FACTORS: tuple[float, ...] = (1.04, 1.00, 0.98, 0.97, 0.92, 0.93, 1.16)
