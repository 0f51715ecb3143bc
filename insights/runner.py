"""Running detection against the warehouse: one pass (`run_once`), or a loop (`pulse up`).

A pass reads every watched series for the buckets completed since the last pass
(``complete_until``: never an incomplete bucket), feeds them to the engine in time order
(1-hour buckets as they close), groups anomalies into insights, explains them, saves them
(merged with people's acknowledgements and labels) and hands them to the notifier.

The first pass warms the detectors up on ``history`` of past buckets. Buckets completed
more than ``live_horizon`` before ``complete_until`` are learnt from but their anomalies
are not raised — a restart, a catch-up or a back-filled history does not raise
yesterday — unless the anomaly is still open at the end of the pass: then it is going
on now and is raised. State lives in memory (`Detection`); a restart warms up again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from statistics import median

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge

from insights.alerts import AlertConfig, Delivery, Notifier
from insights.drilldown import Decomposition
from insights.engine import AnomalyEvent, DetectionEngine, EngineConfig
from insights.experiment_checks import check_experiments
from insights.lifecycle import BookConfig, Insight, InsightBook, mutes_from
from insights.narrative import describe, gather
from insights.reader import Frame, first_event, floor, funnel_counts, read_frame, refine
from insights.series import INTERVAL_SECONDS, Selection, SeriesKey, Slice, Volume, select_series
from insights.store import InsightStore
from warehouse.queries import complete_until

__all__ = [
    "DetectConfig",
    "Detection",
    "DetectorLoop",
    "PassReport",
    "run_once",
]

_log = logging.getLogger(__name__)
RUNS = Counter("pulse_detector_runs_total", "Detection passes", ["outcome"])
OPEN = Gauge("pulse_insights_active", "Insights open or acknowledged")
LAST_BUCKET = Gauge("pulse_detector_last_bucket_seconds", "End of the newest scored bucket")


@dataclass(frozen=True)
class DetectConfig:
    """How detection runs (built from the settings by ``api.runtime.Runtime``)."""

    timezone: str = "UTC"
    allowed_lateness: timedelta = timedelta(minutes=10)
    intervals: tuple[str, ...] = ("1m", "1h")
    history: dict[str, timedelta] = field(
        default_factory=lambda: {"1m": timedelta(days=2), "1h": timedelta(days=6)}
    )
    """Buckets read at the first pass to warm the detectors up."""
    live_horizon: timedelta = timedelta(minutes=30)
    """At warm-up, anomalies detected longer ago than this are not raised."""
    chunk: dict[str, timedelta] = field(
        default_factory=lambda: {"1m": timedelta(hours=6), "1h": timedelta(days=6)}
    )
    reselect_every: timedelta = timedelta(hours=6)
    poll_every_s: float = 20.0
    mute_days: float = 7.0
    selection: Selection = field(default_factory=Selection)
    engine: EngineConfig = field(default_factory=EngineConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    drilldown: bool = True
    experiments_every: timedelta | None = timedelta(minutes=5)
    """How often the experiments' SRM and guardrails are checked (None: never)."""


@dataclass
class Detection:
    """What detection remembers between passes."""

    engine: DetectionEngine
    book: InsightBook
    keys: dict[str, list[SeriesKey]] = field(default_factory=dict)
    volumes: dict[str, dict[Slice, deque[tuple[float, float]]]] = field(default_factory=dict)
    selected_at: dict[str, datetime] = field(default_factory=dict)
    raised: set[tuple[SeriesKey, datetime]] = field(default_factory=set)
    """Anomalies (series, onset) already handed to the book."""
    experiments_at: datetime | None = None
    """When the experiments were last checked (insights.experiment_checks)."""


@dataclass(frozen=True)
class PassReport:
    """What one pass did."""

    complete_until: datetime | None
    buckets: dict[str, int]
    events: int
    changed: tuple[Insight, ...]
    active: tuple[Insight, ...]
    delivery: Delivery | None


