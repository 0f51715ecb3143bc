"""Every parameter of the simulated marketplace and of one simulation run.

:class:`MarketConfig` describes the marketplace (defaults: 15M users in 25 European
countries, ~70% mobile, 4.8% session conversion, AOV about EUR 85); :class:`SimConfig` one
run of it (rate, duration, seed, start, incidents). Both are frozen: a run is a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.simulator.defaults import (
    CHANNELS,
    DAY_FACTORS,
    DEFAULT_CATEGORIES,
    DEFAULT_COUNTRIES,
    DEVICES,
    EVENT_TYPES,
    HOURLY_WEEKDAY,
    HOURLY_WEEKEND,
    CategorySpec,
    CountrySpec,
)
from ingest.simulator.experiments import ExperimentSpec
from ingest.simulator.incidents import Incident, check_incident

__all__ = ["DEFAULT_START", "EVENT_TYPES", "MarketConfig", "SimConfig"]

# A fixed default start keeps SimConfig() deterministic; the CLI passes "now".
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)


@dataclass(frozen=True)
class MarketConfig:
    """The marketplace: population, catalog, mixes, funnel and seasonality.

    Funnel rates are shares of *sessions*: ``bounce_rate`` sessions are one page view;
    the others browse, ``add_to_cart_rate`` add something, ``checkout_rate`` begin
    checkout and ``conversion_rate`` purchase (nested: purchase ⊂ checkout ⊂ cart).
    """

    users: int = 15_000_000
    countries: tuple[CountrySpec, ...] = DEFAULT_COUNTRIES
    categories: tuple[CategorySpec, ...] = DEFAULT_CATEGORIES
    products: int = 20_000
    zipf_exponent: float = 1.1  # product popularity within a category ~ 1 / rank**s
    devices: tuple[tuple[str, float, float], ...] = DEVICES  # (name, share, conv. multiplier)
    channels: tuple[tuple[str, float, float], ...] = CHANNELS
    conversion_rate: float = 0.048
    aov_eur: float = 85.0
    bounce_rate: float = 0.38
    add_to_cart_rate: float = 0.11
    checkout_rate: float = 0.068
    extra_page_views: float = 2.2  # mean page views after the landing page (non-bounce)
    searches: float = 0.9  # mean searches per non-bounce session
    browse_product_views: float = 3.0  # mean product views not leading to a cart add (>= 1)
    extra_cart_adds: float = 0.8  # carting sessions add 1 + Poisson(this) items
    remove_prob: float = 0.15  # chance a cart add is removed again
    quantity_weights: tuple[float, ...] = (0.85, 0.12, 0.03)  # quantity 1, 2, 3
    returning_share: float = 0.40  # sessions of the active (returning) user pool
    active_user_share: float = 0.05  # size of that pool, as a share of users
    sessionless_share: float = 0.05  # users whose events carry no session_id
    ua_only_share: float = 0.10  # sessions sending user_agent instead of device
    hourly_weekday: tuple[float, ...] = HOURLY_WEEKDAY
    hourly_weekend: tuple[float, ...] = HOURLY_WEEKEND
    day_factors: tuple[float, ...] = DAY_FACTORS  # Monday .. Sunday
    # Median seconds before an event of each EVENT_TYPES kind (log-normal dwell times).
    gap_median_s: tuple[float, ...] = (25.0, 15.0, 30.0, 12.0, 20.0, 35.0, 60.0)
    gap_sigma: float = 0.9
    max_gap_s: float = 600.0  # well under the 30-min session timeout
    session_gap_s: float = 1860.0  # min. gap between sessionless sessions of one user
    warmup: timedelta = timedelta(minutes=10)  # sessions already running at the start
    catalog_seed: int = 20240601  # the catalog is the same for every run seed
    fx_file: Path | None = None  # None: the FX table shipped with Pulse

    def __post_init__(self) -> None:
        shares = {
            "conversion_rate": self.conversion_rate,
            "bounce_rate": self.bounce_rate,
            "add_to_cart_rate": self.add_to_cart_rate,
            "checkout_rate": self.checkout_rate,
            "remove_prob": self.remove_prob,
            "returning_share": self.returning_share,
            "active_user_share": self.active_user_share,
            "sessionless_share": self.sessionless_share,
            "ua_only_share": self.ua_only_share,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MarketConfig.{name} must be within 0..1, got {value}")
        if not (
            self.conversion_rate <= self.checkout_rate <= self.add_to_cart_rate
            and self.add_to_cart_rate <= 1.0 - self.bounce_rate
        ):
            raise ValueError(
                "MarketConfig: need conversion_rate <= checkout_rate <= add_to_cart_rate "
                "<= 1 - bounce_rate"
            )
        if self.browse_product_views < 1.0:
            raise ValueError("MarketConfig.browse_product_views must be >= 1")
        if len(self.hourly_weekday) != 24 or len(self.hourly_weekend) != 24:
            raise ValueError("MarketConfig hourly profiles need 24 values")
        if len(self.day_factors) != 7 or len(self.gap_median_s) != len(EVENT_TYPES):
            raise ValueError("MarketConfig: 7 day factors and one gap per event type")
        if self.users < 10 * len(self.countries) or self.products < 10 * len(self.categories):
            raise ValueError("MarketConfig: too few users or products for the markets")
        names = [c.name for c in self.categories] + [q for c in self.categories for q in c.queries]
        if any(not n.isprintable() or '"' in n or "\\" in n for n in names):
            raise ValueError("MarketConfig: category names and queries must be plain text")
        if self.max_gap_s * 1.5 > self.session_gap_s:
            raise ValueError("MarketConfig: max_gap_s must stay well below session_gap_s")

    def expected_event_mix(self) -> dict[str, float]:
        """Mean events of each type per session, exactly as the session model draws them."""
        bounce, cart = self.bounce_rate, self.add_to_cart_rate
        checkout, conv = self.checkout_rate, self.conversion_rate
        adds = cart * (1.0 + self.extra_cart_adds)
        # Sessions that check out keep their first add; the others may remove any add.
        removes = self.remove_prob * (
            checkout * self.extra_cart_adds + (cart - checkout) * (1.0 + self.extra_cart_adds)
        )
        return {
            "page_view": 1.0 + (1.0 - bounce) * self.extra_page_views,
            "search": (1.0 - bounce) * self.searches,
            "product_view": (1.0 - bounce) * self.browse_product_views + adds,
            "add_to_cart": adds,
            "remove_from_cart": removes,
            "begin_checkout": checkout,
            "purchase": conv,
        }

    def expected_events_per_session(self) -> float:
        """Mean events per session (turns the events/s rate into sessions/s)."""
        return sum(self.expected_event_mix().values())

    def mean_items_per_order(self) -> float:
        """Mean distinct cart lines x mean quantity: the EUR item price is set from it."""
        lines = 1.0 + self.extra_cart_adds * (1.0 - self.remove_prob)
        qty = sum((i + 1) * w for i, w in enumerate(self.quantity_weights))
        return lines * qty / sum(self.quantity_weights)


@dataclass(frozen=True)
class SimConfig:
    """One run: ``rate`` mean events/s over ``duration`` from ``start``, seeded."""

    rate: float = 100.0
    duration: timedelta = timedelta(minutes=10)
    seed: int = 0
    start: datetime = DEFAULT_START
    incidents: tuple[Incident, ...] = ()
    market: MarketConfig = field(default_factory=MarketConfig)
    experiments: tuple[ExperimentSpec, ...] = ()

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 events/s, got {self.rate}")
        if self.duration <= timedelta(0):
            raise ValueError(f"duration must be positive, got {self.duration}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be within 0 .. 2**63-1, got {self.seed}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (e.g. 2025-01-06T00:00:00Z)")
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "incidents", tuple(self.incidents))
        object.__setattr__(self, "experiments", tuple(self.experiments))
        if len({e.name for e in self.experiments}) != len(self.experiments):
            raise ValueError("two experiments share a name")
        for incident in self.incidents:
            check_incident(
                incident,
                countries=tuple(c.code for c in self.market.countries),
                categories=tuple(c.name for c in self.market.categories),
            )

    @property
    def end(self) -> datetime:
        """End of the run (exclusive)."""
        return self.start + self.duration
