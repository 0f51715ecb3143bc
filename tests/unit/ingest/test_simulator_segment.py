"""``ingest.simulator.segment``: simulated traffic as Segment messages whose mapping by the
Segment API (``ingest.segment.translate``) gives back the §5 events the reference reads."""

from __future__ import annotations

import functools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from ingest.privacy import country_of_ip
from ingest.segment import translate
from ingest.simulator import SimConfig
from ingest.simulator.segment import (
    BATCH_MESSAGES,
    LOGIN_AT,
    Translated,
    iter_segment,
    write_segment,
)
from ingest.useragent import is_bot

START = datetime(2026, 11, 2, 12, tzinfo=UTC)
CONFIG = SimConfig(rate=3, duration=timedelta(minutes=25), seed=4, start=START)


@functools.cache
def _sent() -> list[Translated]:
    return list(iter_segment(CONFIG))


def test_each_message_maps_back_to_its_event() -> None:
    sent = _sent()
    assert len(sent) > 3000
    for s in sent:
        got = msgspec.json.decode(translate(s.message, received_ms=s.emit_ms))
        want = dict(s.event)
        assert country_of_ip(got.pop("ip", None)) == want.pop("country", None)
        if "user_agent" in want:  # the device derived from it, as the reference does
            assert got.pop("user_agent") == want.pop("user_agent")
            got.pop("device", None)
        else:
            got.pop("user_agent", None)
        for field in ("page", "referrer"):  # full URLs in the messages; in no number
            got.pop(field, None)
            want.pop(field, None)
        assert got == want, s.message


def test_visits_log_in_and_crawlers_come() -> None:
    sent = _sent()
    events = [s.event for s in sent]
    logins = [e for e in events if e["type"] == "identify"]
    assert logins and all(e["anonymous_id"].startswith("anon-") for e in logins)
    for login in logins[:50]:  # the visit's first events are anonymous, the later both
        visit = login["event_id"].removesuffix("-login")
        mine = [s.message for s in sent if s.event["event_id"].startswith(visit + "-")]
        positions = {m["messageId"].rsplit("-", 1)[1]: m for m in mine}
        for position, message in positions.items():
            if position in ("login", "bot"):
                continue
            if int(position, 16) < LOGIN_AT:
                assert "userId" not in message and message["anonymousId"] == login["anonymous_id"]
            else:
                assert message["userId"] == login["user_id"]
                assert message["anonymousId"] == login["anonymous_id"]
    crawlers = [s.message for s in sent if s.message["messageId"].endswith("-bot")]
    assert crawlers and all(is_bot(m["context"]["userAgent"]) for m in crawlers)
    share = len(logins) / len({e["session_id"] for e in events if "session_id" in e})
    assert 0.1 < share < 0.4, share  # 30% of the visits start anonymous; short ones never log in


def test_the_same_config_gives_the_same_messages() -> None:
    first = [s.message for s in _sent()]
    assert first == [s.message for s in iter_segment(CONFIG)]
    kinds = Counter(m["type"] for m in first)
    assert set(kinds) == {"page", "track", "identify"}


def test_write_segment_writes_batch_bodies_and_the_truth(tmp_path: Path) -> None:
    out = tmp_path / "segment.jsonl"
    written = write_segment(CONFIG, out)
    bodies = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(len(b["batch"]) for b in bodies) == written
    assert all(0 < len(b["batch"]) <= BATCH_MESSAGES for b in bodies)
    truth = json.loads((tmp_path / "segment.truth.json").read_text())
    assert truth["messages"] == written and truth["seed"] == CONFIG.seed