def _new_state(store: InsightStore, config: DetectConfig, now: datetime) -> Detection:
    mutes = mutes_from(store.labelled(now - timedelta(days=config.mute_days)), config.mute_days)
    # the insights that resolved themselves lately still settle (insights.lifecycle)
    settling = store.resolved_by_themselves(now - BookConfig().settling_for)
    book = InsightBook([*store.active(), *settling], mutes)
    return Detection(DetectionEngine(config.engine), book)


def _remember_volumes(state: Detection, interval: str, frame: Frame) -> None:
    per = state.volumes.setdefault(interval, {})
    keep = 1440 if interval == "1m" else 168
    for obs in frame.values():
        slices = {k.slice for k in obs}
        for sl in slices:
            sessions = obs.get(SeriesKey("sessions", sl, interval))
            orders = obs.get(SeriesKey("orders", sl, interval))
            per.setdefault(sl, deque(maxlen=keep)).append(
                (
                    (sessions.value or 0.0) if sessions else 0.0,
                    (orders.value or 0.0) if orders else 0.0,
                )
            )


def _select(state: Detection, interval: str, config: DetectConfig, now: datetime) -> None:
    last = state.selected_at.get(interval)
    if last is not None and now - last < config.reselect_every:
        return
    per = state.volumes.get(interval, {})
    volumes = {
        sl: Volume(median(s for s, _ in v), median(o for _, o in v)) for sl, v in per.items() if v
    }
    chosen = select_series(volumes, interval, config.selection)
    # a series once watched stays watched: its detector has learnt it
    state.keys[interval] = sorted(set(chosen) | set(state.keys.get(interval, [])))
    state.selected_at[interval] = now


def _sync(state: Detection, store: InsightStore) -> list[Insight]:
    """Take in what people did: resolved insights leave (returned, so their alerts end),
    acknowledgements and labels stay."""
    active = state.book.active()
    stored = store.many([i.id for i in active])
    resolved = []
    for i in active:
        s = stored.get(i.id)
        if s is None:
            continue
        if s.status == "resolved":
            state.book.put(s)
            resolved.append(s)
        elif s.status != i.status or s.feedback != i.feedback:
            state.book.put(replace(i, status=s.status, acknowledged_at=s.acknowledged_at,
                                   feedback=s.feedback, feedback_note=s.feedback_note))  # fmt: skip
    return resolved


def run_once(
    client: Client,
    config: DetectConfig | None = None,
    now: datetime | None = None,
    state: Detection | None = None,
    notifier: Notifier | None = None,
) -> tuple[PassReport, Detection]:
    """One detection pass over the buckets completed since the last; returns the report
    and the state to pass to the next call."""
    config = config or DetectConfig()
    now = now or datetime.now(UTC)
    store = InsightStore(client)
    state = state or _new_state(store, config, now)
    resolved_by_people = _sync(state, store)
    done = complete_until(client, config.allowed_lateness)
    counts: dict[str, int] = {}
    changed: dict[str, Insight] = {}
    events_seen = 0
    if done is not None:
        # buckets older than this are learnt from, not raised: a warm-up, a catch-up
        # after downtime or a back-filled history does not raise stale anomalies
        live_from = done - config.live_horizon
        for interval in config.intervals:
            counts[interval] = 0
            end = floor(done, interval)
            last = state.engine.last_ts(interval)
            step = timedelta(seconds=INTERVAL_SECONDS[interval])
            if last is not None:
                start = last + step
            else:  # warm-up: from the history wanted, but not from before the first event
                first = first_event(client) or end
                start = floor(max(end - config.history[interval], first), interval)
            while start < end:
                stop = min(end, start + config.chunk[interval])
                frame = read_frame(client, start, stop, interval)
                _remember_volumes(state, interval, frame)
                _select(state, interval, config, now)
                wanted = state.keys[interval]
                for ts, obs in frame.items():
                    row = {k: obs[k] for k in wanted if k in obs}
                    events = state.engine.step(ts, row)
                    counts[interval] += 1
                    if ts + step < live_from:
                        continue
                    events_seen += len(events)
                    for insight in _group(state, events, client, config, ts + step):
                        changed[insight.id] = insight
                start = stop
        # what opened in those older buckets and is still open is going on now: raise it
        # (an insight already stored for it takes it in, so nothing is raised twice)
        ongoing = [
            AnomalyEvent("opened", a, a.detected)
            for a in state.engine.open_anomalies()
            if (a.key, a.onset) not in state.raised
        ]
        for insight in _group(state, ongoing, client, config, done):
            changed[insight.id] = insight
        LAST_BUCKET.set(done.timestamp())
    for insight in _experiments(client, store, state, config, now):
        changed[insight.id] = insight
    saved = store.save(list(changed.values())) if changed else []
    for insight in saved:
        state.book.put(insight)
    delivery = None
    if notifier is not None:
        notifier.enqueue([*saved, *resolved_by_people], now)
        delivery = notifier.deliver(state.book.active(), now)
    OPEN.set(len(state.book.active()))
    report = PassReport(done, counts, events_seen, tuple(saved), tuple(state.book.active()),
                        delivery)  # fmt: skip
    return report, state


