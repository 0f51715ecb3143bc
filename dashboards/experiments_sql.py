"""Grafana SQL of the Experiments dashboard (CONTRACT §10), over the dashboard's time range
and its ``experiment`` variable.

Users per variant and the multiple-exposure rule are METRICS.md's, exactly as the API
counts them. The statistics are a SQL approximation of the API's: the lift's interval is
the delta-method one with a normal quantile (1.96) instead of gbstats' t quantile, the
SRM check is χ² against an equal split flagged at the χ² quantile of p = 0.001, and no
CUPED or sequential interval. The API, ``pulse experiments show`` and the built-in page are
the reference; for the sample sizes of a real experiment the two agree closely.
"""

from __future__ import annotations

from dashboards.grafana_sql import FROM, TO
from dashboards.model import ExperimentData

__all__ = ["EXPERIMENTS_VARIABLE_SQL", "experiment_sql"]

EXPERIMENT = "${experiment:sqlstring}"
EXPERIMENTS_VARIABLE_SQL = "SELECT DISTINCT experiment FROM exposures ORDER BY experiment"
# χ² quantiles at p = 0.001 for 1 .. 10 degrees of freedom (scipy.stats.chi2.isf(0.001, df))
_CHI2_001 = "[10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588]"
_METRICS = "['conversion', 'add_to_cart_rate', 'orders_per_user', 'revenue_per_user']"

_EXPOSED = f"""exposed AS (
    SELECT user_id, min(ts) AS first_ts,
        if(uniqExact(variant) = 1, argMin(variant, ts), '') AS variant
    FROM exposures
    WHERE experiment = {EXPERIMENT} AND ts >= {FROM} AND ts < {TO}
    GROUP BY user_id
)"""
_ACTS = f"""acts AS (
    SELECT r.1 AS user_id, r.2 AS type, r.3 AS ts, r.4 AS is_order, r.5 AS order_id,
        r.6 AS revenue
    FROM (
        SELECT argMax((user_id, type, ts, is_order, order_id, coalesce(revenue_eur, 0)),
            version) AS r
        FROM events
        WHERE type IN ('purchase', 'add_to_cart') AND ts >= {FROM} AND ts < {TO}
            AND user_id IN (SELECT user_id FROM exposed WHERE variant != '')
        GROUP BY event_id
    )
)"""


def _per_user(until: str, extra: str = "") -> str:
    """Per-user values of exposed users over their events from exposure to ``until``."""
    post = f"a.ts >= x.first_ts AND a.ts < {until}"
    return f"""SELECT x.variant AS variant{extra},
        max(a.type = 'purchase' AND {post}) AS conv,
        max(a.type = 'add_to_cart' AND {post}) AS atc,
        uniqExactIf(a.order_id, a.is_order = 1 AND {post}) AS orders,
        sumIf(a.revenue, a.is_order = 1 AND {post}) AS revenue"""


def _lift_columns(t: str, c: str) -> str:
    # as the API: a control mean <= 0 reports lift 0 with the interval [0, 0]
    se = (f"if({c}.m > 0, sqrt({t}.v / ({c}.m * {c}.m * {t}.n) + {c}.v * {t}.m * {t}.m "
          f"/ pow({c}.m, 4) / {c}.n), 0)")  # fmt: skip
    lift = f"if({c}.m > 0, {t}.m / {c}.m - 1, 0)"
    return (f"{lift} AS lift, {lift} - 1.959964 * {se} AS ci_low, "
            f"{lift} + 1.959964 * {se} AS ci_high")  # fmt: skip


