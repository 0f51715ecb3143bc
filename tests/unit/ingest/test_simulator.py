"""The marketplace simulator: valid events, calibrated defaults, determinism, incidents.

Each incident run uses the baseline's seed. Incidents draw from their own random streams,
so an incident run is the baseline plus exactly the incident's changes: the tests measure
the incident's metric in its slice and window against the baseline (METRICS.md
definitions, small polars code) and require everything outside to be unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ingest.events import Rejection, validate
from ingest.fx import load_fx_rates
from ingest.simulator import (
    MarketConfig,
    SimConfig,
    ground_truth,
    iter_events,
    parse_duration,
    parse_incident,
    truth_path,
    write_jsonl,
)
from ingest.simulator.defaults import USER_AGENTS
from ingest.simulator.market import market_for
from ingest.simulator.timeutil import eu_summer_time, to_ms
from ingest.useragent import device_from_user_agent

START = datetime(2025, 1, 8, 17, tzinfo=UTC)  # a Wednesday, 18:00 in Central Europe
START_MS = to_ms(START)
MIN = 60_000
RUN_MIN = 30
RATE = 100.0
SEED = 11
W0, W1 = START_MS + 10 * MIN, START_MS + 20 * MIN  # every incident: at=+10m, for=10m
WINDOW = "at=+10m,for=10m"
FX = load_fx_rates()
DEFAULTS = MarketConfig()
SCHEMA = {
    "event_id": pl.String,
    "type": pl.String,
    "ts": pl.Int64,
    "user_id": pl.String,
    "session_id": pl.String,
    "country": pl.String,
    "device": pl.String,
    "user_agent": pl.String,
    "channel": pl.String,
    "product_id": pl.String,
    "category": pl.String,
    "price": pl.Float64,
    "currency": pl.String,
    "revenue": pl.Float64,
    "order_id": pl.String,
}
Specs = tuple[str, ...]


def config(specs: Specs = (), seed: int = SEED, minutes: int = RUN_MIN) -> SimConfig:
    return SimConfig(
        rate=RATE,
        duration=timedelta(minutes=minutes),
        seed=seed,
        start=START,
        incidents=tuple(parse_incident(s) for s in specs),
    )


def run(cfg: SimConfig) -> tuple[list[int], list[bytes]]:
    emits, lines = [], []
    for emit, line in iter_events(cfg):
        emits.append(emit)
        lines.append(line)
    return emits, lines


@cache
def events(specs: Specs = ()) -> tuple[np.ndarray, bytes]:
    """(emit_ms, JSONL blob) of a run: two objects, so caching many runs stays cheap."""
    emits, lines = run(config(specs))
    return np.array(emits, dtype=np.int64), b"\n".join(lines)


@cache
def raw_frame(specs: Specs = ()) -> pl.DataFrame:
    """Every emitted line, validated with the real validator, as a frame (with emit)."""
    emits, blob = events(specs)
    rejected = [
        (line, r.reason)
        for line in blob.split(b"\n")
        if isinstance(r := validate(line, now_ms=START_MS, currencies=FX.currencies), Rejection)
    ]
    assert rejected == []
    return pl.read_ndjson(blob, schema=SCHEMA).with_columns(emit=pl.Series(emits))


@cache
def frame(specs: Specs = ()) -> pl.DataFrame:
    """De-duplicated events with derived device, EUR amounts and sessions (METRICS.md)."""
    df = raw_frame(specs).unique("event_id", keep="first", maintain_order=True)
    agents = df["user_agent"].drop_nulls().unique().to_list()
    by_agent = {ua: device_from_user_agent(ua) for ua in agents}
    eur = {cur: FX.rate(cur, START_MS) for cur in FX.currencies}
    gap = pl.col("ts").diff().over("user_id")
    cut = (gap.is_null() | (gap > 30 * MIN)).cast(pl.Int32).cum_sum().over("user_id")
    return (
        df.with_columns(
            device=pl.col("device").fill_null(pl.col("user_agent").replace_strict(by_agent)),
            eur=pl.col("revenue") * pl.col("currency").replace_strict(eur, default=None),
        )
        .sort("user_id", "ts", "event_id")
        .with_columns(
            session=pl.coalesce("session_id", pl.col("user_id") + "#" + cut.cast(pl.String))
        )
    )


def where(**dims: str) -> pl.Expr:
    expr = pl.lit(True)
    for dim, value in dims.items():
        expr = expr & (pl.col(dim) == value)
    return expr


def sessions_table(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("session").agg(
        start=pl.col("ts").min(),
        events=pl.len(),
        purchase=(pl.col("type") == "purchase").any(),
        country=pl.col("country").first(),
        device=pl.col("device").first(),
        channel=pl.col("channel").first(),
    )


def mean(values: pl.Series) -> float:
    """Mean as a float (0 for an empty series)."""
    result = values.cast(pl.Float64).mean()
    return float(result) if isinstance(result, float) else 0.0


def metrics(df: pl.DataFrame, lo: int, hi: int, **dims: str) -> dict[str, float]:
    """METRICS.md numbers over [lo, hi) in a slice (+ event counts by type)."""
    rows = df.filter(where(**dims) & (pl.col("ts") >= lo) & (pl.col("ts") < hi))
    per_session = rows.group_by("session").agg(
        purchase=(pl.col("type") == "purchase").any(),
        cart=(pl.col("type") == "add_to_cart").any(),
    )
    orders = rows.filter(pl.col("type") == "purchase")
    starting = sessions_table(df).filter(
        where(**dims) & (pl.col("start") >= lo) & (pl.col("start") < hi)
    )
    out: dict[str, float] = {
        "events": rows.height,
        "sessions": per_session.height,
        "sessions_started": starting.height,
        "orders": orders.height,
        "revenue": float(orders["eur"].sum()),
        "aov": mean(orders["eur"]),
        "conversion_rate": mean(per_session["purchase"]),
        "add_to_cart_rate": mean(per_session["cart"]),
        "bounce_rate": mean(starting["events"] == 1),
    }
    for name, count in rows.group_by("type").len().iter_rows():
        out[name] = count
    return out


def key_columns(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("event_id", "ts", "price", "revenue").sort("event_id")


def assert_unchanged_outside(specs: Specs, inside: pl.Expr) -> None:
    """Events outside ``inside`` are exactly the baseline's."""
    base, hit = frame(), frame(specs)
    assert key_columns(hit.filter(~inside)).equals(key_columns(base.filter(~inside)))


