"""Reference tables the warehouse keeps beside the events (FX rates)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from ingest.fx import FxRates

__all__ = ["sync_fx_rates"]


def sync_fx_rates(client: Client, fx: FxRates) -> int:
    """Replace the ``fx_rates`` table's content with ``fx``; returns the row count."""
    rows = fx.rows()
    client.command("TRUNCATE TABLE fx_rates")
    client.insert("fx_rates", rows, column_names=["date", "currency", "eur_per_unit"])
    return len(rows)
