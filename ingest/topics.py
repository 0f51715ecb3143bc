"""Topic names and routing by event type (docs/events.md), and idempotent topic creation."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.errors import BrokerError

__all__ = ["TOPIC_BY_TYPE", "Topics", "ensure_topics"]

TOPIC_BY_TYPE = {
    "page_view": "user.pageviews",
    "product_view": "user.product_interactions",
    "add_to_cart": "user.cart_events",
    "remove_from_cart": "user.cart_events",
    "begin_checkout": "user.cart_events",
    "purchase": "user.purchases",
    "search": "user.searches",
    "experiment_exposure": "user.experiments",
}
_GENERAL = "user.general_events"
_DLQ = "user.events.dlq"
_ERASURES = "user.erasures"  # users to forget (CONTRACT §11; flows.erasure)


@dataclass(frozen=True)
class Topics:
    """The topic set, optionally prefixed (tests and multi-tenant clusters)."""

    prefix: str = ""

    def for_type(self, event_type: str) -> str:
        """The topic an accepted event of ``event_type`` goes to."""
        return self.prefix + TOPIC_BY_TYPE.get(event_type, _GENERAL)

    @property
    def dlq(self) -> str:
        """The dead-letter topic."""
        return self.prefix + _DLQ

    @property
    def events(self) -> tuple[str, ...]:
        """Every topic that carries accepted events."""
        names = dict.fromkeys([*TOPIC_BY_TYPE.values(), _GENERAL])
        return tuple(self.prefix + name for name in names)

    @property
    def erasures(self) -> str:
        """The users to forget, keyed by user id, read by the flow with the events."""
        return self.prefix + _ERASURES

    @property
    def all(self) -> tuple[str, ...]:
        """Event topics, the dead-letter topic and the erasures topic."""
        return (*self.events, self.dlq, self.erasures)


def ensure_topics(bootstrap: str, topics: Topics, partitions: int = 4) -> list[str]:
    """Create any missing topic; returns the names created. Safe to run again."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="pulse-admin")
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        brokers = max(1, len(admin.describe_cluster().get("brokers", [])))
        replication = min(3, brokers)
        missing = [t for t in topics.all if t not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
        return created
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
