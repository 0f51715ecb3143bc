"""The API's limits alone: token buckets, query bounds, body depth, origins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.ratelimit import RateLimit, RateLimiter
from api.settings import normalise_origin
from ingest.collector import MAX_DEPTH, BodyError, split_body
from warehouse.queries import MetricQuery, QueryError, check_budget, check_range

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter({"read": RateLimit(per_second=2, burst=3)}, clock=lambda: now[0])
    assert [limiter.take("k", "read") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", "read")
    assert wait == pytest.approx(0.5)
    assert RateLimiter.retry_after(wait) == "1"
    assert limiter.take("other", "read") == 0.0  # per key
    now[0] += 0.5
    assert limiter.take("k", "read") == 0.0
    assert limiter.take("k", "read") > 0
    now[0] += 100  # refills up to the burst, no further
    assert [limiter.take("k", "read") for _ in range(4)][-1] > 0
    assert limiter.take("k", "unknown-scope") == 0.0


def test_ranges_are_bounded() -> None:
    check_range(T0, T0 + timedelta(days=30))
    for start, end, fragment in [
        (T0, T0, "to: must be after from"),
        (T0 + timedelta(days=1), T0, "to: must be after from"),
        (datetime(1999, 12, 31, tzinfo=UTC), T0, "from: 1999-12-31"),
        (T0, datetime(2100, 1, 2, tzinfo=UTC), "to: 2100-01-02"),
        (datetime(2001, 1, 1, tzinfo=UTC), datetime(2090, 1, 1, tzinfo=UTC), "days, over the"),
        (T0.replace(tzinfo=None), T0, "from: needs a timezone"),
    ]:
        with pytest.raises(QueryError, match=fragment):
            check_range(start, end)


def test_the_point_budget_names_buckets_slices_and_the_way_out() -> None:
    check_budget(200_000)
    check_budget(43_200, 4)
    with pytest.raises(QueryError) as caught:
        check_budget(525_600, 25)
    message = str(caught.value)
    assert "525,600 buckets × 25 slices over the 200,000 budget" in message
    assert "coarser interval or a shorter range" in message
    q = MetricQuery("events", T0, T0 + timedelta(days=365), "1m")
    assert q.buckets == 525_600


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"metric": "nope"}, "metric: unknown metric 'nope'"),
        ({"metric": "x" * 500}, "…"),
        ({"interval": "7m"}, "interval: expected one of"),
        ({"tz": "Mars/Base"}, "tz: unknown timezone"),
        ({"by": "colour"}, "by: unknown dimension"),
        ({"where": {"colour": "red"}}, "where: unknown dimension"),
        ({"where": {"country": ""}}, "where: country= needs a value"),
    ],
)
def test_metric_query_names_the_bad_parameter(kwargs: dict, fragment: str) -> None:
    args = {"metric": "events", "start": T0, "end": T0 + timedelta(hours=1), **kwargs}
    with pytest.raises(QueryError, match=fragment) as caught:
        MetricQuery(**args)
    assert len(str(caught.value)) < 400


def test_split_body_bounds_nesting_without_recursing() -> None:
    ok = b'[{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}]"
    assert len(split_body(ok)) == 1
    for body in (
        b"[" * 200_000 + b"]" * 200_000,
        b'[{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}]",
        b'{"a": ' + b'{"b":' * 70 + b"1" + b"}" * 70 + b"}\n{}",
    ):
        with pytest.raises(BodyError, match=f"deeper than {MAX_DEPTH} levels"):
            split_body(body)
    # a deep line that is not JSON at all is one rejected event, as any bad line
    assert len(split_body(b'{"a": ' + b"{" * 70 + b"}" * 70 + b"}\n{}")) == 2
    # brackets inside strings are not nesting
    assert len(split_body(b'[{"q": "' + b"[" * 500 + b'"}]')) == 1


def test_origins_are_normalised_as_browsers_send_them() -> None:
    assert normalise_origin("https://Shop.Example.com:443/") == "https://shop.example.com"
    assert normalise_origin("http://localhost:3000") == "http://localhost:3000"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("shop.example.com", "ftp://x.example", "https://x.example/path",
                "https://u:p@x.example", "https://x.example:99999"):  # fmt: skip
        with pytest.raises(ValueError):
            normalise_origin(bad)
