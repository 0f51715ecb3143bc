"""`pulse detect backtest`: replay simulated history with incidents and grade the insights.

The simulator (`ingest.simulator`) generates days of marketplace traffic with incidents
whose windows and slices are known exactly. `insights.simseries` turns it into the
per-minute and per-hour series of the watched metrics (the numbers the warehouse would
give for the same events, without running them through broker, flow and ClickHouse).
Every series is scored by the production detector — the same `score_series`, one fresh
detector per series, online, in parallel processes — and the business layer
(`DetectionEngine`, `InsightBook`, `narrative`) turns scores into insights bucket by
bucket, 1-hour buckets as they close.

Grading, after ``warmup`` (the detector's learning time), against the simulator's ground
truth: an incident is *detected* by the first anomaly (an insight's member) that

* was confirmed between the incident's start and 30 minutes after its end, with its
  onset no more than 30 minutes before the start;
* is on the incident's slice, on a slice holding it (the aggregate, or one dimension of
  a two-dimension slice) or on a slice inside it;
* moves a metric the ground truth says the incident moves, in that direction
  (`ingest.simulator.truth_entry`: conversion falling for a payment outage, not
  conversion rising after a traffic drop).

*Time to detect* is the end of the bucket that confirmed that anomaly minus the
incident's start, in event time (live, add ``PULSE_ALLOWED_LATENESS`` before a bucket is
complete and the detector's polling period). An insight none of whose members detected
an incident is a *false insight*.

*Targets* are the incidents of `TARGET_KINDS` with depth (the share of the slice hit)
≥ 30% in a slice with ≥ 50 sessions per minute over the half hour before the start (a
two-dimension slice's volume is estimated from its dimensions' shares); the others are
graded and listed but not counted against the target.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import ingest.simulator
from ingest.simulator import DEFAULT_START, Incident, SimConfig, parse_incident, truth_entry
from insights.detector import score_series
from insights.engine import DetectionEngine, EngineConfig
from insights.lifecycle import Insight, InsightBook, Member
from insights.narrative import describe, gather
from insights.series import (
    INTERVAL_SECONDS,
    SeriesKey,
    Slice,
    parse_slice,
    select_series,
)
from insights.simseries import SimCounts, simulate_counts

__all__ = [
    "CAUSE_OF_KIND",
    "DEFAULT_INCIDENTS",
    "TARGET_DEPTH",
    "TARGET_KINDS",
    "TARGET_SESSIONS",
    "BacktestConfig",
    "BacktestReport",
    "IncidentResult",
    "format_table",
    "run_backtest",
]

TARGET_KINDS = ("conversion_drop", "checkout_failure", "traffic_drop", "tracking_loss",
                "price_error")  # fmt: skip
CAUSE_OF_KIND = {
    "conversion_drop": "checkout", "checkout_failure": "checkout", "traffic_drop": "traffic",
    "traffic_spike": "traffic", "tracking_loss": "tracking", "price_error": "pricing",
}  # fmt: skip
"""The cause class (`insights.attribution.CAUSES`) an insight on an incident should name."""
TARGET_DEPTH = 0.3
"""A target incident hits at least this share of its slice..."""
TARGET_SESSIONS = 50.0
"""...in a slice with at least this many sessions per minute (before it starts)."""

# A week of history first (the detector learns for about 170 buckets, its hourly series
# for 100 hours, and the expectation of a Saturday is last Saturday), then one incident
# every three hours (an incident's aftermath must not overlap the next one's start), then
# clean days up to a Saturday, weekend switch included.
DEFAULT_INCIDENTS: tuple[str, ...] = (
    "conversion_drop:country=DE,at=+7d8h,for=45m,depth=0.3",
    "traffic_drop:channel=paid,at=+7d11h,for=45m,depth=0.3",
    "price_error:country=IT,at=+7d14h,for=45m,depth=0.3",
    "checkout_failure:country=GB,at=+7d17h,for=45m,depth=0.5",
    "conversion_drop:country=DE,device=mobile,at=+7d20h,for=45m,depth=0.6",
    "tracking_loss:country=FR,at=+7d23h,for=45m,depth=1",
    "conversion_drop:device=mobile,at=+8d2h,for=45m,depth=0.5",
    "traffic_drop:country=ES,at=+8d5h,for=45m,depth=0.5",
    "conversion_drop:at=+8d8h,for=45m,depth=0.3",
    "tracking_loss:device=desktop,event=page_view,at=+8d11h,for=45m,depth=0.5",
    "checkout_failure:channel=email,at=+8d14h,for=45m,depth=0.3",
    "price_error:channel=organic,at=+8d17h,for=45m,factor=0.1",
    "conversion_drop:country=SE,at=+8d20h,for=45m,depth=0.5",
    "traffic_drop:at=+8d23h,for=45m,depth=0.3",
    "tracking_loss:country=NL,event=add_to_cart,at=+9d2h,for=45m,depth=0.5",
    "conversion_drop:country=PT,at=+9d5h,for=45m,depth=0.3",
    "traffic_spike:channel=social,source=bots,at=+9d8h,for=45m,depth=1",
    "duplicates:country=DE,at=+9d11h,for=45m,depth=0.2",
)


@dataclass(frozen=True)
class BacktestConfig:
    """One backtest: the simulated marketplace, its incidents and the grading window."""

    rate: float = 1000.0
    days: float = 12.0
    seed: int = 7
    start: datetime = DEFAULT_START
    incidents: tuple[str, ...] = DEFAULT_INCIDENTS
    warmup: timedelta = timedelta(days=7)
    intervals: tuple[str, ...] = ("1m", "1h")
    workers: int = 2
    engine: EngineConfig = field(default_factory=EngineConfig)
    tz: str = "UTC"


@dataclass(frozen=True)
class IncidentResult:
    """How one incident was found."""

    spec: str
    kind: str
    slice: str
    depth: float
    start: datetime
    sessions_per_minute: float
    in_target: bool
    detected: bool
    time_to_detect: timedelta | None
    insight: str
    not_target: str = ""
    """Why it is not a target: its kind, its depth or its slice's volume ('' if it is)."""
    estimated_volume: bool = False
    """The slice has several dimensions: its volume is estimated from their shares."""
    detected_by: str = ""
    """The first anomaly that found it: series and change."""
    named_slice: str = ""
    """The slice the insight named when it found the incident..."""
    cause: str = ""
    """...and the cause class it gave."""

    @property
    def slice_right(self) -> bool:
        """The insight named the incident's slice (or one of its dimensions; the
        aggregate for an incident everywhere)."""
        return self.detected and _names(parse_slice(self.named_slice), self.slice)

    @property
    def cause_right(self) -> bool:
        return self.detected and self.cause == CAUSE_OF_KIND.get(self.kind, "")

    @property
    def within_5m(self) -> bool:
        return self.time_to_detect is not None and self.time_to_detect <= timedelta(minutes=5)


