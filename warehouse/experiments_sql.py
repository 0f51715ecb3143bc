"""The SQL the experiment queries share (``warehouse.experiments``, the array query over
``experiment_users``; ``warehouse.experiment_totals``, the kept per-variant sums): one
text for a user's values, so the paths cannot differ."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["PER_USER_SQL", "PRE_PERIOD", "RANGE_SQL", "ROWS_SQL", "SUMS_SQL"]

# docs/experiments.md: the CUPED covariate's window (the SQL's ``INTERVAL 14 DAY``)
PRE_PERIOD = timedelta(days=14)

# One user's values from their row: ``ex`` their exposures (sorted), ``__ACTS__`` the acts
# to read (all of them, or those of a range). The array query and the take of the kept
# sums (warehouse.experiment_totals) share it, so the two cannot differ.
PER_USER_SQL = """
        if(arrayUniq(arrayMap(x -> x.2, ex)) = 1, ex[1].2, '') AS variant,
        ex[1].1 AS first_ts,
        -- the acts read, then the newest version of each event (a.1 ts, a.2 event_id,
        -- a.3 kind: 1 purchase 2 cart, a.4 is_order, a.5 order_id, a.6 revenue,
        -- a.7 version)
        arraySort(a -> (a.2, a.7), __ACTS__) AS s,
        -- an act is kept when the next one is another event (event ids are never empty):
        -- the next ids as a second array, not s[i + 1] inside the lambda (which copies s
        -- for every element: ~25 % of the query's CPU at 1M users)
        arrayFilter((a, next) -> next != a.2, s,
            arrayPopFront(arrayPushBack(arrayMap(a -> a.2, s), ''))) AS acts,
        arrayFilter(a -> a.1 >= first_ts, acts) AS post,
        arrayFilter(a -> a.1 < first_ts AND a.1 >= first_ts - INTERVAL 14 DAY, acts) AS pre,
        arrayExists(a -> a.3 = 1, post) AS conv,
        arrayExists(a -> a.3 = 2, post) AS atc,
        arrayUniq(arrayMap(a -> a.5, arrayFilter(a -> a.4 = 1, post))) AS orders,
        arraySum(a -> if(a.4 = 1, a.6, 0), post) AS revenue,
        arrayExists(a -> a.3 = 1, pre) AS conv_p,
        arrayExists(a -> a.3 = 2, pre) AS atc_p,
        arrayUniq(arrayMap(a -> a.5, arrayFilter(a -> a.4 = 1, pre))) AS orders_p,
        arraySum(a -> if(a.4 = 1, a.6, 0), pre) AS revenue_p"""

# The range's bounds, as every query over a range reads them (nothing before the
# retention's horizon counts).
RANGE_SQL = """
    (SELECT toDateTime64(max(until), 3, 'UTC') FROM purged_until) AS horizon,
    greatest({lo:DateTime64(3)}, horizon) AS lo,
    greatest({pre_lo:DateTime64(3)}, horizon) AS lo_acts,
    {hi:DateTime64(3)} AS hi"""

# Per variant: the users and the sums of their values (SUM_COLUMNS' order).
SUMS_SQL = """variant, count(),
    sum(conv), sum(conv_p), sum(conv * conv_p),
    sum(atc), sum(atc_p), sum(atc * atc_p),
    sum(orders), sum(orders * orders), sum(orders_p), sum(orders_p * orders_p),
    sum(orders * orders_p),
    sumKahan(revenue), sumKahan(revenue * revenue), sumKahan(revenue_p),
    sumKahan(revenue_p * revenue_p), sumKahan(revenue * revenue_p),
    sumKahan(revenue * orders)"""

# The users of a range, from their rows: the exposures in it (retained) in time order,
# and their values from the acts in [lo_acts, hi).
ROWS_SQL = """
    SELECT variant, conv, atc, orders, revenue, conv_p, atc_p, orders_p, revenue_p
    FROM (
        SELECT __PER_USER__
        FROM (
            SELECT arraySort(arrayFilter(x -> x.1 >= lo AND x.1 < hi, exposures)) AS ex,
                acts AS all_acts
            FROM experiment_users FINAL
            WHERE experiment = {e:String} AND last_exposure >= lo AND first_exposure < hi
        )
        WHERE notEmpty(ex)
    )""".replace(
    "__PER_USER__",
    PER_USER_SQL.replace("__ACTS__", "arrayFilter(a -> a.1 >= lo_acts AND a.1 < hi, all_acts)"),
)