def in_window(**dims: str) -> pl.Expr:
    return where(**dims) & (pl.col("ts") >= W0) & (pl.col("ts") < W1)


# -- validity and calibration -----------------------------------------------------------


def test_every_event_is_valid_and_well_formed() -> None:
    df = raw_frame()
    assert df.height > 200_000
    assert df["event_id"].n_unique() == df.height
    assert df["order_id"].drop_nulls().n_unique() == (df["type"] == "purchase").sum()
    assert (df["emit"] == df["ts"]).all()  # no incidents: everything is sent on time
    assert df["emit"].is_sorted()
    assert df["ts"].is_between(START_MS, START_MS + RUN_MIN * MIN, closed="left").all()
    assert (df["event_id"].str.len_chars() <= 64).all()
    assert df.filter(pl.col("device").is_null())["user_agent"].null_count() == 0
    assert (df["user_id"].str.strip_prefix("u").cast(pl.Int64) < DEFAULTS.users).all()


def test_defaults_within_15_percent() -> None:
    df = frame()
    # Whole sessions only: buying sessions last ~7 min (99% < 17 min), so take those
    # starting after the run's first minutes and long enough before its end.
    table = sessions_table(df).filter(
        (pl.col("start") >= START_MS + 4 * MIN) & (pl.col("start") < START_MS + 14 * MIN)
    )
    assert table.height > 15_000
    conversion = table["purchase"].mean()
    mobile = (table["device"] == "mobile").mean()
    aov = df.filter(pl.col("type") == "purchase")["eur"].mean()
    assert conversion == pytest.approx(DEFAULTS.conversion_rate, rel=0.15)
    assert mobile == pytest.approx(0.70, rel=0.15)
    assert aov == pytest.approx(DEFAULTS.aov_eur, rel=0.15)
    assert df["country"].n_unique() == len(DEFAULTS.countries) == 25
    assert {"EUR", "PLN", "SEK", "DKK", "CZK", "HUF", "RON", "BGN", "GBP", "CHF"} <= set(
        df["currency"].drop_nulls().unique()
    )
    assert set(df["channel"].unique()) == {
        "direct",
        "organic",
        "paid",
        "email",
        "social",
        "referral",
    }
    mix = DEFAULTS.expected_event_mix()
    total = sum(mix.values())
    observed = dict(df.group_by("type").len().iter_rows())
    for event_type, per_session in mix.items():
        share = observed[event_type] / df.height
        assert share == pytest.approx(per_session / total, rel=0.15), event_type
    # Returning users exist: some users have several sessions.
    per_user = table.join(df.select("session", "user_id").unique(), on="session")
    assert (per_user.group_by("user_id").len()["len"] > 1).any()


