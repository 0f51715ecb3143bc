"""Expanding panel SQL as Grafana and the ClickHouse datasource plugin do, for a fixed range.

Grafana first interpolates dashboard variables (``${tz}``, ``${bucket}``); the plugin then
replaces its macros (``pkg/macros/macros.go`` of grafana/clickhouse-datasource):
``$__fromTime_ms`` -> ``fromUnixTimestamp64Milli(<ms>)``, ``$__timeFilter(col)`` ->
``col >= toDateTime(<s>) AND col <= toDateTime(<s>)`` and so on. Used by the tests that run
every panel's SQL against a real warehouse, and handy to try a panel's query by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

__all__ = ["INTERVAL_SQL", "expand"]

# Values of the ``bucket`` dashboard variable for each API interval.
INTERVAL_SQL = {"1m": "1 MINUTE", "5m": "5 MINUTE", "1h": "1 HOUR", "1d": "1 DAY"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)\b")
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def expand(
    sql: str,
    start: datetime,
    end: datetime,
    variables: Mapping[str, str] | None = None,
    *,
    interval_s: int = 60,
) -> str:
    """``sql`` with dashboard ``variables`` and the plugin's time macros expanded."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a timezone")
    values = dict(variables or {})

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.startswith("__"):
            return m.group(0)  # a macro, handled below
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no value")
        return values[name]

    s, e = int(start.timestamp()), int(end.timestamp())
    fixed = {
        "fromTime": f"toDateTime({s})",
        "toTime": f"toDateTime({e})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({_ms(start)})",
        "toTime_ms": f"fromUnixTimestamp64Milli({_ms(end)})",
        "interval_s": str(max(interval_s, 1)),
    }

    def macro(m: re.Match[str]) -> str:
        name, arg = m.group(1), (m.group(2) or "").strip()
        if name in fixed and m.group(2) is None:
            return fixed[name]
        if name == "timeFilter":
            return f"{arg} >= toDateTime({s}) AND {arg} <= toDateTime({e})"
        if name == "timeFilter_ms":
            lo, hi = fixed["fromTime_ms"], fixed["toTime_ms"]
            return f"{arg} >= {lo} AND {arg} <= {hi}"
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({arg}), INTERVAL {max(interval_s, 1)} second)"
        raise ValueError(f"macro $__{name} is not one the ClickHouse plugin knows")

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))