def _experiments(
    client: Client, store: InsightStore, state: Detection, config: DetectConfig, now: datetime
) -> list[Insight]:
    """The experiment insights that change, when a check is due (its own module)."""
    every, last = config.experiments_every, state.experiments_at
    if every is None or (last is not None and now - last < every):
        return []
    state.experiments_at = now
    try:
        return check_experiments(client, store, state.book.active(), now)
    except Exception as exc:  # detection goes on; the next check tries again
        _log.warning("checking the experiments failed: %s", exc)
        return []


def _group(
    state: Detection,
    events: list[AnomalyEvent],
    client: Client,
    config: DetectConfig,
    until: datetime,
) -> list[Insight]:
    if not events:
        return []
    state.raised |= {(e.anomaly.key, e.anomaly.onset) for e in events if e.kind == "opened"}
    state.raised &= {(a.key, a.onset) for a in state.engine.open_anomalies()}
    out = []

    def refiner(metric: str, sl: Slice, since: datetime, to: datetime) -> dict[str, Decomposition]:
        return refine(client, metric, sl, since, to)

    def funnel(sl: Slice, start: datetime, end: datetime) -> dict[str, float] | None:
        return funnel_counts(client, sl, start, end)

    for insight in state.book.apply(events):
        ev = gather(
            state.engine, insight, until, refiner if config.drilldown else None,
            funnel if config.drilldown else None,
        )  # fmt: skip
        described = describe(insight, ev, config.timezone, now=until)
        state.book.put(described)
        out.append(described)
    return out


class DetectorLoop:
    """Detection in a background thread of ``pulse up``: a pass every ``poll_every_s``."""

    def __init__(
        self,
        connect: Callable[[], Client],
        config: DetectConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._connect = connect
        self.config = config
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pulse-detector", daemon=True)
        self.error: BaseException | None = None
        self.last: PassReport | None = None
        self.passes = 0

    def _run(self) -> None:
        client = self._connect()
        notifier = Notifier(client, self.config.alerts)
        state: Detection | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.last, state = run_once(client, self.config, self._clock(), state, notifier)
                self.passes += 1
                self.error = None
                RUNS.labels("ok").inc()
            except Exception as exc:  # keep detecting; surfaced by check() and the log
                self.error = exc
                RUNS.labels("error").inc()
                _log.exception("detection pass failed")
            wait = self.config.poll_every_s - (time.monotonic() - started)
            self._stop.wait(max(wait, 0.5))

    def start(self) -> DetectorLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current pass and stop."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def check(self) -> None:
        """Readiness: raise when the loop died or its last pass failed."""
        if not self.alive:
            raise RuntimeError("the detector is not running")
        if self.error is not None:
            raise RuntimeError(f"the last detection pass failed: {self.error!r}")
