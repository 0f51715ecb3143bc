"""A restarted demo back-fills only what is missing; ``--fresh`` deletes the earlier demo's
data and keeps the keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.demo import MIN_BACKFILL, backfill_span, reset_demo
from api.settings import load_settings
from ingest.errors import PulseError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H3 = timedelta(hours=3)


def test_a_first_demo_back_fills_the_whole_history() -> None:
    assert backfill_span(NOW, None, H3) == H3


def test_a_demo_run_again_back_fills_only_the_time_since_its_last_event() -> None:
    span = backfill_span(NOW, NOW - timedelta(minutes=12), H3)
    assert span == timedelta(minutes=12) - timedelta(seconds=1)
    # the back-fill [NOW - span, NOW) starts after the last event: nothing counted twice
    assert NOW - span > NOW - timedelta(minutes=12)


def test_a_demo_run_again_at_once_back_fills_nothing() -> None:
    assert backfill_span(NOW, NOW - MIN_BACKFILL / 2, H3) == timedelta(0)
    assert backfill_span(NOW, NOW + timedelta(minutes=1), H3) == timedelta(0)  # live ran ahead


def test_a_demo_run_again_after_a_long_pause_back_fills_the_usual_history() -> None:
    assert backfill_span(NOW, NOW - timedelta(days=2), H3) == H3


def test_fresh_deletes_the_demo_data_and_keeps_the_keys(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    for part in ("warehouse", "recovery", "flow-state", "simulations"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "data").write_text("x")
    settings.keys_file.write_text("{}")
    deleted = reset_demo(settings)
    assert len(deleted) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]
    assert reset_demo(settings) == []


def test_fresh_refuses_a_clickhouse_server(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, clickhouse_dsn="http://u:p@db.example:8123/pulse")
    with pytest.raises(PulseError, match="embedded warehouse only"):
        reset_demo(settings)
