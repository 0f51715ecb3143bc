"""Experiments through the whole path (CONTRACT §10, METRICS.md "Experiments"):
events -> collector -> broker -> flow -> ``exposures`` -> one query -> statistics.

The data is adversarial: three variants, a variant with one user, zero conversions in a
variant, tied revenues, users exposed twice (to one variant and to two), exposures at the
range's edges and before it, a repeated purchase, purchases before exposure and after
the range, pre-period activity for CUPED. An independent reference computes each user's
values from the raw events in Python; the warehouse's sums must equal the reference's,
and the report equal the statistics layer (itself equal to gbstats 0.8) on the
reference's per-user values.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from insights.experiments import analyze, variant_sums
from insights.experiments.report import experiment_report
from tests.pipeline import drained_database
from warehouse.experiments import experiment_sums, list_experiments
from warehouse.queries import QueryError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
FROM, TO = T0 + timedelta(days=1), T0 + timedelta(days=8)
_n = 0


def _id() -> str:
    global _n
    _n += 1
    return f"e{_n}"


def _ts(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def exposure(user: str, variant: str, at: datetime, experiment: str = "checkout") -> dict:
    return {"event_id": _id(), "type": "experiment_exposure", "ts": _ts(at), "user_id": user,
            "experiment": experiment, "variant": variant}  # fmt: skip


def purchase(user: str, at: datetime, revenue: float, order: str | None = None,
             event_id: str | None = None) -> dict:  # fmt: skip
    return {"event_id": event_id or _id(), "type": "purchase", "ts": _ts(at), "user_id": user,
            "order_id": order or _id(), "revenue": revenue, "currency": "EUR",
            "items": [{"product_id": "p1", "price": revenue, "quantity": 1}]}  # fmt: skip


def cart(user: str, at: datetime) -> dict:
    return {"event_id": _id(), "type": "add_to_cart", "ts": _ts(at), "user_id": user,
            "product_id": "p1", "price": 5.0, "currency": "EUR"}  # fmt: skip


def view(user: str, at: datetime) -> dict:
    return {"event_id": _id(), "type": "page_view", "ts": _ts(at), "user_id": user}


def adversarial_events() -> list[dict]:
    h = timedelta(hours=1)
    ev: list[dict] = []
    # control: 12 users, some convert (tied 19.99 revenue), some with pre-period activity
    for i in range(12):
        u = f"c{i}"
        at = FROM + (i + 1) * 5 * h
        ev.append(exposure(u, "control", at))
        ev.append(exposure(u, "control", at + h))  # exposed twice to the same variant
        ev.append(view(u, at))
        if i % 3 == 0:
            ev.append(purchase(u, at + 2 * h, 19.99))
        if i % 4 == 0:
            ev.append(cart(u, at + h))
        if i % 2 == 0:
            ev.append(purchase(u, at - 3 * 24 * h, 10.0 + i))  # pre-period
            ev.append(cart(u, at - 2 * 24 * h))
    # a: 10 users, more conversions, one repeated purchase event, one second order
    for i in range(10):
        u = f"a{i}"
        at = FROM + (i + 1) * 6 * h
        ev.append(exposure(u, "a", at))
        if i % 2 == 0:
            p = purchase(u, at + h, 25.0 + i)
            ev += [p, dict(p)]  # the same event twice: counted once
            ev.append(cart(u, at + h / 2))
        if i == 4:
            ev.append(purchase(u, at + 2 * h, 19.99))  # a second order
        if i % 3 == 0:
            ev.append(purchase(u, at - 24 * h, 7.5))  # pre-period
    # b: one user, no conversion
    ev.append(exposure("b0", "b", FROM + 30 * h))
    ev.append(cart("b0", FROM + 31 * h))
    # edges: exposure exactly at `from` (in), exactly at `to` (out), before `from` (out)
    ev.append(exposure("edge_in", "control", FROM))
    ev.append(purchase("edge_in", FROM, 42.0))  # at the exposure's own time: counted
    ev.append(exposure("edge_out", "a", TO))
    ev.append(purchase("edge_out", TO + h, 50.0))
    ev.append(exposure("early", "a", FROM - h))  # before the range: its later one counts
    ev.append(exposure("early", "control", FROM + 2 * h))
    ev.append(purchase("early", FROM + h, 11.0))  # before its exposure in range: not post
    ev.append(purchase("early", FROM + 3 * h, 12.0))
    # saw two variants in the range: left out, counted
    ev.append(exposure("both", "control", FROM + 4 * h))
    ev.append(exposure("both", "a", FROM + 5 * h))
    ev.append(purchase("both", FROM + 6 * h, 99.0))
    # purchase after the range: not counted
    ev.append(purchase("c0", TO + h, 500.0))
    # another experiment, and exposures before the range only
    ev.append(exposure("c1", "x", FROM + h, experiment="banner"))
    ev.append(exposure("c2", "y", FROM + h, experiment="banner"))
    return ev


def reference(events: list[dict]) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Per-user values per variant (METRICS.md, in Python), and the multiple exposures."""
    seen: set[str] = set()
    unique = []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            unique.append(e)

    def at(e: dict) -> datetime:
        return datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))

    exposures: dict[str, list[tuple[datetime, str]]] = {}
    for e in unique:
        is_exposure = e["type"] == "experiment_exposure" and e["experiment"] == "checkout"
        if is_exposure and FROM <= at(e) < TO:
            exposures.setdefault(e["user_id"], []).append((at(e), e["variant"]))
    values: dict[str, dict[str, list[float]]] = {}
    multiple = 0
    for user, exps in exposures.items():
        if len({v for _, v in exps}) > 1:
            multiple += 1
            continue
        first, variant = min(exps)
        mine = [e for e in unique if e["user_id"] == user]
        post = [e for e in mine if first <= at(e) < TO]
        pre = [e for e in mine if first - timedelta(days=14) <= at(e) < first]
        row = values.setdefault(
            variant,
            {
                k: []
                for k in (
                    "conv",
                    "atc",
                    "orders",
                    "revenue",
                    "conv_p",
                    "atc_p",
                    "orders_p",
                    "revenue_p",
                )
            },
        )
        for suffix, part in (("", post), ("_p", pre)):
            buys = [e for e in part if e["type"] == "purchase"]
            row["conv" + suffix].append(float(bool(buys)))
            row["atc" + suffix].append(float(any(e["type"] == "add_to_cart" for e in part)))
            row["orders" + suffix].append(float(len({e["order_id"] for e in buys})))
            row["revenue" + suffix].append(math.fsum(e["revenue"] for e in buys))
    return values, multiple


