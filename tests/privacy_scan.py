"""Looking for personal data everywhere Pulse stores something: every String column of
every table of a warehouse database, every record (key, value, headers) of some topics."""

from __future__ import annotations

from collections.abc import Iterable

from tests.kafka_read import read_topic
from warehouse.client import Client


def string_columns(client: Client) -> list[tuple[str, str]]:
    """(table, column) of every column of the current database whose type holds strings
    (String, LowCardinality/Nullable/Array of it, Nested string columns)."""
    rows = client.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
        "AND type LIKE '%String%' ORDER BY table, name"
    ).result_rows
    return [(t, c) for t, c in rows]


def find_in_tables(client: Client, needles: Iterable[str]) -> list[tuple[str, str, str]]:
    """(table, column, needle) for every needle found as a substring of any string value."""
    wanted = sorted(set(needles))
    found = []
    for table, column in string_columns(client):
        sql = (
            f"SELECT DISTINCT needle FROM `{table}` ARRAY JOIN {{n:Array(String)}} AS needle "
            f"WHERE position(toString(`{column}`), needle) > 0"
        )
        for (needle,) in client.query(sql, parameters={"n": wanted}).result_rows:
            found.append((table, column, needle))
    return found


def find_in_topics(
    bootstrap: str, topics: Iterable[str], needles: Iterable[str]
) -> list[tuple[str, str]]:
    """(topic, needle) for every needle found in a record's key, value or headers."""
    wanted = [n.encode() for n in set(needles)]
    found = set()
    for topic in topics:
        for record in read_topic(bootstrap, topic):
            headers = [k.encode() + b"=" + (v or b"") for k, v in record.headers.items()]
            blob = b"\0".join([record.key or b"", record.value, *headers])
            for needle in wanted:
                if needle in blob:
                    found.add((topic, needle.decode()))
    return sorted(found)