def test_rate_is_the_mean_around_the_seasonal_shape() -> None:
    market = market_for(DEFAULTS, START_MS)
    minutes = np.arange(START_MS, START_MS + RUN_MIN * MIN, MIN)
    offsets = market.utc_offset_ms + (3_600_000 if eu_summer_time(START_MS) else 0)
    shape = np.mean([market.season(int(t), offsets) @ market.country_weight for t in minutes])
    observed = frame().height / (RUN_MIN * 60)
    assert observed == pytest.approx(RATE * shape, rel=0.05)


def test_seasonality_daily_weekly_and_local_time() -> None:
    market = market_for(DEFAULTS, START_MS)
    week = np.arange(0, 7 * 24 * 60) * MIN + to_ms(datetime(2025, 1, 6, tzinfo=UTC))
    for offset in (0, 3_600_000, 7_200_000):  # London, Berlin, Athens in winter
        curve = np.array([market.season(int(t), np.array([offset]))[0] for t in week])
        assert curve.mean() == pytest.approx(1.0, rel=0.01)  # --rate is the weekly mean
    cet = np.array([3_600_000])

    def at(day: int, hour: int) -> float:
        moment = datetime(2025, 1, 6 + day, hour, tzinfo=UTC) - timedelta(hours=1)
        return float(market.season(to_ms(moment), cet)[0])

    assert at(2, 20) > 4 * at(2, 4)  # evening peak over night trough
    assert at(5, 7) < 0.7 * at(2, 7)  # weekends start later ...
    assert at(5, 12) / at(5, 20) > at(2, 12) / at(2, 20)  # ... and shop more around midday
    assert at(6, 20) > at(4, 20)  # Sunday evening beats Friday evening
    # Each country follows its own clock: at 19:00 UTC Athens is past its 20:00 peak.
    utc19 = to_ms(datetime(2025, 1, 8, 19, tzinfo=UTC))
    london, athens = market.season(utc19, np.array([0, 7_200_000]))
    assert london < athens  # 19:00 London vs 21:00 Athens
    assert eu_summer_time(to_ms(datetime(2025, 7, 1, tzinfo=UTC)))
    assert not eu_summer_time(to_ms(datetime(2025, 10, 26, 1, tzinfo=UTC)))
    assert eu_summer_time(to_ms(datetime(2025, 10, 26, 0, 59, tzinfo=UTC)))


def test_local_prices_are_plausible() -> None:
    views = frame().filter(pl.col("type") == "product_view")
    medians = dict(views.group_by("currency").agg(pl.col("price").median()).iter_rows())
    for currency, median in medians.items():
        assert 10 < median * FX.rate(currency, START_MS) < 150, currency
    assert medians["HUF"] > 5_000  # forint prices run into the thousands
    huf = views.filter(pl.col("currency") == "HUF")["price"]
    assert ((huf % 10) == 0).all()
    eur = views.filter(pl.col("currency") == "EUR")["price"]
    assert mean(((eur * 100).round() % 100) == 99) > 0.9