def reference_sums(values: dict[str, list[float]]) -> dict:
    def cov(x: str) -> object:
        return variant_sums(values[x], covariates=values[x + "_p"])

    return {
        "conversion": cov("conv"),
        "add_to_cart_rate": cov("atc"),
        "orders_per_user": cov("orders"),
        "revenue_per_user": cov("revenue"),
        "aov": variant_sums(values["revenue"], denominators=values["orders"]),
    }


@pytest.fixture(scope="module")
def drained(broker, warehouse_dsn, tmp_path_factory):
    events = adversarial_events()
    raws = [json.dumps(e).encode() for e in events]
    with drained_database(broker.bootstrap, warehouse_dsn, raws, tmp_path_factory,
                          "exp") as (client, result):  # fmt: skip
        assert result.rejected == 0
        yield client, events


def test_every_exposure_is_in_the_warehouse_once(drained) -> None:
    client, events = drained
    stored = client.query(
        "SELECT experiment, user_id, variant, count() FROM exposures FINAL "
        "GROUP BY experiment, user_id, variant"
    ).result_rows
    expected: dict[tuple[str, str, str], int] = {}
    for e in events:
        if e["type"] == "experiment_exposure":
            key = (e["experiment"], e["user_id"], e["variant"])
            expected[key] = expected.get(key, 0) + 1
    assert {(e, u, v): n for e, u, v, n in stored} == expected


def test_list_experiments(drained) -> None:
    client, _ = drained
    found = {s.experiment: s for s in list_experiments(client)}
    assert set(found) == {"checkout", "banner"}
    assert found["checkout"].variants == ["a", "b", "control"]
    assert found["banner"].users == 2


