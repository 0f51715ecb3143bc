"""Grouping anomalies into insights, their life, feedback mutes, and what they say."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from insights.attribution import Step
from insights.drilldown import Contribution
from insights.engine import Anomaly, AnomalyEvent
from insights.lifecycle import (
    InsightBook,
    InvalidTransition,
    Mute,
    mutes_from,
    transition,
    with_feedback,
)
from insights.narrative import Evidence, describe, headline, severity
from insights.series import SeriesKey, Slice

T = datetime(2025, 1, 8, 13, 5, tzinfo=UTC)
DE: Slice = (("country", "DE"),)


def anomaly(metric: str, sl: Slice, minutes: int = 0, change: float = -0.5,
            interval: str = "1m") -> Anomaly:  # fmt: skip
    onset = T + timedelta(minutes=minutes)
    return Anomaly(SeriesKey(metric, sl, interval), onset, onset + timedelta(minutes=3), 0.6,
                   10.0 * (1 + change), 10.0, change)  # fmt: skip


def opened(a: Anomaly) -> AnomalyEvent:
    return AnomalyEvent("opened", a, a.detected)


def recovered(a: Anomaly, minutes: int) -> AnomalyEvent:
    return AnomalyEvent("recovered", a, a.detected + timedelta(minutes=minutes))


def test_one_cause_becomes_one_insight() -> None:
    book = InsightBook()
    parts = [anomaly("orders", DE), anomaly("revenue", DE, 1), anomaly("orders", (), 2),
             anomaly("conversion_rate", (("country", "DE"), ("device", "mobile")), 4),
             anomaly("orders", DE, 90, interval="1h")]  # fmt: skip
    changed = book.apply([opened(a) for a in parts])
    assert len(changed) == 1 and len(book.active()) == 1
    assert len(book.active()[0].members) == 5


def test_unrelated_anomalies_stay_apart() -> None:
    book = InsightBook()
    first = anomaly("orders", DE)
    book.apply([opened(first)])
    book.apply([opened(anomaly("orders", (("country", "FR"),), 1))])  # another country
    book.apply([opened(anomaly("sessions", (("channel", "paid"),), 2))])  # traffic elsewhere
    book.apply([recovered(first, 10)])  # DE is over...
    book.apply([opened(anomaly("revenue", DE, 60))])  # ... a new DE problem an hour later
    assert len(book.active()) == 3 and len(book.apply([])) == 0
    assert sorted(i.slice for i in book.active()) == ["channel=paid", "country=DE", "country=FR"]


def test_an_incident_an_hour_into_an_open_insight_is_an_insight_of_its_own() -> None:
    # the traffic drop everywhere is still open (its orders just recovered) when NL loses
    # its add-to-carts an hour later: on-call wants two insights, not one
    book = InsightBook()
    drop = [anomaly("sessions", ()), anomaly("pageviews", (), 1), anomaly("orders", (), 3)]
    book.apply([opened(a) for a in drop])
    book.apply([recovered(drop[2], 50)])  # the orders come back late: the insight is alive
    nl = (("country", "NL"),)
    book.apply([opened(anomaly("add_to_cart_rate", nl, 60))])
    first, second = book.active()
    assert len(first.members) == 3 and first.slice == "all"
    assert second.slice == "country=NL" and len(second.members) == 1
    # a series of the first insight starting a second time an hour in is not the first
    # incident either
    book.apply([recovered(drop[1], 20)])
    book.apply([opened(anomaly("pageviews", nl, 61))])
    assert [len(i.members) for i in book.active()] == [3, 2]


def test_a_series_of_the_insight_coming_back_joins_it_near_its_recovery() -> None:
    book = InsightBook()
    flapping = anomaly("sessions", (), change=-0.4)
    book.apply([opened(flapping), opened(anomaly("orders", (), 1))])
    book.apply([recovered(flapping, 40)])  # back to normal for a while, then down again
    [again] = book.apply([opened(anomaly("sessions", (), 50, change=-0.3))])
    assert len(book.active()) == 1 and len(again.members) == 3
    book.apply([opened(anomaly("aov", (), 51))])  # not one of its series: new
    assert len(book.active()) == 2


def test_a_later_anomaly_joins_when_a_change_still_under_way_carries_into_it() -> None:
    book = InsightBook()
    everywhere = anomaly("conversion_rate", (), change=0.3)
    book.apply([opened(everywhere), opened(anomaly("orders", (), 1, change=0.3))])
    gb = (("country", "GB"),)
    book.apply([opened(anomaly("conversion_rate", gb, 30, change=0.4))])  # still up: joins
    book.apply([opened(anomaly("conversion_rate", DE, 31, change=-0.4))])  # down: its own
    book.apply([opened(anomaly("add_to_cart_rate", gb, 32, change=0.4))])  # not carried
    assert [len(i.members) for i in book.active()] == [3, 1, 1]
    book.apply([recovered(everywhere, 30)])  # over: a later rise in FR is not carried
    book.apply([opened(anomaly("conversion_rate", (("country", "FR"),), 40, change=0.4))])
    assert [len(i.members) for i in book.active()] == [3, 1, 1, 1]


def test_a_slice_inside_a_member_joins_only_what_the_members_change_explains() -> None:
    book = InsightBook()
    book.apply([opened(anomaly("sessions", ()))])  # traffic falls everywhere...
    book.apply([opened(anomaly("orders", DE, 2))])  # ...so do DE's orders: the same incident
    book.apply([opened(anomaly("conversion_rate", (("country", "FR"),), 3))])  # its own
    book.apply([opened(anomaly("sessions", (("device", "mobile"),), 4, change=0.6))])  # up
    assert [len(i.members) for i in book.active()] == [2, 1, 1]
    # a conversion drop everywhere carries into every slice's conversion and orders
    book = InsightBook()
    parts = [anomaly("conversion_rate", ()), anomaly("conversion_rate", DE, 2),
             anomaly("orders", (("channel", "direct"),), 3), anomaly("orders", (), 4)]  # fmt: skip
    assert len(book.apply([opened(a) for a in parts])) == 1


def test_an_insight_resolves_itself_when_every_member_recovered() -> None:
    book = InsightBook()
    a, b = anomaly("orders", DE), anomaly("revenue", DE, 1)
    assert len(book.apply([opened(a), opened(b)])) == 1
    [still] = book.apply([recovered(a, 20)])
    assert still.status == "open"
    [done] = book.apply([recovered(b, 22)])
    assert done.status == "resolved" and done.resolved_by == "auto"
    assert done.resolved_at == b.detected + timedelta(minutes=22)
    assert book.active() == []


def test_an_anomaly_as_a_resolved_insight_settles_reopens_it_and_does_not_speak_for_it() -> None:
    paid: Slice = (("channel", "paid"),)
    book = InsightBook()
    drop = anomaly("sessions", paid, change=-0.3)
    [first] = book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])  # traffic is back at T+43...
    assert done.status == "resolved"
    # ... the sessions coming back have not shopped yet: conversion dips in paid
    [again] = book.apply([opened(anomaly("conversion_rate", paid, 45, change=-0.2))])
    assert again.id == first.id and again.status == "open" and again.resolved_at is None
    assert [m.settling for m in again.members] == [False, True]
    assert headline(again).metric == "sessions"  # still a traffic drop
    assert book.active() == [again]


def test_an_open_insight_takes_the_dip_as_its_traffic_comes_back() -> None:
    book = InsightBook()
    drop = anomaly("sessions", (), change=-0.3)
    book.apply([opened(drop), opened(anomaly("orders", (), 2, change=-0.3))])
    book.apply([recovered(drop, 40)])  # the sessions are back at T+43, orders still low
    es = (("country", "ES"),)
    [one] = book.apply([opened(anomaly("conversion_rate", es, 44, change=-0.4))])
    assert len(book.active()) == 1 and one.members[-1].settling
    # a rate moving the same way in a slice after the aggregate's rate recovered is not
    # its change settling (a rebound would be)
    book = InsightBook()
    up = anomaly("conversion_rate", (), change=0.3)
    book.apply([opened(up), opened(anomaly("orders", (), 1, change=0.3))])
    book.apply([recovered(up, 30)])
    book.apply([opened(anomaly("conversion_rate", (("country", "FR"),), 40, change=0.4))])
    book.apply([opened(anomaly("conversion_rate", (("country", "FI"),), 41, change=-0.4))])
    assert [len(i.members) for i in book.active()] == [3, 1]


def test_a_restart_keeps_what_settles_but_not_what_was_labelled_false() -> None:
    paid: Slice = (("channel", "paid"),)
    book = InsightBook()
    drop = anomaly("sessions", paid, change=-0.3)
    book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])
    dip = anomaly("conversion_rate", paid, 45, change=-0.2)
    [again] = InsightBook([done]).apply([opened(dip)])  # a new book: the detector restarted
    assert again.id == done.id and again.status == "open"
    # its own change found again after the restart is not a settling (the mutes decide)
    [same] = InsightBook([done]).apply([opened(drop)])
    assert same.members[-1].settling is False
    labelled = with_feedback(done, "false_positive", "", T)
    [other] = InsightBook([labelled]).apply([opened(dip)])
    assert other.id != done.id


def test_what_a_settling_insight_does_not_take() -> None:
    paid: Slice = (("channel", "paid"),)
    book = InsightBook()
    drop = anomaly("sessions", paid, change=-0.3)
    book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])  # resolved at T+43
    # a metric the traffic does not touch, a slice off its path
    book.apply([opened(anomaly("aov", paid, 45))])
    book.apply([opened(anomaly("conversion_rate", (("channel", "email"),), 46))])
    assert len(book.active()) == 2 and done.id not in {i.id for i in book.active()}
    # the whole shop: a slice settling does not move it (the next incident everywhere)
    book = InsightBook()
    book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])
    [whole] = book.apply([opened(anomaly("conversion_rate", (), 45, change=-0.3))])
    assert whole.id != done.id
    # after the window (15 minutes for 1-minute series)
    book = InsightBook()
    book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])
    [later] = book.apply([opened(anomaly("conversion_rate", paid, 59, change=-0.2))])
    assert later.id != done.id
    # the window runs from the first resolution: reopened and resolved again, it does
    # not start over (a chain of settling anomalies would swallow the next incident)
    book = InsightBook()
    book.apply([opened(drop)])
    [done] = book.apply([recovered(drop, 40)])  # resolved at T+43
    dip = anomaly("conversion_rate", paid, 45, change=-0.2)
    [again] = book.apply([opened(dip)])
    assert again.id == done.id
    book.apply([recovered(dip, 5)])  # resolved again at T+53
    [next_one] = book.apply([opened(anomaly("orders", paid, 60, change=-0.9))])
    assert next_one.id != done.id
    # one a person resolved stays resolved
    book = InsightBook()
    drop = anomaly("sessions", DE, change=-0.3)
    [insight] = book.apply([opened(drop)])
    book.put(transition(insight, "resolve", T + timedelta(minutes=10)))
    [other] = book.apply([opened(anomaly("conversion_rate", DE, 12, change=-0.2))])
    assert other.id != insight.id


def test_a_rebound_and_the_hourly_view_of_a_resolved_incident_reopen_it() -> None:
    book = InsightBook()
    drop = anomaly("conversion_rate", (), change=-0.3)
    [first] = book.apply([opened(drop)])
    book.apply([recovered(drop, 42)])  # resolved at T+45
    # the purchases held back come in: orders rise in PL (inside the aggregate)
    [again] = book.apply([opened(anomaly("orders", (("country", "PL"),), 55, change=0.8))])
    assert again.id == first.id
    # acknowledged before it resolved: stays acknowledged when it reopens
    book = InsightBook()
    aov = anomaly("aov", (("channel", "organic"),), change=-0.8)
    [first] = book.apply([opened(aov)])
    book.put(transition(first, "ack", T + timedelta(minutes=5)))
    [done] = book.apply([recovered(aov, 42)])
    assert done.status == "resolved"
    hourly = anomaly("aov", (("channel", "organic"),), -5, change=-0.2, interval="1h")
    hourly = replace(hourly, detected=T + timedelta(minutes=55))
    [again] = book.apply([opened(hourly)])
    assert again.id == first.id and again.status == "acknowledged"


def test_people_acknowledge_resolve_and_label() -> None:
    [insight] = InsightBook().apply([opened(anomaly("orders", DE))])
    acked = transition(insight, "ack", T)
    assert acked.status == "acknowledged" and acked.acknowledged_at == T
    assert transition(acked, "ack", T) is acked
    done = transition(acked, "resolve", T)
    assert (done.status, done.resolved_by) == ("resolved", "user")
    with pytest.raises(InvalidTransition):
        transition(done, "ack", T)
    with pytest.raises(InvalidTransition):
        transition(insight, "close", T)
    labelled = with_feedback(done, "false_positive", "a test", T)
    assert labelled.feedback == "false_positive" and labelled.status == "resolved"
    with pytest.raises(InvalidTransition):
        with_feedback(done, "maybe", "", T)


def test_a_false_positive_label_mutes_its_like_for_a_week() -> None:
    [insight] = InsightBook().apply([opened(anomaly("orders", DE, change=-0.3))])
    mutes = mutes_from([with_feedback(insight, "false_positive", "", T)])
    assert mutes == [Mute("orders", "country=DE", "1m", 0.3, T + timedelta(days=7))]
    assert mutes_from([with_feedback(insight, "true_positive", "", T)]) == []
    book = InsightBook(mutes=mutes)
    assert book.apply([opened(anomaly("orders", DE, 600, change=-0.4))]) == []
    assert book.muted == 1
    assert len(book.apply([opened(anomaly("orders", DE, 700, change=-0.9))])) == 1  # bigger
    late = anomaly("orders", DE, 8 * 24 * 60, change=-0.4)
    assert len(InsightBook(mutes=mutes).apply([opened(late)])) == 1  # the week is over


def evidence(**kw: object) -> Evidence:
    base = dict(
        metric="conversion_rate", slice=(("country", "DE"), ("device", "mobile")),
        interval="1m", onset=T, until=T + timedelta(minutes=10), observed=0.022,
        expected=0.04, change=-0.45,
        companions={"add_to_cart_rate": 0.02, "sessions": -0.01, "orders": -0.44},
        contributors=(Contribution("country", "DE", 0.9, "rate", -0.4),),
        explanation="rate", impact_eur_per_hour=-2400.0, revenue_per_hour=30000.0,
        traffic_share=0.1,
    )  # fmt: skip
    base.update(kw)
    return Evidence(**base)  # type: ignore[arg-type]


def test_the_recommendation_names_slice_time_and_what_to_check() -> None:
    [insight] = InsightBook().apply([opened(anomaly("conversion_rate", DE))])
    said = describe(insight, evidence(), "Europe/Berlin")
    assert said.recommendation == (
        "Conversion in DE on mobile fell 45% since 14:05 while add-to-cart is normal: "
        "check payment and checkout for DE mobile."
    )
    assert said.slice == "country=DE,device=mobile" and said.severity == "critical"
    assert said.summary.startswith("Conversion in DE on mobile fell 45% since 14:05")
    assert "2.20% observed vs 4.00% expected" in said.description
    assert "country=DE (90% of the change, rate)" in said.description
    assert "A rate change inside country=DE, not a mix shift" in said.description
    assert "(sessions with a purchase / sessions, per minute)" in said.description
    steps = (Step("add to cart → checkout", 0.2, 0.5), Step("checkout → purchase", 0.6, 0.6))
    paid = describe(
        insight, evidence(cause="checkout", steps=steps, broken="add to cart → checkout"), "UTC"
    )
    assert paid.cause == "checkout"
    assert paid.explanation.startswith("Cause: payment or checkout.")
    assert "the add to cart → checkout step fell 60%" in paid.explanation
    assert "check the payment provider and the checkout for DE mobile" in paid.recommendation
    carts = describe(insight, evidence(companions={"add_to_cart_rate": -0.3}), "UTC")
    assert "add-to-cart fell too" in carts.recommendation
    price = describe(insight, evidence(metric="aov", change=2.5, slice=DE,
                                       companions={"orders": 0.01}), "UTC")  # fmt: skip
    assert price.recommendation.startswith("Average order value in DE rose to 3.5×")
    assert "check product prices" in price.recommendation
    tag = describe(
        insight,
        evidence(
            cause="tracking",
            metric="sessions",
            change=-0.3,
            companions={"sessions": -0.3, "conversion_rate": 0.4},
        ),
        "UTC",
    )
    assert "page tracking tag" in tag.recommendation and "Cause: tracking." in tag.explanation
    bots = describe(insight, evidence(metric="sessions", change=0.8, slice=(("channel", "social"),),
                                      companions={"add_to_cart_rate": -0.4}), "UTC")  # fmt: skip
    assert "bot traffic" in bots.recommendation


def test_severity_comes_from_the_revenue_at_stake() -> None:
    assert severity(evidence(impact_eur_per_hour=-2000.0)) == "critical"  # 6.7% of revenue
    assert severity(evidence(impact_eur_per_hour=-600.0)) == "warning"  # 2%
    assert severity(evidence(impact_eur_per_hour=-60.0, change=-0.2)) == "info"
    assert severity(evidence(impact_eur_per_hour=0.0, change=-0.6)) == "warning"  # a halving
    tiny = evidence(impact_eur_per_hour=0.0, change=-0.6, traffic_share=0.01)
    assert severity(tiny) == "info"
    assert replace(evidence(), impact_eur_per_hour=1.0).impact_eur_per_hour == 1.0