@dataclass(frozen=True)
class BacktestReport:
    """Results per incident and the false insights of the graded period."""

    config: BacktestConfig
    results: tuple[IncidentResult, ...]
    false_insights: tuple[Insight, ...]
    graded_days: float
    series: int

    @property
    def false_per_day(self) -> float:
        return len(self.false_insights) / self.graded_days if self.graded_days else math.nan


def _score(job: tuple[list[datetime], list[float], list[float] | None]) -> list[float]:
    ts, values, weights = job
    return score_series(ts, values, weights=weights)


def _scores(
    counts: SimCounts, keys: list[SeriesKey], workers: int
) -> dict[SeriesKey, np.ndarray[Any, Any]]:
    """Every series scored by a fresh production detector (in parallel processes)."""
    ts = [counts.bucket_start(i) for i in range(counts.buckets)]
    jobs = []
    for key in keys:
        values, weights = counts.metric(key.metric, counts.slices.index(key.slice))
        is_ratio = key.watched.kind == "ratio"
        w = np.nan_to_num(weights).tolist() if is_ratio and weights is not None else None
        jobs.append((ts, values.tolist(), w))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            scored = list(pool.map(_score, jobs, chunksize=4))
    else:
        scored = [_score(j) for j in jobs]
    return {k: np.asarray(s) for k, s in zip(keys, scored, strict=True)}


def _incident_slice(inc: Incident) -> Slice:
    return tuple((d, "|".join(v)) for d, v in inc.slice_dims().items())