def test_sessionless_users_are_cut_by_30_minute_gaps() -> None:
    df = frame()
    sessionless = df.filter(pl.col("session_id").is_null())
    assert 0.02 < sessionless.height / df.height < 0.08
    # The simulator's own session is the event id's stem; gap sessionisation must agree.
    stem = pl.col("event_id").str.replace(r"-[0-9a-f]+$", "")
    pairs = sessionless.select("session", stem.alias("stem")).unique()
    assert pairs["session"].n_unique() == pairs["stem"].n_unique() == pairs.height


def test_every_user_agent_maps_back_to_its_device() -> None:
    for device, agents in USER_AGENTS.items():
        for agent in agents:
            assert device_from_user_agent(agent) == device


# -- determinism and files --------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    emits, lines = run(config())
    assert b"\n".join(lines) == events()[1]
    assert np.array_equal(emits, events()[0])
    short, other = run(config(minutes=3))[1], run(config(seed=SEED + 1, minutes=3))[1]
    assert short == lines[: len(short)]  # a shorter run is a prefix of a longer one
    assert other != short and len(set(other) & set(short)) == 0


def test_write_jsonl_and_truth_file(tmp_path: Path) -> None:
    specs = ("duplicates:device=tablet,at=+1m,for=2m,depth=0.5",)
    cfg = config(specs, minutes=4)
    out = tmp_path / "traffic.jsonl"
    counted: list[int] = []
    n = write_jsonl(cfg, out, progress=counted.append)
    lines = run(cfg)[1]
    assert out.read_bytes() == b"\n".join(lines) + b"\n"
    assert n == len(lines) == sum(counted)
    assert truth_path(out) == tmp_path / "traffic.truth.json"
    truth = json.loads(truth_path(out).read_text())
    assert truth["events"] == n
    entry = truth["incidents"][0]
    assert entry["start"] == "2025-01-08T17:01:00.000Z"
    assert entry["end"] == "2025-01-08T17:03:00.000Z"
    assert entry["slice"] == {"device": ["tablet"]} and entry["slice_label"] == "device=tablet"
    ids = [json.loads(line)["event_id"] for line in lines]
    assert entry["affected_events"] == len(ids) - len(set(ids)) > 0
    del truth["events"], entry["affected_events"]
    assert truth == ground_truth(cfg)


# -- incidents --------------------------------------------------------------------------


def test_conversion_drop_cuts_orders_in_slice_and_window_only() -> None:
    specs = (f"conversion_drop:country=DE,{WINDOW},depth=0.6",)
    base, hit = metrics(frame(), W0, W1, country="DE"), metrics(frame(specs), W0, W1, country="DE")
    assert base["orders"] > 80
    assert hit["orders"] / base["orders"] == pytest.approx(0.4, abs=0.15)
    assert hit["conversion_rate"] / base["conversion_rate"] == pytest.approx(0.4, abs=0.15)
    # Sessions whose only in-window events were checkout + purchase leave the window.
    assert hit["sessions"] == pytest.approx(base["sessions"], rel=0.01)
    assert hit["begin_checkout"] < base["begin_checkout"]
    assert_unchanged_outside(specs, in_window(country="DE"))


def test_checkout_failure_keeps_checkouts_but_loses_purchases() -> None:
    specs = (f"checkout_failure:device=desktop,{WINDOW},depth=0.5",)
    base, hit = (metrics(f, W0, W1, device="desktop") for f in (frame(), frame(specs)))
    assert hit["orders"] / base["orders"] == pytest.approx(0.5, abs=0.15)
    assert hit["begin_checkout"] == base["begin_checkout"]
    assert_unchanged_outside(specs, in_window(device="desktop"))


def test_traffic_spike_campaign_doubles_slice_sessions() -> None:
    specs = (f"traffic_spike:channel=email,{WINDOW},depth=1",)
    base, hit = (metrics(f, W0, W1, channel="email") for f in (frame(), frame(specs)))
    assert hit["sessions_started"] / base["sessions_started"] == pytest.approx(2.0, abs=0.3)
    assert hit["events"] > 1.5 * base["events"]
    assert hit["conversion_rate"] == pytest.approx(base["conversion_rate"], rel=0.4)
    # Extra sessions start in the window and may run on past its end; nothing else moves.
    late_tail = (pl.col("ts") >= W1) & (pl.col("event_id").str.contains(r"-x[0-9a-f]+\."))
    assert_unchanged_outside(specs, in_window(channel="email") | late_tail)


