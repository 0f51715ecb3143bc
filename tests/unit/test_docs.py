"""docs/events.md and docs/metrics.md stay in step with the code: every event type, field,
limit, topic, metric, dimension and interval the code knows is in the docs, and every one
the docs name is known to the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from api.routes.events import MAX_BODY, MAX_EVENTS
from ingest import events as ev
from ingest.collector import MAX_DEPTH
from ingest.topics import TOPIC_BY_TYPE, Topics
from warehouse.buckets import INTERVALS
from warehouse.metrics import DIMENSIONS, METRICS

DOCS = Path(__file__).resolve().parents[2] / "docs"
EVENTS = (DOCS / "events.md").read_text()
METRICS_DOC = (DOCS / "metrics.md").read_text()


def _section(text: str, heading: str) -> str:
    """The text under a ``## heading`` (or ``###``) up to the next heading of that level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n(.*?)(?=^\1 |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(2)


def _first_column(text: str) -> list[str]:
    """The backticked names in the first column of the markdown tables of ``text``."""
    names = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and not set(cells[1].strip()) <= set("-"):
            names += re.findall(r"`([^`]+)`", cells[1])
    return names


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(struct)}


def test_every_event_type_and_its_topic_is_documented() -> None:
    table = _section(EVENTS, "Types and their fields")
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)` \|.*\| `([\w.]+)` \|$", table, re.M)
    }
    assert rows == TOPIC_BY_TYPE
    assert re.search(r"^\| any other type \|.*\| `user.general_events` \|$", table, re.M)


def test_the_required_fields_by_type_are_the_validated_ones() -> None:
    table = _section(EVENTS, "Types and their fields")
    for kind in TOPIC_BY_TYPE:
        row = re.search(rf"^\| `{kind}` \|(.*)$", table, re.M)
        assert row, kind
        bold = set(re.findall(r"\*\*`(\w+)`\*\*", row.group(1)))
        assert bold == set(ev._REQUIRED.get(kind, ())), kind
        named = set(re.findall(r"`(\w+)`", row.group(1).rsplit("|", 2)[0]))
        assert named <= _fields(ev.Event), kind


def test_every_event_field_is_documented_and_every_documented_field_exists() -> None:
    documented = set(_first_column(_section(EVENTS, "Fields every event has")))
    documented |= set(_first_column(_section(EVENTS, "Types and their fields")))
    documented -= set(TOPIC_BY_TYPE)  # the types table's first column
    assert documented == _fields(ev.Event) | {"ip"}
    items = re.search(r"^\| `items` \|(.*)$", EVENTS, re.M)
    assert items and set(re.findall(r'"(\w+)"', items.group(1))) == _fields(ev.Item)


def test_device_and_channel_values_are_the_validated_ones() -> None:
    for name, values in (("device", ev.Device), ("channel", ev.Channel)):
        row = re.search(rf"^\| `{name}` \|(.*)$", EVENTS, re.M)
        # the values, before what the field is derived from when absent
        assert row and re.findall(r"`(\w+)`", row.group(1).split(";")[0]) == list(get_args(values))
        dim = re.search(rf"^\| `{name}` \|(.*)$", METRICS_DOC, re.M)
        assert dim and re.findall(r"`(\w+)`", dim.group(1)) == list(get_args(values))


@pytest.mark.parametrize(
    "limit, shown",
    [
        (MAX_EVENTS, "1,000 events"),
        (MAX_BODY, "1 MiB (1,048,576 bytes)"),
        (ev.MAX_EVENT_BYTES, "32 KiB (32,768 bytes)"),
        (ev.MAX_QUANTITY, "1…100,000"),
        (ev.MAX_ITEMS, "more than 1,000"),
        (ev.MAX_FUTURE_MS // 3_600_000, "24 hours in the future"),
        (ev.MAX_AMOUNT, "over 10^9"),
        (ev.MAX_COUNT, "0 to 4,294,967,295"),
        (MAX_DEPTH, "deeper than 64 levels"),
    ],
)
def test_every_limit_is_documented_with_its_value(limit: float, shown: str) -> None:
    assert shown in EVENTS
    # the last number shown is the bound (ranges like 1…100,000 give both ends)
    number = list(re.finditer(r"10\^(\d+)|(\d[\d,]*)(?: (KiB|MiB))?", shown))[-1]
    if number.group(1):
        value = 10 ** int(number.group(1))
    else:
        value = int(number.group(2).replace(",", "")) * {"KiB": 1024, "MiB": 1024**2}.get(
            number.group(3) or "", 1
        )
    assert value == limit


def test_the_time_bounds_are_documented() -> None:
    assert "before 2000-01-01" in EVENTS and "after 2099-12-31" in EVENTS
    assert ev.MIN_TS_MS == 946_684_800_000  # 2000-01-01T00:00:00Z
    assert ev.MAX_TS_MS == 4_102_444_800_000  # 2100-01-01T00:00:00Z
    text = re.search(r"_Text = .*max_length=(\d+)", Path(ev.__file__).read_text())
    assert text and f"at most {int(text.group(1)):,} characters" in EVENTS


def test_every_topic_is_documented_and_every_documented_topic_exists() -> None:
    documented = _first_column(_section(EVENTS, "Topics"))
    assert sorted(documented) == sorted(Topics().all)


def test_every_metric_is_defined_and_every_defined_metric_exists() -> None:
    defined = [
        name
        for heading in ("Traffic and engagement", "Commerce")
        for name in _first_column(_section(METRICS_DOC, heading))
    ]
    assert sorted(defined) == sorted(METRICS)


def test_dimensions_and_intervals_are_the_queryable_ones() -> None:
    table = _section(METRICS_DOC, "Ranges, buckets and slices")
    assert [d for d in _first_column(table)] == list(DIMENSIONS)
    intervals = re.search(r"\*\*interval\*\* \(([^)]*)\)", table)
    assert intervals and re.findall(r"`(\w+)`", intervals.group(1)) == list(INTERVALS)


def test_the_code_points_to_these_docs_not_to_files_users_do_not_have() -> None:
    root = DOCS.parent
    stale = [
        f"{path.relative_to(root)}:{n}"
        for pattern in ("api/**/*.py", "ingest/**/*.py", "warehouse/**/*.py", "README.md")
        for path in root.glob(pattern)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "METRICS.md" in line or re.search(r"CONTRACT(\.md)? ?§ ?[56]\b", line)
    ]
    assert stale == []