def test_warehouse_sums_equal_the_reference(drained) -> None:
    client, events = drained
    values, multiple = reference(events)
    got = experiment_sums(client, "checkout", FROM, TO)
    assert got.multiple_exposures == multiple == 1
    assert got.users == {v: len(x["conv"]) for v, x in values.items()}
    assert got.users == {"a": 10, "b": 1, "control": 14}  # edge_in, early in control
    for variant, x in values.items():
        ref = reference_sums(x)
        s = got.sums[variant]
        assert s["conv"] == ref["conversion"].main.sum
        assert s["conv_pre"] == ref["conversion"].covariate.sum
        assert s["conv_x_pre"] == ref["conversion"].main_covariate_sum_product
        assert s["atc"] == ref["add_to_cart_rate"].main.sum
        assert s["orders"] == ref["orders_per_user"].main.sum
        assert s["orders_sq"] == ref["orders_per_user"].main.sum_squares
        assert s["orders_x_pre"] == ref["orders_per_user"].main_covariate_sum_product
        assert s["revenue"] == pytest.approx(ref["revenue_per_user"].main.sum, abs=1e-9)
        assert s["revenue_sq"] == pytest.approx(ref["revenue_per_user"].main.sum_squares, rel=1e-12)
        assert s["revenue_pre"] == pytest.approx(ref["revenue_per_user"].covariate.sum, abs=1e-9)
        assert s["revenue_x_pre"] == pytest.approx(
            ref["revenue_per_user"].main_covariate_sum_product, abs=1e-9
        )
        assert s["revenue_x_orders"] == pytest.approx(
            ref["aov"].main_denominator_sum_product, abs=1e-9
        )


@pytest.mark.parametrize("cuped", [False, True])
@pytest.mark.parametrize("sequential", [False, True])
def test_report_equals_the_statistics_on_per_user_values(drained, cuped, sequential) -> None:
    client, events = drained
    values, _ = reference(events)
    got = experiment_sums(client, "checkout", FROM, TO)
    report = experiment_report("checkout", FROM, TO, got.users, got.sums,
                               multiple_exposures=got.multiple_exposures,
                               cuped=cuped, sequential=sequential)  # fmt: skip
    by_metric: dict[str, dict] = {}
    for variant in sorted(values):
        for metric, sums in reference_sums(values[variant]).items():
            by_metric.setdefault(metric, {})[variant] = sums
    expected = analyze(by_metric, "control", cuped=cuped, sequential=sequential)
    assert len(report.results) == 5 * 2
    for ours, ref in zip(report.results, expected, strict=True):
        assert (ours.metric, ours.variant) == (ref.metric, ref.variant)
        for name in ("mean", "control_mean", "lift", "p_value", "chance_to_win"):
            assert getattr(ours, name) == pytest.approx(getattr(ref, name), rel=1e-9, abs=1e-9)
        assert ours.ci == pytest.approx(ref.ci, rel=1e-9, abs=1e-9)
    doc = report.document()
    assert doc["control"] == "control" and doc["multiple_exposures"] == 1
    assert [v["variant"] for v in doc["variants"]] == ["a", "b", "control"]
    b = next(r for r in doc["results"] if r["variant"] == "b" and r["metric"] == "conversion")
    assert b["mean"] == 0 and b["p_value"] == 1 and b["ci"] == [0, 0]  # one user: neutral


def test_an_empty_range_and_a_bad_range(drained) -> None:
    client, _ = drained
    got = experiment_sums(client, "checkout", T0 - timedelta(days=30), T0)
    assert got.users == {} and got.multiple_exposures == 0
    with pytest.raises(QueryError, match="to"):
        experiment_sums(client, "checkout", TO, FROM)


def _exposures(client, user: str) -> int:
    return client.query("SELECT count() FROM exposures WHERE user_id = {u:String}",
                        parameters={"u": user}).result_rows[0][0]  # fmt: skip


def test_erasure_and_retention_cover_the_exposures(warehouse) -> None:
    from warehouse.erasure import erase_rows
    from warehouse.retention import purge

    old, new = T0, T0 + timedelta(days=10)
    rows = [
        ["checkout", u, at, f"{u}{i}", "a", 1]
        for i, (u, at) in enumerate([("u1", old), ("u1", new), ("u2", old), ("u2", new)])
    ]
    warehouse.insert(
        "exposures",
        rows,
        column_names=["experiment", "user_id", "ts", "event_id", "variant", "version"],
    )
    events = [[at, eid, "experiment_exposure", u] for _, u, at, eid, _, _ in rows]
    warehouse.insert("events", events, column_names=["ts", "event_id", "type", "user_id"])
    counts = erase_rows(warehouse, "u1")
    assert counts["exposures"] == 2
    assert (_exposures(warehouse, "u1"), _exposures(warehouse, "u2")) == (0, 2)
    purged = purge(warehouse, timedelta(days=2), new + timedelta(days=1))
    assert purged.rows["exposures"] == 1
    assert _exposures(warehouse, "u2") == 1
