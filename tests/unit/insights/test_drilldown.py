"""Rate-versus-mix decomposition and the choice of explaining slices (pure)."""

from __future__ import annotations

import math

from insights.drilldown import SliceStats, decompose, explain


def test_a_rate_change_inside_one_slice() -> None:
    stats = [
        SliceStats("DE", base_num=50, base_den=1000, cur_num=20, cur_den=1000),
        SliceStats("FR", base_num=40, base_den=1000, cur_num=40, cur_den=1000),
        SliceStats("IT", base_num=30, base_den=1000, cur_num=30, cur_den=1000),
    ]
    d = decompose("country", stats, ratio=True)
    # exact: the parts add up to the aggregate change
    assert math.isclose(d.total, 90 / 3000 - 120 / 3000)
    assert math.isclose(d.rate + d.other, d.total)
    assert d.effect == "rate"
    top = d.contributions[0]
    assert (top.value, top.effect) == ("DE", "rate")
    assert math.isclose(top.share, 1.0) and math.isclose(top.change, -0.6)


def test_a_mix_shift_between_slices() -> None:
    # every slice converts as before; traffic moved to the slice that converts less
    stats = [
        SliceStats("desktop", base_num=60, base_den=1000, cur_num=30, cur_den=500),
        SliceStats("mobile", base_num=20, base_den=1000, cur_num=30, cur_den=1500),
    ]
    d = decompose("device", stats, ratio=True)
    assert d.total < 0 and math.isclose(d.rate, 0.0, abs_tol=1e-12)
    assert d.effect == "mix"
    assert all(c.effect == "mix" for c in d.contributions)


def test_a_count_splits_into_volume_and_rate() -> None:
    # orders = sessions x orders per session: paid lost traffic, DE... nothing else moved
    stats = [
        SliceStats("paid", base_num=100, base_den=5000, cur_num=50, cur_den=2500),
        SliceStats("organic", base_num=100, base_den=5000, cur_num=100, cur_den=5000),
    ]
    d = decompose("channel", stats, ratio=False)
    assert math.isclose(d.total, -50) and d.effect == "volume"
    assert d.contributions[0].value == "paid" and d.contributions[0].effect == "volume"


def test_explain_names_the_concentrated_dimension_first() -> None:
    by_country = decompose("country", [
        SliceStats("DE", 50, 1000, 20, 1000), SliceStats("FR", 40, 1000, 39, 1000),
        SliceStats("IT", 30, 1000, 30, 1000),
    ], ratio=True)  # fmt: skip
    by_device = decompose("device", [
        SliceStats("mobile", 80, 2000, 60, 2000), SliceStats("desktop", 40, 1000, 29, 1000),
    ], ratio=True)  # fmt: skip
    named = explain({"device": by_device, "country": by_country})
    assert named[0].label == "country=DE"
    assert named[0].share > 0.9
    spread = decompose("channel", [SliceStats(c, 10, 100, 8, 100) for c in "abcdef"], True)
    assert explain({"channel": spread}) == []  # six equal parts explain nothing
