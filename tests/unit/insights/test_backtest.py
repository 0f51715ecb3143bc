"""The backtest machinery on a small run: simulate, score, group, grade (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.simulator import parse_incident
from insights.backtest import (
    BacktestConfig,
    BacktestReport,
    IncidentResult,
    _moves,
    _names,
    _not_target,
    _related,
    format_table,
    run_backtest,
)


def test_a_small_backtest_finds_its_incident_and_grades_it() -> None:
    config = BacktestConfig(
        rate=40, days=1.1, seed=11, start=datetime(2025, 1, 6, 12, tzinfo=UTC),
        warmup=timedelta(days=1), intervals=("1m",), workers=1,
        incidents=("tracking_loss:at=+1d40m,for=30m,depth=1",),
    )  # fmt: skip
    phases: list[str] = []
    report = run_backtest(config, progress=phases.append)
    [result] = report.results
    assert result.detected and result.in_target
    assert result.time_to_detect is not None and result.time_to_detect <= timedelta(minutes=5)
    # purchases gone everywhere: named on the aggregate, as tracking, when found (it was
    # "Conversion on desktop stopped", a checkout problem, the slice that crossed first)
    assert (result.named_slice, result.cause) == ("all", "tracking")
    assert result.insight.startswith("Conversion overall")
    assert report.graded_days < 0.2 and len(phases) == 4
    table = format_table(report)
    assert "| tracking_loss | 1 | 1 | 1 | 1 |" in table
    assert "Target incidents detected within 5 minutes: 1 of 1" in table


def test_an_anomaly_detects_an_incident_on_its_slice_a_slice_holding_it_or_inside_it() -> None:
    de, mobile = (("country", "DE"),), (("device", "mobile"),)
    de_mobile = (("country", "DE"), ("device", "mobile"))
    assert _related((), de) and _related(de, de) and _related(de, de_mobile)
    assert _related(mobile, de_mobile) and _related(de, ())
    assert _related((("country", "FR"),), (("country", "DE|FR"),))
    # another country, or a device slice for a country's incident, is not it
    assert not _related((("country", "FR"),), de)
    assert not _related(mobile, de)


def test_only_the_metrics_an_incident_moves_count_and_in_their_direction() -> None:
    drop = _moves(parse_incident("traffic_drop:country=DE"))
    assert ("sessions", "down") in drop and ("orders", "down") in drop
    # conversion rising after a traffic drop is real but is not the incident
    assert ("conversion_rate", "up") not in drop and ("sessions", "up") not in drop
    assert ("conversion_rate", "down") in _moves(parse_incident("conversion_drop:country=DE"))


def test_the_slice_named_is_right_when_it_is_the_incidents_or_one_of_its_dimensions() -> None:
    de, mobile = (("country", "DE"),), (("device", "mobile"),)
    assert _names(de, "country=DE") and _names(mobile, "country=DE,device=mobile")
    assert _names((("country", "DE"), ("device", "mobile")), "country=DE,device=mobile")
    assert _names((("country", "FR"),), "country=DE|FR") and _names((), "all")
    # the aggregate for a slice's incident, another slice, or a slice for one everywhere
    assert not _names((), "country=DE") and not _names(mobile, "country=DE")
    assert not _names(de, "all")


def _result(
    spec: str, volume: float, ttd: float | None, named: str = "", cause: str = ""
) -> IncidentResult:
    inc = parse_incident(spec)
    why = _not_target(inc, volume)
    return IncidentResult(
        spec=spec, kind=inc.kind, slice=inc.slice_label, depth=inc.depth,
        start=datetime(2025, 1, 13, tzinfo=UTC), sessions_per_minute=volume, in_target=not why,
        detected=ttd is not None,
        time_to_detect=timedelta(minutes=ttd) if ttd is not None else None,
        insight="", not_target=why, detected_by="orders[country=DE]@1m -40%" if ttd else "",
        named_slice=named, cause=cause,
    )  # fmt: skip


def test_the_table_counts_only_target_incidents_and_says_why_the_others_are_not() -> None:
    report = BacktestReport(
        BacktestConfig(),
        (
            _result("conversion_drop:country=DE,depth=0.4", 6000, 3, "country=DE", "checkout"),
            _result("conversion_drop:country=PT,depth=0.4", 40, None),  # too small a slice
            _result("conversion_drop:country=DE,depth=0.2", 6000, None),  # too shallow
            _result("traffic_spike:country=DE", 6000, 2),  # not a target kind
            _result("traffic_drop:country=DE,depth=0.5", 6000, 9, "country=FR", "traffic"),
        ),
        false_insights=(),
        graded_days=5.0,
        series=10,
    )
    table = format_table(report)
    assert "no (< 50 sessions/min)" in table and "no (depth < 30%)" in table
    assert "no (kind)" in table
    assert "| conversion_drop | 3 | 1 | 1 | 1 |" in table
    assert "Target incidents detected within 5 minutes: 1 of 2; detected at all: 2 of 2" in table
    assert "`orders[country=DE]@1m -40%`" in table
    assert (
        "| `country=DE` ✅ | checkout ✅ |" in table and "| `country=FR` ❌ | traffic ✅ |" in table
    )
    # three detected incidents with a cause class (a traffic spike has one too)
    assert (
        "Attribution over 3 detected incidents: right slice 1 (33%), right cause 2 (67%)" in table
    )
