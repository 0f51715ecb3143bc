"""Errors of the warehouse layer (a :class:`~ingest.errors.PulseError` each)."""

from __future__ import annotations

from ingest.errors import PulseError

__all__ = ["WarehouseBusy", "WarehouseError"]


class WarehouseError(PulseError):
    """The warehouse (ClickHouse / chDB) refused or failed an operation."""


class WarehouseBusy(WarehouseError):
    """The embedded warehouse is held by another process (e.g. a running ``pulse up``)."""
