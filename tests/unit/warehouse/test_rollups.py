"""How dirty periods are grouped into recompute queries (warehouse.rollups._chunks)."""

from __future__ import annotations

from warehouse.rollups import _GROUP_EVENTS, _GROUP_PERIODS, MINUTE_MS, _chunks

MINUTES = [i * MINUTE_MS for i in range(1000)]


def test_without_weights_a_group_is_at_most_size_periods() -> None:
    assert [len(g) for g in _chunks(MINUTES, 240, MINUTE_MS)] == [240, 240, 240, 240, 40]


def test_sparse_periods_go_together_up_to_the_event_budget() -> None:
    # a shop's history: a dozen events a minute, 1,000 minutes in one query, not five
    groups = list(_chunks(MINUTES, 240, MINUTE_MS, {m: 12 for m in MINUTES}))
    assert groups == [MINUTES]
    # ... and a week of minutes at most, however sparse
    week = [i * MINUTE_MS for i in range(_GROUP_PERIODS + 5)]
    assert [len(g) for g in _chunks(week, 240, MINUTE_MS, {m: 1 for m in week})] == [
        _GROUP_PERIODS,
        5,
    ]


def test_dense_periods_stay_in_groups_of_size() -> None:
    heavy = {m: _GROUP_EVENTS // 100 for m in MINUTES}
    assert [len(g) for g in _chunks(MINUTES, 240, MINUTE_MS, heavy)] == [240, 240, 240, 240, 40]


def test_the_events_of_periods_between_dirty_ones_count() -> None:
    # two dirty minutes far apart with busy clean minutes between: the query spanning
    # both would read every event between them, so they are not put together
    dirty = [0, 500 * MINUTE_MS]
    between = {i * MINUTE_MS: _GROUP_EVENTS // 100 for i in range(1, 500)}
    assert list(_chunks(dirty, 1, MINUTE_MS, between)) == [[0], [500 * MINUTE_MS]]
    assert list(_chunks(dirty, 1, MINUTE_MS, {})) == [dirty]
