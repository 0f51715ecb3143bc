"""The error hierarchy every Pulse layer raises from (only the API turns these into HTTP)."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "NotBuiltYet",
    "PulseError",
    "WarehouseBusy",
    "WarehouseError",
]


class PulseError(Exception):
    """Root of every error Pulse raises on purpose."""


class ConfigError(PulseError):
    """A setting is missing or has a value Pulse cannot use."""


class BrokerError(PulseError):
    """The Kafka broker could not be started, reached or administered."""


class DeliveryError(BrokerError):
    """Events could not be delivered to Kafka; they were *not* acknowledged.

    ``failed`` counts the records the broker did not confirm, ``reason`` is the
    first error the client reported.
    """

    def __init__(self, failed: int, reason: str) -> None:
        super().__init__(f"{failed} event(s) not delivered to Kafka: {reason}")
        self.failed = failed
        self.reason = reason


class WarehouseError(PulseError):
    """The warehouse (ClickHouse / chDB) refused or failed an operation."""


class WarehouseBusy(WarehouseError):
    """The embedded warehouse is held by another process (e.g. a running ``pulse up``)."""


class NotBuiltYet(PulseError):
    """A command whose capability is not available in this version."""