def test_traffic_spike_bots_bounce_and_dilute_conversion() -> None:
    specs = (f"traffic_spike:channel=social,{WINDOW},depth=2,source=bots",)
    base, hit = (metrics(f, W0, W1, channel="social") for f in (frame(), frame(specs)))
    assert hit["sessions_started"] / base["sessions_started"] == pytest.approx(3.0, abs=0.4)
    assert hit["bounce_rate"] > base["bounce_rate"] + 0.3
    assert hit["conversion_rate"] < 0.6 * base["conversion_rate"] + 1e-9
    assert_unchanged_outside(specs, in_window(channel="social"))


def test_traffic_drop_halves_slice_sessions() -> None:
    specs = (f"traffic_drop:country=GB,{WINDOW},depth=0.5",)
    base, hit = (metrics(f, W0, W1, country="GB") for f in (frame(), frame(specs)))
    assert hit["sessions_started"] / base["sessions_started"] == pytest.approx(0.5, abs=0.1)
    assert hit["events"] < 0.8 * base["events"]
    # Sessions that started in the window are gone with their tails after it.
    tails = sessions_table(frame()).filter(
        (pl.col("start") >= W0) & (pl.col("start") < W1) & (pl.col("country") == "GB")
    )
    dropped = pl.col("session").is_in(tails["session"].implode())
    assert_unchanged_outside(specs, in_window(country="GB") | dropped)


def test_price_error_multiplies_aov_in_slice_only() -> None:
    specs = (f"price_error:country=PL,{WINDOW},factor=10",)
    base, hit = (metrics(f, W0, W1, country="PL") for f in (frame(), frame(specs)))
    assert hit["orders"] == base["orders"] > 10
    assert hit["aov"] / base["aov"] == pytest.approx(10.0, rel=0.02)
    assert_unchanged_outside(specs, in_window(country="PL"))


def test_tracking_loss_stops_one_event_type() -> None:
    specs = (f"tracking_loss:device=mobile,{WINDOW},event=add_to_cart",)
    base, hit = (metrics(f, W0, W1, device="mobile") for f in (frame(), frame(specs)))
    assert base["add_to_cart"] > 100 and hit.get("add_to_cart", 0) == 0
    assert hit["add_to_cart_rate"] == 0 < base["add_to_cart_rate"]
    for other in ("page_view", "product_view", "search", "begin_checkout", "purchase"):
        assert hit[other] == base[other]
    assert_unchanged_outside(specs, in_window(device="mobile") & (pl.col("type") == "add_to_cart"))


def test_late_events_arrive_late_but_unchanged() -> None:
    specs = (f"late_events:country=FR,{WINDOW},delay=5m",)
    df = raw_frame(specs)
    late = df.filter(in_window(country="FR"))
    assert late.height > 1000
    assert ((late["emit"] - late["ts"]) == 5 * MIN).all()
    assert (
        df.filter(~in_window(country="FR"))["emit"] == df.filter(~in_window(country="FR"))["ts"]
    ).all()  # everything else is sent on time
    assert df["emit"].is_sorted()
    assert key_columns(frame(specs)).equals(key_columns(frame()))  # same events, later


def test_duplicates_resend_the_same_bytes() -> None:
    specs = (f"duplicates:device=tablet,{WINDOW},depth=0.3",)
    raw = raw_frame(specs)
    lines = events(specs)[1].split(b"\n")
    copies = len(lines) - len(set(lines))
    tablet = frame().filter(in_window(device="tablet")).height
    assert copies == raw.height - raw["event_id"].n_unique()
    assert copies / tablet == pytest.approx(0.3, abs=0.06)
    dup = raw.filter(pl.col("event_id").is_duplicated())
    assert (
        dup.group_by("event_id").agg(lag=pl.col("emit").max() - pl.col("emit").min())["lag"] == 2000
    ).all()  # the copy follows the default 2 s later
    assert key_columns(frame(specs)).equals(key_columns(frame()))  # de-duplicated: unchanged


