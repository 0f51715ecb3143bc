"""Dashboards as code: each dashboard defined once, rendered to Grafana JSON and to pages.

- :mod:`dashboards.model` — the definition objects (dashboard, panel, data, thresholds)
- :mod:`dashboards.catalog` — the seven Pulse dashboards
- :mod:`dashboards.grafana` — Grafana JSON via grafana-foundation-sdk (ClickHouse plugin SQL
  from :mod:`dashboards.grafana_sql`), checked by :mod:`dashboards.validate`
- :mod:`dashboards.pages` — the built-in pages served at ``/`` (``dashboards/static``)
- :mod:`dashboards.provision` — ``pulse dashboards export`` / ``provision`` (grafana-client)
"""

from __future__ import annotations

from dashboards.catalog import DASHBOARDS, get
from dashboards.model import Dashboard, Panel

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "get"]