def _slice_volume(counts: SimCounts, sl: Slice, start: int) -> float:
    """Mean sessions per minute of a slice in the half hour before ``start`` (bucket)."""
    sessions = counts.counts["sessions"][max(start - 30, 0) : max(start, 1)]

    def col(s: Slice) -> float:
        return float(sessions[:, counts.slices.index(s)].mean())

    total = col(())
    share = 1.0
    for pair in sl:
        if pair not in [p for s in counts.slices for p in s]:
            values = pair[1].split("|")
            sub = [(pair[0], v) for v in values if ((pair[0], v),) in counts.slices]
            share *= sum(col((p,)) for p in sub) / total if total and sub else 0.0
        else:
            share *= col((pair,)) / total if total else 0.0
    return total * share


_T = TypeVar("_T")


def _source_hash(*modules: str) -> str:
    """Hash of the source of ``modules`` (a package counts with all its files): a cached
    result is stale once the code that made it changed."""
    digest = hashlib.sha256()
    for name in modules:
        path = Path(sys.modules[name].__file__ or "")
        files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _key(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _cached(
    cache: MutableMapping[str, Any] | None,
    key: str,
    make: Callable[[], _T],
    say: Callable[[str], None],
) -> _T:
    if cache is not None and key in cache:
        say(f"(cached: {key.split('/')[0]})")
        cached: _T = cache[key]
        return cached
    value = make()
    if cache is not None:
        cache[key] = value
    return value


def run_backtest(
    config: BacktestConfig | None = None,
    progress: Callable[[str], None] | None = None,
    cache: MutableMapping[str, Any] | None = None,
) -> BacktestReport:
    """Simulate, detect and grade; see the module docstring. ``progress`` hears each
    phase as it starts (simulate, score, detect, grade).

    ``cache`` (e.g. a `shelve`) keeps the simulated counts and the detector's scores,
    keyed by the configuration and the source of the code that made them: a rerun that
    changed only the business layer skips the two slowest phases."""
    cfg = config or BacktestConfig()
    say = progress or (lambda _: None)
    incidents = tuple(parse_incident(s) for s in cfg.incidents)
    sim = SimConfig(
        rate=cfg.rate,
        duration=timedelta(days=cfg.days),
        seed=cfg.seed,
        start=cfg.start,
        incidents=incidents,
    )
    say(f"simulating {cfg.days:g} days at {cfg.rate:g} events/s")
    sources = _source_hash(ingest.simulator.__name__, "insights.simseries")
    sim_key = _key(repr(sim), repr(cfg.intervals), sources)
    counts = _cached(cache, f"counts/{sim_key}", lambda: simulate_counts(sim, cfg.intervals), say)
    keys = {i: select_series(counts[i].volumes(), i) for i in cfg.intervals}
    say(f"scoring {sum(len(k) for k in keys.values())} series with the detector")
    sources = _source_hash("insights.detector", "insights._novelty", "insights._seasonal")
    det_key = _key(repr(cfg.engine.detector), sources)
    scores = {
        i: _cached(
            cache,
            f"scores/{sim_key}/{det_key}/{i}",
            lambda i=i: _scores(counts[i], keys[i], cfg.workers),  # type: ignore[misc]
            say,
        )
        for i in cfg.intervals
    }
    say("grouping anomalies into insights")
    insights, versions = _detect(cfg, counts, keys, scores)
    say("grading against the ground truth")
    graded_from = sim.start + cfg.warmup
    graded = [i for i in insights.values() if i.detected_at >= graded_from]
    members = sorted(
        ((m, i) for i in insights.values() for m in i.members if m.detected >= graded_from),
        key=lambda pair: pair[0].detected,
    )
    minute = counts[cfg.intervals[0]]
    results = []
    claimed: set[str] = set()
    for inc in incidents:
        begin = sim.start + (inc.at if isinstance(inc.at, timedelta) else inc.at - sim.start)
        end = begin + inc.duration
        sl = _incident_slice(inc)
        moves = _moves(inc)
        hits = [
            (m, i)
            for m, i in members
            if begin <= m.detected <= end + _GRACE
            and m.onset >= begin - _GRACE
            and _related(parse_slice(m.slice), sl)
            and (m.metric, "up" if m.change > 0 else "down") in moves
        ]
        claimed |= {i.id for _, i in hits}
        first = hits[0] if hits else None
        # what on-call read when it was found: the insight as it was at that moment
        seen = _as_of(versions[first[1].id], first[0].detected) if first else None
        start_bucket = int((begin - minute.origin).total_seconds() // 60)
        volume = _slice_volume(minute, sl, start_bucket)
        why = _not_target(inc, volume)
        results.append(
            IncidentResult(
                spec=inc.spec, kind=inc.kind, slice=inc.slice_label, depth=inc.depth,
                start=begin, sessions_per_minute=volume, in_target=not why,
                detected=first is not None,
                time_to_detect=(first[0].detected - begin) if first else None,
                insight=first[1].recommendation if first else "",
                not_target=why, estimated_volume=len(sl) > 1,
                detected_by=_member_text(first[0]) if first else "",
                named_slice=seen.slice if seen else "", cause=seen.cause if seen else "",
            )
        )  # fmt: skip
    false = tuple(i for i in graded if i.id not in claimed)
    graded_days = (sim.end - graded_from).total_seconds() / 86400
    n_series = sum(len(k) for k in keys.values())
    return BacktestReport(cfg, tuple(results), false, graded_days, n_series)


_GRACE = timedelta(minutes=30)


def _moves(inc: Incident) -> set[tuple[str, str]]:
    """(metric, direction) pairs the simulator's ground truth says the incident moves."""
    truth = truth_entry(inc, 0, 0)
    return {(m["metric"], m["direction"]) for m in truth["metrics"] + truth["transient_metrics"]}


def _not_target(inc: Incident, volume: float) -> str:
    """Why an incident is outside the target ('' if it is a target)."""
    if inc.kind not in TARGET_KINDS:
        return "kind"
    if inc.depth < TARGET_DEPTH:
        return f"depth < {TARGET_DEPTH:.0%}"
    if volume < TARGET_SESSIONS:
        return f"< {TARGET_SESSIONS:g} sessions/min"
    return ""


def _member_text(m: Member) -> str:
    return f"{m.metric}[{m.slice}]@{m.interval} {m.change:+.0%}"


def _as_of(versions: list[Insight], at: datetime) -> Insight:
    """The first version of an insight described at or after ``at``."""
    return next((v for v in versions if v.updated_at >= at), versions[-1])


def _names(named: Slice, incident_label: str) -> bool:
    """Whether the slice an insight named is the incident's: the aggregate for an
    incident everywhere; else some of its dimensions, each with the incident's value."""
    options = {d: v.split("|") for d, v in parse_slice(incident_label)}
    if not options:
        return named == ()
    return bool(named) and all(v in options.get(d, ()) for d, v in named)


def _related(member: Slice, incident: Slice) -> bool:
    """The member's slice is the incident's, one that holds it (the aggregate, or one of
    its dimensions) or one inside it; ``A|B`` in an incident slice reads as either."""
    options = {d: v.split("|") for d, v in incident}
    holds = all(v in options.get(d, ()) for d, v in member)
    values = dict(member)
    inside = all(values.get(d) in vals for d, vals in options.items())
    return holds or inside


def _detect(
    cfg: BacktestConfig,
    counts: dict[str, SimCounts],
    keys: dict[str, list[SeriesKey]],
    scores: dict[str, dict[SeriesKey, np.ndarray[Any, Any]]],
) -> tuple[dict[str, Insight], dict[str, list[Insight]]]:
    """Run the business layer bucket by bucket; return every insight (last version) and
    every version of each."""
    engine = DetectionEngine(cfg.engine)
    book = InsightBook()
    seen: dict[str, Insight] = {}
    versions: dict[str, list[Insight]] = {}
    fine = cfg.intervals[0]
    step = INTERVAL_SECONDS[fine]
    minute = counts[fine]
    coarse = [i for i in cfg.intervals[1:]]
    streams = {i: counts[i].observations(keys[i]) for i in cfg.intervals}
    next_coarse = {i: 0 for i in coarse}
    for n in range(minute.buckets):
        ts, obs = next(streams[fine])
        row = {k: float(scores[fine][k][n]) for k in keys[fine]}
        events = engine.step(ts, obs, row)
        bucket_end = ts + timedelta(seconds=step)
        for i in coarse:
            c = counts[i]
            while next_coarse[i] < c.buckets and c.bucket_start(next_coarse[i] + 1) <= bucket_end:
                cts, cobs = next(streams[i])
                crow = {k: float(scores[i][k][next_coarse[i]]) for k in keys[i]}
                events += engine.step(cts, cobs, crow)
                next_coarse[i] += 1
        if not events:
            continue
        for insight in book.apply(events):
            ev = gather(engine, insight, bucket_end, funnel=minute.funnel)
            described = describe(insight, ev, cfg.tz)
            if insight.active:
                book.put(described)
            seen[insight.id] = described
            versions.setdefault(insight.id, []).append(described)
    return seen, versions


def format_table(report: BacktestReport) -> str:
    """The backtest as Markdown: one row per incident, totals per kind, the verdict.

    Only target incidents (`TARGET_KINDS`, depth ≥ `TARGET_DEPTH`, slice ≥
    `TARGET_SESSIONS` sessions/min) count against the target; the others are listed."""
    lines = [
        "| incident | depth | sessions/min in slice | target | first found by | time to detect "
        "| slice named | cause named |",
        "|---|---:|---:|:-:|---|---:|---|---|",
    ]
    for r in report.results:
        ttd = _fmt(r.time_to_detect) if r.time_to_detect is not None else "—"
        mark = "✅" if r.within_5m else ("⚠️" if r.detected else "❌")
        approx = "≈" if r.estimated_volume else ""
        is_target = "yes" if r.in_target else f"no ({r.not_target})"
        found = f"`{r.detected_by}`" if r.detected else "—"
        named = f"`{r.named_slice}` {'✅' if r.slice_right else '❌'}" if r.detected else "—"
        cause = f"{r.cause or '?'} {'✅' if r.cause_right else '❌'}" if r.detected else "—"
        lines.append(
            f"| `{r.spec}` | {r.depth:.0%} | {approx}{r.sessions_per_minute:,.0f} | {is_target} "
            f"| {found} | {ttd} {mark if r.in_target else ''} | {named} | {cause} |"
        )
    lines += [
        "",
        "| kind | incidents | targets | targets detected | targets within 5 min "
        "| median time to detect |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in dict.fromkeys(r.kind for r in report.results):
        rows = [r for r in report.results if r.kind == kind]
        aimed = [r for r in rows if r.in_target]
        ttds = sorted(r.time_to_detect for r in rows if r.time_to_detect is not None)
        median = _fmt(ttds[len(ttds) // 2]) if ttds else "—"
        lines.append(
            f"| {kind} | {len(rows)} | {len(aimed)} | {sum(r.detected for r in aimed)} "
            f"| {sum(r.within_5m for r in aimed)} | {median} |"
        )
    target = [r for r in report.results if r.in_target]
    lines += [
        "",
        f"Target incidents detected within 5 minutes: {sum(r.within_5m for r in target)} of "
        f"{len(target)}; detected at all: {sum(r.detected for r in target)} of {len(target)}.",
        *_attribution_lines(report),
        f"False insights: {len(report.false_insights)} over {report.graded_days:.1f} graded "
        f"days = {report.false_per_day:.2f} per day, across {report.series} series.",
    ]
    return "\n".join(lines)


def _attribution_lines(report: BacktestReport) -> list[str]:
    """Right slice and right cause among the detected incidents (those with a cause)."""
    out = []
    for title, rows in (
        ("detected incidents", [r for r in report.results if r.detected]),
        ("detected targets", [r for r in report.results if r.detected and r.in_target]),
    ):
        rows = [r for r in rows if r.kind in CAUSE_OF_KIND]
        if not rows:
            continue
        sl, cause = sum(r.slice_right for r in rows), sum(r.cause_right for r in rows)
        out.append(
            f"Attribution over {len(rows)} {title}: right slice {sl} ({sl / len(rows):.0%}), "
            f"right cause {cause} ({cause / len(rows):.0%})."
        )
    return out


def _fmt(span: timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"


def describe_false(insights: Sequence[Insight]) -> list[str]:
    """One line per false insight (for the bench's log)."""
    return [f"{i.detected_at:%Y-%m-%d %H:%M} {i.summary}" for i in insights]
