"""Issue #20, point 6: no spike where the demo's back-fill meets its live traffic.

The demo's traffic (`insights.demo`) goes through the real pipeline as `pulse demo` sends
it — paced from the run's start, so what lies before the wall clock is back-filled at once
and the rest waits for its time — into a fresh database; around the seam (the wall-clock
time the demo started) every minute's sessions, visitors and session starts stay within
the variation of the minutes before it.

Before the fix the demo sent two runs — the history, then live traffic from another run —
and the sessions going on at the seam were counted twice: here the seam's minute had 968
sessions where the minutes before had 698-727 (+34 %), visitors alike, and 2.6 times the
usual session starts.
"""

from __future__ import annotations

import statistics
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flows.config import FlowConfig
from flows.run import run_flow
from ingest.collector import Collector
from ingest.fx import load_fx_rates
from ingest.producer import ConfluentProducer
from ingest.simulator.publish import publish
from ingest.topics import Topics, ensure_topics
from insights.demo import demo_simulation
from warehouse.client import connect
from warehouse.migrate import migrate
from warehouse.queries import MetricQuery, metric_series

pytestmark = pytest.mark.integration

RATE = 20.0  # events/s: ~720 sessions a minute
HISTORY = timedelta(minutes=20)


def _per_minute(client, metric: str, start: datetime, end: datetime) -> dict[datetime, float]:
    points = metric_series(client, MetricQuery(metric, start, end, "1m", tz="UTC"))
    return {datetime.fromisoformat(p["ts"]): float(p["value"] or 0) for p in points}


def test_no_spike_where_the_demo_back_fill_meets_live_traffic(broker, warehouse_dsn, tmp_path):
    # The demo "started" 3.5 minutes ago: its history and those minutes are due at once
    # (as they are when `pulse demo` catches up after its back-fill); publishing stops at
    # the first event that would wait for the wall clock.
    seam = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3, seconds=30)
    run = demo_simulation(seam, rate=RATE, history=HISTORY, live=timedelta(minutes=10))
    topics = Topics(prefix=f"seam{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics, partitions=4)
    fx = load_fx_rates()
    producer = ConfluentProducer(broker.bootstrap)
    stop = threading.Event()
    history: list[int] = []

    def caught_up(accepted: int) -> None:
        history.append(accepted)
        stop.set()

    try:
        sent = publish(run, Collector(producer, topics, fx.currencies), producer, speed=1.0,
                       stop=stop, due_from=run.start, caught_up=caught_up)  # fmt: skip
    finally:
        producer.close()
    assert not sent.rejected
    assert history == [sent.accepted] and sent.accepted > RATE * 20 * 60 * 0.9

    database = f"seam_{uuid.uuid4().hex[:8]}"
    client = connect(warehouse_dsn, database)
    migrate(client)
    try:
        config = FlowConfig(broker.bootstrap, topics, warehouse_dsn, database, fx,
                            idle_stop_s=1.5)  # fmt: skip
        run_flow(config, workers=1, recovery_dir=tmp_path / "recovery")
        minute = seam.replace(second=0)
        start, end = minute - timedelta(minutes=12), minute + timedelta(minutes=3)
        for metric in ("sessions", "visitors", "pageviews"):
            series = _per_minute(client, metric, start, end)
            before = [v for t, v in series.items() if t < minute - timedelta(minutes=1)]
            usual, spread = statistics.median(before), max(before) - min(before)
            late = minute - timedelta(minutes=1)
            around = {t.strftime("%H:%M"): v for t, v in series.items() if t >= late}
            assert len(before) == 11 and usual > 0, (metric, series)
            for t, v in around.items():  # within the variation of the minutes before
                assert abs(v - usual) <= max(spread, 0.15 * usual), (metric, t, v, usual, before)
        # sessions that start in a minute: the sessions going on at the seam do not start again
        rows = client.query(
            "SELECT m, count() FROM (SELECT toStartOfMinute(min(ts)) AS m FROM events "
            "GROUP BY session_key) WHERE m >= {start:DateTime} AND m < {end:DateTime} "
            "GROUP BY m ORDER BY m",
            parameters={"start": start, "end": end},
        ).result_rows
        starts = {m.replace(tzinfo=UTC): n for m, n in rows}
        before = [n for m, n in starts.items() if m < minute - timedelta(minutes=1)]
        usual, spread = statistics.median(before), max(before) - min(before)
        for m, n in starts.items():
            if m >= minute - timedelta(minutes=1):
                assert abs(n - usual) <= max(spread, 0.2 * usual), ("starts", m, n, usual, before)
    finally:
        client.command(f"DROP DATABASE `{database}`")
