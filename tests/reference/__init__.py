"""Independent reference implementation of METRICS.md over a JSONL file of accepted events.

The production pipeline (Kafka -> Bytewax -> ClickHouse) is checked against this package
by parity tests: the same accepted events in, the same numbers out. Every rule this code
had to choose where METRICS.md is silent is stated in the docstring of the module that
applies it (events, buckets, slices, metrics, funnel, products).
"""

from tests.reference.buckets import INTERVALS
from tests.reference.events import DEFAULT_FX, Events, device_from_user_agent, load_events
from tests.reference.funnel import FUNNEL_STEPS, funnel
from tests.reference.metrics import CATEGORY_METRICS, METRICS, metric_series
from tests.reference.otto import otto_to_events
from tests.reference.products import top_products

__all__ = [
    "CATEGORY_METRICS",
    "DEFAULT_FX",
    "FUNNEL_STEPS",
    "INTERVALS",
    "METRICS",
    "Events",
    "device_from_user_agent",
    "funnel",
    "load_events",
    "metric_series",
    "otto_to_events",
    "top_products",
]
