"""The Experiments dashboard (CONTRACT §10): every Grafana panel's SQL runs against a real
warehouse and agrees with the API (users exactly; lifts and intervals within the normal
approximation), the dashboard validates against the Grafana SDK, and the built-in page
spec carries its panels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboards.catalog import EXPERIMENTS
from dashboards.grafana import render
from dashboards.macros import expand
from dashboards.pages import page_spec
from dashboards.validate import validate
from insights.experiment_results import report_for
from tests.integration.test_experiment_insights import _buy, _expose

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, tzinfo=UTC)
START, END = T0, T0 + timedelta(days=6)


def _run(client, raw: str) -> list[dict[str, Any]]:
    sql = expand(raw, START, END, {"experiment": "'checkout'", "tz": "UTC", "bucket": "1 HOUR"})
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_every_experiments_panel_runs_and_agrees_with_the_api(warehouse) -> None:
    for day in range(5):
        at = T0 + timedelta(days=day, hours=3)
        users = range(day * 1000, (day + 1) * 1000)
        _expose(warehouse, "checkout", "control", users, at)
        _expose(warehouse, "checkout", "B", range(day * 900, (day + 1) * 900), at)
        _buy(warehouse, "checkout", "control", range(day * 1000, day * 1000 + 100),
             at + timedelta(hours=2))  # fmt: skip
        _buy(warehouse, "checkout", "B", range(day * 900, day * 900 + 70), at + timedelta(hours=2))
    both = [
        ["checkout", f"checkout-control-{u}", T0 + timedelta(hours=1), f"y{u}", "B", 1]
        for u in range(5)
    ]  # exposed to B too: left out
    warehouse.insert("exposures", both, column_names=["experiment", "user_id", "ts", "event_id",
                                                        "variant", "version"])  # fmt: skip
    report = report_for(warehouse, "checkout", START, END)
    data = render(EXPERIMENTS)
    assert validate(data) == []
    sqls = [panel["targets"][0]["rawSql"] for panel in data["panels"]]
    by_view = {p.data.view + getattr(p.data, "metric", ""): sql
               for p, sql in zip(EXPERIMENTS.panels, sqls, strict=True)}  # fmt: skip
    users = {r["variant"]: r["users"] for r in _run(warehouse, by_view["usersconversion"])}
    assert report.multiple_exposures == 5
    assert users == {**report.users, "(several variants)": 5}
    [srm] = _run(warehouse, by_view["srmconversion"])
    assert srm["df"] == 1 and bool(srm["flagged"]) == report.srm.flagged is True
    lift = {(r["metric"], r["variant"]): r for r in _run(warehouse, by_view["liftconversion"])}
    assert set(lift) == {(m, "B") for m in ("conversion", "add_to_cart_rate", "orders_per_user",
                                            "revenue_per_user")}  # fmt: skip
    for r in report.results:
        if (r.metric, r.variant) in lift:
            row = lift[(r.metric, r.variant)]
            assert row["lift"] == pytest.approx(r.lift, abs=1e-9)
            if r.error:  # the API's neutral result: its interval is [0, 0]
                continue
            assert row["ci_low"] == pytest.approx(r.ci[0], abs=2e-3)
            assert row["ci_high"] == pytest.approx(r.ci[1], abs=2e-3)
    cumulative = _run(warehouse, by_view["cumulativeconversion"])
    assert [r["variant"] for r in cumulative] == ["B"] * 6
    assert cumulative[-1]["lift"] == pytest.approx(lift[("conversion", "B")]["lift"], abs=1e-9)
    first_day = report_for(warehouse, "checkout", START, T0 + timedelta(days=1))
    conv = next(r for r in first_day.results if r.metric == "conversion")
    assert cumulative[0]["lift"] == pytest.approx(conv.lift, abs=1e-9)


def test_the_page_spec_has_the_experiments_board() -> None:
    [board] = [b for b in page_spec()["dashboards"] if b["uid"] == "pulse-experiments"]
    assert {p["data"]["view"] for p in board["panels"]} == {"users", "srm", "lift", "cumulative"}
    assert all(p["data"]["kind"] == "experiment" for p in board["panels"])