def test_incidents_compose_exactly() -> None:
    a = f"conversion_drop:country=DE,{WINDOW},depth=0.6"
    b = f"traffic_drop:country=GB,{WINDOW},depth=0.5"
    both = frame((a, b))
    for spec, country in ((a, "DE"), (b, "GB")):
        alone = frame((spec,))
        mine = pl.col("country") == country
        assert key_columns(both.filter(mine)).equals(key_columns(alone.filter(mine)))


def test_ground_truth_lists_windows_slices_and_metrics() -> None:
    cfg = config((f"conversion_drop:country=DE|AT,device=mobile,{WINDOW},depth=0.6",
                  "tracking_loss:event=page_view,at=2025-01-08T17:30:00Z,for=5m"))  # fmt: skip
    truth = ground_truth(cfg)
    first, second = truth["incidents"]
    assert first["start"] == "2025-01-08T17:10:00.000Z" and first["end_ms"] == W1
    assert first["slice"] == {"country": ["DE", "AT"], "device": ["mobile"]}
    assert first["slice_label"] == "country=DE|AT,device=mobile"
    assert {"metric": "conversion_rate", "direction": "down"} in first["metrics"]
    assert second["slice_label"] == "all" and second["start"] == "2025-01-08T17:30:00.000Z"
    assert {"metric": "sessions", "direction": "down"} in second["metrics"]
    assert json.loads(json.dumps(truth)) == truth


# -- SPEC parsing -----------------------------------------------------------------------


def test_parse_incident_defaults_and_values() -> None:
    inc = parse_incident("conversion_drop:country=DE,at=+5m,for=10m,depth=0.6")
    assert (inc.kind, inc.country, inc.depth) == ("conversion_drop", ("DE",), 0.6)
    assert inc.at == timedelta(minutes=5) and inc.duration == timedelta(minutes=10)
    late = parse_incident("late_events")
    assert late.delay == timedelta(minutes=5) and late.depth == 1.0
    assert parse_incident("duplicates").delay == timedelta(seconds=2)
    assert parse_incident("tracking_loss:event=search").event == "search"
    assert parse_incident("traffic_spike:depth=3,source=bots").source == "bots"
    assert parse_incident("price_error:at=2025-01-08T18:00:00+01:00").at == datetime(
        2025, 1, 8, 17, tzinfo=UTC
    )
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_incident("traffic_drop:country=DE").canonical == (
        "traffic_drop:country=DE,at=+5m,for=10m,depth=0.5"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("outage:country=DE", "unknown kind 'outage'"),
        ("conversion_drop:colour=red", "unknown key 'colour'"),
        ("conversion_drop:depth=1.5", "depth must be within"),
        ("conversion_drop:depth=lots", "depth= expects a number"),
        ("conversion_drop:for=ten", "expected a duration"),
        ("conversion_drop:at=yesterday", "expected an ISO time"),
        ("conversion_drop:event=purchase", "event= does not apply"),
        ("tracking_loss:event=click", "event= must be one of"),
        ("late_events:delay=soon", "expected a duration"),
        ("conversion_drop:device=fridge", "device='fridge' is unknown"),
        ("conversion_drop:country=germany", "expected an ISO code"),
        ("conversion_drop:country", "expected key=value"),
        ("conversion_drop:depth=0.5,depth=0.6", "depth given twice"),
        ("traffic_spike:source=aliens", "source= must be campaign or bots"),
    ],
)
def test_parse_incident_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_incident(spec)
    assert spec in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: config(("conversion_drop:country=US",)), "country='US' is unknown"),
        (lambda: config(("conversion_drop:category=cars",)), "category='cars' is unknown"),
        (lambda: SimConfig(rate=0), "rate must be > 0"),
        (lambda: SimConfig(start=datetime(2025, 1, 1)), "timezone-aware"),
    ],
)
def test_config_errors(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
