"""Pipeline health on ``/metrics``: consumer lag per topic and freshness.

Counters of throughput, rejects and duplicates live beside the code that counts them
(``pulse_events_accepted_total``, ``pulse_events_rejected_total``, ``pulse_flow_events_total``,
``pulse_flow_duplicates_total``); this module derives the two gauges that need arithmetic.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flows.dataflow import FLOW_NEWEST

__all__ = ["register_health_metrics"]


class _HealthCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "pulse_consumer_lag", "Records on the broker not yet read by the flow", labels=["topic"]
        )
        per_topic: dict[str, float] = defaultdict(float)
        for family in BYTEWAX_CONSUMER_LAG_GAUGE.collect():
            for sample in family.samples:
                # Tansu's lagging high watermark can make Bytewax's figure negative
                per_topic[sample.labels["topic"]] += max(sample.value, 0.0)
        newest = None
        for family in FLOW_NEWEST.collect():
            newest = family.samples[0].value if family.samples else None
        for topic, value in sorted(per_topic.items()):
            lag.add_metric([topic], value)
        yield lag
        freshness = GaugeMetricFamily(
            "pulse_freshness_seconds", "Now minus the event time of the newest event written"
        )
        if newest:
            freshness.add_metric([], time.time() - newest)
        yield freshness


_registered = False


def register_health_metrics() -> None:
    """Add the derived gauges to the default registry (once per process)."""
    global _registered
    if not _registered:
        REGISTRY.register(_HealthCollector())
        _registered = True
