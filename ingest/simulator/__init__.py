"""Simulated marketplace traffic for Pulse (CONTRACT §4 ``pulse simulate``).

A European marketplace (15M users, 25 countries, 70% mobile, 4.8% session conversion,
AOV about EUR 85) with daily/weekly seasonality in each country's local time, a real
funnel, and composable injected incidents with exact ground truth. Output is
deterministic: the same config gives byte-identical events.

    config = SimConfig(rate=500, duration=parse_duration("1h"), seed=7,
                       incidents=(parse_incident("conversion_drop:country=DE,depth=0.6"),))
    write_jsonl(config, Path("traffic.jsonl"))   # + traffic.truth.json
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ingest.simulator.config import DEFAULT_START, MarketConfig, SimConfig
from ingest.simulator.engine import Run
from ingest.simulator.experiments import (
    ExperimentSpec,
    experiment_truth,
    parse_experiment,
    simulate_experiment_help,
)
from ingest.simulator.incidents import (
    INCIDENT_KINDS,
    Incident,
    parse_incident,
    simulate_cli_help,
    truth_entry,
)
from ingest.simulator.timeutil import format_ms, parse_duration, parse_time, to_ms

__all__ = [
    "DEFAULT_START",
    "INCIDENT_KINDS",
    "ExperimentSpec",
    "Incident",
    "MarketConfig",
    "SimConfig",
    "estimate_events",
    "ground_truth",
    "iter_events",
    "parse_duration",
    "parse_experiment",
    "parse_incident",
    "parse_time",
    "simulate_cli_help",
    "simulate_experiment_help",
    "truth_path",
    "write_jsonl",
]

TRUTH_FORMAT = "pulse-simulator-truth/1"


def iter_events(config: SimConfig) -> Iterator[tuple[int, bytes]]:
    """``(emit_ms, line)`` per event in non-decreasing ``emit_ms`` order.

    ``line`` is the event's JSON (no newline). ``emit_ms`` is when to send it: its ``ts``,
    later for late_events, and a little later again for a duplicate's copy.
    """
    for emit, lines in Run(config).batches():
        for at, line in zip(emit.tolist(), lines, strict=True):
            yield at, line.encode()


def write_jsonl(
    config: SimConfig, path: Path | str, progress: Callable[[int], None] | None = None
) -> int:
    """Write the events (emission order) to ``path`` and the ground truth beside it.

    ``progress`` is called with the number of events written since its last call.
    Returns the number of lines written.
    """
    path = Path(path)
    run = Run(config)
    written = 0
    with path.open("wb") as out:
        for _, lines in run.batches():
            if lines:
                out.write(("\n".join(lines) + "\n").encode())
                written += len(lines)
                if progress is not None:
                    progress(len(lines))
    truth = ground_truth(config)
    truth["events"] = written
    for entry, inc in zip(truth["incidents"], run.incidents, strict=True):
        entry["affected_events"] = inc.affected
    if config.experiments:
        truth["experiments"] = experiment_truth(run.experiments, config.experiments)
    truth_path(path).write_text(json.dumps(truth, indent=2) + "\n")
    return written


def ground_truth(config: SimConfig) -> dict[str, Any]:
    """Every incident with its exact window, slice and expected metric moves.

    ``write_jsonl`` adds ``events`` (lines written) and per incident ``affected_events``
    (events removed, added, repriced, delayed or duplicated by it).
    """
    start_ms = to_ms(config.start)
    end_ms = start_ms + int(config.duration.total_seconds() * 1000)
    return {
        "format": TRUTH_FORMAT,
        "seed": config.seed,
        "rate": config.rate,
        "start": format_ms(start_ms),
        "end": format_ms(end_ms),
        "start_ms": start_ms,
        "end_ms": end_ms,
        "incidents": [truth_entry(inc, i, start_ms) for i, inc in enumerate(config.incidents)],
        **(
            {"experiments": experiment_truth(None, config.experiments)}
            if config.experiments
            else {}
        ),
    }


def truth_path(path: Path | str) -> Path:
    """``FILE.jsonl`` → ``FILE.truth.json`` (any other name gets ``.truth.json`` appended)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return path.with_suffix(".truth.json")
    return path.with_name(path.name + ".truth.json")


def estimate_events(config: SimConfig) -> int:
    """Roughly how many events a run emits (``rate x duration``), for progress bars."""
    return round(config.rate * config.duration.total_seconds())
