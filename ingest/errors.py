"""The root of the error hierarchy, and the errors of the edge.

Every error Pulse raises on purpose derives from :class:`PulseError`; each layer keeps its
own next to the code that raises it (``warehouse.errors``, ``warehouse.queries.QueryError``,
``dashboards.provision.GrafanaError``, ``api.keys.KeyStoreError``). Data flows left to right,
so the root lives here, in the leftmost layer every other one imports anyway. Only the API
turns these into HTTP (``api.errors``); the CLI prints them as one line.
"""

from __future__ import annotations

__all__ = ["BrokerError", "ConfigError", "DeliveryError", "PulseError"]


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