def experiment_sql(data: ExperimentData) -> str:
    """The panel's SQL: ``users`` (variant, users), ``srm`` (χ², degrees of freedom,
    flagged), ``lift`` (metric, variant, means, lift and interval per non-control variant),
    ``cumulative`` (time, lift of ``data.metric`` per variant at each day's end)."""
    if data.view == "users":
        label = "if(variant = '', '(several variants)', variant)"
        return (f"WITH {_EXPOSED}\nSELECT {label} AS variant, count() AS users\n"
                "FROM exposed GROUP BY variant ORDER BY variant")  # fmt: skip
    if data.view == "srm":
        return f"""WITH {_EXPOSED},
counts AS (SELECT variant, count() AS users FROM exposed WHERE variant != '' GROUP BY variant)
SELECT sum(pow(users - e, 2) / e) AS chi2, count() - 1 AS df,
    chi2 > {_CHI2_001}[least(greatest(df, 1), 10)] AS flagged
FROM (SELECT users, sum(users) OVER () / count() OVER () AS e FROM counts)"""
    if data.view == "lift":
        return f"""WITH {_EXPOSED}, {_ACTS},
per_user AS (
    {_per_user(TO)}
    FROM exposed AS x LEFT JOIN acts AS a ON a.user_id = x.user_id
    WHERE x.variant != ''
    GROUP BY x.user_id, x.variant
),
stats AS (
    SELECT variant, metric, count() AS n, avg(x) AS m, varSamp(x) AS v
    FROM per_user
    ARRAY JOIN {_METRICS} AS metric, [toFloat64(conv), toFloat64(atc), toFloat64(orders),
        revenue] AS x
    GROUP BY variant, metric
),
control AS (SELECT if(has(groupUniqArray(variant), 'control'), 'control', min(variant)) AS name
            FROM stats)
SELECT t.metric AS metric, t.variant AS variant, t.m AS mean, c.m AS control_mean,
    {_lift_columns("t", "c")}
FROM stats AS t INNER JOIN stats AS c ON t.metric = c.metric
WHERE c.variant = (SELECT name FROM control) AND t.variant != c.variant
ORDER BY indexOf({_METRICS}, metric), variant"""
    column = {"conversion": "toFloat64(conv)", "add_to_cart_rate": "toFloat64(atc)",
              "orders_per_user": "toFloat64(orders)", "revenue_per_user": "revenue",
              "aov": "revenue"}[data.metric]  # fmt: skip
    days = (f"arrayMap(d -> least(toStartOfDay(x.first_ts) + toIntervalDay(d + 1), {TO}), "
            f"range(toUInt32(dateDiff('day', toStartOfDay(x.first_ts), {TO}) + 1)))")  # fmt: skip
    return f"""WITH {_EXPOSED}, {_ACTS},
user_days AS (
    SELECT x.user_id AS user_id, x.variant AS variant, x.first_ts AS first_ts, day_end
    FROM exposed AS x ARRAY JOIN {days} AS day_end
    WHERE x.variant != '' AND day_end > x.first_ts
),
per_user AS (
    SELECT x.variant AS variant, x.day_end AS day_end,
        max(a.type = 'purchase' AND a.ts >= x.first_ts AND a.ts < x.day_end) AS conv,
        max(a.type = 'add_to_cart' AND a.ts >= x.first_ts AND a.ts < x.day_end) AS atc,
        uniqExactIf(a.order_id, a.is_order = 1 AND a.ts >= x.first_ts AND a.ts < x.day_end)
            AS orders,
        sumIf(a.revenue, a.is_order = 1 AND a.ts >= x.first_ts AND a.ts < x.day_end) AS revenue
    FROM user_days AS x LEFT JOIN acts AS a ON a.user_id = x.user_id
    GROUP BY x.user_id, x.variant, x.day_end
),
stats AS (
    SELECT day_end, variant, count() AS n, avg({column}) AS m, varSamp({column}) AS v
    FROM per_user GROUP BY day_end, variant
),
control AS (SELECT if(has(groupUniqArray(variant), 'control'), 'control', min(variant)) AS name
            FROM stats)
SELECT t.day_end AS time, t.variant AS variant, {_lift_columns("t", "c")}
FROM stats AS t INNER JOIN stats AS c ON t.day_end = c.day_end
WHERE c.variant = (SELECT name FROM control) AND t.variant != c.variant
ORDER BY time, variant"""
